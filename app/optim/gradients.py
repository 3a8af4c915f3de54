"""Gradient pre-processing as pure functions: validation against the parameters, non-finite
detection, global norms, clipping by value and by global norm (torch's rules)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from app.optim import kernels
from app.optim.base import GradientMismatch, Params

CLIP_NORM_EPS = 1e-6
"""torch's `clip_grad_norm_`: scale by min(1, max_norm / (norm + 1e-6))."""


def check_gradients(
    params: Mapping[str, np.ndarray], grads: Mapping[str, Any], *, partial: bool
) -> Params:
    """Check every gradient against its parameter and return them as arrays the core may write
    into: C-contiguous, writable, in the parameter's dtype, not sharing memory with it (a copy
    only where needed), in the parameters' order.

    Raises `GradientMismatch` for an unknown tensor, a missing one (unless `partial`), a shape
    that differs or an array that is not of real numbers. Nothing is written before it returns.
    """
    for name, grad in grads.items():
        if name not in params:
            shape = getattr(grad, "shape", None)
            raise GradientMismatch(name, None, shape, f"there is no parameter named {name!r}")
    if not partial:
        for name, param in params.items():
            if name not in grads:
                raise GradientMismatch(
                    name,
                    param.shape,
                    None,
                    f"the gradient of {name!r} is missing (send it, or mark the step partial)",
                )
    return {
        name: _as_gradient_of(name, param, grads[name])
        for name, param in params.items()
        if name in grads
    }


def _as_gradient_of(name: str, param: np.ndarray, grad: Any) -> np.ndarray:
    """`grad` checked against `param` and cast to its dtype."""
    try:
        array = np.asarray(grad)
    except (TypeError, ValueError):
        array = np.asarray(None)
    if array.dtype.kind not in "iuf":
        raise GradientMismatch(
            name,
            param.shape,
            array.shape,
            f"the gradient of {name!r} is not an array of real numbers",
        )
    if array.shape != param.shape:
        raise GradientMismatch(
            name,
            param.shape,
            array.shape,
            f"the gradient of {name!r} has shape {list(array.shape)}, expected {list(param.shape)}",
        )
    with np.errstate(over="ignore"):  # what overflows the session dtype is caught as non-finite
        gradient = np.require(array, dtype=param.dtype, requirements=["C", "W"])
    # The core writes into gradients; one that is θ itself (or a view of it) must not be.
    return gradient.copy() if np.may_share_memory(gradient, param) else gradient


def sum_of_squares(array: np.ndarray) -> float:
    """Σ x², accumulated in float64 by a vectorized numba loop (`kernels.sum_of_squares`) block
    by block, the blocks' sums added in order: the same number whatever the threads. Not
    BLAS: OpenBLAS's threaded `dot` stalls for milliseconds when its threads must wake up on a
    busy machine, and in float32 it accumulates worse (1e-4 relative at 1e7 elements); numpy's
    `einsum` accumulates in the array's dtype (1e-7 in float32) and is 2–5× slower."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float64)
    partials = np.empty(-(-flat.size // kernels.BLOCK))
    kernels.sum_of_squares(flat, partials)
    return float(partials.sum())


def squared_norm(array: np.ndarray) -> float:
    """Σ x² of a gradient: NaN or Inf if it holds such values. Accumulated in float64, so that a
    finite float32 gradient always has a finite norm (torch's float32 sum overflows to inf)."""
    return sum_of_squares(array)


def global_norm(squared_norms: Iterable[float]) -> float:
    """The L2 norm over all tensors from their squared norms: sqrt(Σ_i ‖g_i‖²)."""
    return math.sqrt(math.fsum(squared_norms))


def first_nonfinite(
    grads: Mapping[str, np.ndarray], squared_norms: Mapping[str, float]
) -> str | None:
    """The first tensor (in `grads`' order) holding NaN or ±Inf, or None.

    A finite squared norm proves a tensor finite without a second pass over it.
    """
    for name, grad in grads.items():
        if not math.isfinite(squared_norms[name]) and not bool(np.isfinite(grad).all()):
            return name
    return None


def clip_by_value(grads: Mapping[str, np.ndarray], clip_value: float) -> None:
    """torch's `clip_grad_value_`: every element clamped to [−v, v], in place."""
    for grad in grads.values():
        np.clip(grad, -clip_value, clip_value, out=grad)


def clip_by_global_norm(grads: Mapping[str, np.ndarray], norm: float, max_norm: float) -> None:
    """torch's `clip_grad_norm_`: every tensor scaled by min(1, max_norm / (norm + 1e-6)),
    in place."""
    coefficient = max_norm / (norm + CLIP_NORM_EPS)
    if coefficient < 1.0:
        for grad in grads.values():
            grad *= coefficient
