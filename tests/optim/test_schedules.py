"""Schedules: torch's schedulers after t calls of `step()` (t ≤ 1000), the formulas of the
contract, `sequential` around its milestones, and `reduce_on_plateau` against torch."""

import math

import numpy as np
import pytest
import torch

from app.optim import HyperParameterError, Optimizer, schedule_defaults, schedule_lrs
from app.optim.schedules import SCHEDULES, build_schedule

T = 1000
LR = 0.1
sched = torch.optim.lr_scheduler


def torch_lrs(make_scheduler, steps=T, lr=LR):
    """η_0 … η_{steps−1}: the lr after t calls of `scheduler.step()`."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def assert_rates(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15)


TORCH_NAMED = [
    ({"type": "step", "step_size": 30, "gamma": 0.5}, lambda o: sched.StepLR(o, 30, 0.5)),
    ({"type": "step", "step_size": 1, "gamma": 0.99}, lambda o: sched.StepLR(o, 1, 0.99)),
    (
        {"type": "multistep", "milestones": [10, 250, 600], "gamma": 0.3},
        lambda o: sched.MultiStepLR(o, [10, 250, 600], 0.3),
    ),
    ({"type": "exponential", "gamma": 0.995}, lambda o: sched.ExponentialLR(o, 0.995)),
    ({"type": "linear"}, lambda o: sched.LinearLR(o)),
    (
        {"type": "linear", "start_factor": 0.01, "end_factor": 0.5, "total_steps": 400},
        lambda o: sched.LinearLR(o, 0.01, 0.5, 400),
    ),
    (
        {"type": "polynomial", "total_steps": 700, "power": 2.0},
        lambda o: sched.PolynomialLR(o, 700, 2.0),
    ),
    ({"type": "polynomial", "total_steps": 1000}, lambda o: sched.PolynomialLR(o, 1000)),
    (
        {"type": "cosine_restarts", "t_0": 50},
        lambda o: sched.CosineAnnealingWarmRestarts(o, 50),
    ),
    (
        {"type": "cosine_restarts", "t_0": 7, "t_mult": 2, "min_lr": 1e-3},
        lambda o: sched.CosineAnnealingWarmRestarts(o, 7, 2, 1e-3),
    ),
]


@pytest.mark.parametrize(("spec", "make"), TORCH_NAMED, ids=[s["type"] for s, _ in TORCH_NAMED])
def test_torch_named_schedules(spec, make):
    assert_rates(schedule_lrs(spec, LR, T), torch_lrs(make))


@pytest.mark.parametrize(("total", "min_lr"), [(1000, 0.0), (300, 1e-3), (1, 0.0)])
def test_cosine_is_torch_up_to_total_steps_then_holds(total, min_lr):
    ours = schedule_lrs({"type": "cosine", "total_steps": total, "min_lr": min_lr}, LR, T)
    theirs = torch_lrs(lambda o: sched.CosineAnnealingLR(o, total, min_lr))
    assert_rates(ours[: total + 1], theirs[: total + 1])
    assert ours[total:] == [min_lr] * (T - total)


@pytest.mark.parametrize(
    "spec",
    [
        {"max_lr": 0.5, "total_steps": 1000},
        {"max_lr": 0.5, "total_steps": 300, "pct_start": 0.25, "anneal": "linear"},
        {"max_lr": 2.0, "total_steps": 97, "div_factor": 10.0, "final_div_factor": 100.0},
    ],
)
def test_one_cycle_is_torch_then_holds(spec):
    total = spec["total_steps"]
    kwargs = {k: v for k, v in spec.items() if k != "anneal"}
    kwargs["anneal_strategy"] = spec.get("anneal", "cos")
    theirs = torch_lrs(lambda o: sched.OneCycleLR(o, cycle_momentum=False, **kwargs), steps=total)
    ours = schedule_lrs({"type": "one_cycle", **spec}, 123.0, T)  # absolute: lr is ignored
    assert_rates(ours[:total], theirs)
    final = spec["max_lr"] / spec.get("div_factor", 25.0) / spec.get("final_div_factor", 1e4)
    assert ours[total - 1] == pytest.approx(final, rel=1e-12)
    assert ours[total:] == [ours[total - 1]] * (T - total)


def test_noam_formula():
    ours = schedule_lrs(
        {"type": "noam", "d_model": 512, "warmup_steps": 400, "factor": 2.0}, 9.0, T
    )
    expected = [2.0 * 512**-0.5 * min((t + 1) ** -0.5, (t + 1) * 400**-1.5) for t in range(T)]
    assert_rates(ours, expected)
    assert int(np.argmax(ours)) == 399  # the peak is the last warm-up step


def test_inverse_sqrt_formula():
    ours = schedule_lrs({"type": "inverse_sqrt"}, LR, T)
    assert_rates(ours, [LR / math.sqrt(t + 1) for t in range(T)])
    assert ours[0] == LR and ours[3] == pytest.approx(LR / 2)


def test_warmup_formula_does_not_waste_the_first_step():
    spec = {"type": "warmup", "warmup_steps": 4, "then": {"type": "exponential", "gamma": 0.5}}
    ours = schedule_lrs(spec, 1.0, 8)
    assert ours == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.25, 0.125])
    assert schedule_lrs({"type": "warmup", "warmup_steps": 3}, 0.3, 5) == pytest.approx(
        [0.1, 0.2, 0.3, 0.3, 0.3]
    )


def test_piecewise_constant_formula():
    spec = {"type": "piecewise_constant", "boundaries": [2, 5], "values": [1.0, 0.5, 0.1]}
    assert schedule_lrs(spec, 77.0, 7) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1]


def test_constant():
    assert schedule_lrs({"type": "constant"}, 0.3, 3) == [0.3] * 3
    assert schedule_lrs(None, 0.3, 2) == [0.3] * 2


# -------------------------------------------------------------------------------------------
# sequential
# -------------------------------------------------------------------------------------------

LINEAR = {"type": "linear", "start_factor": 0.1, "total_steps": 5}
EXPONENTIAL = {"type": "exponential", "gamma": 0.9}
STEP = {"type": "step", "step_size": 3, "gamma": 0.5}


def test_sequential_runs_each_schedule_on_its_own_clock():
    spec = {"type": "sequential", "schedules": [LINEAR, EXPONENTIAL, STEP], "milestones": [5, 12]}
    ours = schedule_lrs(spec, LR, 30)
    linear, exponential, step = (schedule_lrs(s, LR, 30) for s in (LINEAR, EXPONENTIAL, STEP))
    for t in (0, 4):
        assert ours[t] == linear[t]
    for t in (5, 6, 11):  # at, just after, and just before the next milestone
        assert ours[t] == exponential[t - 5]
    for t in (12, 13, 29):
        assert ours[t] == step[t - 12]


def test_sequential_agrees_with_torch_where_torch_is_right():
    spec = {"type": "sequential", "schedules": [LINEAR, EXPONENTIAL], "milestones": [5]}
    theirs = torch_lrs(
        lambda o: sched.SequentialLR(
            o, [sched.LinearLR(o, 0.1, total_iters=5), sched.ExponentialLR(o, 0.9)], [5]
        ),
        steps=40,
    )
    assert_rates(schedule_lrs(spec, LR, 40), theirs)


def test_sequential_milestone_zero_skips_the_first_schedule():
    spec = {"type": "sequential", "schedules": [LINEAR, EXPONENTIAL], "milestones": [0]}
    assert schedule_lrs(spec, LR, 20) == schedule_lrs(EXPONENTIAL, LR, 20)


def test_sequential_nests():
    inner = {"type": "sequential", "schedules": [LINEAR, STEP], "milestones": [5]}
    outer = {"type": "sequential", "schedules": [EXPONENTIAL, inner], "milestones": [3]}
    ours = schedule_lrs(outer, LR, 20)
    inner_lrs = schedule_lrs(inner, LR, 20)
    assert ours[:3] == schedule_lrs(EXPONENTIAL, LR, 3)
    assert ours[3:] == inner_lrs[:17]
    assert ours[8] == schedule_lrs(STEP, LR, 1)[0]  # inner milestone 5 is outer step 3 + 5


def test_sequential_is_pure_so_resume_needs_nothing():
    spec = {"type": "sequential", "schedules": [LINEAR, EXPONENTIAL], "milestones": [5]}
    built = build_schedule(spec)
    assert built.init() == {}
    assert built.rate(17, LR, {}) == schedule_lrs(spec, LR, 18)[17]


# -------------------------------------------------------------------------------------------
# reduce_on_plateau
# -------------------------------------------------------------------------------------------


def _losses(seed, n=400):
    """Noisy losses with long plateaus, so every rule of the scheduler is exercised."""
    rng = np.random.default_rng(seed)
    trend = np.repeat(np.linspace(1.0, 0.2, n // 40), 40)
    return list(trend + 0.01 * rng.standard_normal(n))


PLATEAU_CASES = [
    {},
    {"patience": 3, "factor": 0.5},
    {"patience": 2, "cooldown": 4, "factor": 0.5, "min_lr": 0.02},
    {"patience": 0, "threshold": 0.05, "threshold_mode": "abs", "factor": 0.7},
    {"mode": "max", "patience": 3, "threshold": 0.01, "factor": 0.3, "min_lr": 1e-3},
    {"mode": "max", "patience": 5, "threshold_mode": "abs", "cooldown": 2},
]


@pytest.mark.parametrize("fields", PLATEAU_CASES, ids=[str(f) for f in PLATEAU_CASES])
def test_reduce_on_plateau_matches_torch(fields):
    """Two groups (lr 0.1 and 0.05): each reaches its own floor, as in torch."""
    losses = _losses(len(fields))
    kwargs = {k: v for k, v in fields.items()}
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.1)
    scheduler = sched.ReduceLROnPlateau(optimizer, **kwargs)
    built = build_schedule({"type": "reduce_on_plateau", **fields})
    state = built.init()
    for t, loss in enumerate(losses):
        assert built.rate(t, 0.1, state) == optimizer.param_groups[0]["lr"]
        assert built.rate(t, 0.05, state) == optimizer.param_groups[1]["lr"]
        optimizer.step()
        scheduler.step(loss)
        state = built.observe(t, loss, state)
    assert state["num_reductions"] > 0


def test_reduce_on_plateau_in_the_engine_is_fed_after_the_update():
    """torch's order, `opt.step(); sched.step(loss)`: the loss of step t sets η_{t+1}."""
    losses = _losses(9, 120)
    fields = {"patience": 2, "factor": 0.5}
    tensor = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    reference = torch.optim.SGD([tensor], lr=0.1, momentum=0.9)
    scheduler = sched.ReduceLROnPlateau(reference, **fields)
    optimizer = Optimizer(
        {
            "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
            "schedule": {"type": "reduce_on_plateau", **fields},
        },
        ["w"],
    )
    params = {"w": np.zeros(3)}
    state = optimizer.init(params)
    rng = np.random.default_rng(0)
    for loss in losses:
        grad = rng.standard_normal(3)
        tensor.grad = torch.tensor(grad)
        rate = reference.param_groups[0]["lr"]
        assert optimizer.lr(state) == rate
        reference.step()
        scheduler.step(loss)
        assert optimizer.step(params, state, {"w": grad}, loss=loss).lr == rate
    np.testing.assert_allclose(params["w"], tensor.detach().numpy(), rtol=1e-12)
    assert optimizer.lr(state) < 0.1


