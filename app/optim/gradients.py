"""Gradient pre-processing as pure functions: validation against the parameters, non-finite
detection, global norms, clipping by value and by global norm (torch's rules).

Sparse row gradients (`SparseRows`) are checked and coalesced here (repeated rows summed, rows
sorted, as torch's `coalesce`); norms, the non-finite check and clipping then act on their
values, the rows they leave out being zeros. torch's `clip_grad_norm_` and `clip_grad_value_`
refuse sparse gradients outright; here they apply to the gradient the rows stand for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from app.optim import kernels
from app.optim.base import Gradient, GradientMismatch, SparseRows, values_of

CLIP_NORM_EPS = 1e-6
"""torch's `clip_grad_norm_`: scale by min(1, max_norm / (norm + 1e-6))."""


def check_gradients(
    params: Mapping[str, np.ndarray], grads: Mapping[str, Any], *, partial: bool
) -> dict[str, Gradient]:
    """Check every gradient against its parameter and return them as arrays the core may write
    into: C-contiguous, writable, in the parameter's dtype, not sharing memory with it (a copy
    only where needed), in the parameters' order. A `SparseRows` gradient comes back coalesced
    (`coalesce_rows`), its values so prepared.

    Raises `GradientMismatch` for an unknown tensor, a missing one (unless `partial`), a shape
    that differs or an array that is not of real numbers, and for sparse rows on a tensor of
    fewer than 2 dimensions, rows that are not integers of its first axis, or values not of
    shape `(len(rows), *θ.shape[1:])`. Nothing is written before it returns.
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
        name: (
            _as_rows_of(name, param, grads[name])
            if isinstance(grads[name], SparseRows)
            else _as_gradient_of(name, param, grads[name])
        )
        for name, param in params.items()
        if name in grads
    }


def _as_gradient_of(
    name: str,
    param: np.ndarray,
    grad: Any,
    shape: tuple[int, ...] | None = None,
    what: str = "the gradient",
) -> np.ndarray:
    """`grad` checked to be real numbers of `shape` (θ's by default) and cast to θ's dtype."""
    expected = param.shape if shape is None else shape
    if _ready(grad, param, expected):
        return grad  # what the checks below would return, without their cost (~20 µs)
    array = _real_array(name, grad, expected, what)
    if array.shape != expected:
        raise GradientMismatch(
            name,
            expected,
            array.shape,
            f"{what} of {name!r} has shape {list(array.shape)}, expected {list(expected)}",
        )
    with np.errstate(over="ignore"):  # what overflows the session dtype is caught as non-finite
        gradient = np.require(array, dtype=param.dtype, requirements=["C", "W"])
    # The core writes into gradients; one that is θ itself (or a view of it) must not be.
    return gradient.copy() if np.may_share_memory(gradient, param) else gradient


def _ready(grad: Any, param: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether `grad` is already what a step takes: an ndarray of θ's dtype and `shape`,
    C-contiguous, writable, sharing no memory with θ (the usual case, checked first)."""
    return (
        type(grad) is np.ndarray
        and grad.dtype == param.dtype
        and grad.shape == shape
        and grad.flags.c_contiguous
        and grad.flags.writeable
        and not np.may_share_memory(grad, param)
    )


def _real_array(name: str, value: Any, expected: tuple[int, ...], what: str) -> np.ndarray:
    """`value` as an array of real numbers, or `GradientMismatch`."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    if array.dtype.kind not in "iuf":
        raise GradientMismatch(
            name, expected, array.shape, f"{what} of {name!r} is not an array of real numbers"
        )
    return array


def _as_rows_of(name: str, param: np.ndarray, grad: SparseRows) -> SparseRows:
    """Sparse rows checked against `param` (2+ dimensions, rows of its first axis, values of
    shape `(len(rows), *θ.shape[1:])`), cast to its dtype and coalesced."""
    if param.ndim < 2:
        raise GradientMismatch(
            name,
            param.shape,
            None,
            f"sparse rows need a tensor of 2 or more dimensions, whose first axis holds the rows; "
            f"{name!r} has shape {list(param.shape)}: send its gradient dense",
        )
    try:
        rows = np.asarray(grad.rows)
    except (TypeError, ValueError):
        rows = np.asarray(None)
    if rows.ndim != 1 or (rows.dtype.kind not in "iu" and rows.size):  # [] reads as floats
        raise GradientMismatch(
            name, param.shape, None, f"the rows of {name!r} must be a list of integers"
        )
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= param.shape[0]):
        bad = int(rows.min()) if int(rows.min()) < 0 else int(rows.max())
        raise GradientMismatch(
            name,
            param.shape,
            None,
            f"row {bad} of {name!r} is out of range: it has rows 0 to {param.shape[0] - 1}",
        )
    shape = (rows.size, *param.shape[1:])
    values = grad.values
    if rows.size == 0 and np.size(values) == 0:  # no rows: `[]` has no shape to read
        values = np.zeros(shape, param.dtype)
    values = _as_gradient_of(name, param, values, shape, "the values of the sparse rows")
    return coalesce_rows(rows.astype(np.int64, copy=False), values)


def coalesce_rows(rows: np.ndarray, values: np.ndarray) -> SparseRows:
    """Sorted unique rows, the values of a repeated row summed (torch's `coalesce`):

        rows′ = sorted(set(rows)),   values′[j] = Σ_{k: rows[k] = rows′[j]} values[k]

    The sum runs in the order the rows were given (a left fold). torch sums in the order of an
    unstable sort of the rows, which keeps the given order for up to 16 entries; beyond, its
    order (and so its last bit) is std::sort's. Rows given once cost one stable sort, no sum.
    """
    unique, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    if unique.size == rows.size:
        return SparseRows(unique, values[first])
    summed = np.zeros((unique.size, *values.shape[1:]), values.dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # caught as non-finite afterwards
        np.add.at(summed, inverse.reshape(-1), values)
    return SparseRows(unique, summed)


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
    kernels.sum_of_squares(flat, partials, kernels.claims_for([partials.size]), 0, False)
    return float(partials.sum())


def squared_norm(array: np.ndarray) -> float:
    """Σ x² of a gradient: NaN or Inf if it holds such values. Accumulated in float64, so that a
    finite float32 gradient always has a finite norm (torch's float32 sum overflows to inf)."""
    return sum_of_squares(array)


def global_norm(squared_norms: Iterable[float]) -> float:
    """The L2 norm over all tensors from their squared norms: sqrt(Σ_i ‖g_i‖²)."""
    return math.sqrt(math.fsum(squared_norms))


def first_nonfinite(
    grads: Mapping[str, Gradient], squared_norms: Mapping[str, float]
) -> str | None:
    """The first tensor (in `grads`' order) holding NaN or ±Inf, or None.

    A finite squared norm proves a tensor finite without a second pass over it.
    """
    for name, grad in grads.items():
        if not math.isfinite(squared_norms[name]) and not bool(np.isfinite(values_of(grad)).all()):
            return name
    return None


def clip_by_value(grads: Mapping[str, Gradient], clip_value: float) -> None:
    """torch's `clip_grad_value_`: every element clamped to [−v, v], in place."""
    for grad in grads.values():
        values = values_of(grad)
        np.clip(values, -clip_value, clip_value, out=values)


def clip_by_global_norm(grads: Mapping[str, Gradient], norm: float, max_norm: float) -> None:
    """torch's `clip_grad_norm_`: every tensor scaled by min(1, max_norm / (norm + 1e-6)),
    in place."""
    coefficient = max_norm / (norm + CLIP_NORM_EPS)
    if coefficient < 1.0:
        for grad in grads.values():
            values_of(grad)[...] *= coefficient
