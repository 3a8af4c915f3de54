"""Tables: one row per session, one row per stored array of a session."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Double, ForeignKey, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base

PARAM_SLOT = "param"
"""Arrays are keyed `"<slot>/<tensor>"`; the parameters θ themselves use this slot name."""


class SessionRecord(Base):
    """One optimisation run: its configuration, step count and small state. Arrays live apart."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), comment="hex SHA-256 of the bearer token")
    dtype: Mapped[str] = mapped_column(String(16), comment="float32 | float64")
    layout: Mapped[str] = mapped_column(
        String(16), comment="single: one array named `params`; named: an object of arrays"
    )
    tensors: Mapped[list[Any]] = mapped_column(comment='[{"name", "shape"}, …] in order')
    config: Mapped[dict[str, Any]] = mapped_column(comment="the create body, every default filled")
    step: Mapped[int] = mapped_column(BigInteger, comment="t: updates applied so far")
    version: Mapped[int] = mapped_column(BigInteger, comment="bumped on every change")
    schedule_state: Mapped[dict[str, Any]]
    last_loss: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SessionArray(Base):
    """One array of a session: θ of a tensor (`param/<tensor>`) or a slot (`<slot>/<tensor>`).

    `data` holds the raw little-endian bytes; `dtype` and `shape` say how to read them.
    """

    __tablename__ = "session_arrays"

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String, primary_key=True)
    dtype: Mapped[str] = mapped_column(String(16))
    shape: Mapped[list[Any]]
    data: Mapped[bytes] = mapped_column(LargeBinary)