def test_reduce_on_plateau_after_warmup_is_fed_only_once_active():
    spec = {
        "type": "warmup",
        "warmup_steps": 5,
        "then": {"type": "reduce_on_plateau", "patience": 0, "factor": 0.5},
    }
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 1.0}, "schedule": spec}, ["w"])
    params = {"w": np.zeros(1)}
    state = optimizer.init(params)
    rates = []
    for _ in range(5):  # warm-up: rising losses are not counted
        rates.append(optimizer.step(params, state, {"w": np.ones(1)}, loss=1.0 + state.step).lr)
    assert rates == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert state.schedule["num_bad_epochs"] == 0 and "best" not in state.schedule
    optimizer.step(params, state, {"w": np.ones(1)}, loss=10.0)  # first fed loss: the best
    optimizer.step(params, state, {"w": np.ones(1)}, loss=11.0)  # worse, patience 0: reduce
    assert optimizer.lr(state) == 0.5
    optimizer.step(params, state, {"w": np.ones(1)})  # no loss: nothing fed
    assert optimizer.lr(state) == 0.5


def test_reduce_on_plateau_counts_nonfinite_losses_as_bad():
    built = build_schedule({"type": "reduce_on_plateau", "patience": 1})
    state = built.init()
    for loss in (float("nan"), float("-inf"), float("inf")):
        state = built.observe(0, loss, state)
    assert "best" not in state
    assert state["num_reductions"] == 1


