"""The use-cases: create, read, step, change, fork, export, import and delete sessions. The one
place the layers meet.

Each function runs inside the caller's unit of work (`db`, a SQLAlchemy session in a
transaction) and never commits: the API edge commits before it answers. Wire models come in
(`app.schemas`), the optimizer core (`app.optim`) does the arithmetic, the repository
(`app.store`) keeps rows and bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from optaas_state import (
    ACCUMULATION_ROWS_SLOT,
    ACCUMULATION_SLOT,
    PARAM_SLOT,
    STEP_SLOT,
    is_accumulation_key,
)
from sqlalchemy.orm import Session

from app import observe
from app.errors import InvalidContent, OptimizerTypeChange, SessionNotFound
from app.exports import SessionState
from app.optim import (
    HyperParameterError,
    NonFiniteGradient,
    OptimError,
    Optimizer,
    OptimizerState,
    SparseRows,
    StepResult,
    check_gradients,
    coalesce_rows,
    schedule_lrs,
)
from app.optim.base import Gradient, values_of
from app.schemas import (
    CreatedSession,
    CreateSession,
    HistoryPage,
    ParamsResponse,
    SchedulePreview,
    SchedulePreviewRequest,
    SessionConfig,
    SessionPatch,
    SessionView,
    StepAccepted,
    StepRequest,
    StepResponse,
)
from app.store.history import HistoryRepository
from app.store.models import SessionRecord
from app.store.repository import SessionRepository
from app.store.steplog import LoggedStep, split_stored, stored_arrays
from app.store.working_sets import WorkingSet
from app.tensors import (
    SINGLE_TENSOR_NAME,
    Layout,
    NamedTensors,
    gradients_from_json,
    gradients_from_safetensors,
    layout_of,
    tensor_field,
    tensors_from_json,
    tensors_to_json,
)

TOKEN_BYTES = 32
PLATEAU_BEST = "best"
"""`reduce_on_plateau`'s best loss: absent from its state until a loss improves on nothing."""
SERVICE_FIELDS = frozenset({"accumulate"})
"""Config fields the service acts on itself; the rest of the config is the core's."""

# Compared against when the id is unknown, so that an unknown id and a wrong token take the same
# time as well as getting the same 404.
_DUMMY_TOKEN_HASH = hashlib.sha256(b"no session has this token").hexdigest()


def hash_token(token: str) -> str:
    """Tokens are stored as hex SHA-256: high-entropy random strings need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token_hash: str | None, token: str) -> bool:
    """Whether `token` is the one stored as `token_hash` (None: no such session), compared in
    constant time; an unknown session costs the same comparison as a wrong token."""
    expected = token_hash if token_hash is not None else _DUMMY_TOKEN_HASH
    return hmac.compare_digest(hash_token(token), expected) and token_hash is not None


@dataclass(frozen=True)
class SessionFacts:
    """What never changes about a session: its token's hash and the size of its tensors.

    Enough to authorise a request and to bound its body before the body is read: a gradient
    holds `elements` numbers in `tensors` tensors, written in JSON with `arrays` nested arrays
    (1 + d₁ + d₁d₂ + … + d₁⋯d_{k−1} per tensor of shape (d₁, …, d_k)).
    """

    id: uuid.UUID
    token_hash: str
    tensors: int
    elements: int
    arrays: int
    names_bytes: int
    """The tensors' names, UTF-8 encoded, all together (they travel in every named body)."""


def session_facts(db: Session, session_id: str) -> SessionFacts | None:
    """The session's `SessionFacts` (one row read, no lock), or None if the id names none."""
    try:
        parsed_id = uuid.UUID(session_id)
    except ValueError:
        return None
    record = SessionRepository(db).get(parsed_id)
    if record is None:
        return None
    shapes = [tensor["shape"] for tensor in record.tensors]
    return SessionFacts(
        id=record.id,
        token_hash=record.token_hash,
        tensors=len(shapes),
        elements=sum(math.prod(shape) for shape in shapes),
        arrays=sum(math.prod(shape[:depth]) for shape in shapes for depth in range(len(shape))),
        names_bytes=sum(len(name.encode()) for name in tensor_names(record)),
    )


def create_session(db: Session, request: CreateSession) -> CreatedSession:
    """A new session at t = 0: θ₀ from the request, the optimizer's initial state, a new token."""
    config = request.model_dump(mode="json", include=set(SessionConfig.model_fields))
    dtype = np.dtype(request.dtype)
    layout = layout_of(request.params)
    params = tensors_from_json(request.params, dtype, field="params")
    _require_finite(params, layout)
    optimizer = Optimizer(core_config(config), list(params))
    state = optimizer.init(params)
    record, token = _add_session(
        SessionRepository(db), request.name, layout, params, config, state, last_loss=None
    )
    return _created(record, optimizer.lr(state), token)


