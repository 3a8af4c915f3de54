"""A step: a gradient applied to the session's working set (or, accumulating, to its sums)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app import observe
from app.errors import OptaasError
from app.optim import OptimError, Optimizer, OptimizerState, SparseRows, StepResult
from app.optim.base import Gradient
from app.service.accumulation import Accepted, accumulate, accumulates, reset_accumulation
from app.service.auth import authorized_row, token_matches
from app.service.records import core_config, split_arrays, tensor_names
from app.stepping import SessionArrays, Stepped, WorkingSet, stored_arrays
from app.stepping.replay import loggable_gradients
from app.store.database import LOCK_FIRST, Redo
from app.store.held import send
from app.store.history import HistoryRepository
from app.store.models import SessionRecord
from app.store.repository import SessionRepository, SessionRow
from app.store.steplog import LoggedStep
from app.tensors import (
    Layout,
)


@dataclass(frozen=True)
class GradientPost:
    """One posted gradient, as the API parsed it before any transaction: the gradients by
    tensor name in the session's dtype (a subset if `partial`), and the loss to record."""

    gradients: dict[str, Gradient]
    """Arrays, or `SparseRows` for a tensor posted as rows."""
    loss: float | None = None
    partial: bool = False


def step(
    db: Session,
    session_id: str,
    token: str,
    post: GradientPost,
    *,
    return_params: bool = True,
    full_tensors: bool = False,
    guard: Callable[[SessionRow], None] | None = None,
    history_max_records: int,
) -> Stepped | Accepted:
    """Apply one gradient: lock the session, take its working set, update it, store the step.

    The row lock (SQLite: the write transaction) is held until the caller commits, so steps on
    one session are applied one after another, each to the state the previous one left.
    `guard` runs with the session locked, before anything changes, and may raise to stop the
    step (the API's `If-Match` and `Idempotency-Key` checks). The step (applied or skipped) is
    added to the session's history in the same transaction. θ and state come from this
    process's working set when it holds the session's version (else from the store), and the
    step writes its gradient to the step log or a checkpoint (`SessionArrays.begin_step`).
    The answer's θ may be the working set's own arrays (`Stepped.live`). A tensor whose
    gradient came as sparse rows is answered with the rows the step changed (`SparseRows` of
    θ's new rows: copies), unless `full_tensors`.

    With `accumulate` K > 1 the gradient is added to the next step's sums instead
    (`Accepted`), and the K-th applies their mean (`step_accumulated`).

    On PostgreSQL a step is optimistic where it can be (`_optimistic`): from the row and
    working set this process's last step of the session committed, without the locking read;
    its UPDATE's version check then refuses it if the session moved on, and it raises `Redo`
    (the runner rolls back and runs it again, locking first).
    """
    started = time.perf_counter()
    repository = SessionRepository(db)
    arrays = SessionArrays(db)
    optimistic = _optimistic(db, arrays, session_id, token, post)
    if optimistic is not None:
        try:
            return _step_cached(
                db, repository, arrays, optimistic, post, started, guard, history_max_records
            ).answered(return_params, full_tensors)
        except (StaleDataError, IntegrityError) as error:  # the session moved on meanwhile
            raise Redo() from error
    row = authorized_row(repository, session_id, token)
    observe.note_step(optimizer=row.config["optimizer"]["type"])
    if guard is not None:
        guard(row)
    history = HistoryRepository(db, history_max_records)
    if accumulates(row):  # the rarer path, through the ORM's record of the row locked above
        record = repository.get(row.id, for_update=True)
        answered = (return_params, full_tensors)
        return step_accumulated(repository, history, record, post, started, answered)
    working = arrays.working_set(row)
    applied = _apply(repository, arrays, history, row, working, post, post.gradients, started)
    return applied.answered(return_params, full_tensors)


OPTIMISTIC_MAX_BYTES = 64 * 1024
"""Gradients of up to this many bytes in all may be stepped optimistically: such a step hands
the core a copy of them (which it may use as scratch), for the step's redo should it be
refused; a copy of more would cost more than the locking read it saves. (Its log entry is then
held, to go with the UPDATE: far below the size the store writes by COPY at once.)"""


