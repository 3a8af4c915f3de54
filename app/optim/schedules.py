"""Learning-rate schedules: η_t as a pure function of the step count t.

A schedule is evaluated as `η(t, base_lr, state)`, where `base_lr` is the parameter group's `lr`:
multiplicative schedules multiply it, while `one_cycle`, `noam` and `piecewise_constant` define
the rate outright (absolute) and ignore it. t is the number of updates applied so far, so η_0 is
the rate of the first update; torch-named schedules equal the torch scheduler after t calls of
`scheduler.step()`.

Only `reduce_on_plateau` has state — a few numbers kept in `OptimizerState.schedule` — and it
changes only through `observe(t, loss, state)`, a pure function fed each step's loss after the
update (torch's `opt.step(); sched.step(loss)`).

Where this differs from torch, on purpose:
- `cosine` holds `min_lr` after `total_steps` (torch's CosineAnnealingLR rises again past T_max).
- `one_cycle` holds its final rate from t = total_steps on (torch evaluates one step past the
  end of its anneal there, which with `anneal: "linear"` goes below the final rate, even below
  zero, and raises after that).
- `sequential` starts schedule k on its own clock at milestone k−1 (t − milestone), milestone 0
  included and nesting allowed; torch's SequentialLR mishandles both and needs its own state.
- `reduce_on_plateau` counts a non-finite loss as a step without improvement (never as the best).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from app.optim import checks
from app.optim.base import HyperParameterError, Spec, join_path

ScheduleState = dict[str, float]
RateFn = Callable[[int, float, Mapping[str, float]], float]
ObserveFn = Callable[[int, float, Mapping[str, float]], ScheduleState]


def _no_state() -> ScheduleState:
    return {}


def _ignore_loss(t: int, loss: float, state: Mapping[str, float]) -> ScheduleState:
    del t, loss
    return dict(state)


class Schedule(NamedTuple):
    """η(t, base_lr, state), the state's initial value and its transition on a step's loss."""

    rate: RateFn
    init: Callable[[], ScheduleState] = _no_state
    observe: ObserveFn = _ignore_loss


def _pure(rate: Callable[[int, float], float]) -> Schedule:
    """A stateless schedule from η(t, base_lr)."""
    return Schedule(lambda t, base_lr, state: rate(t, base_lr))


# --------------------------------------------------------------------------------------------
# Multiplicative schedules
# --------------------------------------------------------------------------------------------


def constant() -> Schedule:
    """η_t = lr."""
    return _pure(lambda t, base_lr: base_lr)


CONSTANT = constant()


def step(step_size: int, gamma: float = 0.1) -> Schedule:
    """η_t = lr · γ^⌊t / step_size⌋ (torch StepLR; γ ∈ [0, 1], a decay)."""
    checks.integer("step_size", step_size, low=1)
    checks.fraction("gamma", gamma, closed=True)
    return _pure(lambda t, base_lr: base_lr * gamma ** (t // step_size))


def multistep(milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """η_t = lr · γ^(number of milestones ≤ t) (torch MultiStepLR; γ ∈ [0, 1])."""
    marks = checks.increasing_integers("milestones", milestones)
    checks.fraction("gamma", gamma, closed=True)
    return _pure(lambda t, base_lr: base_lr * gamma ** bisect.bisect_right(marks, t))


def exponential(gamma: float) -> Schedule:
    """η_t = lr · γ^t (torch ExponentialLR; γ ∈ [0, 1]: a growing rate would overflow)."""
    checks.fraction("gamma", gamma, closed=True)
    return _pure(lambda t, base_lr: base_lr * gamma**t)


def inverse_sqrt() -> Schedule:
    """η_t = lr / sqrt(t + 1), the lecture's decay."""
    return _pure(lambda t, base_lr: base_lr / math.sqrt(t + 1))


def linear(
    start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_steps: int = 5
) -> Schedule:
    """η_t = lr · (s + (e − s)·min(t, T)/T) (torch LinearLR; 0 < s ≤ 1 and 0 ≤ e ≤ 1 as there)."""
    checks.real("start_factor", start_factor, low=0.0, low_open=True, high=1.0)
    checks.real("end_factor", end_factor, low=0.0, high=1.0)
    checks.integer("total_steps", total_steps, low=1)
    return _pure(
        lambda t, base_lr: (
            base_lr
            * (start_factor + (end_factor - start_factor) * min(total_steps, t) / total_steps)
        )
    )


