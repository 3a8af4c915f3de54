"""Blocks that read the whole tensor at once — a norm, factors along an axis, a matrix product —
so the engine never slices a chain that holds one (`elementwise=False`):

- Adafactor (torch.optim.Adafactor): `scale_by_factored_rms` (the second moment kept as row
  and column factors), `clip_by_block_rms` (update clipping), `scale_by_relative_step_size`
  (its step size from θ's own scale; it replaces `scale_by_learning_rate`);
- Muon (torch.optim.Muon): `orthogonalize_by_newton_schulz`, `scale_by_shape_adjusted_rate`;
- layer-wise trust ratios (optax's LAMB and LARS): `scale_by_trust_ratio`;
- NovoGrad's per-tensor second moment (optax): `scale_by_novograd`.

Per-tensor norms are taken in the tensor's dtype (`sum_of_squares`), as the references do.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from app.optim.base import (
    GradientTransformation,
    InitFn,
    Slots,
    TensorStep,
    UnsupportedTensor,
    UpdateFn,
)
from app.optim.gradients import sum_of_squares
from app.optim.transforms import _no_slots, lerp_


def _whole(init: InitFn, update: UpdateFn) -> GradientTransformation:
    """A block that reads the whole tensor: the engine never slices its chain."""
    return GradientTransformation(init, update, elementwise=False)


def _rms(array: np.ndarray) -> float:
    """RMS(x) = ‖x‖₂ / sqrt(n) (0 for an empty array), in torch's order of operations."""
    return math.sqrt(sum_of_squares(array)) / array.size**0.5 if array.size else 0.0


# --------------------------------------------------------------------------------------------
# Adafactor
# --------------------------------------------------------------------------------------------