# -------------------------------------------------------------------------------------------
# defaults and validation
# -------------------------------------------------------------------------------------------


def test_schedule_defaults_are_the_contracts():
    assert schedule_defaults("linear") == {
        "start_factor": 1.0 / 3,
        "end_factor": 1.0,
        "total_steps": 5,
    }
    assert schedule_defaults("warmup") == {"then": {"type": "constant"}}
    assert schedule_defaults("cosine") == {"min_lr": 0.0}
    assert schedule_defaults("reduce_on_plateau") == {
        "mode": "min",
        "factor": 0.1,
        "patience": 10,
        "threshold": 1e-4,
        "threshold_mode": "rel",
        "cooldown": 0,
        "min_lr": 0.0,
    }
    assert set(SCHEDULES) >= {"constant", "one_cycle", "noam", "sequential"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "cosine"}, "schedule.total_steps"),
        ({"type": "cosine", "total_steps": 0}, "schedule.total_steps"),
        ({"type": "step", "step_size": 0}, "schedule.step_size"),
        ({"type": "multistep", "milestones": [5, 5]}, "schedule.milestones"),
        ({"type": "multistep", "milestones": [5, 3]}, "schedule.milestones"),
        (
            {"type": "piecewise_constant", "boundaries": [3, 2], "values": [1, 2, 3]},
            "schedule.boundaries",
        ),
        ({"type": "piecewise_constant", "boundaries": [3], "values": [1]}, "schedule.values"),
        ({"type": "warmup", "warmup_steps": 0}, "schedule.warmup_steps"),
        (
            {"type": "warmup", "warmup_steps": 2, "then": {"type": "cosine", "total_steps": -1}},
            "schedule.then.total_steps",
        ),
        (
            {"type": "one_cycle", "max_lr": 1, "total_steps": 10, "pct_start": 1.0},
            "schedule.pct_start",
        ),
        ({"type": "one_cycle", "max_lr": 1, "total_steps": 10, "anneal": "exp"}, "schedule.anneal"),
        ({"type": "sequential", "schedules": [LINEAR], "milestones": [3]}, "schedule.milestones"),
        (
            {"type": "sequential", "schedules": [LINEAR, {"type": "nope"}], "milestones": [3]},
            "schedule.schedules.1.type",
        ),
        (
            {
                "type": "sequential",
                "schedules": [LINEAR, {"type": "reduce_on_plateau"}],
                "milestones": [3],
            },
            "schedule.schedules.1.type",
        ),
        (
            {"type": "sequential", "schedules": [LINEAR, LINEAR], "milestones": [4, 2]},
            "schedule.milestones",
        ),
        ({"type": "reduce_on_plateau", "factor": 1.0}, "schedule.factor"),
        ({"type": "reduce_on_plateau", "mode": "up"}, "schedule.mode"),
        ({"type": "reduce_on_plateau", "threshold_mode": "x"}, "schedule.threshold_mode"),
        ({"type": "exponential"}, "schedule.gamma"),
        ({"type": "linear", "total_steps": 2.5}, "schedule.total_steps"),
        ({"type": "noam", "d_model": 0, "warmup_steps": 1}, "schedule.d_model"),
        ({"total_steps": 3}, "schedule.type"),
    ],
)
def test_invalid_schedules_name_their_field(spec, field):
    with pytest.raises(HyperParameterError) as raised:
        Optimizer({"optimizer": {"type": "sgd"}, "schedule": spec}, ["w"])
    assert raised.value.field == field
    with pytest.raises(HyperParameterError):
        schedule_lrs(spec, LR, 3)


def test_preview_validates_lr_and_steps():
    with pytest.raises(HyperParameterError, match="steps"):
        schedule_lrs(None, 0.1, -1)
    with pytest.raises(HyperParameterError, match="lr"):
        schedule_lrs(None, -0.1, 3)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "step", "step_size": 2, "gamma": 1.5},
        {"type": "multistep", "milestones": [3], "gamma": 1.5},
        {"type": "exponential", "gamma": 1.5},
    ],
)
def test_decays_refuse_a_growing_gamma(spec):
    """γ > 1 would overflow a float within some thousand steps (Python raises on it)."""
    with pytest.raises(HyperParameterError) as raised:
        schedule_lrs(spec, LR, 3)
    assert raised.value.field == "schedule.gamma"