def _optimistic(
    db: Session, arrays: SessionArrays, session_id: str, token: str, post: GradientPost
) -> tuple[SessionRow, WorkingSet, LoggedStep] | None:
    """The row and working set this process's last step of the session committed, for a step
    that skips the locking read (`SessionArrays.optimistic`: PostgreSQL), if this step may be
    one: not a redo (`LOCK_FIRST`), dense gradients of at most OPTIMISTIC_MAX_BYTES, a
    session that does not accumulate, the token the kept row's (anything else — say, a token
    not matching a row that may be stale — goes the locking way, which decides), and a step
    that writes no arrays but its log entry (`SessionArrays.logs_alone`)."""
    if db.info.get(LOCK_FIRST) or not _small_dense(post.gradients):
        return None
    try:
        parsed_id = uuid.UUID(session_id)
    except ValueError:
        return None
    working = arrays.optimistic(parsed_id)
    if working is None:
        return None
    row = replace(working.row)  # type: ignore[type-var]  (optimistic() gives one with a row)
    if accumulates(row) or not token_matches(row.token_hash, token):
        arrays.sets.cache.put(working)  # untouched: as good as before
        return None
    entry = logged_step(row, post)
    if not arrays.logs_alone(working, entry):  # its UPDATE must be its first write
        arrays.sets.cache.put(working)
        return None
    return row, working, entry


def _small_dense(gradients: Mapping[str, Gradient]) -> bool:
    total = 0
    for gradient in gradients.values():
        if not isinstance(gradient, np.ndarray):
            return False
        total += gradient.nbytes
    return total <= OPTIMISTIC_MAX_BYTES


def _step_cached(
    db: Session,
    repository: SessionRepository,
    arrays: SessionArrays,
    optimistic: tuple[SessionRow, WorkingSet, LoggedStep],
    post: GradientPost,
    started: float,
    guard: Callable[[SessionRow], None] | None,
    history_max_records: int,
) -> _Applied:
    """An optimistic step (see `step`): the core runs on a copy of the gradients, so that a
    redo finds them as posted."""
    row, working, entry = optimistic
    if guard is not None:
        try:
            guard(row)
        except OptaasError as error:  # a precondition may fail on a row that moved on
            arrays.sets.cache.put(working)
            raise Redo() from error
    observe.note_step(optimizer=row.config["optimizer"]["type"])
    history = HistoryRepository(db, history_max_records)
    gradients = {name: gradient.copy() for name, gradient in post.gradients.items()}
    return _apply(repository, arrays, history, row, working, post, gradients, started, entry=entry)


@dataclass(frozen=True)
class _Applied:
    """A step applied: what the answer is made of."""

    row: SessionRow
    result: StepResult
    params: dict[str, np.ndarray]
    gradients: Mapping[str, Gradient]
    live: bool

    def answered(self, return_params: bool, full_tensors: bool) -> Stepped:
        changed = _changed_rows(self.gradients, self.result, full_tensors)
        shown = answer_tensors(self.params, changed)
        return _stepped(self.row, self.result, shown if return_params else None, live=self.live)


def _apply(
    repository: SessionRepository,
    arrays: SessionArrays,
    history: HistoryRepository,
    row: SessionRow,
    working: WorkingSet,
    post: GradientPost,
    gradients: Mapping[str, Gradient],
    started: float,
    *,
    entry: LoggedStep | None = None,
) -> _Applied:
    """The step on `working` at `row`'s version with `gradients` (the posted ones, or a copy),
    its writes sent. Given its log `entry` (made already), it is an optimistic step: the row
    was not read under this transaction's lock."""
    locked = entry is None
    if entry is None:
        entry = logged_step(row, post)
    optimizer, params, state = working_state(row, working)
    write = arrays.begin_step(row, working, entry, optimistic=not locked)
    try:
        result = optimizer.step(params, state, gradients, loss=post.loss, partial=post.partial)
    except OptimError as error:
        write.release()  # the core changed nothing: the working set is as good as before
        if not locked:  # refused by a configuration that may have changed since: ask the row
            raise Redo() from error
        raise
    if result.skipped and not locked:
        write.release()  # a skipped step writes no UPDATE that would check the version
        raise Redo()
    write.finish(None if result.skipped else stored_arrays(params, state))
    if not result.skipped:
        repository.advance(
            row,
            step=state.step,
            schedule_state=state.schedule,
            last_loss=post.loss,
            locked=locked,
        )
    _record_step(history, row, post.loss, result, started)
    send(repository.db)  # the log entry, the row's UPDATE and the history record: one statement
    return _Applied(row, result, params, post.gradients, working.shared)


def _changed_rows(
    grads: Mapping[str, Gradient], result: StepResult, full_tensors: bool
) -> dict[str, np.ndarray]:
    """The rows each tensor stepped by sparse rows changed (none, if the step was skipped);
    {} with `full_tensors`, where every tensor is answered whole."""
    if full_tensors:
        return {}
    empty = np.zeros(0, np.int64)
    return {
        name: result.changed_rows.get(name, empty)
        for name, grad in grads.items()
        if isinstance(grad, SparseRows)
    }


