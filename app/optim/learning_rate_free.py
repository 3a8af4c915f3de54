"""The learning-rate-free family: optimizers that choose their own step size.

The lecture's general form θ ← θ − η_t/(σ_t + eps)·m_t still asks for η_t. These rules estimate
it from the run itself, and need no schedule:

- schedule-free (`schedulefree`): SGD or AdamW steps taken on z, a running weighted average x of
  the z's as the weights to evaluate, and the gradient taken at y, between the two;
- Prodigy (`prodigyopt`) and D-Adaptation (`dadaptation`): Adam, SGD or AdaGrad at step size
  d·lr, where d, an estimate of the distance to the solution, only grows;
- DoG (`dog-optimizer`): SGD at η = (largest distance travelled) / sqrt(Σ‖g‖²).

Each follows its authors' package (the field names, defaults and arithmetic of the version the
`reference` extra pins; its logging, distributed-training and implementation switches — `foreach`,
`log_every`, `fsdp_in_use` — change no number and are left out; `maximize` is the contract's, as
for every type). Where a reference's quantity spans tensors, it is a *global*
(`OptimizerState.globals`), named as the reference names it: a Python float there is a 0-d
float64 array here, a counter a 0-d int64, a tensor in the session's dtype. A group's own
quantities are named `<group>.<quantity>` (`optimizer.weight_sum`, `groups.0.rbar`). Globals
start absent and are set by the first step, as the references start theirs.

The sums over tensors decide the step size before any tensor moves, so each rule is one
`GlobalTransformation` over the whole step rather than a chain of per-tensor blocks. Groups are
torch's `param_groups`; a field the reference reads from the first group only is one setting for
the whole session (`SESSION_FIELDS`), and a group may not override it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from app.optim import checks
from app.optim.base import (
    Globals,
    GlobalTransformation,
    GlobalUpdateFn,
    GroupStep,
    HyperParameterError,
    Scratch,
    Slots,
    StepReport,
    StepTensor,
)
from app.optim.gradients import sum_of_squares
from app.optim.transforms import lerp_

# --------------------------------------------------------------------------------------------
# Schedule-free (Defazio et al. 2024; `schedulefree` AdamWScheduleFree, SGDScheduleFree)
# --------------------------------------------------------------------------------------------


def schedule_free_adamw(
    lr: float = 0.0025,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    maximize: bool = False,
) -> GlobalTransformation:
    """Schedule-free AdamW: `schedule_free_sgd`'s three sequences, its step direction g/σ with
    Adam's second moment (slot `exp_avg_sq`) and decoupled decay taken at y:

        v_k = β2·v_{k−1} + (1 − β2)·g²,   σ = sqrt(v_k/(1 − β2^(k+1))) + eps,
        d = g/σ + λ·y,   and the momentum β = β1.
    """
    checks.non_negative("lr", lr)
    beta1, _ = checks.betas("betas", betas)
    _check_schedule_free(beta1, "betas", eps, weight_decay, warmup_steps, r, weight_lr_power)
    checks.flag("maximize", maximize)

    def init(param: np.ndarray) -> Slots:
        return {"z": param.copy(), "exp_avg_sq": np.zeros_like(param)}

    return GlobalTransformation(init, _schedule_free_update(adam=True), _evaluate_at_x(beta1))


def schedule_free_sgd(
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    maximize: bool = False,
) -> GlobalTransformation:
    """Schedule-free SGD: gradient steps on z (slot `z`, from θ_0), the weights to evaluate x
    their weighted average, and θ = y (the stored parameters, where the gradient is taken):

        d = g + λ·y                                   (weight decay at y)
        z_{k+1} = z_k − γ_k·d
        x_{k+1} = (1 − c_{k+1})·x_k + c_{k+1}·z_{k+1}
        y_{k+1} = (1 − β)·z_{k+1} + β·x_{k+1}          (β = momentum)

    computed on y alone, as the reference does:
        y ← lerp(y, z_k, c_{k+1}) + γ_k·(β(1 − c_{k+1}) − 1)·d.
    Its group's globals (`<group>.k`, `.lr_max`, `.weight_sum`) give γ and c:

        γ_k = lr·min(1, (k+1)/warmup_steps)           (the scheduled lr, the step's `lr`)
        lr_max = max_{j≤k} γ_j,   w_k = (k+1)^r · lr_max^weight_lr_power
        weight_sum = Σ_{j≤k} w_j,   c_{k+1} = w_k / weight_sum   (0 while the sum is 0)

    `eval` gives x = lerp(y, z, 1 − 1/β) (the reference's `eval()`).
    """
    checks.non_negative("lr", lr)
    _check_schedule_free(momentum, "momentum", 0.0, weight_decay, warmup_steps, r, weight_lr_power)
    checks.flag("maximize", maximize)

    def init(param: np.ndarray) -> Slots:
        return {"z": param.copy()}

    return GlobalTransformation(init, _schedule_free_update(adam=False), _evaluate_at_x(momentum))


def _check_schedule_free(
    beta: float,
    beta_field: str,
    eps: float,
    weight_decay: float,
    warmup_steps: int,
    r: float,
    weight_lr_power: float,
) -> None:
    if not 0.0 < checks.real(beta_field, beta) < 1.0:
        detail = "must be in (0, 1): the weights to evaluate are y + (1 − 1/β)·(z − y)"
        raise HyperParameterError(beta_field, f"{detail}, got {beta}")
    checks.non_negative("eps", eps)
    checks.non_negative("weight_decay", weight_decay)
    checks.integer("warmup_steps", warmup_steps, low=0)
    checks.non_negative("r", r)
    checks.non_negative("weight_lr_power", weight_lr_power)


def _schedule_free_update(*, adam: bool) -> GlobalUpdateFn:
    def update(groups: Sequence[GroupStep], globals_: Globals) -> StepReport:
        squared, reported = 0.0, []
        for group in groups:
            settings = group.hyperparameters
            k = _integer(globals_, f"{group.name}.k", 0)
            warmup = settings["warmup_steps"]
            lr = group.lr * ((k + 1) / warmup if k < warmup else 1.0)
            lr_max = max(lr, _real(globals_, f"{group.name}.lr_max", -1.0))
            weight = ((k + 1) ** settings["r"]) * (lr_max ** settings["weight_lr_power"])
            weight_sum = _real(globals_, f"{group.name}.weight_sum", 0.0) + weight
            average = weight / weight_sum if weight_sum else 0.0
            if adam:
                beta, beta2 = settings["betas"]
                bias_correction2 = 1 - beta2 ** (k + 1)
            else:
                beta, beta2, bias_correction2 = settings["momentum"], 0.0, 1.0
            for tensor in group.tensors:
                direction = _gradient(tensor, settings)
                if adam:
                    _normalise_by_rms(tensor, direction, beta2, bias_correction2, settings["eps"])
                squared += _schedule_free_tensor(
                    tensor, direction, settings["weight_decay"], lr, beta, average
                )
            globals_[f"{group.name}.k"] = np.array(k + 1, np.int64)
            _store(globals_, **{f"{group.name}.lr_max": lr_max})
            _store(globals_, **{f"{group.name}.weight_sum": weight_sum})
            reported.append(lr)
        return StepReport(reported[0], squared)

    return update


def _normalise_by_rms(
    tensor: StepTensor, grad: np.ndarray, beta2: float, bias_correction2: float, eps: float
) -> None:
    """g ← g / (sqrt(v/(1 − β2^(k+1))) + eps), v = `exp_avg_sq` updated with g first."""
    temp, square_avg = tensor.ctx.scratch.temp, tensor.slots["exp_avg_sq"]
    _accumulate_squares(square_avg, grad, beta2, 1 - beta2, temp)
    denominator = np.sqrt(np.divide(square_avg, bias_correction2, out=temp), out=temp)
    denominator += eps
    grad /= denominator


def _schedule_free_tensor(
    tensor: StepTensor,
    direction: np.ndarray,
    weight_decay: float,
    lr: float,
    beta: float,
    average: float,
) -> float:
    """y ← lerp(y, z, c) + γ·(β(1 − c) − 1)·d,  z ← z − γ·d  (d with decay at y); ‖Δy‖²."""
    y, z, scratch = tensor.ctx.param, tensor.slots["z"], tensor.ctx.scratch
    if weight_decay != 0:
        _add_scaled(direction, y, weight_decay, scratch.temp)
    new_y = scratch.work
    np.copyto(new_y, y)
    lerp_(new_y, z, average, scratch.temp)
    _add_scaled(new_y, direction, lr * (beta * (1 - average) - 1), scratch.temp)
    _add_scaled(z, direction, -lr, scratch.temp)
    return _commit(y, new_y, scratch.temp)


def _evaluate_at_x(beta: float) -> Callable[[np.ndarray, Slots], np.ndarray]:
    """x = lerp(y, z, 1 − 1/β): the weights to evaluate, from y (θ) and z."""

    def evaluate(param: np.ndarray, slots: Slots) -> np.ndarray:
        x = param.copy()
        if "z" in slots:
            lerp_(x, slots["z"], 1 - 1 / beta, np.empty_like(x))
        return x

    return evaluate


# --------------------------------------------------------------------------------------------
# Prodigy (Mishchenko & Defazio 2024; `prodigyopt` Prodigy)
# --------------------------------------------------------------------------------------------


def prodigy(
    lr: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decouple: bool = True,
    use_bias_correction: bool = False,
    safeguard_warmup: bool = False,
    d0: float = 1e-6,
    d_coef: float = 1.0,
    growth_rate: float | None = None,
    slice_p: int = 1,
    maximize: bool = False,
) -> GlobalTransformation:
    """Adam at the step size d·lr, d estimated over all tensors (slots `exp_avg` — none when
    β1 = 0 —, `exp_avg_sq`, `s`, `p0`; globals `d`, `d_max`, `d_numerator`, `k`):

        dlr = d·lr·(sqrt(1 − β2^(k+1))/(1 − β1^(k+1)) if use_bias_correction else 1)
        m ← β1·m + d(1 − β1)·g,   v ← β2·v + d²(1 − β2)·g²
        d_numerator ← β3·d_numerator + (d/d0)·dlr·Σ_tensors ⟨g, p0 − θ⟩      (β3 = sqrt(β2))
        s ← β3·s + (d/d0)·dlr·g   (safeguard_warmup: (d/d0)·d·g),   d_denom = Σ_tensors ‖s‖₁
        d̂ = d_coef·d_numerator/d_denom,   d_max ← max(d_max, d̂),   d ← min(d_max, d·growth_rate)
        θ ← θ − dlr·λ·θ (decouple) − dlr·m/(sqrt(v) + d·eps)

    with d = max(d, d̂) first while d is still d0, and λ·θ added to g instead when not decoupled.
    `p0` is θ_0 and `s` accumulates every `slice_p`-th element only (the reference's memory
    saving). A group with lr 0 sits out the sums; other groups must share the session's lr. A
    step with d_denom = 0 (no gradient yet) moves nothing, as the reference returns early.
    `growth_rate` None is the reference's inf.
    """
    _check_d_estimate(lr, d0, growth_rate, weight_decay, maximize)
    checks.positive("eps", eps)
    beta1, _ = checks.betas("betas", betas)
    if beta3 is not None:
        checks.fraction("beta3", beta3, closed=True)
    checks.flag("decouple", decouple)
    checks.flag("use_bias_correction", use_bias_correction)
    checks.flag("safeguard_warmup", safeguard_warmup)
    checks.non_negative("d_coef", d_coef)
    checks.integer("slice_p", slice_p, low=1)

    def init(param: np.ndarray) -> Slots:
        slots = {"s": np.zeros_like(_sliced(param, slice_p)), "p0": _sliced(param, slice_p).copy()}
        if beta1 > 0:
            slots["exp_avg"] = np.zeros_like(param)
        slots["exp_avg_sq"] = np.zeros_like(param)
        return slots

    return GlobalTransformation(init, _prodigy_update)


def _prodigy_update(groups: Sequence[GroupStep], globals_: Globals) -> StepReport:
    session = groups[0].hyperparameters
    beta1, beta2 = session["betas"]
    beta3 = math.sqrt(beta2) if session["beta3"] is None else session["beta3"]
    d0, k = session["d0"], _integer(globals_, "k", 0)
    d, d_max = _real(globals_, "d", d0), _real(globals_, "d_max", d0)
    lr = max(group.lr for group in groups)
    dlr = d * lr * _adam_bias_correction(session, beta1, beta2, k)
    decouple, betas = session["decouple"], (beta1, beta2, beta3)
    d_numerator = _real(globals_, "d_numerator", 0.0) * beta3
    delta_numerator = d_denom = 0.0
    for group in groups:
        settings = group.hyperparameters
        for tensor in group.tensors:
            grad = _gradient(tensor, settings)
            if not decouple:
                _add_weight_decay(tensor, grad, settings["weight_decay"])
            if group.lr > 0:
                numerator, l1 = _prodigy_moments(tensor, grad, settings, (d, dlr), betas)
                delta_numerator += numerator
                d_denom += l1
    if d_denom == 0:
        return StepReport(dlr, 0.0)
    d_numerator += delta_numerator
    d_hat = session["d_coef"] * d_numerator / d_denom
    if d == d0:
        d = max(d, d_hat)
    d_max = max(d_max, d_hat)
    d = _grow(d_max, d, session["growth_rate"])
    _store(globals_, d=d, d_max=d_max, d_numerator=d_numerator)
    globals_["k"] = np.array(k + 1, np.int64)
    squared = 0.0
    for group in groups:
        settings = group.hyperparameters
        decay = settings["weight_decay"] if decouple else 0.0
        for tensor in group.tensors:
            moment = tensor.slots["exp_avg"] if beta1 > 0 else tensor.ctx.grad
            rate = dlr if beta1 > 0 else dlr * d
            squared += _adam_step(tensor, moment, d * settings["eps"], rate, decay * dlr)
    return StepReport(dlr, squared)


def _prodigy_moments(
    tensor: StepTensor,
    grad: np.ndarray,
    settings: Mapping[str, Any],
    step_size: tuple[float, float],
    betas: tuple[float, float, float],
) -> tuple[float, float]:
    """Prodigy's first pass over one tensor: the moments and `s` updated with (d, dlr); returns
    its term of the numerator, (d/d0)·dlr·⟨g, p0 − θ⟩, and ‖s‖₁."""
    (d, dlr), (beta1, beta2, beta3) = step_size, betas
    slots, temp = tensor.slots, tensor.ctx.scratch.temp
    d0, slice_p = settings["d0"], settings["slice_p"]
    _restart_if_resliced(tensor, slice_p)
    sliced_grad = _sliced(grad, slice_p)
    distance = np.subtract(slots["p0"], _sliced(tensor.ctx.param, slice_p))
    numerator = (d / d0) * dlr * _dot(sliced_grad, distance)
    if beta1 > 0:
        slots["exp_avg"] *= beta1
        _add_scaled(slots["exp_avg"], grad, d * (1 - beta1), temp)
    _accumulate_squares(slots["exp_avg_sq"], grad, beta2, d * d * (1 - beta2), temp)
    s = slots["s"]
    s *= beta3
    s += sliced_grad * ((d / d0) * (d if settings["safeguard_warmup"] else dlr))
    return numerator, _l1(s)


def _restart_if_resliced(tensor: StepTensor, slice_p: int) -> None:
    """`slice_p` changed mid-run: `s` and `p0` start afresh at this slicing (p0 from θ now)."""
    sliced = _sliced(tensor.ctx.param, slice_p)
    if tensor.slots["s"].shape != sliced.shape:
        tensor.slots["s"] = np.zeros_like(sliced)
        tensor.slots["p0"] = sliced.copy()


def _sliced(array: np.ndarray, slice_p: int) -> np.ndarray:
    """Every `slice_p`-th element of the flattened array (a view)."""
    return array.reshape(-1)[::slice_p]


# --------------------------------------------------------------------------------------------
# D-Adaptation (Defazio & Mishchenko 2023; `dadaptation` DAdaptAdam, DAdaptSGD, DAdaptAdaGrad)
# --------------------------------------------------------------------------------------------


def dadapt_adam(
    lr: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decouple: bool = False,
    use_bias_correction: bool = False,
    d0: float = 1e-6,
    growth_rate: float | None = None,
    layer_scale: float = 1.0,
    maximize: bool = False,
) -> GlobalTransformation:
    """Adam with D-Adapted step size (slots `exp_avg`, `exp_avg_sq`, `s`; globals `d`,
    `numerator_weighted`, `k`), r a group's `layer_scale`:

        dlr = d·lr·(sqrt(1 − β2^(k+1))/(1 − β1^(k+1)) if use_bias_correction else 1)
        numerator_weighted ← √β2·numerator_weighted
                             + (1 − √β2)·Σ_tensors r·dlr·⟨g, s/(sqrt(v) + eps)⟩   (v before g)
        m ← β1·m + r·dlr(1 − β1)·g,   v ← β2·v + (1 − β2)·g²,   s ← √β2·s + dlr(1 − √β2)·g
        d̂ = numerator_weighted / ((1 − √β2)·Σ_tensors r·‖s‖₁),   d ← max(d, min(d̂, d·growth_rate))
        θ ← θ − dlr·λ·θ (decouple) − m/(sqrt(v) + eps)

    (λ·θ added to g when not decoupled). A group with lr 0 sits out; others share the session's
    lr. A step with Σ‖s‖₁ = 0 moves nothing, as the reference returns early.
    """
    _check_d_estimate(lr, d0, growth_rate, weight_decay, maximize)
    checks.positive("eps", eps)
    checks.betas("betas", betas)
    checks.flag("decouple", decouple)
    checks.flag("use_bias_correction", use_bias_correction)
    checks.non_negative("layer_scale", layer_scale)

    def init(param: np.ndarray) -> Slots:
        return {
            "s": np.zeros_like(param),
            "exp_avg": np.zeros_like(param),
            "exp_avg_sq": np.zeros_like(param),
        }

    return GlobalTransformation(init, _dadapt_adam_update)


def _dadapt_adam_update(groups: Sequence[GroupStep], globals_: Globals) -> StepReport:
    session = groups[0].hyperparameters
    beta1, beta2 = session["betas"]
    k, d = _integer(globals_, "k", 0), _real(globals_, "d", session["d0"])
    lr = max(group.lr for group in groups)
    dlr = d * lr * _adam_bias_correction(session, beta1, beta2, k)
    sqrt_beta2 = beta2**0.5
    decouple = session["decouple"]
    numerator_acum = sk_l1 = 0.0
    for group in groups:
        settings = group.hyperparameters
        scale = settings["layer_scale"]
        for tensor in group.tensors:
            grad = _gradient(tensor, settings)
            slots, temp = tensor.slots, tensor.ctx.scratch.temp
            if not decouple:
                _add_weight_decay(tensor, grad, settings["weight_decay"])
            if group.lr <= 0:
                continue
            denominator = _sqrt_plus(slots["exp_avg_sq"], settings["eps"], temp)
            weighted = np.divide(slots["s"], denominator, out=temp)
            numerator_acum += scale * dlr * _dot(grad, weighted)
            slots["exp_avg"] *= beta1
            _add_scaled(slots["exp_avg"], grad, scale * dlr * (1 - beta1), temp)
            _accumulate_squares(slots["exp_avg_sq"], grad, beta2, 1 - beta2, temp)
            slots["s"] *= sqrt_beta2
            _add_scaled(slots["s"], grad, dlr * (1 - sqrt_beta2), temp)
            sk_l1 += scale * _l1(slots["s"], temp)
    numerator_weighted = (
        sqrt_beta2 * _real(globals_, "numerator_weighted", 0.0) + (1 - sqrt_beta2) * numerator_acum
    )
    if sk_l1 == 0:
        return StepReport(dlr, 0.0)
    if lr > 0:
        d_hat = numerator_weighted / ((1 - sqrt_beta2) * sk_l1)
        d = max(d, _grow(d_hat, d, session["growth_rate"]))
    _store(globals_, d=d, numerator_weighted=numerator_weighted)
    globals_["k"] = np.array(k + 1, np.int64)
    squared = 0.0
    for group in groups:
        settings = group.hyperparameters
        decay = settings["weight_decay"] if decouple else 0.0
        for tensor in group.tensors:
            moment = tensor.slots["exp_avg"]
            squared += _adam_step(tensor, moment, settings["eps"], 1.0, decay * dlr)
    return StepReport(dlr, squared)


def dadapt_sgd(
    lr: float = 1.0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    d0: float = 1e-6,
    growth_rate: float | None = None,
    maximize: bool = False,
) -> GlobalTransformation:
    """SGD with D-Adapted step size, in its dual-averaging form (slots `s`, `x0`; globals `d`,
    `numerator_weighted`, `g0_norm`), ck = 1 − momentum:

        g0_norm = ‖g_0‖ over all tensors (the first step's gradient, before weight decay)
        dlr = d·lr/g0_norm
        numerator_weighted ← numerator_weighted + dlr·Σ_tensors ⟨g, s⟩,   s ← s + dlr·g
        d̂ = 2·numerator_weighted/sqrt(Σ_tensors ‖s‖²),   d ← max(d, min(d̂, d·growth_rate))
        z = x0 − s,   θ ← (1 − ck)·θ + ck·z

    (g includes λ·θ, with the session's λ). The reference's `z` is not kept: it is x0 − s.
    A group with lr 0 sits out the sums; others share the session's lr. Where the reference
    divides by zero — a first gradient of norm 0, or Σ‖s‖² = 0 — the step moves nothing (and
    a first step is tried again with the next gradient).
    """
    _check_d_estimate(lr, d0, growth_rate, weight_decay, maximize)
    checks.fraction("momentum", momentum)

    def init(param: np.ndarray) -> Slots:
        return {"s": np.zeros_like(param), "x0": param.copy()}

    return GlobalTransformation(init, _dadapt_sgd_update)


def _dadapt_sgd_update(groups: Sequence[GroupStep], globals_: Globals) -> StepReport:
    session = groups[0].hyperparameters
    decay, ck = session["weight_decay"], 1 - session["momentum"]
    lr = max(group.lr for group in groups)
    d = _real(globals_, "d", session["d0"])
    numerator_weighted = _real(globals_, "numerator_weighted", 0.0)
    grads = [
        (group, tensor, _gradient(tensor, group.hyperparameters))
        for group in groups
        for tensor in group.tensors
    ]
    if "g0_norm" in globals_:
        g0_norm = float(globals_["g0_norm"])
    else:
        g0_norm = math.sqrt(sum(sum_of_squares(grad) for group, _, grad in grads if group.lr > 0))
        if g0_norm == 0:
            return StepReport(0.0, 0.0)
    dlr = d * lr / g0_norm
    sk_sq = 0.0
    for group, tensor, grad in grads:
        _add_weight_decay(tensor, grad, decay)
        if group.lr > 0:
            s = tensor.slots["s"]
            numerator_weighted += dlr * _dot(grad, s)
            _add_scaled(s, grad, dlr, tensor.ctx.scratch.temp)
            sk_sq += sum_of_squares(s)
    if sk_sq == 0:
        return StepReport(dlr, 0.0)
    if lr > 0:
        d_hat = 2 * numerator_weighted / math.sqrt(sk_sq)
        d = max(d, _grow(d_hat, d, session["growth_rate"]))
    _store(globals_, d=d, numerator_weighted=numerator_weighted, g0_norm=g0_norm)
    squared = 0.0
    for _, tensor, _ in grads:
        z = np.subtract(tensor.slots["x0"], tensor.slots["s"], out=tensor.ctx.scratch.work)
        squared += _mix_toward(tensor, z, ck, always_mix=True)
    return StepReport(dlr, squared)


def dadapt_adagrad(
    lr: float = 1.0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
    d0: float = 1e-6,
    growth_rate: float | None = None,
    maximize: bool = False,
) -> GlobalTransformation:
    """AdaGrad with D-Adapted step size, in its dual-averaging form (slots `alphak` from 1e-6,
    `sk`, `x0`; globals `d`, `gsq_weighted`, `sksq_weighted`, `skl1`), dlr = d·lr,
    ρ = sqrt(alphak) + eps:

        alphak ← alphak + g²,   sk ← sk + dlr·g
        gsq_weighted ← gsq_weighted + dlr²·Σ_tensors Σ g²/ρ
        sksq_weighted = Σ_tensors Σ sk²/ρ,   skl1 = Σ_tensors ‖sk‖₁   (kept as running sums of
                                                              each step's change, as the reference)
        d̂ = (sksq_weighted − gsq_weighted)/skl1,   d ← max(d, min(d̂, d·growth_rate))
        z = x0 − sk/ρ,   θ ← momentum·θ + (1 − momentum)·z   (θ ← z when momentum = 0)

    (g includes λ·θ, with the group's λ). lr is the session's: the reference reads the first
    group's. A step with skl1 = 0 moves nothing, as the reference returns early.
    """
    _check_d_estimate(lr, d0, growth_rate, weight_decay, maximize)
    checks.fraction("momentum", momentum)
    checks.positive("eps", eps)

    def init(param: np.ndarray) -> Slots:
        return {"alphak": np.full_like(param, 1e-6), "sk": np.zeros_like(param), "x0": param.copy()}

    return GlobalTransformation(init, _dadapt_adagrad_update)


def _dadapt_adagrad_update(groups: Sequence[GroupStep], globals_: Globals) -> StepReport:
    session = groups[0].hyperparameters
    lr, momentum = groups[0].lr, session["momentum"]
    d = _real(globals_, "d", session["d0"])
    dlr = d * lr
    g_sq = sksq_weighted_change = skl1_change = 0.0
    for group in groups:
        settings = group.hyperparameters
        eps = settings["eps"]
        for tensor in group.tensors:
            grad = _gradient(tensor, settings)
            slots, scratch = tensor.slots, tensor.ctx.scratch
            _add_weight_decay(tensor, grad, settings["weight_decay"])
            sk, alphak = slots["sk"], slots["alphak"]
            old_sksq_weighted = _weighted_squares(sk, alphak, eps, scratch)
            old_skl1 = _l1(sk, scratch.temp)
            alphak += np.multiply(grad, grad, out=scratch.temp)
            g_sq += _weighted_squares(grad, alphak, eps, scratch)
            _add_scaled(sk, grad, dlr, scratch.temp)
            sksq_weighted_change += _weighted_squares(sk, alphak, eps, scratch) - old_sksq_weighted
            skl1_change += _l1(sk, scratch.temp) - old_skl1
    sksq_weighted = _real(globals_, "sksq_weighted", 0.0) + sksq_weighted_change
    skl1 = _real(globals_, "skl1", 0.0) + skl1_change
    if skl1 == 0:
        return StepReport(dlr, 0.0)
    gsq_weighted = _real(globals_, "gsq_weighted", 0.0) + dlr * dlr * g_sq
    if lr > 0:
        d_hat = (sksq_weighted - gsq_weighted) / skl1
        d = max(d, _grow(d_hat, d, session["growth_rate"]))
    _store(globals_, d=d, gsq_weighted=gsq_weighted, sksq_weighted=sksq_weighted, skl1=skl1)
    squared = 0.0
    for group in groups:
        eps = group.hyperparameters["eps"]
        for tensor in group.tensors:
            slots, scratch = tensor.slots, tensor.ctx.scratch
            root = _sqrt_plus(slots["alphak"], eps, scratch.temp)
            z = np.subtract(slots["x0"], np.divide(slots["sk"], root, out=root), out=scratch.work)
            squared += _mix_toward(tensor, z, 1 - momentum, always_mix=momentum != 0)
    return StepReport(dlr, squared)


def _weighted_squares(array: np.ndarray, alphak: np.ndarray, eps: float, scratch: Scratch) -> float:
    """Σ x²/(sqrt(alphak) + eps) in the tensor's dtype."""
    root = _sqrt_plus(alphak, eps, scratch.temp)
    squares = np.multiply(array, array, out=scratch.work)
    return float(np.sum(np.divide(squares, root, out=squares)))


# --------------------------------------------------------------------------------------------
# DoG and LDoG (Ivgi, Hinder & Carmon 2023; `dog-optimizer` DoG, LDoG)
# --------------------------------------------------------------------------------------------


def dog(
    reps_rel: float = 1e-6,
    lr: float = 1.0,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    init_eta: float | None = None,
    maximize: bool = False,
) -> GlobalTransformation:
    """Distance over Gradients: SGD at η = distance travelled / root of the gradients' squared
    norms, each group's tensors taken as one vector (slot `init_buffer`, θ_0; the group's
    globals `<group>.rbar`, `<group>.G`, 0-d in the session's dtype):

        rbar_0 = reps_rel·(1 + ‖θ_0‖),   rbar_t = max(rbar_{t−1}, ‖θ_t − θ_0‖)
        G_0 = ‖g_0‖² + eps,               G_t = G_{t−1} + ‖g_t‖²
        η_t = lr·rbar_t/sqrt(G_t)   (the step's `lr`; η_0 = init_eta where given)
        θ ← θ − η_t·g                (g includes λ·θ)

    `init_eta` sets rbar_0 = 0 (the reference's constructor sets reps_rel to 0 with it): here in
    any group whose `init_eta` is set. Every tensor's gradient is needed in each step (the
    reference's norms take them all), so a partial step is refused.
    """
    _check_dog(reps_rel, lr, weight_decay, eps, init_eta, maximize)
    return GlobalTransformation(_dog_init, _dog_update(layer_wise=False), partial_steps=False)


def ldog(
    reps_rel: float = 1e-6,
    lr: float = 1.0,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    init_eta: float | None = None,
    maximize: bool = False,
) -> GlobalTransformation:
    """Layer-wise DoG: `dog`'s rule for each tensor on its own; `<group>.rbar` and `<group>.G`
    are 1-d, one entry per tensor of the group (in parameter order), and so is η. The step's
    `lr` is the mean η over the first group's elements (each tensor weighted by its size)."""
    _check_dog(reps_rel, lr, weight_decay, eps, init_eta, maximize)
    return GlobalTransformation(_dog_init, _dog_update(layer_wise=True), partial_steps=False)


def _check_dog(
    reps_rel: float,
    lr: float,
    weight_decay: float,
    eps: float,
    init_eta: float | None,
    maximize: bool,
) -> None:
    checks.positive("reps_rel", reps_rel)
    checks.positive("lr", lr)
    checks.non_negative("weight_decay", weight_decay)
    checks.positive("eps", eps)
    if init_eta is not None:
        checks.positive("init_eta", init_eta)
    checks.flag("maximize", maximize)


def _dog_init(param: np.ndarray) -> Slots:
    return {"init_buffer": param.copy()}


def _dog_update(*, layer_wise: bool) -> GlobalUpdateFn:
    def update(groups: Sequence[GroupStep], globals_: Globals) -> StepReport:
        squared, reported = 0.0, []
        for group in groups:
            if not group.tensors:
                continue
            settings = group.hyperparameters
            grads = [_gradient(tensor, settings) for tensor in group.tensors]
            for tensor, grad in zip(group.tensors, grads, strict=True):
                _add_weight_decay(tensor, grad, settings["weight_decay"])
            etas = _dog_step_sizes(group, grads, globals_, layer_wise)
            for tensor, grad, eta in zip(group.tensors, grads, etas, strict=True):
                param, scratch = tensor.ctx.param, tensor.ctx.scratch
                np.copyto(scratch.work, param)
                _add_scaled(scratch.work, grad, -eta, scratch.temp)
                squared += _commit(param, scratch.work, scratch.temp)
            reported.append(_mean_step_size(group, etas) if layer_wise else float(etas[0]))
        return StepReport(reported[0], squared)

    return update


def _dog_step_sizes(
    group: GroupStep, grads: Sequence[np.ndarray], globals_: Globals, layer_wise: bool
) -> list[np.generic]:
    """η for each of the group's tensors (one shared value for DoG), after updating the group's
    `rbar` and `G` in the session's dtype as the reference does with its tensors."""
    settings, params = group.hyperparameters, [tensor.ctx.param for tensor in group.tensors]
    dtype = params[0].dtype.type
    combine = _identity if layer_wise else _norm_of_norms
    squares = np.array([sum_of_squares(grad) for grad in grads], dtype)
    first = f"{group.name}.rbar" not in globals_
    if first:
        reps_rel = 0.0 if settings["init_eta"] is not None else settings["reps_rel"]
        rbar = dtype(reps_rel) * (1 + combine(_norms(params, dtype)))
        total = squares if layer_wise else squares.sum(dtype=dtype)
        gradient_sum = total + dtype(settings["eps"])
    else:
        _check_fitted(globals_, group, squares.shape if layer_wise else ())
        distances = [tensor.ctx.param - tensor.slots["init_buffer"] for tensor in group.tensors]
        rbar = np.maximum(globals_[f"{group.name}.rbar"], combine(_norms(distances, dtype)))
        total = squares if layer_wise else squares.sum(dtype=dtype)
        gradient_sum = globals_[f"{group.name}.G"] + total
    globals_[f"{group.name}.rbar"] = np.asarray(rbar, dtype)
    globals_[f"{group.name}.G"] = np.asarray(gradient_sum, dtype)
    eta = np.asarray(dtype(group.lr) * rbar / np.sqrt(gradient_sum), dtype)
    if first and settings["init_eta"] is not None:
        eta = np.full_like(eta, settings["init_eta"])
    return list(eta.reshape(-1)) if layer_wise else [eta[()]] * len(params)


def _mean_step_size(group: GroupStep, etas: Sequence[np.generic]) -> float:
    """LDoG's η over the group's elements: each tensor's η weighted by its size."""
    sizes = [tensor.ctx.param.size for tensor in group.tensors]
    return math.fsum(size * float(eta) for size, eta in zip(sizes, etas, strict=True)) / sum(sizes)


def _check_fitted(globals_: Globals, group: GroupStep, shape: tuple[int, ...]) -> None:
    """A group's stored `rbar` and `G` must have one entry per tensor (a programming error
    otherwise: the state was not fitted to a changed `groups`)."""
    for quantity in ("rbar", "G"):
        stored = globals_[f"{group.name}.{quantity}"]
        if stored.shape != shape:
            raise ValueError(
                f"global {group.name}.{quantity} has shape {stored.shape}, the group needs {shape}"
            )


def _norms(arrays: Sequence[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    """‖a‖ of each array, in the session's dtype."""
    return np.sqrt(np.array([sum_of_squares(array) for array in arrays], dtype))


def _norm_of_norms(norms: np.ndarray) -> np.generic:
    """‖(‖a_1‖, …, ‖a_n‖)‖: the norm of all the arrays as one vector, torch.stack(...).norm()."""
    return np.sqrt(np.sum(norms * norms, dtype=norms.dtype))


def _identity(norms: np.ndarray) -> np.ndarray:
    return norms


# --------------------------------------------------------------------------------------------
# Shared arithmetic, in torch's order of operations
# --------------------------------------------------------------------------------------------


def _gradient(tensor: StepTensor, settings: Mapping[str, Any]) -> np.ndarray:
    """The tensor's gradient (the engine's copy, which the rule may write into), negated for
    `maximize`."""
    grad = tensor.ctx.grad
    if settings["maximize"]:
        np.negative(grad, out=grad)
    return grad


def _adam_bias_correction(session: Mapping[str, Any], beta1: float, beta2: float, k: int) -> float:
    """sqrt(1 − β2^(k+1))/(1 − β1^(k+1)) with use_bias_correction, else 1."""
    if not session["use_bias_correction"]:
        return 1
    return ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))


def _adam_step(
    tensor: StepTensor, moment: np.ndarray, eps: float, rate: float, shrink: float
) -> float:
    """θ ← θ − shrink·θ, then θ ← θ − rate·m/(sqrt(v) + eps) (torch's `addcdiv_`); ‖Δθ‖²."""
    param, scratch = tensor.ctx.param, tensor.ctx.scratch
    new = scratch.work
    np.copyto(new, param)
    if shrink != 0:
        _add_scaled(new, param, -shrink, scratch.temp)
    denominator = _sqrt_plus(tensor.slots["exp_avg_sq"], eps, scratch.temp)
    step = np.multiply(moment, -rate, out=tensor.ctx.grad)  # the gradient is spent by now
    new += np.divide(step, denominator, out=step)
    return _commit(param, new, scratch.temp)


def _mix_toward(tensor: StepTensor, z: np.ndarray, ck: float, *, always_mix: bool) -> float:
    """θ ← (1 − ck)·θ + ck·z (torch's `mul_(1 − ck).add_(z, alpha=ck)`), or θ ← z; ‖Δθ‖².
    `z` may be the scratch's work buffer."""
    param, temp = tensor.ctx.param, tensor.ctx.scratch.temp
    if always_mix:
        mixed = np.multiply(z, ck, out=z)
        z = np.add(np.multiply(param, 1 - ck, out=temp), mixed, out=z)
    return _commit(param, z, temp)


def _commit(param: np.ndarray, new: np.ndarray, temp: np.ndarray) -> float:
    """θ ← new; returns ‖new − θ‖²."""
    squared = sum_of_squares(np.subtract(new, param, out=temp))
    np.copyto(param, new)
    return squared


def _add_weight_decay(tensor: StepTensor, grad: np.ndarray, weight_decay: float) -> None:
    """g ← g + λ·θ (coupled weight decay; none when λ = 0, as the references skip it)."""
    if weight_decay != 0:
        _add_scaled(grad, tensor.ctx.param, weight_decay, tensor.ctx.scratch.temp)


def _accumulate_squares(
    square_avg: np.ndarray, grad: np.ndarray, decay: float, weight: float, temp: np.ndarray
) -> None:
    """v ← decay·v + (weight·g)·g (torch's `mul_(decay).addcmul_(g, g, value=weight)`)."""
    square_avg *= decay
    square_avg += np.multiply(np.multiply(grad, weight, out=temp), grad, out=temp)


def _add_scaled(target: np.ndarray, source: np.ndarray, factor: Any, temp: np.ndarray) -> None:
    """target ← target + factor·source (torch's `add_(source, alpha=factor)`), in place."""
    target += np.multiply(source, factor, out=temp)


def _sqrt_plus(array: np.ndarray, eps: float, out: np.ndarray) -> np.ndarray:
    """sqrt(array) + eps, into `out`."""
    root = np.sqrt(array, out=out)
    root += eps
    return root


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """⟨a, b⟩ in the arrays' dtype (torch.dot(...).item()), by einsum as `sum_of_squares`."""
    return float(np.einsum("i,i->", a.reshape(-1), b.reshape(-1)))


def _l1(array: np.ndarray, temp: np.ndarray | None = None) -> float:
    """‖a‖₁ in the array's dtype (torch's `abs().sum().item()`)."""
    return float(np.sum(np.abs(array, out=temp)))


def _grow(limit: float, d: float, growth_rate: float | None) -> float:
    """min(limit, d·growth_rate); growth_rate None is the reference's inf (no limit)."""
    return limit if growth_rate is None else min(limit, d * growth_rate)


def _check_d_estimate(
    lr: float, d0: float, growth_rate: float | None, weight_decay: float, maximize: bool
) -> None:
    """The fields every d-estimating type has: lr ≥ 0, d0 > 0, growth_rate ≥ 1 (or None)."""
    checks.non_negative("lr", lr)
    checks.positive("d0", d0)
    if growth_rate is not None:
        checks.real("growth_rate", growth_rate, low=1.0)
    checks.non_negative("weight_decay", weight_decay)
    checks.flag("maximize", maximize)


def _real(globals_: Globals, name: str, default: float) -> float:
    value = globals_.get(name)
    return default if value is None else float(value)


def _integer(globals_: Globals, name: str, default: int) -> int:
    value = globals_.get(name)
    return default if value is None else int(value)


def _store(globals_: Globals, **values: float) -> None:
    """Python floats of the reference as 0-d float64 arrays."""
    for name, value in values.items():
        globals_[name] = np.array(value, np.float64)


# --------------------------------------------------------------------------------------------
# The family's registry and its groups
# --------------------------------------------------------------------------------------------

LEARNING_RATE_FREE: dict[str, Callable[..., GlobalTransformation]] = {
    "schedule_free_adamw": schedule_free_adamw,
    "schedule_free_sgd": schedule_free_sgd,
    "prodigy": prodigy,
    "dadapt_adam": dadapt_adam,
    "dadapt_sgd": dadapt_sgd,
    "dadapt_adagrad": dadapt_adagrad,
    "dog": dog,
    "ldog": ldog,
}
"""type → factory; the factory's keyword parameters are the type's fields."""

SESSION_FIELDS: dict[str, frozenset[str]] = {
    "prodigy": frozenset(
        {"betas", "beta3", "decouple", "use_bias_correction", "d0", "d_coef", "growth_rate"}
    ),
    "dadapt_adam": frozenset({"betas", "decouple", "use_bias_correction", "d0", "growth_rate"}),
    "dadapt_sgd": frozenset({"momentum", "weight_decay", "d0", "growth_rate"}),
    "dadapt_adagrad": frozenset({"lr", "momentum", "d0", "growth_rate"}),
}
"""Fields the reference reads from its first param group only: one value for the session."""

SHARED_LR = frozenset({"prodigy", "dadapt_adam", "dadapt_sgd"})
"""Types whose groups take the session's lr or 0 (the reference raises on any other)."""


def check_group_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any], path: str) -> None:
    """Refuse a group's override the reference would ignore or refuse: a session-wide field
    (`SESSION_FIELDS`), or an lr other than the session's or 0 (`SHARED_LR`)."""
    kind = base["type"]
    for name in overrides:
        if name in SESSION_FIELDS.get(kind, ()):
            raise HyperParameterError(
                f"{path}.{name}",
                f"{kind} takes one {name} for the whole session (its step size spans every "
                "group): set it in the optimizer, not in a group",
            )
    if kind in SHARED_LR and "lr" in overrides and overrides["lr"] not in (0, base["lr"]):
        raise HyperParameterError(
            f"{path}.lr",
            f"{kind} steps every group at one step size d·lr: a group's lr is the optimizer's "
            f"({base['lr']}) or 0 (the group sits out the estimate of d), got {overrides['lr']}",
        )