def polynomial(total_steps: int, power: float = 1.0) -> Schedule:
    """η_t = lr · (1 − min(t, T)/T)^power (torch PolynomialLR)."""
    checks.integer("total_steps", total_steps, low=1)
    checks.non_negative("power", power)
    return _pure(lambda t, base_lr: base_lr * (1.0 - min(total_steps, t) / total_steps) ** power)


def cosine(total_steps: int, min_lr: float = 0.0) -> Schedule:
    """η_t = min_lr + (lr − min_lr)·(1 + cos(π·t/T))/2 for t ≤ T, then min_lr (torch
    CosineAnnealingLR up to T_max; torch's curve would rise again after it)."""
    checks.integer("total_steps", total_steps, low=1)
    checks.non_negative("min_lr", min_lr)

    def rate(t: int, base_lr: float) -> float:
        if t >= total_steps:
            return min_lr
        return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t / total_steps)) / 2

    return _pure(rate)


def cosine_restarts(t_0: int, t_mult: int = 1, min_lr: float = 0.0) -> Schedule:
    """Cosine annealing restarted after T_0, T_0·m, T_0·m², … steps (torch
    CosineAnnealingWarmRestarts): η_t = min_lr + (lr − min_lr)·(1 + cos(π·T_cur/T_i))/2."""
    checks.integer("t_0", t_0, low=1)
    checks.integer("t_mult", t_mult, low=1)
    checks.non_negative("min_lr", min_lr)

    def rate(t: int, base_lr: float) -> float:
        if t_mult == 1:
            t_cur, t_i = t % t_0, t_0
        else:
            t_cur, t_i = t, t_0
            while t_cur >= t_i:
                t_cur, t_i = t_cur - t_i, t_i * t_mult
        return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2

    return _pure(rate)


