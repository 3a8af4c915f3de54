"""Tables: sessions, their stored arrays, and the requests kept for `Idempotency-Key` retries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base


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
    accumulated: Mapped[int] = mapped_column(
        BigInteger,
        default=0,
        server_default="0",
        comment="gradient posts received toward the next step (accumulate > 1)",
    )
    accumulated_losses: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0", comment="how many of those posts carried a loss"
    )
    accumulated_loss_sum: Mapped[float | None] = mapped_column(
        Double, comment="the sum of their losses (NULL: none, or not finite on SQLite)"
    )

    # The one place the version changes: every UPDATE of the row sets version = version + 1
    # (and finds the row at the version it was read at), INSERT sets 1.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class SessionArray(Base):
    """One chunk of an array of a session: θ of a tensor (`param/<tensor>`) or a slot
    (`<slot>/<tensor>`).

    `data` holds raw little-endian bytes: chunk `chunk` (from 0) of the array's bytes in C
    order, each but the last `app.store.arrays.CHUNK_BYTES` long; `dtype` and `shape` (on
    every chunk) say how to read the whole. `written_at` is the session's version when a spread
    checkpoint wrote the chunk (NULL: written by a whole checkpoint, which dropped the step log):
    the log replays onto the chunk from there (`app.stepping.replay`).
    """

    __tablename__ = "session_arrays"

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String, primary_key=True)
    chunk: Mapped[int] = mapped_column(
        Integer,
        primary_key=True,
        default=0,
        server_default=text("0"),
        comment="which piece of the array's bytes, from 0",
    )
    dtype: Mapped[str] = mapped_column(String(16))
    shape: Mapped[list[Any]]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    written_at: Mapped[int | None] = mapped_column(
        BigInteger,
        comment="the session version this chunk was written at (NULL: a whole checkpoint)",
    )


class IdempotencyRecord(Base):
    """A request sent with an `Idempotency-Key`: what it was, and the answer it got.

    Kept in the same transaction as the change the request made, so a record exists exactly when
    the change does. `scope` is where the key is unique (`session/<id>`, `create/<api key>`);
    the key and the request are kept only as SHA-256 digests. `status`, `headers` and `body` are
    the answer (the body sealed by `app.api.idempotency`); once `expires_at` passes they are
    dropped and the row stays as a tombstone, so that a late retry is refused, not applied again.
    Records of a session go with it; a creation's tombstone goes after the tombstone TTL.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (
        Index(
            "ix_idempotency_records_kept_until",
            "expires_at",
            postgresql_where=text("body IS NOT NULL"),
            sqlite_where=text("body IS NOT NULL"),
        ),
        Index(
            "ix_idempotency_records_sessionless_created_at",
            "created_at",
            postgresql_where=text("session_id IS NULL"),
            sqlite_where=text("session_id IS NULL"),
        ),
    )

    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    key_hash: Mapped[str] = mapped_column(
        String(64), primary_key=True, comment="hex SHA-256 of the Idempotency-Key"
    )
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(
        String(64), comment="hex SHA-256 of method, path, query, content type, accept and body"
    )
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(comment="the answer is dropped after this")
