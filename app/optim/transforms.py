"""The building blocks, each named for what it does to the running update `u`.

In the general form `θ ← θ − η_t / (σ_t + eps) · m_t`:

- pre-processing: `negate` (maximize), `add_coupled_weight_decay` (L2 added to the gradient);
- m_t, momentum blocks that trace the running update: `trace` (torch's SGD buffer, also
  RMSprop's), `ema` (Adam's first moment), `nadam_momentum`, `lion_interpolation`;
  `scale_by_bias_correction` divides by `1 − β^t`;
- σ_t, blocks that accumulate from the gradient `ctx.grad` and divide the running update:
  `scale_by_rss` (Adagrad: root of the sum or the mean of g²), `scale_by_rms` (an exponential
  moving average of g², with Adam's bias correction, AMSGrad's running maximum, RMSprop's
  centering as options), `scale_by_rectified_rms` (RAdam), `scale_by_inf_norm` (Adamax),
  `scale_by_sign` (Lion: σ_t = |u|), `scale_by_delta_rms` (Adadelta's numerator);
- `scale_by_learning_rate` (−η_t), then `add_decayed_weights` (decoupled decay, AdamW's).

The rest of torch.optim's elementwise rules: `scale_by_rprop` (Rprop's sign-based step sizes),
`scale_by_asgd_rate` and `average_iterates` (ASGD: its decaying rate and the average `ax` it
evaluates), `scale_by_sparse_adam` and `scale_by_adam_step_size` (SparseAdam),
`muon_momentum`; `scale` multiplies by a constant. Blocks that read the whole tensor (Adafactor's
factored moments, Muon's orthogonalisation, trust ratios) are in `tensorwise.py`; optax's in
`optax_transforms.py`.

All arithmetic stays in the tensor's dtype: Python-float scalars do not up-cast float32 arrays
(NEP 50). The big arrays are written in place (`out=`) into slots or the tensor's scratch.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from app.optim.base import GradientTransformation, Slots, TensorStep


def negate() -> GradientTransformation:
    """`maximize`: g ← −g (ascent instead of descent)."""

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots, ctx
        return np.negative(updates, out=updates)

    return GradientTransformation(_no_slots, update, preprocess=True)


def add_coupled_weight_decay(weight_decay: float) -> GradientTransformation:
    """L2 regularisation added to the gradient: g ← g + λ·θ (torch's `weight_decay`).

    Every later block, σ-blocks included, sees the decayed gradient.
    """

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        decay = np.multiply(ctx.param, weight_decay, out=ctx.scratch.temp)
        return np.add(updates, decay, out=updates)

    return GradientTransformation(_no_slots, update, preprocess=True)


def trace(
    decay: float,
    dampening: float = 0.0,
    nesterov: bool = False,
    *,
    dampen_first: bool = False,
    slot: str = "momentum_buffer",
) -> GradientTransformation:
    """Heavy-ball momentum (slot `slot`: torch's `momentum_buffer`, optax's `trace`):

        m_t = μ·m_{t−1} + (1 − dampening)·u_t,        u ← m_t
        nesterov:                                     u ← u_t + μ·m_t

    torch's SGD starts the buffer as a copy of the first update (dampening is not applied to
    it); `dampen_first=True` starts from m_0 = 0 instead, as `custom` does. With dampening 0
    the two agree (and are optax's `trace`).
    """

    def init(param: np.ndarray) -> Slots:
        return {slot: np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        buffer = slots[slot]
        if ctx.count == 1 and not dampen_first:
            np.copyto(buffer, updates)
        else:
            buffer *= decay
            if dampening:
                buffer += np.multiply(updates, 1.0 - dampening, out=ctx.scratch.temp)
            else:
                buffer += updates
        if not nesterov:
            return buffer
        look_ahead = np.multiply(buffer, decay, out=ctx.scratch.temp)
        return np.add(updates, look_ahead, out=ctx.scratch.work)

    return GradientTransformation(init, update)


def ema(decay: float, slot: str = "exp_avg") -> GradientTransformation:
    """Exponential moving average of the running update: m_t = β·m_{t−1} + (1 − β)·u_t, u ← m_t.

    Computed as torch's `lerp_(u, 1 − β)`, so the rounding is torch's too.
    """

    def init(param: np.ndarray) -> Slots:
        return {slot: np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        average = slots[slot]
        lerp_(average, updates, 1.0 - decay, ctx.scratch.temp)
        return average

    return GradientTransformation(init, update)


def scale_by_bias_correction(decay: float) -> GradientTransformation:
    """Adam's bias correction of a moving average started at zero: u ← u / (1 − β^t)."""

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        return np.divide(updates, 1.0 - decay**ctx.count, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)


def nadam_momentum(beta1: float, momentum_decay: float) -> GradientTransformation:
    """NAdam's momentum with its warming schedule (slots `exp_avg`, `mu_product`):

        μ_t = β1·(1 − ½·0.96^(t·ψ)),   Π_t = μ_1·…·μ_t
        m_t = β1·m_{t−1} + (1 − β1)·g_t
        u ← (1 − μ_t)/(1 − Π_t)·g_t + μ_{t+1}/(1 − Π_t·μ_{t+1})·m_t

    `mu_product` is a 0-d array in the tensor's dtype (torch keeps it in its default dtype).
    """

    def init(param: np.ndarray) -> Slots:
        return {"exp_avg": np.zeros_like(param), "mu_product": np.ones((), param.dtype)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        gradient_weight, momentum_weight = nadam_weights(
            beta1, momentum_decay, ctx.count, slots["mu_product"]
        )
        average = slots["exp_avg"]
        lerp_(average, updates, 1.0 - beta1, ctx.scratch.temp)
        out = np.multiply(updates, gradient_weight, out=ctx.scratch.work)
        out += np.multiply(average, momentum_weight, out=ctx.scratch.temp)
        return out

    return GradientTransformation(init, update)


def nadam_weights(
    beta1: float, momentum_decay: float, count: int, mu_product: np.ndarray
) -> tuple[float, float]:
    """NAdam's weights of g_t and m_t at step t: advances Π (`mu_product`, 0-d) in place to
    Π_t = Π_{t−1}·μ_t and returns ((1 − μ_t)/(1 − Π_t), μ_{t+1}/(1 − Π_t·μ_{t+1}))."""
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (count * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((count + 1) * momentum_decay))
    mu_product *= mu
    product = float(mu_product)
    return (1.0 - mu) / (1.0 - product), mu_next / (1.0 - product * mu_next)


def lion_interpolation(beta1: float, beta2: float) -> GradientTransformation:
    """Lion's momentum (slot `exp_avg`): u ← β1·m_{t−1} + (1 − β1)·g_t, then
    m_t = β2·m_{t−1} + (1 − β2)·g_t. Followed by `scale_by_sign`."""

    def init(param: np.ndarray) -> Slots:
        return {"exp_avg": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        average = slots["exp_avg"]
        interpolation = ctx.scratch.work
        np.copyto(interpolation, average)
        lerp_(interpolation, updates, 1.0 - beta1, ctx.scratch.temp)
        lerp_(average, updates, 1.0 - beta2, ctx.scratch.temp)
        return interpolation

    return GradientTransformation(init, update)


def scale_by_sign() -> GradientTransformation:
    """u ← sign(u): the σ-block with σ_t = |u_t| (and no eps)."""

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        return np.sign(updates, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)


def scale_by_rss(
    eps: float,
    accumulator: Literal["sum", "mean"] = "sum",
    initial_accumulator_value: float = 0.0,
) -> GradientTransformation:
    """Adagrad's σ (slot `sum`): the root of the sum — or the mean — of squared gradients.

    s_t = s_0 + Σ_{k≤t} g_k²
    σ_t = sqrt(s_t)              (accumulator "sum", torch's Adagrad)
    σ_t = sqrt(s_t / t)          (accumulator "mean", the lecture's form; t counts this
                                  tensor's updates, so t = k + 1 at step k)
    u ← u / (σ_t + eps)
    """

    def init(param: np.ndarray) -> Slots:
        return {"sum": np.full_like(param, initial_accumulator_value)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        total = slots["sum"]
        total += np.multiply(ctx.grad, ctx.grad, out=ctx.scratch.temp)
        if accumulator == "mean":
            sigma = np.sqrt(np.divide(total, ctx.count, out=ctx.scratch.temp), out=ctx.scratch.temp)
        else:
            sigma = np.sqrt(total, out=ctx.scratch.temp)
        sigma += eps
        return np.divide(updates, sigma, out=ctx.scratch.work)

    return GradientTransformation(init, update)


def scale_by_rms(
    decay: float,
    eps: float,
    *,
    slot: str = "square_avg",
    init: Literal["zero", "first_grad"] = "zero",
    centered: bool = False,
    amsgrad: bool = False,
    bias_correction: bool = False,
    eps_inside_root: bool = False,
) -> GradientTransformation:
    """σ from an exponential moving average of squared gradients (slot `slot`):

    v_t = α·v_{t−1} + (1 − α)·g_t²       (init "first_grad": v_1 = g_1², the lecture's form)
    v̂_t = max(v̂_{t−1}, v_t)             (amsgrad; slot `max_exp_avg_sq`)
    c_t = α·c_{t−1} + (1 − α)·g_t        (centered; slot `grad_avg`)
    σ_t = sqrt(v̂_t − c_t²)               (centered, RMSprop's) else sqrt(v̂_t)
    σ_t = sqrt(v̂_t) / sqrt(1 − α^t)      (bias_correction, Adam's)
    u ← u / (σ_t + eps)                   (eps_inside_root: u / sqrt(v_t + eps), Adadelta's)
    """
    if init not in ("zero", "first_grad"):
        raise ValueError(f"unknown init {init!r}")

    def init_slots(param: np.ndarray) -> Slots:
        slots = {slot: np.zeros_like(param)}
        if centered:
            slots["grad_avg"] = np.zeros_like(param)
        if amsgrad:
            slots["max_exp_avg_sq"] = np.zeros_like(param)
        return slots

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        grad, temp = ctx.grad, ctx.scratch.temp
        square_avg = slots[slot]
        if init == "first_grad" and ctx.count == 1:
            np.multiply(grad, grad, out=square_avg)
        else:
            square_avg *= decay
            # torch's addcmul order: ((1 − α)·g)·g
            square_avg += np.multiply(np.multiply(grad, 1.0 - decay, out=temp), grad, out=temp)
        if amsgrad:
            square_avg = np.maximum(
                slots["max_exp_avg_sq"], square_avg, out=slots["max_exp_avg_sq"]
            )
        if eps_inside_root:
            sigma = np.sqrt(np.add(square_avg, eps, out=temp), out=temp)
            return np.divide(updates, sigma, out=ctx.scratch.work)
        if centered:
            grad_avg = slots["grad_avg"]
            lerp_(grad_avg, grad, 1.0 - decay, temp)
            variance = np.subtract(square_avg, np.multiply(grad_avg, grad_avg, out=temp), out=temp)
            sigma = np.sqrt(variance, out=temp)
        else:
            sigma = np.sqrt(square_avg, out=temp)
        if bias_correction:
            sigma /= math.sqrt(1.0 - decay**ctx.count)
        sigma += eps
        return np.divide(updates, sigma, out=ctx.scratch.work)

    return GradientTransformation(init_slots, update)


def scale_by_rectified_rms(beta2: float, eps: float) -> GradientTransformation:
    """RAdam's σ (slot `exp_avg_sq`): Adam's, switched on only once the variance of the
    adaptive rate is tractable, and then rectified:

        v_t = β2·v_{t−1} + (1 − β2)·g_t²
        ρ_∞ = 2/(1 − β2) − 1,   ρ_t = ρ_∞ − 2t·β2^t/(1 − β2^t)
        ρ_t > 5:  u ← u · r_t · sqrt(1 − β2^t) / (sqrt(v_t) + eps),
                  r_t = sqrt((ρ_t − 4)(ρ_t − 2)ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2)ρ_t))
        else:     u unchanged (σ_t = 1)
    """

    def init(param: np.ndarray) -> Slots:
        return {"exp_avg_sq": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        grad, temp = ctx.grad, ctx.scratch.temp
        square_avg = slots["exp_avg_sq"]
        square_avg *= beta2
        square_avg += np.multiply(np.multiply(grad, 1.0 - beta2, out=temp), grad, out=temp)
        rectification = radam_rectification(beta2, ctx.count)
        if rectification is None:
            return updates
        sigma = np.sqrt(square_avg, out=temp)
        sigma += eps
        out = np.divide(updates, sigma, out=ctx.scratch.work)
        out *= rectification
        return out

    return GradientTransformation(init, update)


def radam_rectification(beta2: float, count: int) -> float | None:
    """RAdam's factor r_t·sqrt(1 − β2^t) at step t, or None while ρ_t ≤ 5 (σ_t = 1)."""
    bias_correction2 = 1.0 - beta2**count
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * count * (beta2**count) / bias_correction2
    if rho_t <= 5.0:
        return None
    rect = math.sqrt(
        (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
    )
    return rect * bias_correction2**0.5


def scale_by_inf_norm(beta2: float, eps: float) -> GradientTransformation:
    """Adamax's σ (slot `exp_inf`), an exponentially weighted infinity norm:

    σ_t = max(β2·σ_{t−1}, |g_t| + eps),   u ← u / σ_t      (eps inside the max, as torch)
    """

    def init(param: np.ndarray) -> Slots:
        return {"exp_inf": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        norm = slots["exp_inf"]
        norm *= beta2
        magnitude = np.abs(ctx.grad, out=ctx.scratch.temp)
        magnitude += eps
        np.maximum(norm, magnitude, out=norm)
        return np.divide(updates, norm, out=ctx.scratch.work)

    return GradientTransformation(init, update)


def scale_by_delta_rms(rho: float, eps: float) -> GradientTransformation:
    """Adadelta's numerator (slot `acc_delta`), after `scale_by_rms(eps_inside_root=True)`:

    Δ_t = sqrt(d_{t−1} + eps) · u,   d_t = ρ·d_{t−1} + (1 − ρ)·Δ_t²,   u ← Δ_t
    """

    def init(param: np.ndarray) -> Slots:
        return {"acc_delta": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        acc_delta, temp = slots["acc_delta"], ctx.scratch.temp
        root = np.sqrt(np.add(acc_delta, eps, out=temp), out=temp)
        delta = np.multiply(updates, root, out=ctx.scratch.work)
        acc_delta *= rho
        acc_delta += np.multiply(np.multiply(delta, 1.0 - rho, out=temp), delta, out=temp)
        return delta

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """Decoupled weight decay (AdamW, Lion), after `scale_by_learning_rate`:

        θ ← θ·(1 − η_t·λ) + u,   i.e.   u ← u + (f − 1)·θ   with f = (1 − η_t·λ) in θ's dtype

    torch multiplies θ by the rounded factor f (`param.mul_(1 − lr·λ)`); in float32 that rounding
    is a drift of its own over many steps, so the block uses the same f (f − 1 is exact).
    """

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        dtype = ctx.param.dtype.type
        shrink = decoupled_shrink(dtype, ctx.lr, weight_decay) - dtype(1.0)
        decay = np.multiply(ctx.param, shrink, out=ctx.scratch.temp)
        return np.add(updates, decay, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)


def add_shrinkage(weight_decay: float) -> GradientTransformation:
    """Decoupled weight decay in torch's own two roundings, after the rate (Muon, Adafactor):

        θ ← fl(θ·f) + u,   i.e.   u ← u + (fl(θ·f) − θ),   f = 1 − η_t·λ in θ's dtype

    `add_decayed_weights` adds (f − 1)·θ instead, which skips torch's rounding of θ·f; in
    float32 that rounding is as large as the decay itself when η_t·λ is ~1e-4.
    """

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        shrunk = shrinkage(ctx.param, 1.0 - ctx.lr * weight_decay, ctx.scratch.temp)
        return np.add(updates, shrunk, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)


def decoupled_shrink(dtype: type[np.floating], rate: float, weight_decay: float) -> np.floating:
    """Decoupled decay's factor f = 1 − η_t·λ, rounded to θ's dtype as torch's `mul_` rounds it."""
    return dtype(1.0 - rate * weight_decay)


def scale_by_learning_rate(lr_decay: float = 0.0) -> GradientTransformation:
    """The last block: u ← −η_t·u, with η_t the group's scheduled rate.

    `lr_decay` is Adagrad's own decay on top of the schedule: η_t / (1 + (t − 1)·lr_decay), with
    t the tensor's step count.
    """

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        rate = decayed_rate(ctx.lr, ctx.count, lr_decay)
        return np.multiply(updates, -rate, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)


def scale(factor: float) -> GradientTransformation:
    """u ← factor·u (Rprop's −1: its step sizes are the whole step)."""

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        return np.multiply(updates, factor, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)


def scale_by_rprop(
    etas: tuple[float, float], step_sizes: tuple[float, float], initial_step_size: float
) -> GradientTransformation:
    """Rprop's sign-based step sizes (slots `prev`, `step_size`, torch's names):

        s = sign(g_t · prev)
        Δ_t = clamp(Δ_{t−1} · (η+ if s > 0, η− if s < 0, 1 if s = 0), Δ_min, Δ_max)
        g_t ← 0 where s < 0 (the step after a sign change is skipped)
        u ← sign(g_t) · Δ_t,    prev ← g_t

    Δ starts at the group's rate when the tensor takes its first step (torch fills `step_size`
    with `lr` when it makes the state, so a schedule moves Rprop only through that start);
    `initial_step_size` is what a fresh slot holds before then.
    """
    eta_minus, eta_plus = etas
    smallest, largest = step_sizes

    def init(param: np.ndarray) -> Slots:
        return {
            "prev": np.zeros_like(param),
            "step_size": np.full_like(param, initial_step_size),
        }

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        prev, step_size = slots["prev"], slots["step_size"]
        if ctx.count == 1:
            step_size.fill(ctx.lr)
        dtype = step_size.dtype.type
        sign = np.sign(np.multiply(updates, prev, out=ctx.scratch.temp), out=ctx.scratch.temp)
        flipped = sign < 0
        step_size *= np.where(sign > 0, dtype(eta_plus), np.where(flipped, dtype(eta_minus), 1))
        np.clip(step_size, smallest, largest, out=step_size)
        np.copyto(prev, updates)
        prev[flipped] = 0
        direction = np.sign(prev, out=ctx.scratch.work)
        return np.multiply(direction, step_size, out=direction)

    return GradientTransformation(init, update)


def scale_by_asgd_rate(lambd: float, alpha: float, initial_lr: float) -> GradientTransformation:
    """ASGD's step with its own decaying rate η (slot `eta`, a per-tensor scalar, torch's name):

        θ_t = θ_{t−1}·(1 − λ·η) − η·g_t,   i.e.  u ← −η·u + (f − 1)·θ,  f = 1 − λ·η rounded as torch
        then  η ← lr_t / (1 + λ·lr_t·t)^α

    The step uses η from the step before; the first step uses the group's rate (torch makes
    `eta` from `lr` when it makes the state). `initial_lr` is what a fresh slot holds.
    """

    def init(param: np.ndarray) -> Slots:
        return {"eta": np.asarray(initial_lr, param.dtype)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        eta_slot = slots["eta"]
        dtype = ctx.param.dtype.type
        eta = float(dtype(ctx.lr)) if ctx.count == 1 else float(eta_slot)
        step = np.multiply(updates, -eta, out=ctx.scratch.work)
        step += shrinkage(ctx.param, 1.0 - lambd * eta, ctx.scratch.temp)
        eta_slot[...] = ctx.lr / ((1.0 + lambd * ctx.lr * ctx.count) ** alpha)
        return step

    return GradientTransformation(init, update)


def average_iterates(t0: float) -> GradientTransformation:
    """ASGD's average of the iterates (slots `ax`, `mu`; the weights to evaluate are `ax`):

        ax_t = θ_t                            while μ = 1
        ax_t = ax_{t−1} + μ·(θ_t − ax_{t−1})  after,   then  μ ← 1/max(1, t − t0)

    θ_t = θ_{t−1} + u is this step's result: the block comes last and computes it as the engine
    will. `ax` starts as θ (torch's zeros are overwritten at its first step, μ = 1), so before
    any step the weights to evaluate are θ.
    """

    def init(param: np.ndarray) -> Slots:
        return {"ax": param.copy(), "mu": np.ones((), param.dtype)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        average, mu_slot = slots["ax"], slots["mu"]
        mu = float(mu_slot)
        stepped = np.add(ctx.param, updates, out=ctx.scratch.temp)
        if mu != 1.0:
            stepped -= average
            stepped *= mu
            average += stepped
        else:
            np.copyto(average, stepped)
        mu_slot[...] = 1.0 / max(1.0, ctx.count - t0)
        return updates

    def evaluate(param: np.ndarray, slots: Slots) -> np.ndarray:
        del param
        return slots["ax"]

    return GradientTransformation(init, update, eval=evaluate)


def scale_by_sparse_adam(betas: tuple[float, float], eps: float) -> GradientTransformation:
    """SparseAdam's moments and σ (slots `exp_avg`, `exp_avg_sq`), in torch's arithmetic:

        m ← m + (g − m)·(1 − β1),   v ← v + (g² − v)·(1 − β2),   u ← m / (sqrt(v) + eps)

    Over the rows a sparse gradient touches (the engine runs it on those rows only: the moments
    of untouched rows stay as they are); bias correction comes with the step size
    (`scale_by_adam_step_size`)."""
    beta1, beta2 = betas

    def init(param: np.ndarray) -> Slots:
        return {"exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        average, square_avg, temp = slots["exp_avg"], slots["exp_avg_sq"], ctx.scratch.temp
        change = np.subtract(updates, average, out=temp)
        change *= 1.0 - beta1
        average += change
        change = np.subtract(np.multiply(updates, updates, out=temp), square_avg, out=temp)
        change *= 1.0 - beta2
        square_avg += change
        sigma = np.sqrt(square_avg, out=temp)
        sigma += eps
        return np.divide(average, sigma, out=ctx.scratch.work)

    return GradientTransformation(init, update)


def scale_by_adam_step_size(betas: tuple[float, float]) -> GradientTransformation:
    """SparseAdam's last block: u ← −(η_t · sqrt(1 − β2^t) / (1 − β1^t))·u, one factor."""
    beta1, beta2 = betas

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        step_size = ctx.lr * math.sqrt(1.0 - beta2**ctx.count) / (1.0 - beta1**ctx.count)
        return np.multiply(updates, -step_size, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)


def muon_momentum(momentum: float, nesterov: bool) -> GradientTransformation:
    """Muon's momentum (slot `momentum_buffer`), an average rather than a heavy ball:

    B_t = B_{t−1} + (1 − μ)·(g_t − B_{t−1})       (torch's `lerp_`)
    u ← B_t,   nesterov: u ← g_t + μ·(B_t − g_t)
    """

    def init(param: np.ndarray) -> Slots:
        return {"momentum_buffer": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        buffer = slots["momentum_buffer"]
        lerp_(buffer, updates, 1.0 - momentum, ctx.scratch.temp)
        if not nesterov:
            return buffer
        look_ahead = ctx.scratch.work
        np.copyto(look_ahead, updates)
        return lerp_(look_ahead, buffer, momentum, ctx.scratch.temp)

    return GradientTransformation(init, update)


def shrinkage(param: np.ndarray, factor: float, out: np.ndarray) -> np.ndarray:
    """θ·f − θ as torch's `param.mul_(f)` changes θ: f and θ·f rounded to θ's dtype, the
    difference exact (Sterbenz), so that adding it to θ repeats torch's rounding of θ·f."""
    shrunk = np.multiply(param, param.dtype.type(factor), out=out)
    return np.subtract(shrunk, param, out=shrunk)


def decayed_rate(rate: float, count: int, lr_decay: float) -> float:
    """Adagrad's rate at the tensor's step t: η_t / (1 + (t − 1)·lr_decay)."""
    return rate / (1.0 + (count - 1) * lr_decay) if lr_decay else rate


def lerp_(start: np.ndarray, end: np.ndarray, weight: float, temp: np.ndarray) -> np.ndarray:
    """start ← start + weight·(end − start), in place, with torch's two-sided formula (it
    interpolates from the nearer end, so the rounding matches torch's `lerp_`)."""
    difference = np.subtract(end, start, out=temp)
    if abs(weight) < 0.5:
        start += np.multiply(difference, weight, out=temp)
        return start
    difference *= 1.0 - weight
    return np.subtract(end, difference, out=start)


def _no_slots(param: np.ndarray) -> Slots:
    """The init of a block without state."""
    del param
    return {}
