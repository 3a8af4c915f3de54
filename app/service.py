"""The use-cases: create a session, read it, step it, delete it. The one place the layers meet.

Each function runs inside the caller's unit of work (`db`, a SQLAlchemy session in a
transaction) and never commits: the API edge commits before it answers. Wire models come in
(`app.schemas`), the optimizer core (`app.optim`) does the arithmetic, the repository
(`app.store`) keeps rows and bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app import observe
from app.errors import InvalidContent, SessionNotFound
from app.optim import OptimError, Optimizer, OptimizerState, StepResult, schedule_lrs
from app.schemas import (
    CreatedSession,
    CreateSession,
    HistoryPage,
    ParamsResponse,
    SchedulePreview,
    SchedulePreviewRequest,
    SessionConfig,
    SessionView,
    StepRequest,
    StepResponse,
)
from app.store.history import HistoryRepository
from app.store.models import PARAM_SLOT, SessionRecord
from app.store.repository import SessionRepository
from app.store.steplog import LoggedStep, split_stored, stored_arrays
from app.store.working_sets import WorkingSet
from app.tensors import (
    Layout,
    NamedTensors,
    layout_of,
    tensor_field,
    tensors_from_json,
    tensors_in_dtype,
    tensors_to_json,
)

TOKEN_BYTES = 32
SERVICE_FIELDS = frozenset({"accumulate"})
"""Config fields the service acts on itself; the rest of the config is the core's."""

# Compared against when the id is unknown, so that an unknown id and a wrong token take the same
# time as well as getting the same 404.
_DUMMY_TOKEN_HASH = hashlib.sha256(b"no session has this token").hexdigest()


def hash_token(token: str) -> str:
    """Tokens are stored as hex SHA-256: high-entropy random strings need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(db: Session, request: CreateSession) -> CreatedSession:
    """A new session at t = 0: θ₀ from the request, the optimizer's initial state, a new token."""
    config = request.model_dump(mode="json", include=set(SessionConfig.model_fields))
    if config["accumulate"] != 1:
        raise InvalidContent(
            "accumulate > 1 (synchronous gradient accumulation) is not served yet; use 1",
            field="accumulate",
        )
    dtype = np.dtype(request.dtype)
    layout = layout_of(request.params)
    params = tensors_from_json(request.params, dtype, field="params")
    _require_finite(params, layout)
    optimizer = Optimizer(core_config(config), list(params))
    state = optimizer.init(params)

    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = datetime.now(UTC)
    record = SessionRecord(
        id=uuid.uuid4(),
        name=request.name,
        token_hash=hash_token(token),
        dtype=dtype.name,
        layout=layout.value,
        tensors=[{"name": name, "shape": list(array.shape)} for name, array in params.items()],
        config=config,
        step=state.step,
        version=1,
        schedule_state=state.schedule,
        last_loss=None,
        created_at=now,
        updated_at=now,
    )
    repository = SessionRepository(db)
    repository.add(record)
    repository.save_arrays(record.id, stored_arrays(params, state))
    return CreatedSession(**session_view(record, optimizer.lr(state)).model_dump(), token=token)


def get_session(db: Session, session_id: str, token: str) -> SessionView:
    record = _authorized_record(SessionRepository(db), session_id, token)
    optimizer = Optimizer(core_config(record.config), tensor_names(record))
    state = OptimizerState.from_arrays(record.step, {}, record.schedule_state)
    return session_view(record, optimizer.lr(state))


def delete_session(db: Session, session_id: str, token: str) -> None:
    repository = SessionRepository(db)
    repository.delete(_authorized_record(repository, session_id, token, for_update=True))


def get_params(db: Session, session_id: str, token: str) -> ParamsResponse:
    repository = SessionRepository(db)
    record = _authorized_record(repository, session_id, token)
    arrays = repository.load_arrays(record.id, version=record.version, slot=PARAM_SLOT)
    params, _ = split_arrays(record, arrays)
    return ParamsResponse(step=record.step, params=tensors_to_json(Layout(record.layout), params))


def step(
    db: Session,
    session_id: str,
    token: str,
    request: StepRequest,
    *,
    return_params: bool = True,
    guard: Callable[[SessionRecord], None] | None = None,
    history_max_records: int,
    answer_after_commit: bool = True,
) -> StepResponse:
    """Apply one gradient: lock the session, take its working set, update it, store the step.

    The row lock (SQLite: the write transaction) is held until the caller commits, so steps on
    one session are applied one after another, each to the state the previous one left.
    `guard` runs with the session locked, before anything changes, and may raise to stop the
    step (the API's `If-Match` and `Idempotency-Key` checks). The step (applied or skipped) is
    added to the session's history in the same transaction. θ and state come from this
    process's working set when it holds the session's version (else from the database), and
    the step writes its gradient to the step log or a checkpoint (`SessionRepository.begin_step`).
    `answer_after_commit=False` promises that the answer is made before the transaction ends:
    then its θ may be the working set's own arrays, not copies.
    """
    started = time.perf_counter()
    repository = SessionRepository(db)
    record = _authorized_record(repository, session_id, token, for_update=True)
    observe.note_step(optimizer=record.config["optimizer"]["type"])
    if guard is not None:
        guard(record)
    grads = gradient_arrays(record, request.gradients)
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
        record.step = state.step
        record.schedule_state = state.schedule
        record.last_loss = request.loss
        record.version += 1
        record.updated_at = datetime.now(UTC)
        db.flush()
    _record_step(HistoryRepository(db, history_max_records), record, request, result, started)
    shown = None
    if return_params:
        shown = answer_arrays(working, params) if answer_after_commit else params
    return StepResponse(
        step=record.step,
        lr=result.lr,
        params=tensors_to_json(Layout(record.layout), shown) if shown is not None else None,
        grad_norm=result.grad_norm,
        update_norm=result.update_norm,
        skipped=result.skipped,
    )


def gradient_arrays(record: SessionRecord, gradients: Any) -> dict[str, np.ndarray]:
    """The posted gradients by tensor name, in the session's dtype.

    JSON gradients come in the session's form (one array, or an object of named arrays);
    a safetensors file's tensors (`NamedTensors`) are by name in either form (the single
    form's tensor is `params`).
    """
    dtype = np.dtype(record.dtype)
    if isinstance(gradients, NamedTensors):
        return tensors_in_dtype(gradients, dtype, field="gradients")
    layout = Layout(record.layout)
    if layout_of(gradients) is not layout:
        raise InvalidContent(
            f"gradients must have the form of this session's params: {_form_name(layout)}",
            field="gradients",
        )
    return tensors_from_json(gradients, dtype, field="gradients")


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
    record: SessionRecord, request: StepRequest, grads: dict[str, np.ndarray]
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


def answer_arrays(working: WorkingSet, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """θ for the answer, which is written after the commit: copies if the next step may update
    the working set's arrays in place by then (the database stores' cache)."""
    if working.shared:
        return {name: array.copy() for name, array in params.items()}
    return params


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
    """Stored arrays → (θ by tensor name in the session's order, the state slots as keyed)."""
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
    expected = record.token_hash if record is not None else _DUMMY_TOKEN_HASH
    if not hmac.compare_digest(hash_token(token), expected) or record is None:
        raise SessionNotFound()
    return record


def _record_step(
    history: HistoryRepository,
    record: SessionRecord,
    request: StepRequest,
    result: StepResult,
    started: float,
) -> None:
    observe.note_step(skipped=result.skipped)
    history.record_step(
        record.id,
        step=record.step,
        lr=result.lr,
        loss=request.loss,
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