def _add_session(
    repository: SessionRepository,
    session_name: str | None,
    layout: Layout,
    params: Mapping[str, np.ndarray],
    config: dict[str, Any],
    state: OptimizerState,
    *,
    last_loss: float | None,
) -> tuple[SessionRecord, str]:
    """Store a new session (row and arrays) holding θ = `params` and `state`; its token."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = datetime.now(UTC)
    record = SessionRecord(
        id=uuid.uuid4(),
        name=session_name,
        token_hash=hash_token(token),
        dtype=next(iter(params.values())).dtype.name,
        layout=layout.value,
        tensors=[{"name": name, "shape": list(array.shape)} for name, array in params.items()],
        config=config,
        step=state.step,
        version=1,
        schedule_state=state.schedule,
        last_loss=last_loss,
        created_at=now,
        updated_at=now,
        accumulated=0,
        accumulated_losses=0,
        accumulated_loss_sum=None,
    )
    repository.add(record)
    repository.save_arrays(record.id, stored_arrays(params, state))
    return record, token


def _created(record: SessionRecord, lr: float, token: str) -> CreatedSession:
    return CreatedSession(**session_view(record, lr).model_dump(), token=token)


def get_session(db: Session, session_id: str, token: str) -> SessionView:
    return get_session_view(_authorized_record(SessionRepository(db), session_id, token))


def get_session_view(record: SessionRecord) -> SessionView:
    """The session as `GET` shows it, `lr` the rate its next step will use."""
    optimizer = Optimizer(core_config(record.config), tensor_names(record))
    state = OptimizerState.from_arrays(record.step, {}, record.schedule_state)
    return session_view(record, optimizer.lr(state))


def delete_session(db: Session, session_id: str, token: str) -> None:
    repository = SessionRepository(db)
    repository.delete(_authorized_record(repository, session_id, token, for_update=True))


def get_params(
    db: Session, session_id: str, token: str, *, for_eval: bool = False
) -> ParamsResponse:
    """θ_t; `for_eval`: the weights to evaluate instead (`Optimizer.eval_params`: ASGD's
    average `ax`, schedule-free's x = lerp(y, z, 1 − 1/β); θ itself for every other type),
    computed from θ and the state as stored, which it leaves as they are."""
    repository = SessionRepository(db)
    record = _authorized_record(repository, session_id, token)
    slot = None if for_eval else PARAM_SLOT
    arrays = repository.load_arrays(record.id, version=record.version, slot=slot)
    params, slots = split_arrays(record, arrays)
    if for_eval:
        optimizer = Optimizer(core_config(record.config), tensor_names(record))
        state = OptimizerState.from_arrays(record.step, slots, record.schedule_state)
        params = optimizer.eval_params(params, state)
    return ParamsResponse(step=record.step, params=tensors_to_json(Layout(record.layout), params))


def step(
    db: Session,
    session_id: str,
    token: str,
    request: StepRequest,
    *,
    return_params: bool = True,
    full_tensors: bool = False,
    guard: Callable[[SessionRecord], None] | None = None,
    history_max_records: int,
    answer_after_commit: bool = True,
) -> StepResponse | StepAccepted:
    """Apply one gradient: lock the session, take its working set, update it, store the step.

    The row lock (SQLite: the write transaction) is held until the caller commits, so steps on
    one session are applied one after another, each to the state the previous one left.
    `guard` runs with the session locked, before anything changes, and may raise to stop the
    step (the API's `If-Match` and `Idempotency-Key` checks). The step (applied or skipped) is
    added to the session's history in the same transaction. θ and state come from this
    process's working set when it holds the session's version (else from the database), and
    the step writes its gradient to the step log or a checkpoint (`SessionRepository.begin_step`).
    `answer_after_commit=False` promises that the answer is made before the transaction ends:
    then its θ may be the working set's own arrays, not copies. A tensor whose gradient came as
    sparse rows is answered with the rows the step changed (`SparseRows` of θ's new rows),
    unless `full_tensors`.

    With `accumulate` K > 1 the gradient is added to the next step's sums instead
    (`StepAccepted`), and the K-th applies their mean (`_step_accumulated`).
    """
    started = time.perf_counter()
    repository = SessionRepository(db)
    record = _authorized_record(repository, session_id, token, for_update=True)
    observe.note_step(optimizer=record.config["optimizer"]["type"])
    if guard is not None:
        guard(record)
    grads = gradient_arrays(record, request.gradients)
    history = HistoryRepository(db, history_max_records)
    if accumulates(record):
        return _step_accumulated(
            repository, history, record, request, grads, started, (return_params, full_tensors)
        )
    working = repository.working_set(record)
    optimizer, params, state = working_state(record, working)
    write = repository.begin_step(record, working, logged_step(record, request, grads))
    try:
        result = optimizer.step(params, state, grads, loss=request.loss, partial=request.partial)
    except OptimError:
        write.release()  # the core changed nothing: the working set is as good as before
        raise
    write.finish(None if result.skipped else stored_arrays(params, state))
    if not result.skipped:
        _advance(db, record, state, request.loss)
    _record_step(history, record, request.loss, result, started)
    shown = None
    if return_params:
        shown = answer_tensors(params, _changed_rows(grads, result, full_tensors))
        if answer_after_commit:
            shown = answer_arrays(working, shown)
    return _step_response(record, result, shown)


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


def _step_accumulated(
    repository: SessionRepository,
    history: HistoryRepository,
    record: SessionRecord,
    request: StepRequest,
    grads: dict[str, Gradient],
    started: float,
    answered: tuple[bool, bool],
) -> StepResponse | StepAccepted:
    """A post to a session that accumulates: counted toward the next step (202), or — the K-th
    — applied with the others as their mean. θ, state and the sums are read from the database
    and written back in full (a checkpoint: the step log replays the core's update only, not
    the sums), so a post answered 202 is as durable as a step. `answered` is (`return_params`,
    `full_tensors`) as `step` takes them."""
    arrays = repository.load_arrays(record.id, writable=True)
    params, slots = split_arrays(record, arrays)
    batch = _accumulate(
        repository, record, params, arrays, grads, loss=request.loss, partial=request.partial
    )
    if isinstance(batch, StepAccepted):
        return batch
    mean, loss, partial = batch
    state = OptimizerState.from_arrays(record.step, slots, record.schedule_state)
    optimizer = Optimizer(core_config(record.config), tensor_names(record))
    result = optimizer.step(params, state, mean, loss=loss, partial=partial)
    # A skipped accumulated step still ends its batch.
    repository.save_arrays(record.id, stored_arrays(params, state))
    _reset_accumulation(record)
    if result.skipped:
        _touch(repository.db, record)
    else:
        _advance(repository.db, record, state, loss)
    _record_step(history, record, loss, result, started)
    return_params, full_tensors = answered
    shown = answer_tensors(params, _changed_rows(mean, result, full_tensors))
    return _step_response(record, result, shown if return_params else None)


def _advance(db: Session, record: SessionRecord, state: OptimizerState, loss: float | None) -> None:
    """The session row after an applied step: t, the schedule's state, the loss, a new version."""
    record.step = state.step
    record.schedule_state = state.schedule
    record.last_loss = loss
    _touch(db, record)


def _touch(db: Session, record: SessionRecord) -> None:
    """A change of the session's stored state: a new version (working sets keyed by the old
    one are no longer used) and `updated_at`."""
    record.version += 1
    record.updated_at = datetime.now(UTC)
    db.flush()


def _step_response(
    record: SessionRecord,
    result: StepResult,
    params: Mapping[str, np.ndarray | SparseRows] | None,
) -> StepResponse:
    return StepResponse(
        step=record.step,
        lr=result.lr,
        params=tensors_to_json(Layout(record.layout), params) if params is not None else None,
        grad_norm=result.grad_norm,
        update_norm=result.update_norm,
        skipped=result.skipped,
    )


def gradient_arrays(record: SessionRecord, gradients: Any) -> dict[str, Gradient]:
    """The posted gradients by tensor name, in the session's dtype: arrays, or `SparseRows`.

    JSON gradients come in the session's form (one array, or an object of named arrays; a
    tensor's may be `{"rows", "values"}`); a safetensors file's tensors (`NamedTensors`) are by
    name in either form (the single form's tensor is `params`; `rows/<tensor>` beside one
    makes it sparse rows).
    """
    dtype = np.dtype(record.dtype)
    if isinstance(gradients, NamedTensors):
        return gradients_from_safetensors(
            gradients, tensor_names(record), dtype, field="gradients"
        )
    return gradients_from_json(gradients, Layout(record.layout), dtype, field="gradients")


def working_state(
    record: SessionRecord, working: WorkingSet
) -> tuple[Optimizer, dict[str, np.ndarray], OptimizerState]:
    """The session's optimizer (kept with the working set, whose version fixes the config),
    θ by tensor name and the optimizer state, over the working set's arrays (no copies)."""
    if working.attachment is None:
        working.attachment = Optimizer(core_config(record.config), tensor_names(record))
    params, slots = split_arrays(record, working.arrays)
    return (
        working.attachment,
        params,
        OptimizerState.from_arrays(record.step, slots, record.schedule_state),
    )


def logged_step(
    record: SessionRecord, request: StepRequest, grads: dict[str, Gradient]
) -> LoggedStep:
    """The step's inputs as the core receives them, for the step log."""
    return LoggedStep(
        version=record.version + 1,
        step=record.step,
        names=tensor_names(record),
        config=core_config(record.config),
        schedule_state=dict(record.schedule_state),
        loss=request.loss,
        partial=request.partial,
        gradients=grads,
    )


def answer_arrays(
    working: WorkingSet, params: dict[str, np.ndarray | SparseRows]
) -> dict[str, np.ndarray | SparseRows]:
    """θ for the answer, which is written after the commit: copies if the next step may update
    the working set's arrays in place by then (the database stores' cache). Changed rows
    (`SparseRows`) are copies already."""
    if working.shared:
        return {
            name: array if isinstance(array, SparseRows) else array.copy()
            for name, array in params.items()
        }
    return params


# -- synchronous accumulation ------------------------------------------------------------------

Batch = tuple[dict[str, Gradient], float | None, bool]
"""The mean gradient of a complete batch, the mean loss (None: no post had one), partial."""


def accumulates(record: SessionRecord) -> bool:
    """Whether posts go through the running sums: `accumulate` > 1, or posts are pending (the
    session was patched to `accumulate: 1` mid-batch: the next post completes the batch)."""
    return record.config["accumulate"] > 1 or record.accumulated > 0


def _accumulate(
    repository: SessionRepository,
    record: SessionRecord,
    params: Mapping[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    grads: Mapping[str, Gradient],
    *,
    loss: float | None,
    partial: bool,
) -> StepAccepted | Batch:
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
    Before that: `StepAccepted` with how many are still missing.
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
        repository.save_arrays(
            record.id, {**_without_accumulation(arrays), **_stored_sums(sums)}
        )
        _touch(repository.db, record)
        return StepAccepted(
            step=record.step,
            received=received,
            missing=goal - received,
            wait_for_step=record.step + 1,
        )
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


def _accumulated_loss_sum(record: SessionRecord) -> float:
    """Σ of the pending posts' losses. SQLite stores NaN as NULL: a NULL sum of counted
    losses was NaN."""
    if record.accumulated_loss_sum is not None:
        return record.accumulated_loss_sum
    return math.nan if record.accumulated_losses else 0.0


def _reset_accumulation(record: SessionRecord) -> None:
    record.accumulated = 0
    record.accumulated_losses = 0
    record.accumulated_loss_sum = None


def _without_accumulation(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: array for key, array in arrays.items() if not is_accumulation_key(key)}


def _pending_sums(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: array for key, array in arrays.items() if is_accumulation_key(key)}


@dataclass(frozen=True)
class Progress:
    """Where a session is: its step, and the posts received toward the next one."""

    step: int
    accumulate: int
    accumulated: int


def get_progress(db: Session, session_id: str, token: str) -> Progress:
    """The session's step and accumulation (one row read: what a waiting request polls)."""
    record = _authorized_record(SessionRepository(db), session_id, token)
    return Progress(record.step, record.config["accumulate"], record.accumulated)


# -- changing, forking, exporting, importing ------------------------------------------------


def patch_session(
    db: Session,
    session_id: str,
    token: str,
    patch: SessionPatch,
    *,
    guard: Callable[[SessionRecord], None] | None = None,
    history_max_records: int,
) -> SessionView:
    """Change the session's configuration (and name) mid-run; t, θ and the state are kept.

    `patch` is merged into the config (`merge_patch`), and the result is validated as a
    creation's would be. The optimizer's type cannot change (422 `optimizer-type-change`: fork
    instead). The state is fitted to the new config (`_fit_slots`), and the change is recorded
    in the history, all with the session locked: a step sees the old config or the new one.
    Pending accumulated gradients are kept; they join the step the new config applies.
    """
    repository = SessionRepository(db)
    record = _authorized_record(repository, session_id, token, for_update=True)
    if guard is not None:
        guard(record)
    name, config = patched_config(record, patch, allow_type_change=False)
    old, new = {"name": record.name, **record.config}, {"name": name, **config}
    if new == old:
        return get_session_view(record)
    if _slots_may_differ(record.config, config):
        arrays = repository.load_arrays(record.id, writable=True)
        params, slots = split_arrays(record, arrays)
        state = OptimizerState.from_arrays(record.step, slots, {})
        _fit_slots(state, params, config, record.config)
        repository.save_arrays(record.id, {**stored_arrays(params, state), **_pending_sums(arrays)})
    record.schedule_state = _fit_schedule_state(record.schedule_state, config, record)
    record.name, record.config = name, config
    _touch(db, record)
    HistoryRepository(db, history_max_records).record_change(
        record.id, step=record.step, old=old, new=new
    )
    return get_session_view(record)


def fork_session(
    db: Session,
    session_id: str,
    token: str,
    overrides: SessionPatch,
    *,
    guard: Callable[[SessionRecord], None] | None = None,
    history_max_records: int,
) -> CreatedSession:
    """A new session (new id and token) with the source's θ, state, t and last loss.

    `overrides` change the copy's config as a PATCH would, its optimizer type included (slots
    the new optimizer keeps start fresh, the others are dropped). The source is locked while it
    is read, so the copy is of one step. Gradients pending in the source's accumulation are not
    copied. The fork's history starts with the change its overrides made, if any.
    """
    repository = SessionRepository(db)
    source = _authorized_record(repository, session_id, token, for_update=True)
    if guard is not None:
        guard(source)
    name, config = patched_config(source, overrides, allow_type_change=True)
    params, slots = split_arrays(source, repository.load_arrays(source.id, writable=True))
    schedule_state = _fit_schedule_state(source.schedule_state, config, source)
    state = OptimizerState.from_arrays(source.step, slots, schedule_state)
    if _slots_may_differ(source.config, config):
        _fit_slots(state, params, config, source.config)
    layout = Layout(source.layout)
    record, new_token = _add_session(
        repository, name, layout, params, config, state, last_loss=source.last_loss
    )
    HistoryRepository(db, history_max_records).record_change(
        record.id,
        step=record.step,
        old={"name": source.name, **source.config},
        new={"name": name, **config},
    )
    optimizer = Optimizer(core_config(config), list(params))
    return _created(record, optimizer.lr(state), new_token)


def export_state(db: Session, session_id: str, token: str) -> SessionState:
    """The session's whole run — config, t, θ, every slot — as one consistent snapshot (the
    session is locked while it is read, so no step lands between its row and its arrays).
    Pending accumulated gradients are not part of it."""
    repository = SessionRepository(db)
    record = _authorized_record(repository, session_id, token, for_update=True)
    params, slots = split_arrays(record, repository.load_arrays(record.id, writable=True))
    state = OptimizerState.from_arrays(record.step, slots, record.schedule_state)
    optimizer = Optimizer(core_config(record.config), tensor_names(record))
    return SessionState(
        id=str(record.id),
        name=record.name,
        dtype=record.dtype,
        layout=Layout(record.layout),
        tensors=tensor_names(record),
        config=record.config,
        step=record.step,
        schedule_state=record.schedule_state,
        last_loss=record.last_loss,
        params=params,
        slots={name: state.slots.get(name, {}) for name in params},
        globals=state.globals,
        rates=[
            optimizer.schedule.rate(record.step, group.lr, record.schedule_state)
            for group in optimizer.groups
        ],
    )


def import_session(db: Session, imported: SessionState) -> CreatedSession:
    """A new session (new id and token) that continues the exported run exactly.

    Everything is checked before anything is stored (422 naming what is wrong): the config as a
    creation's (`config.…` fields), the tensors (θ for each name of `tensors`, in the export's
    dtype, finite), and for each tensor exactly the slots its optimizer keeps — names, shapes,
    dtypes (`step` an int64 from 0 to t), finite values — and the schedule's state. A tensor
    given as `{"step": 0}` alone starts with the slots of a new session's tensor.
    """
    names = imported.tensors
    if imported.layout is Layout.SINGLE and names != [SINGLE_TENSOR_NAME]:
        raise InvalidContent(
            f"an export of layout 'single' has one tensor, named {SINGLE_TENSOR_NAME!r}",
            field="tensors",
        )
    _require_same_names(imported.params, names, "params", "θ")
    _require_same_names(imported.slots, names, "state", "state")
    try:
        optimizer = Optimizer(core_config(imported.config), names)
    except HyperParameterError as error:
        raise error.within("config") from None
    dtype = np.dtype(imported.dtype)
    params = {name: imported.params[name] for name in names}
    for name, array in params.items():
        _check_array(imported, imported.param_field(name), name, array, array.shape, dtype)
    slots = {}
    fresh = {}
    for name in names:
        fresh = _fresh_state(imported.config, name, params[name])
        slots[name] = _imported_slots(imported, name, fresh.slots[name])
    _check_schedule_state(imported.schedule_state, fresh.schedule)
    if imported.last_loss is not None and not math.isfinite(imported.last_loss):
        raise InvalidContent("last_loss must be a finite number or null", field="last_loss")
    globals_ = _imported_globals(imported, optimizer.global_templates(params))
    state = OptimizerState(imported.step, slots, dict(imported.schedule_state), globals_)
    record, token = _add_session(
        SessionRepository(db),
        imported.name,
        imported.layout,
        params,
        imported.config,
        state,
        last_loss=imported.last_loss,
    )
    return _created(record, optimizer.lr(state), token)


def patched_config(
    record: SessionRecord, patch: SessionPatch, *, allow_type_change: bool
) -> tuple[str | None, dict[str, Any]]:
    """The session's name and config with `patch` merged in, validated as a creation's config.

    Raises pydantic's `ValidationError` (locations as in the patch) for a config of the wrong
    shape, `HyperParameterError` for a bad value, `OptimizerTypeChange` for a new optimizer
    type unless `allow_type_change`.
    """
    given = patch.model_dump(mode="json", exclude_unset=True)
    name = given.pop("name", record.name)
    if "optimizer" in given:
        _check_optimizer_patch(record.config["optimizer"]["type"], given, allow_type_change)
    merged = merge_patch(record.config, given)
    config = SessionConfig.model_validate(merged).model_dump(mode="json")
    Optimizer(core_config(config), tensor_names(record))  # the core's value checks
    return name, config


def _check_optimizer_patch(current: str, given: Mapping[str, Any], allow_type_change: bool) -> None:
    if given["optimizer"] is None:
        raise InvalidContent(
            'optimizer cannot be removed; give the fields to change, e.g. {"lr": 0.001}',
            field="optimizer",
        )
    wanted = given["optimizer"].get("type", current)
    if wanted != current and not allow_type_change:
        raise OptimizerTypeChange(
            f"the optimizer type cannot change mid-run ({current!r} → {wanted!r}): its state "
            "does not carry over. Fork the session with the new optimizer instead: "
            f'POST /v1/sessions/{{id}}/fork with {{"optimizer": {{"type": "{wanted}", …}}}}',
            field="optimizer.type",
        )


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` merged into `target`: RFC 7396 JSON merge patch, plus one rule for tagged objects.

    Objects are merged key by key, `null` removes a key (so its default applies), anything else
    replaces. An object whose `type` differs from the target's replaces it whole, its fields
    belonging to another type (a warm-up replaced by a cosine schedule keeps no warmup_steps).
    """
    merged = dict(target)
    for key, value in patch.items():
        current = merged.get(key)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            same_type = value.get("type", current.get("type")) == current.get("type")
            merged[key] = merge_patch(current if same_type else {}, value)
        elif isinstance(value, Mapping):
            merged[key] = merge_patch({}, value)
        else:
            merged[key] = value
    return merged


def _slots_may_differ(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return old["optimizer"] != new["optimizer"] or old.get("groups") != new.get("groups")


def _fit_slots(
    state: OptimizerState,
    params: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    old_config: Mapping[str, Any],
) -> None:
    """Give each tensor exactly the slots its optimizer under `config` keeps, and the session
    the global quantities it keeps, in place.

    Slots it had stay as they are, new ones start fresh (as the core would start them at the
    next step), unused ones are dropped: so a session always holds exactly the slots that an
    import of its config expects. Globals (the learning-rate-free types' d, distances, weight
    sums) stay where the type is the same and the new config keeps them alike (name, shape,
    dtype): a regrouped LDoG's per-tensor distances, or another type's, start as at a first
    step.
    """
    for name, param in params.items():
        kept = state.slots.get(name, {})
        fresh = _fresh_state(config, name, param).slots[name]
        state.slots[name] = {slot: kept.get(slot, array) for slot, array in fresh.items()}
    if not state.globals:
        return
    if config["optimizer"]["type"] != old_config["optimizer"]["type"]:
        state.globals = {}
        return
    templates = Optimizer(core_config(config), list(params)).global_templates(params)
    state.globals = {
        name: value
        for name, value in state.globals.items()
        if name in templates
        and value.shape == templates[name].shape
        and value.dtype == templates[name].dtype
    }


def _fit_schedule_state(
    schedule_state: Mapping[str, float], config: Mapping[str, Any], record: SessionRecord
) -> dict[str, float]:
    """The schedule's state under `config`: kept if the new schedule keeps the same state
    (reduce_on_plateau with other settings, or under a warm-up: its reductions and best loss
    carry over, so a new lr is reduced as many times), fresh otherwise."""
    fresh = _fresh_state(config, tensor_names(record)[0], np.zeros(0, record.dtype)).schedule
    if fresh and set(fresh) <= set(schedule_state):
        return dict(schedule_state)
    return fresh


def _fresh_state(config: Mapping[str, Any], name: str, param: np.ndarray) -> OptimizerState:
    """The initial state of one tensor under `config`: the slots its group's chain starts with
    (plus `step`) and the schedule's initial state. One tensor at a time, so that checking a
    large model's state never holds a second copy of all of it."""
    return Optimizer(core_config(config), [name]).init({name: param})


def _require_same_names(
    by_tensor: Mapping[str, Any], names: list[str], field: str, what: str
) -> None:
    missing = [name for name in names if name not in by_tensor]
    if missing:
        raise InvalidContent(
            f"the export has no {what} for tensor {missing[0]!r} (of its tensors {names[:20]})",
            field=field,
            tensor=missing[0],
        )
    unknown = [name for name in by_tensor if name not in set(names)]
    if unknown:
        raise InvalidContent(
            f"the export has {what} for {unknown[0]!r}, which is not one of its tensors",
            field=field,
            tensor=unknown[0],
        )


def _check_array(
    imported: SessionState,
    where: str,
    tensor: str,
    array: np.ndarray,
    shape: tuple[int, ...],
    dtype: np.dtype,
) -> None:
    """One array of an import: its shape, its dtype and finite values."""
    if array.shape != shape:
        raise InvalidContent(
            f"{where} has shape {list(array.shape)}, expected {list(shape)}",
            field=where,
            tensor=tensor,
            expected_shape=list(shape),
            got_shape=list(array.shape),
        )
    if array.dtype != dtype:
        raise InvalidContent(
            f"{where} is {array.dtype}, expected {dtype} (the export's dtype is {imported.dtype})",
            field=where,
            tensor=tensor,
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidContent(
            f"{where} holds NaN or ±Inf (a valid export has none)", field=where, tensor=tensor
        )


def _imported_slots(
    imported: SessionState, tensor: str, fresh: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The tensor's slots as imported, checked against `fresh` (what its chain starts with).

    A tensor exported as `{"step": 0}` alone has had no update (torch keeps no state for such a
    tensor): it gets `fresh`, as in a new session."""
    given = imported.slots[tensor]
    if set(given) == {STEP_SLOT} != set(fresh):
        _check_slots(imported, tensor, {STEP_SLOT: fresh[STEP_SLOT]})
        if int(given[STEP_SLOT]) == 0:
            return dict(fresh)
    _check_slots(imported, tensor, fresh)
    return dict(given)


def _check_slots(imported: SessionState, tensor: str, expected: Mapping[str, np.ndarray]) -> None:
    """The tensor's slots are exactly `expected`'s, shaped and typed alike, `step` in 0 … t."""
    given = imported.slots[tensor]
    optimizer = imported.config["optimizer"]["type"]
    for slot in expected:
        if slot not in given:
            raise InvalidContent(
                f"the state of {tensor!r} lacks {slot!r}, which this configuration's "
                f"{optimizer} keeps (slots: {sorted(expected)})",
                field=imported.slot_field(tensor, slot),
                tensor=tensor,
            )
    for slot in given:
        if slot not in expected:
            raise InvalidContent(
                f"the state of {tensor!r} has {slot!r}, which this configuration's {optimizer} "
                f"does not keep (slots: {sorted(expected)})",
                field=imported.slot_field(tensor, slot),
                tensor=tensor,
            )
    for slot, array in given.items():
        where = imported.slot_field(tensor, slot)
        _check_array(imported, where, tensor, array, expected[slot].shape, expected[slot].dtype)
        if slot == STEP_SLOT and not 0 <= int(array) <= imported.step:
            raise InvalidContent(
                f"{where} is {int(array)}: a tensor's update count must be from 0 to the "
                f"export's step ({imported.step})",
                field=where,
                tensor=tensor,
            )


def _imported_globals(
    imported: SessionState, templates: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The export's global quantities, checked against `templates` (those the configuration
    keeps once it has stepped: `Optimizer.global_templates`) — names, shapes, dtypes (JSON
    numbers are cast: a counter must be a whole number ≥ 0), finite values. One that is
    absent starts as at the first step (as a session's globals do: a Prodigy session that
    has seen only zero gradients has none yet)."""
    checked = {}
    for name, value in imported.globals.items():
        where = imported.global_field(name)
        template = templates.get(name)
        if template is None:
            kind = imported.config["optimizer"]["type"]
            raise InvalidContent(
                f"{where} is not a global quantity of this configuration's {kind} "
                f"(it keeps {sorted(templates)})",
                field=where,
            )
        if value.shape != template.shape:
            raise InvalidContent(
                f"{where} has shape {list(value.shape)}, expected {list(template.shape)}",
                field=where,
                expected_shape=list(template.shape),
                got_shape=list(value.shape),
            )
        checked[name] = _global_value(where, value, template.dtype)
    return checked


def _global_value(where: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """One global as `dtype`, cast from the number type it came in (JSON's numbers, or a
    file's dtype: a client's export read from JSON and sent as a file holds float64), a count
    from integers only. Finite, and a count ≥ 0."""
    if value.dtype.kind not in "iuf":
        raise InvalidContent(f"{where} must hold numbers, not {value.dtype}", field=where)
    if not np.isfinite(value).all():
        raise InvalidContent(f"{where} holds NaN or ±Inf (a valid export has none)", field=where)
    if dtype.kind == "i":
        if value.dtype.kind == "f" or (value < 0).any():
            raise InvalidContent(f"{where} is a count: a whole number ≥ 0", field=where)
        return value.astype(dtype)
    with np.errstate(over="ignore"):
        cast = value.astype(dtype)
    if not np.isfinite(cast).all():
        raise InvalidContent(f"{where} is beyond the range of {dtype}", field=where)
    return cast


def _check_schedule_state(given: Mapping[str, float], fresh: Mapping[str, float]) -> None:
    """`reduce_on_plateau`'s state: its counters (whole numbers ≥ 0) and optionally `best`
    (finite); {} for every other schedule."""
    allowed = {*fresh, PLATEAU_BEST} if fresh else set()
    for key, value in given.items():
        where = f"schedule_state.{key}"
        if key not in allowed:
            raise InvalidContent(
                f"{where} is not part of this schedule's state (it keeps {sorted(allowed)})",
                field=where,
            )
        counter = key in fresh
        if not math.isfinite(value) or (counter and (value < 0 or value != int(value))):
            kind = "a whole number ≥ 0" if counter else "a finite number"
            raise InvalidContent(f"{where} must be {kind}, not {value}", field=where)
    missing = sorted(set(fresh) - set(given))
    if missing:
        raise InvalidContent(
            f"schedule_state lacks {missing}, which this schedule keeps",
            field=f"schedule_state.{missing[0]}",
        )


def get_history(db: Session, session_id: str, token: str, *, after: int, limit: int) -> HistoryPage:
    """Up to `limit` history records of the session with `seq > after`, oldest first."""
    record = _authorized_record(SessionRepository(db), session_id, token)
    entries, next_cursor = HistoryRepository(db).page(record.id, after=after, limit=limit)
    return HistoryPage.model_validate(
        {"records": entries, "next": next_cursor}, from_attributes=True
    )


def preview_schedule(request: SchedulePreviewRequest) -> SchedulePreview:
    """η_0 … η_{N−1} of a schedule at base rate `lr`, as a session would use them."""
    schedule = request.schedule.model_dump(mode="json")
    rates = schedule_lrs(schedule, request.lr, request.steps)
    return SchedulePreview(lr=[rate if np.isfinite(rate) else None for rate in rates])


def core_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a session's config that the optimizer core reads."""
    return {key: value for key, value in config.items() if key not in SERVICE_FIELDS}


def tensor_names(record: SessionRecord) -> list[str]:
    return [tensor["name"] for tensor in record.tensors]


def split_arrays(
    record: SessionRecord, arrays: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Stored arrays → (θ by tensor name in the session's order, the state slots as keyed).

    The pending sums of an accumulation (`accum/<tensor>`) are neither: see `_pending_sums`.
    """
    return split_stored(arrays, tensor_names(record))


def session_view(record: SessionRecord, lr: float) -> SessionView:
    return SessionView(
        **record.config,
        id=record.id,
        name=record.name,
        dtype=record.dtype,
        layout=record.layout,
        shapes={tensor["name"]: tensor["shape"] for tensor in record.tensors},
        step=record.step,
        accumulated=record.accumulated,
        lr=lr,
        last_loss=record.last_loss,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _authorized_record(
    repository: SessionRepository, session_id: str, token: str, *, for_update: bool = False
) -> SessionRecord:
    """The session if `token` is its token; otherwise the same 404 whether or not it exists."""
    try:
        parsed_id = uuid.UUID(session_id)
    except ValueError:
        raise SessionNotFound() from None
    record = repository.get(parsed_id, for_update=for_update)
    if not token_matches(record.token_hash if record is not None else None, token):
        raise SessionNotFound()
    return record


def _record_step(
    history: HistoryRepository,
    record: SessionRecord,
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


def _require_finite(params: Mapping[str, np.ndarray], layout: Layout) -> None:
    for name, array in params.items():
        if not np.isfinite(array).all():
            where = tensor_field("params", layout, name)
            detail = f"{where} holds NaN or ±Inf, or values beyond the range of {array.dtype}"
            raise InvalidContent(detail, tensor=name)


def _form_name(layout: Layout) -> str:
    if layout is Layout.SINGLE:
        return "one (nested) array"
    return "an object of named arrays"
