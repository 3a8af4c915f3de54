"""Sessions created, read and deleted; their parameters, progress and history."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from optaas_state import PARAM_SLOT
from sqlalchemy.orm import Session

from app.errors import InvalidContent
from app.optim import Optimizer, OptimizerState, schedule_lrs
from app.optim.catalog import CHOOSES_ITS_STEP_SIZE
from app.service.auth import TOKEN_BYTES, authorized_record, hash_token
from app.service.records import (
    Created,
    SessionInfo,
    core_config,
    session_info,
    split_arrays,
    tensor_names,
)
from app.stepping import SessionArrays, stored_arrays
from app.store.history import HistoryRepository
from app.store.models import SessionRecord
from app.store.repository import SessionRepository
from app.tensors import Layout, tensor_field


@dataclass(frozen=True)
class NewSession:
    """A creation, as the API parsed it before any transaction: the name, the config (every
    default filled in), the form of θ and θ₀ by tensor name in the session's dtype."""

    name: str | None
    config: dict[str, Any]
    layout: Layout
    params: dict[str, np.ndarray]


def create_session(db: Session, new: NewSession) -> Created:
    """A new session at t = 0: θ₀ as given (finite), the optimizer's initial state, a new
    token."""
    _require_finite(new.params, new.layout)
    optimizer = Optimizer(core_config(new.config), list(new.params))
    state = optimizer.init(new.params)
    record, token = add_session(
        SessionRepository(db), new.name, new.layout, new.params, new.config, state, last_loss=None
    )
    return created_session(record, optimizer.lr(state), token)


def add_session(
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
        schedule_state=state.schedule,
        last_loss=last_loss,
        created_at=now,
        updated_at=now,
        accumulated=0,
        accumulated_losses=0,
        accumulated_loss_sum=None,
    )
    repository.add(record)
    SessionArrays(repository.db).save(record.id, stored_arrays(params, state))
    return record, token


def created_session(record: SessionRecord, lr: float, token: str) -> Created:
    return Created(session_info(record, lr), token)


def get_session(db: Session, session_id: str, token: str) -> SessionInfo:
    return current_info(authorized_record(SessionRepository(db), session_id, token))


def current_info(record: SessionRecord) -> SessionInfo:
    """The session as `GET` shows it, `lr` the rate its next step will use."""
    optimizer = Optimizer(core_config(record.config), tensor_names(record))
    state = OptimizerState.from_arrays(record.step, {}, record.schedule_state)
    return session_info(record, optimizer.lr(state))


def delete_session(db: Session, session_id: str, token: str) -> None:
    repository = SessionRepository(db)
    record = authorized_record(repository, session_id, token, for_update=True)
    SessionArrays(db).forget(record.id)
    repository.delete(record)


@dataclass(frozen=True)
class Params:
    """θ_t by tensor name (read-only views or this read's own copies), in the session's
    `layout`."""

    step: int
    layout: Layout
    params: dict[str, np.ndarray]


def get_params(db: Session, session_id: str, token: str, *, for_eval: bool = False) -> Params:
    """θ_t; `for_eval`: the weights to evaluate instead (`Optimizer.eval_params`: ASGD's
    average `ax`, schedule-free's x = lerp(y, z, 1 − 1/β); θ itself for every other type),
    computed from θ and the state as stored, which it leaves as they are."""
    repository = SessionRepository(db)
    record = authorized_record(repository, session_id, token)
    slot = None if for_eval else PARAM_SLOT
    arrays = SessionArrays(db).load(record.id, version=record.version, slot=slot)
    params, slots = split_arrays(record, arrays)
    if for_eval:
        optimizer = Optimizer(core_config(record.config), tensor_names(record))
        state = OptimizerState.from_arrays(record.step, slots, record.schedule_state)
        params = optimizer.eval_params(params, state)
    return Params(record.step, Layout(record.layout), params)


@dataclass(frozen=True)
class Progress:
    """Where a session is: its step, and the posts received toward the next one."""

    step: int
    accumulate: int
    accumulated: int


def get_progress(db: Session, session_id: str, token: str) -> Progress:
    """The session's step and accumulation (one row read: what a waiting request polls)."""
    record = authorized_record(SessionRepository(db), session_id, token)
    return Progress(record.step, record.config["accumulate"], record.accumulated)


@dataclass(frozen=True)
class HistoryPage:
    """Up to a page of a session's history records (rows: steps and changes), oldest first,
    and the cursor of the next page (None when this one reached the newest)."""

    records: list[Any]
    next: int | None


def get_history(db: Session, session_id: str, token: str, *, after: int, limit: int) -> HistoryPage:
    """Up to `limit` history records of the session with `seq > after`, oldest first."""
    record = authorized_record(SessionRepository(db), session_id, token)
    entries, next_cursor = HistoryRepository(db).page(record.id, after=after, limit=limit)
    return HistoryPage(list(entries), next_cursor)


@dataclass(frozen=True)
class SchedulePreview:
    """η_0 … η_{N−1} (None where not finite), and whether the optimizer scales them by a
    step size it finds during the run (`estimated`)."""

    lr: list[float | None]
    estimated: bool


def preview_schedule(
    schedule: Mapping[str, Any],
    steps: int,
    *,
    lr: float | None = None,
    optimizer: Mapping[str, Any] | None = None,
) -> SchedulePreview:
    """η_0 … η_{N−1} of a schedule at base rate `lr`, as a session would use them: `lr` if
    given, else the optimizer's (its type's default where it gives none), else 1. `estimated`
    says that the optimizer scales these rates by a step size it finds during the run."""
    estimated = False
    if optimizer is not None:
        Optimizer({"optimizer": dict(optimizer)}, [])  # the core's value checks, naming the field
        lr = optimizer["lr"] if lr is None else lr
        estimated = optimizer["type"] in CHOOSES_ITS_STEP_SIZE
    rates = schedule_lrs(dict(schedule), 1.0 if lr is None else lr, steps)
    return SchedulePreview([rate if np.isfinite(rate) else None for rate in rates], estimated)


def _require_finite(params: Mapping[str, np.ndarray], layout: Layout) -> None:
    for name, array in params.items():
        if not np.isfinite(array).all():
            where = tensor_field("params", layout, name)
            detail = f"{where} holds NaN or ±Inf, or values beyond the range of {array.dtype}"
            raise InvalidContent(detail, tensor=name)