# --------------------------------------------------------------------------------------------
# Absolute schedules
# --------------------------------------------------------------------------------------------


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
) -> Schedule:
    """torch OneCycleLR (two phases, cycle_momentum off), absolute: from max_lr/div_factor up
    to max_lr until step pct_start·T − 1, then down to max_lr/(div_factor·final_div_factor) at
    step T − 1, annealing by cosine or linearly; the final rate holds from step T on."""
    checks.positive("max_lr", max_lr)
    checks.integer("total_steps", total_steps, low=1)
    checks.real("pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True)
    checks.positive("div_factor", div_factor)
    checks.positive("final_div_factor", final_div_factor)
    interpolate = _ANNEALS[checks.choice("anneal", anneal, tuple(_ANNEALS))]
    initial_lr = max_lr / div_factor
    final_lr = initial_lr / final_div_factor
    peak_step = float(pct_start * total_steps) - 1

    def rate(t: int, base_lr: float) -> float:
        del base_lr
        t = min(t, total_steps - 1)  # the cycle's last rate holds after it
        if t <= peak_step:
            start_step, end_step, start_lr, end_lr = 0.0, peak_step, initial_lr, max_lr
        else:
            start_step, end_step, start_lr, end_lr = peak_step, total_steps - 1, max_lr, final_lr
        # A rising phase of zero length (pct_start·T = 1) is at its end at once.
        span = end_step - start_step
        return interpolate(start_lr, end_lr, (t - start_step) / span if span else 1.0)

    return _pure(rate)


def _anneal_cos(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct 0) to `end` (pct 1), torch's formula."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    """Straight line from `start` to `end`, torch's formula."""
    return (end - start) * pct + start


_ANNEALS = {"cos": _anneal_cos, "linear": _anneal_linear}


def noam(d_model: float, warmup_steps: int, factor: float = 1.0) -> Schedule:
    """The Transformer's rate, absolute: factor · d_model^−½ · min((t+1)^−½, (t+1)·W^−3/2)."""
    checks.positive("d_model", d_model)
    checks.integer("warmup_steps", warmup_steps, low=1)
    checks.non_negative("factor", factor)
    return _pure(
        lambda t, base_lr: (
            factor * d_model**-0.5 * min((t + 1) ** -0.5, (t + 1) * warmup_steps**-1.5)
        )
    )


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """Absolute: values[k] on [boundaries[k−1], boundaries[k]) — values[0] before the first
    boundary, values[-1] from the last one on."""
    marks = checks.increasing_integers("boundaries", boundaries)
    rates = [
        checks.non_negative(f"values.{i}", v)
        for i, v in enumerate(checks.sequence("values", values))
    ]
    if len(rates) != len(marks) + 1:
        raise HyperParameterError(
            "values", f"needs len(boundaries) + 1 = {len(marks) + 1} values, got {len(rates)}"
        )
    return _pure(lambda t, base_lr: rates[bisect.bisect_right(marks, t)])


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def warmup(warmup_steps: int, then: Schedule = CONSTANT) -> Schedule:
    """η_t = lr·(t + 1)/W for t < W (the first step is not wasted at η = 0), then
    `then` on its own clock: η_t = then(t − W)."""
    checks.integer("warmup_steps", warmup_steps, low=1)

    def rate(t: int, base_lr: float, state: Mapping[str, float]) -> float:
        if t < warmup_steps:
            return base_lr * (t + 1) / warmup_steps
        return then.rate(t - warmup_steps, base_lr, state)

    def observe(t: int, loss: float, state: Mapping[str, float]) -> ScheduleState:
        if t < warmup_steps:
            return dict(state)
        return then.observe(t - warmup_steps, loss, state)

    return Schedule(rate, then.init, observe)


def sequential(schedules: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    """SequentialLR's intent: schedule k runs on its own clock from milestone k−1,
    η_t = schedules[k](t − milestones[k−1]) with k = number of milestones ≤ t.

    A milestone 0 means schedule 0 never runs; schedules may themselves be sequential. Being a
    pure function of t, resuming at any step needs nothing stored.
    """
    marks = checks.increasing_integers("milestones", milestones)
    if len(marks) != len(schedules) - 1:
        raise HyperParameterError(
            "milestones",
            f"needs len(schedules) − 1 = {len(schedules) - 1} milestones, got {len(marks)}",
        )

    def rate(t: int, base_lr: float, state: Mapping[str, float]) -> float:
        k = bisect.bisect_right(marks, t)
        start = marks[k - 1] if k else 0
        return schedules[k].rate(t - start, base_lr, state)

    return Schedule(rate)


# --------------------------------------------------------------------------------------------
# reduce_on_plateau
# --------------------------------------------------------------------------------------------

PLATEAU_EPS = 1e-8
"""torch's ReduceLROnPlateau `eps`: a reduction smaller than this is not applied."""


def reduce_on_plateau(
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
) -> Schedule:
    """torch ReduceLROnPlateau, fed the loss of each step after its update.

    State: `best` (absent until a loss improves on "nothing seen"), `num_bad_epochs`,
    `cooldown_counter`, `num_reductions`. After `patience` + 1 steps without improvement
    (improvement: loss < best·(1 − threshold) in "min"/"rel" mode, and so on) a reduction
    happens and `cooldown` steps follow in which bad steps are not counted.

    The rate of a group with base rate lr after n reductions applies torch's rule n times:
    lr ← max(lr·factor, min_lr), only when that lowers lr by more than 1e-8 — so each group
    reaches its own floor, exactly as torch's per-group update does.
    """
    checks.choice("mode", mode, ("min", "max"))
    checks.real("factor", factor, low=0.0, high=1.0, high_open=True)
    checks.integer("patience", patience, low=0)
    checks.non_negative("threshold", threshold)
    checks.choice("threshold_mode", threshold_mode, ("rel", "abs"))
    checks.integer("cooldown", cooldown, low=0)
    checks.non_negative("min_lr", min_lr)
    sign = 1.0 if mode == "min" else -1.0

    def is_better(loss: float, best: float | None) -> bool:
        if not math.isfinite(loss):
            return False
        if best is None:
            best = sign * math.inf
        if threshold_mode == "rel":
            return sign * loss < sign * best * (1.0 - sign * threshold)
        return sign * loss < sign * best - threshold

    def init() -> ScheduleState:
        return {"num_bad_epochs": 0.0, "cooldown_counter": 0.0, "num_reductions": 0.0}

    def observe(t: int, loss: float, state: Mapping[str, float]) -> ScheduleState:
        del t
        new = dict(state)
        if is_better(loss, state.get("best")):
            new["best"] = float(loss)
            new["num_bad_epochs"] = 0.0
        else:
            new["num_bad_epochs"] = state["num_bad_epochs"] + 1.0
        if new["cooldown_counter"] > 0:
            new["cooldown_counter"] -= 1.0
            new["num_bad_epochs"] = 0.0
        if new["num_bad_epochs"] > patience:
            new["num_reductions"] += 1.0
            new["cooldown_counter"] = float(cooldown)
            new["num_bad_epochs"] = 0.0
        return new

    def rate(t: int, base_lr: float, state: Mapping[str, float]) -> float:
        del t
        lr = base_lr
        for _ in range(int(state.get("num_reductions", 0.0))):
            reduced = max(lr * factor, min_lr)
            if lr - reduced <= PLATEAU_EPS:
                break  # a fixed point: torch leaves lr where it is from here on
            lr = reduced
        return lr

    return Schedule(rate, init, observe)


# --------------------------------------------------------------------------------------------
# Building from a spec
# --------------------------------------------------------------------------------------------

SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step,
    "multistep": multistep,
    "exponential": exponential,
    "inverse_sqrt": inverse_sqrt,
    "linear": linear,
    "polynomial": polynomial,
    "cosine": cosine,
    "cosine_restarts": cosine_restarts,
    "one_cycle": one_cycle,
    "noam": noam,
    "piecewise_constant": piecewise_constant,
    "warmup": warmup,
    "sequential": sequential,
    "reduce_on_plateau": reduce_on_plateau,
}
"""type → factory; the factory's keyword parameters are the type's fields."""

SCHEDULE_TYPES = frozenset(SCHEDULES)
ABSOLUTE_SCHEDULE_TYPES = frozenset({"one_cycle", "noam", "piecewise_constant"})
"""Types that define η_t outright instead of multiplying the group's lr."""


def schedule_defaults(kind: str) -> dict[str, Any]:
    """The fields of a schedule type that have defaults, with them (required fields are absent;
    a schedule-valued default is given as its spec)."""
    return {
        name: {"type": "constant"} if value is CONSTANT else value
        for name, value in checks.defaults_of(SCHEDULES[kind]).items()
    }


def build_schedule(
    spec: Spec | None, path: str = "schedule", *, top_level: bool = True
) -> Schedule:
    """`{"type": …, <fields>}` (or None: constant) → a `Schedule`; errors name `path.field`.

    `reduce_on_plateau` is allowed at the top level or as the `then` of a top-level `warmup`:
    only there is there one clock to feed it losses on.
    """
    if spec is None:
        return CONSTANT
    kind, fields = checks.spec_type(spec, path, SCHEDULES)
    if kind == "reduce_on_plateau" and not top_level:
        raise HyperParameterError(
            join_path(path, "type"),
            "reduce_on_plateau is allowed only as the schedule itself or a warmup's 'then'",
        )
    if kind == "warmup" and "then" in fields:
        fields["then"] = build_schedule(
            fields["then"], join_path(path, "then"), top_level=top_level
        )
    if kind == "sequential" and "schedules" in fields:
        field = join_path(path, "schedules")
        fields["schedules"] = [
            build_schedule(item, f"{field}.{i}", top_level=False)
            for i, item in enumerate(checks.sequence(field, fields["schedules"]))
        ]
        if not fields["schedules"]:
            raise HyperParameterError(field, "needs at least one schedule")
    return checks.call_with_spec(SCHEDULES[kind], fields, path)


def schedule_lrs(schedule: Spec | None, lr: float, steps: int) -> list[float]:
    """The preview: [η_0, …, η_{steps−1}] for a group of base rate `lr` (no losses are fed, so
    `reduce_on_plateau` stays at `lr`)."""
    built = build_schedule(schedule)
    base_lr = checks.non_negative("lr", lr)
    count = checks.integer("steps", steps, low=0)
    state = built.init()
    return [built.rate(t, base_lr, state) for t in range(count)]
