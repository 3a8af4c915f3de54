"""Synchronous accumulation: posts summed toward the next step, the K-th applying their mean."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from optaas_state import ACCUMULATION_ROWS_SLOT, ACCUMULATION_SLOT, is_accumulation_key

from app.optim import NonFiniteGradient, Optimizer, SparseRows, check_gradients, coalesce_rows
from app.optim.base import Gradient, values_of
from app.service.records import core_config, tensor_names
from app.stepping import SessionArrays
from app.store.models import SessionRecord
from app.store.repository import SessionRepository, SessionRow

Batch = tuple[dict[str, Gradient], float | None, bool]
"""The mean gradient of a complete batch, the mean loss (None: no post had one), partial."""


def accumulates(record: SessionRecord | SessionRow) -> bool:
    """Whether posts go through the running sums: `accumulate` > 1, or posts are pending (the
    session was patched to `accumulate: 1` mid-batch: the next post completes the batch)."""
    return record.config["accumulate"] > 1 or record.accumulated > 0


@dataclass(frozen=True)
class Accepted:
    """A gradient counted toward the next step, which awaits `missing` more: the session is at
    `step`, and the step it is part of is `wait_for_step` = step + 1."""

    step: int
    received: int
    missing: int

    @property
    def wait_for_step(self) -> int:
        return self.step + 1


def accumulate(
    repository: SessionRepository,
    record: SessionRecord,
    params: Mapping[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    grads: Mapping[str, Gradient],
    *,
    loss: float | None,
    partial: bool,
) -> Accepted | Batch:
    """Add one posted gradient to the sums of the next step (with the session locked).

    The sums are kept per tensor as `accum/<tensor>` arrays in the session's dtype, the count of
    posts n and their losses on the session row, all written in this post's transaction: a post
    answered 202 is durable. Each post is checked like a step (names and shapes; `partial`
    allows a subset; sparse rows only where the tensor's optimizer takes them); under
    `nonfinite: reject` a post that makes a sum non-finite is refused (422) and not counted.
    Once n reaches K (`accumulate`) the batch is complete and its mean is returned, to be
    applied as one step:

        ḡ = (Σ_{i ≤ n} g_i) / n   for every tensor some post carried (a missing one adds 0),

    the step partial iff some tensor was carried by none, its loss the mean of the posted
    losses. Clipping and `nonfinite: skip` then act on ḡ, as torch acts on accumulated `.grad`.
    A tensor every post gave as sparse rows keeps a sparse sum (`_add_to_sum`: the union of
    their rows, `accum_rows/<tensor>` beside the values) and steps by sparse rows.
    Before that: `Accepted` with how many are still missing.
    """
    checked = check_gradients(params, grads, partial=partial)
    Optimizer(core_config(record.config), tensor_names(record)).check_sparse_rows(checked)
    sums = _pending_sums_by_tensor(arrays, params)
    for name, grad in checked.items():
        sums[name] = _add_to_sum(sums.get(name), grad, params[name].shape)
    if record.config["nonfinite"] == "reject":
        _require_finite_sums(sums, checked)
    received = record.accumulated + 1
    if loss is not None:
        record.accumulated_loss_sum = _accumulated_loss_sum(record) + loss
        record.accumulated_losses += 1
    record.accumulated = received
    goal = record.config["accumulate"]
    if received < goal:
        stored = {**_without_accumulation(arrays), **_stored_sums(sums)}
        SessionArrays(repository.db).save(record.id, stored)
        repository.touch(record)
        return Accepted(step=record.step, received=received, missing=goal - received)
    mean = {name: _divided(sums[name], received) for name in params if name in sums}
    mean_loss = (
        _accumulated_loss_sum(record) / record.accumulated_losses
        if record.accumulated_losses
        else None
    )
    return mean, mean_loss, len(mean) < len(params)


def accumulation_key(tensor: str) -> str:
    return f"{ACCUMULATION_SLOT}/{tensor}"


def accumulation_rows_key(tensor: str) -> str:
    return f"{ACCUMULATION_ROWS_SLOT}/{tensor}"


def _pending_sums_by_tensor(
    arrays: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]
) -> dict[str, Gradient]:
    """The stored sums by tensor: `accum/<t>`, as `SparseRows` where `accum_rows/<t>` is kept."""
    sums: dict[str, Gradient] = {}
    for name in params:
        total = arrays.get(accumulation_key(name))
        if total is None:
            continue
        rows = arrays.get(accumulation_rows_key(name))
        sums[name] = total if rows is None else SparseRows(rows, total)
    return sums


def _stored_sums(sums: Mapping[str, Gradient]) -> dict[str, np.ndarray]:
    """The sums keyed for storage (the inverse of `_pending_sums_by_tensor`)."""
    stored = {}
    for name, total in sums.items():
        if isinstance(total, SparseRows):
            stored[accumulation_rows_key(name)] = total.rows
        stored[accumulation_key(name)] = values_of(total)
    return stored


def _add_to_sum(total: Gradient | None, grad: Gradient, shape: tuple[int, ...]) -> Gradient:
    """total + g for one tensor of `shape`. Two sparse row gradients stay sparse: their rows
    joined and coalesced, the older values first (Σ in posting order, as the dense sums);
    sparse and dense make a dense sum (the rows added into θ's shape)."""
    if total is None:
        return grad
    if isinstance(total, SparseRows) and isinstance(grad, SparseRows):
        return coalesce_rows(
            np.concatenate([total.rows, grad.rows]), np.concatenate([total.values, grad.values])
        )
    if isinstance(total, SparseRows):
        total = _densified(total, shape, total.values.dtype)
    if isinstance(grad, SparseRows):
        with np.errstate(over="ignore", invalid="ignore"):  # judged as non-finite after
            total[grad.rows] += grad.values  # coalesced: each row once
        return total
    with np.errstate(over="ignore", invalid="ignore"):
        return np.add(total, grad, out=total)


def _densified(rows: SparseRows, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    dense = np.zeros(shape, dtype)
    dense[rows.rows] = rows.values
    return dense


def _divided(total: Gradient, count: int) -> Gradient:
    """total / n, in place (a sparse sum stays sparse: its values divided)."""
    values = values_of(total)
    np.divide(values, count, out=values)
    return total


def _require_finite_sums(sums: Mapping[str, Gradient], posted: Mapping[str, Gradient]) -> None:
    """Under `reject`: the first tensor (in order) whose sum this post made NaN or ±Inf."""
    for name in posted:
        if not np.isfinite(values_of(sums[name])).all():
            raise NonFiniteGradient(name)


def _accumulated_loss_sum(record: SessionRecord | SessionRow) -> float:
    """Σ of the pending posts' losses. SQLite stores NaN as NULL: a NULL sum of counted
    losses was NaN."""
    if record.accumulated_loss_sum is not None:
        return record.accumulated_loss_sum
    return math.nan if record.accumulated_losses else 0.0


def reset_accumulation(record: SessionRecord | SessionRow) -> None:
    record.accumulated = 0
    record.accumulated_losses = 0
    record.accumulated_loss_sum = None


def _without_accumulation(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: array for key, array in arrays.items() if not is_accumulation_key(key)}


def pending_sums(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: array for key, array in arrays.items() if is_accumulation_key(key)}
