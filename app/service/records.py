"""What every use-case reads off a session's row: the core's part of its config, its tensor
names, its stored arrays split into θ and state, its view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from app.schemas import SessionView
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