def answer_tensors(
    params: Mapping[str, np.ndarray], changed_rows: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray | SparseRows]:
    """θ as a step answers it: each tensor whole, except those given `changed_rows`, which
    show only those rows (`SparseRows(rows, θ[rows])`, their values gathered: a copy)."""
    return {
        name: SparseRows(changed_rows[name], param[changed_rows[name]])
        if name in changed_rows
        else param
        for name, param in params.items()
    }


def step_accumulated(
    repository: SessionRepository,
    history: HistoryRepository,
    record: SessionRecord,
    post: GradientPost,
    started: float,
    answered: tuple[bool, bool],
) -> Stepped | Accepted:
    """A post to a session that accumulates: counted toward the next step (202), or — the K-th
    — applied with the others as their mean. θ, state and the sums are read from the database
    and written back in full (a checkpoint: the step log replays the core's update only, not
    the sums), so a post answered 202 is as durable as a step. `answered` is (`return_params`,
    `full_tensors`) as `step` takes them."""
    session_arrays = SessionArrays(repository.db)
    arrays = session_arrays.load(record.id, writable=True)
    params, slots = split_arrays(record, arrays)
    batch = accumulate(
        repository, record, params, arrays, post.gradients, loss=post.loss, partial=post.partial
    )
    if isinstance(batch, Accepted):
        return batch
    mean, loss, partial = batch
    state = OptimizerState.from_arrays(record.step, slots, record.schedule_state)
    optimizer = Optimizer(core_config(record.config), tensor_names(record))
    result = optimizer.step(params, state, mean, loss=loss, partial=partial)
    # A skipped accumulated step still ends its batch.
    session_arrays.save(record.id, stored_arrays(params, state))
    reset_accumulation(record)
    if result.skipped:
        repository.touch(record)
    else:
        _advance(repository, record, state, loss)
    _record_step(history, record, loss, result, started)
    return_params, full_tensors = answered
    shown = answer_tensors(params, _changed_rows(mean, result, full_tensors))
    return _stepped(record, result, shown if return_params else None)


def _advance(
    repository: SessionRepository,
    record: SessionRecord,
    state: OptimizerState,
    loss: float | None,
) -> None:
    """The session row after an applied step: t, the schedule's state, the loss, a new version."""
    record.step = state.step
    record.schedule_state = state.schedule
    record.last_loss = loss
    repository.touch(record)


def _stepped(
    record: SessionRecord | SessionRow,
    result: StepResult,
    params: dict[str, np.ndarray | SparseRows] | None,
    *,
    live: bool = False,
) -> Stepped:
    return Stepped(
        step=record.step,
        lr=result.lr,
        grad_norm=result.grad_norm,
        update_norm=result.update_norm,
        skipped=result.skipped,
        layout=Layout(record.layout),
        params=params,
        live=live,
    )


def working_state(
    record: SessionRecord | SessionRow, working: WorkingSet
) -> tuple[Optimizer, dict[str, np.ndarray], OptimizerState]:
    """The session's optimizer (kept with the working set, whose version fixes the config),
    θ by tensor name and the optimizer state, over the working set's arrays (no copies)."""
    if working.optimizer is None:
        working.optimizer = Optimizer(core_config(record.config), tensor_names(record))
    params, slots = split_arrays(record, working.arrays)
    return (
        working.optimizer,
        params,
        OptimizerState.from_arrays(record.step, slots, record.schedule_state),
    )


def logged_step(record: SessionRecord | SessionRow, post: GradientPost) -> LoggedStep:
    """The step's inputs as the core receives them, for the step log (sparse rows as their
    values and rows apart: the store keeps arrays)."""
    values, rows = loggable_gradients(post.gradients)
    return LoggedStep(
        version=record.version + 1,
        step=record.step,
        names=tensor_names(record),
        config=core_config(record.config),
        schedule_state=dict(record.schedule_state),
        loss=post.loss,
        partial=post.partial,
        gradients=values,
        rows=rows,
    )


def _record_step(
    history: HistoryRepository,
    record: SessionRecord | SessionRow,
    loss: float | None,
    result: StepResult,
    started: float,
) -> None:
    observe.note_step(skipped=result.skipped)
    history.record_step(
        record.id,
        step=record.step,
        lr=result.lr,
        loss=loss,
        grad_norm=result.grad_norm,
        update_norm=result.update_norm,
        skipped=result.skipped,
        duration_ms=(time.perf_counter() - started) * 1000,
    )
