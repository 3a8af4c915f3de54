"""What every use-case reads off a session's row: the core's part of its config, its tensor
names, its stored arrays split into θ and state, its view."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from app.stepping import split_stored
from app.store.models import SessionRecord
from app.store.repository import SessionRow

SERVICE_FIELDS = frozenset({"accumulate"})
"""Config fields the service acts on itself; the rest of the config is the core's."""


def core_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a session's config that the optimizer core reads."""
    return {key: value for key, value in config.items() if key not in SERVICE_FIELDS}


def tensor_names(record: SessionRecord | SessionRow) -> list[str]:
    return [tensor["name"] for tensor in record.tensors]


def split_arrays(
    record: SessionRecord | SessionRow, arrays: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Stored arrays → (θ by tensor name in the session's order, the state slots as keyed).

    The pending sums of an accumulation (`accum/<tensor>`) are neither: see `pending_sums`.
    """
    return split_stored(arrays, tensor_names(record))


@dataclass(frozen=True)
class SessionInfo:
    """A session as the use-cases report it: who it is, its config (every default filled in),
    its tensors' shapes and where its run is — `lr` the rate its next step will use."""

    id: uuid.UUID
    name: str | None
    dtype: str
    layout: str
    shapes: dict[str, list[int]]
    config: dict[str, Any]
    step: int
    accumulated: int
    lr: float
    last_loss: float | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Created:
    """A new session and its token (shown only once)."""

    session: SessionInfo
    token: str


def session_info(record: SessionRecord, lr: float) -> SessionInfo:
    return SessionInfo(
        id=record.id,
        name=record.name,
        dtype=record.dtype,
        layout=record.layout,
        shapes={tensor["name"]: tensor["shape"] for tensor in record.tensors},
        config=dict(record.config),
        step=record.step,
        accumulated=record.accumulated,
        lr=lr,
        last_loss=record.last_loss,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