def scale_by_factored_rms(beta2_decay: float, eps1: float | None) -> GradientTransformation:
    """Adafactor's σ: a second moment with decay β̂2_t = 1 − t^τ (τ = `beta2_decay`), kept
    factored for tensors of 2+ dimensions (over the last two axes), whole below:

        2+ dims (slots `row_var`, `col_var`, torch's names and shapes: the last axis, resp. the
        one before it, of size 1):
            R_t = lerp(R_{t−1}, mean_{last axis}(g²), t^τ)
            C_t = lerp(C_{t−1}, mean_{axis before}(g²), t^τ)
            V̂_t = R_t·C_t / max(mean_rows(R_t), eps1)
        0 or 1 dim (slot `variance`):  V̂_t = lerp(V̂_{t−1}, g², t^τ)
        u ← g / max(sqrt(V̂_t), eps1)            (torch: g · rsqrt(max(V̂_t, eps1²)))

    eps1 None is the dtype's machine epsilon, as torch. The means are torch's
    `norm(g, dim)²/n`. State is O(rows + cols) for a matrix rather than O(rows·cols).
    """

    def init(param: np.ndarray) -> Slots:
        if param.ndim < 2:
            return {"variance": np.zeros_like(param)}
        rows = (*param.shape[:-1], 1)
        cols = (*param.shape[:-2], 1, param.shape[-1])
        return {"row_var": np.zeros(rows, param.dtype), "col_var": np.zeros(cols, param.dtype)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        grad, temp = ctx.grad, ctx.scratch.temp
        floor = float(np.finfo(ctx.param.dtype).eps) if eps1 is None else eps1
        weight = float(ctx.count) ** beta2_decay
        if grad.ndim < 2:
            variance = slots["variance"]
            lerp_(variance, np.multiply(grad, grad), weight, temp)
            estimate = temp
            np.copyto(estimate, variance)
        else:
            row_var, col_var = slots["row_var"], slots["col_var"]
            squared = np.multiply(grad, grad, out=temp)
            lerp_(row_var, _mean_square(squared, -1), weight, np.empty_like(row_var))
            lerp_(col_var, _mean_square(squared, -2), weight, np.empty_like(col_var))
            estimate = np.multiply(row_var, col_var, out=temp)
            row_mean = np.maximum(row_var.mean(axis=-2, keepdims=True), floor)
            estimate /= row_mean
        np.maximum(estimate, floor * floor, out=estimate)
        root = np.sqrt(estimate, out=estimate)
        inverse = np.reciprocal(root, out=root)
        return np.multiply(inverse, updates, out=ctx.scratch.work)

    return _whole(init, update)


def _mean_square(squared: np.ndarray, axis: int) -> np.ndarray:
    """torch's `norm(g, dim=axis, keepdim=True).square().div(size)` from g²: the mean of g²
    along an axis, through the norm (its square root, squared back) as torch computes it."""
    norm = np.sqrt(np.sum(squared, axis=axis, keepdims=True))
    return np.square(norm, out=norm) / squared.shape[axis]


def clip_by_block_rms(d: float) -> GradientTransformation:
    """Adafactor's update clipping: u ← u / max(1, RMS(u)/d)."""

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        norm = math.sqrt(sum_of_squares(updates))
        denominator = max(1.0, norm / (updates.size**0.5 * d)) if updates.size else 1.0
        if denominator == 1.0:
            return updates
        return np.divide(updates, denominator, out=ctx.scratch.work)

    return _whole(_no_slots, update)


def scale_by_relative_step_size(eps2: float) -> GradientTransformation:
    """Adafactor's step size, relative to θ's own scale (it replaces `scale_by_learning_rate`):

        ρ_t = min(η_t, 1/sqrt(t)),   α_t = max(eps2, RMS(θ_{t−1}))·ρ_t,   u ← −α_t·u

    η_t is the group's (scheduled) rate: torch uses `lr` only as ρ's ceiling and for weight
    decay.
    """

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        relative = min(ctx.lr, 1.0 / ctx.count**0.5)
        alpha = max(eps2, _rms(ctx.param)) * relative
        return np.multiply(updates, -alpha, out=ctx.scratch.work)

    return _whole(_no_slots, update)


# --------------------------------------------------------------------------------------------
# Muon
# --------------------------------------------------------------------------------------------


def orthogonalize_by_newton_schulz(
    coefficients: tuple[float, float, float], steps: int, eps: float
) -> GradientTransformation:
    """Muon's orthogonalisation of a 2-D update by a quintic Newton–Schulz iteration, in the
    tensor's dtype (torch runs it in bfloat16):

        X_0 = U / max(‖U‖_F, eps)            (U transposed first if it has more rows than cols)
        A = X_k·X_kᵀ,   B = b·A + c·A·A,   X_{k+1} = a·X_k + B·X_k     for k < steps
        u ← X_steps                           (transposed back)

    Only for 2-D tensors: `init` refuses any other shape (`UnsupportedTensor`).
    """
    a, b, c = coefficients

    def init(param: np.ndarray) -> Slots:
        if param.ndim != 2:
            raise UnsupportedTensor(
                "", f"Muon steps 2-D tensors only; this one has shape {list(param.shape)}"
            )
        return {}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        tall = updates.shape[0] > updates.shape[1]
        x = updates.T if tall else updates
        x = x / max(math.sqrt(sum_of_squares(x)), eps)
        for _ in range(steps):
            gram = x @ x.T
            polynomial = gram @ gram
            polynomial *= c
            polynomial += np.multiply(gram, b, out=gram)
            x = np.add(np.multiply(x, a), polynomial @ x)
        out = ctx.scratch.work
        np.copyto(out, x.T if tall else x)
        return out

    return _whole(init, update)


def scale_by_shape_adjusted_rate(
    adjust_lr_fn: Literal["original", "match_rms_adamw"] | None,
) -> GradientTransformation:
    """Muon's rate for a matrix of shape A×B, in one factor: u ← −η_t·r·u with

    r = sqrt(max(1, A/B))          ("original", Keller Jordan's; the default)
    r = 0.2·sqrt(max(A, B))         ("match_rms_adamw", Moonshot's: AdamW's update RMS)
    """

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        rows, cols = ctx.param.shape[:2]
        if adjust_lr_fn == "match_rms_adamw":
            ratio = 0.2 * math.sqrt(max(rows, cols))
        else:
            ratio = math.sqrt(max(1, rows / cols))
        return np.multiply(updates, -(ctx.lr * ratio), out=ctx.scratch.work)

    return _whole(_no_slots, update)


# --------------------------------------------------------------------------------------------
# optax's per-tensor rules
# --------------------------------------------------------------------------------------------


def scale_by_trust_ratio(
    trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    """A layer-wise trust ratio (optax's `scale_by_trust_ratio`, LAMB's and LARS's):

        r = c·‖θ‖ / (‖u‖ + eps),   r = 1 where ‖θ‖ = 0 or ‖u‖ = 0,   u ← r·u

    The ratio is computed in the tensor's dtype, as optax does.
    """

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        dtype = ctx.param.dtype.type
        param_norm = dtype(math.sqrt(sum_of_squares(ctx.param)))
        update_norm = dtype(math.sqrt(sum_of_squares(updates)))
        if param_norm == 0 or update_norm == 0:
            return updates
        ratio = dtype(trust_coefficient) * param_norm / (update_norm + dtype(eps))
        return np.multiply(updates, float(ratio), out=ctx.scratch.work)

    return _whole(_no_slots, update)


def scale_by_novograd(
    b1: float, b2: float, eps: float, eps_root: float, weight_decay: float
) -> GradientTransformation:
    """NovoGrad's σ from the squared norm of the whole tensor's gradient (slots `mu`, `nu`,
    optax's names; `nu` is one number per tensor):

        ν_1 = ‖g_1‖²,              ν_t = (1 − β2)·‖g_t‖² + β2·ν_{t−1}
        m_1 = a_1,  m_t = β1·m_{t−1} + a_t,   a_t = g_t/(sqrt(ν_t + eps_root) + eps) + λ·θ
        u ← m_t
    """

    def init(param: np.ndarray) -> Slots:
        return {"mu": np.zeros_like(param), "nu": np.zeros((), param.dtype)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        mu, nu = slots["mu"], slots["nu"]
        dtype = ctx.param.dtype.type
        squared = dtype(math.sqrt(sum_of_squares(updates))) ** 2
        if ctx.count == 1:
            nu[...] = squared
        else:
            nu[...] = dtype(1.0 - b2) * squared + dtype(b2) * nu
        denominator = dtype(np.sqrt(nu + dtype(eps_root)) + dtype(eps))
        addition = np.divide(updates, denominator, out=ctx.scratch.temp)
        if weight_decay:
            addition += np.multiply(ctx.param, weight_decay, out=ctx.scratch.work)
        if ctx.count == 1:
            np.copyto(mu, addition)
        else:
            mu *= b1
            mu += addition
        return mu

    return _whole(init, update)
