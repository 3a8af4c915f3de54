"""Synchronous accumulation: posts summed toward the next step, the K-th applying their mean."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from optaas_state import ACCUMULATION_SLOT, is_accumulation_key

from app.optim import NonFiniteGradient, check_gradients
from app.schemas import StepAccepted
from app.stepping import SessionArrays
from app.store.models import SessionRecord
from app.store.repository import SessionRepository

Batch = tuple[dict[str, np.ndarray], float | None, bool]
"""The mean gradient of a complete batch, the mean loss (None: no post had one), partial."""


def accumulates(record: SessionRecord) -> bool:
    """Whether posts go through the running sums: `accumulate` > 1, or posts are pending (the
    session was patched to `accumulate: 1` mid-batch: the next post completes the batch)."""
    return record.config["accumulate"] > 1 or record.accumulated > 0


def accumulate(
    repository: SessionRepository,
    record: SessionRecord,
    params: Mapping[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    *,
    loss: float | None,
    partial: bool,
) -> StepAccepted | Batch:
    """Add one posted gradient to the sums of the next step (with the session locked).

    The sums are kept per tensor as `accum/<tensor>` arrays in the session's dtype, the count of
    posts n and their losses on the session row, all written in this post's transaction: a post
    answered 202 is durable. Each post is checked like a step (names and shapes; `partial`
    allows a subset); under `nonfinite: reject` a post that makes a sum non-finite is refused
    (422) and not counted. Once n reaches K (`accumulate`) the batch is complete and its mean
    is returned, to be applied as one step:

        ḡ = (Σ_{i ≤ n} g_i) / n   for every tensor some post carried (a missing one adds 0),

    the step partial iff some tensor was carried by none, its loss the mean of the posted
    losses. Clipping and `nonfinite: skip` then act on ḡ, as torch acts on accumulated `.grad`.
    Before that: `StepAccepted` with how many are still missing.
    """
    checked = check_gradients(params, grads, partial=partial)
    sums = {
        name: arrays[accumulation_key(name)] for name in params if accumulation_key(name) in arrays
    }
    for name, grad in checked.items():
        sums[name] = np.add(sums[name], grad, out=sums[name]) if name in sums else grad
    if record.config["nonfinite"] == "reject":
        _require_finite_sums(sums, checked)
    received = record.accumulated + 1
    if loss is not None:
        record.accumulated_loss_sum = _accumulated_loss_sum(record) + loss
        record.accumulated_losses += 1
    record.accumulated = received
    goal = record.config["accumulate"]
    if received < goal:
        pending = {accumulation_key(name): total for name, total in sums.items()}
        SessionArrays(repository.db).save(record.id, {**_without_accumulation(arrays), **pending})
        repository.touch(record)
        return StepAccepted(
            step=record.step,
            received=received,
            missing=goal - received,
            wait_for_step=record.step + 1,
        )
    mean = {
        name: np.divide(sums[name], received, out=sums[name]) for name in params if name in sums
    }
    mean_loss = (
        _accumulated_loss_sum(record) / record.accumulated_losses
        if record.accumulated_losses
        else None
    )
    return mean, mean_loss, len(mean) < len(params)


def accumulation_key(tensor: str) -> str:
    return f"{ACCUMULATION_SLOT}/{tensor}"


def _require_finite_sums(sums: Mapping[str, np.ndarray], posted: Mapping[str, np.ndarray]) -> None:
    """Under `reject`: the first tensor (in order) whose sum this post made NaN or ±Inf."""
    for name in posted:
        if not np.isfinite(sums[name]).all():
            raise NonFiniteGradient(name)


def _accumulated_loss_sum(record: SessionRecord) -> float:
    """Σ of the pending posts' losses. SQLite stores NaN as NULL: a NULL sum of counted
    losses was NaN."""
    if record.accumulated_loss_sum is not None:
        return record.accumulated_loss_sum
    return math.nan if record.accumulated_losses else 0.0


def reset_accumulation(record: SessionRecord) -> None:
    record.accumulated = 0
    record.accumulated_losses = 0
    record.accumulated_loss_sum = None


def _without_accumulation(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: array for key, array in arrays.items() if not is_accumulation_key(key)}


def pending_sums(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: array for key, array in arrays.items() if is_accumulation_key(key)}
