"""Sessions, their arrays and idempotency records in the database.

Repositories flush; the caller's unit of work commits. The sessions' interface is kept narrow on
purpose — get/add/delete a session row, load and save its arrays — so that how arrays are kept
(today: every step rewrites them) can change behind it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Select, delete, insert, null, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.store import codec
from app.store.models import IdempotencyRecord, SessionArray, SessionRecord

PRUNE_BATCH_ROWS = 1000
"""Rows pruned per statement, so that no prune holds a write lock for long."""


class SessionRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def get(self, session_id: uuid.UUID, *, for_update: bool = False) -> SessionRecord | None:
        """The session row; `for_update` locks it until the transaction ends (PostgreSQL).

        On SQLite the lock is the write transaction's own (BEGIN IMMEDIATE, see `database`).
        """
        statement = select(SessionRecord).where(SessionRecord.id == session_id)
        if for_update:
            statement = statement.with_for_update()
        statement = statement.execution_options(populate_existing=True)
        return self.db.scalars(statement).one_or_none()

    def add(self, record: SessionRecord) -> None:
        self.db.add(record)
        self.db.flush()

    def delete(self, record: SessionRecord) -> None:
        """Delete the session; its arrays go with it (ON DELETE CASCADE)."""
        self.db.delete(record)
        self.db.flush()

    def load_arrays(
        self, session_id: uuid.UUID, *, writable: bool = False
    ) -> dict[str, np.ndarray]:
        """Every stored array of the session by key; read-only views unless `writable`."""
        statement = select(
            SessionArray.key, SessionArray.dtype, SessionArray.shape, SessionArray.data
        ).where(SessionArray.session_id == session_id)
        rows = (
            self._fetch_binary(statement)
            if self.db.get_bind().dialect.name == "postgresql"
            else self.db.execute(statement).all()
        )
        return {
            key: codec.decode(dtype, shape, data, writable=writable)
            for key, dtype, shape, data in rows
        }

    def save_arrays(self, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace every stored array of the session with `arrays`."""
        self.db.execute(delete(SessionArray).where(SessionArray.session_id == session_id))
        rows = []
        for key, array in arrays.items():
            encoded = codec.encode(array)
            rows.append(
                {
                    "session_id": session_id,
                    "key": key,
                    "dtype": encoded.dtype,
                    "shape": encoded.shape,
                    "data": encoded.data,
                }
            )
        if rows:
            self.db.execute(insert(SessionArray), rows)

    def _fetch_binary(self, statement: Select[Any]) -> list[Any]:
        """Run `statement` on psycopg with a binary cursor, in the session's transaction.

        psycopg 3 returns results as text by default, and bytea as text is hex: twice the bytes
        on the wire plus a decoding pass. A binary cursor gets the bytes as they are stored.
        """
        connection = self.db.connection()
        compiled = statement.compile(dialect=connection.dialect)
        driver_connection = connection.connection.driver_connection
        with driver_connection.cursor(binary=True) as cursor:
            cursor.execute(str(compiled), compiled.params)
            return cursor.fetchall()


class IdempotencyRepository:
    """Idempotency records, each added in the transaction of the change it reports."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def get(self, scope: str, key_hash: str) -> IdempotencyRecord | None:
        return self.db.scalars(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope)
            .where(IdempotencyRecord.key_hash == key_hash)
            .execution_options(populate_existing=True)
        ).one_or_none()

    def add_unless_present(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        """Insert `record` unless its (scope, key) exists: None if inserted, else the existing one.

        `INSERT … ON CONFLICT DO NOTHING`: an insert that meets another transaction's uncommitted
        row with the same key waits for that transaction's outcome (PostgreSQL; on SQLite writers
        take turns anyway), so of concurrent requests with one key exactly one inserts its record
        and the others find it.
        """
        table = IdempotencyRecord.__table__
        values = {column.key: getattr(record, column.key) for column in table.c}
        if self.db.execute(self._insert_unless_present(), values).first() is not None:
            return None
        return self.get(record.scope, record.key_hash)

    def drop_expired_answers(self, now: datetime) -> int:
        """Turn up to `PRUNE_BATCH_ROWS` records past `expires_at` into tombstones; how many."""
        table = IdempotencyRecord
        expired = (
            select(table.scope, table.key_hash)
            .where(table.body.is_not(None))
            .where(table.expires_at <= now)
            .limit(PRUNE_BATCH_ROWS)
        )
        statement = (
            update(table)
            .where(tuple_(table.scope, table.key_hash).in_(expired))
            .values(status=None, headers=null(), body=None)
        )
        return self.db.execute(statement).rowcount

    def forget_sessionless_before(self, cutoff: datetime) -> int:
        """Delete up to `PRUNE_BATCH_ROWS` records of no session created before `cutoff`."""
        table = IdempotencyRecord
        old = (
            select(table.scope, table.key_hash)
            .where(table.session_id.is_(None))
            .where(table.created_at < cutoff)
            .limit(PRUNE_BATCH_ROWS)
        )
        statement = delete(table).where(tuple_(table.scope, table.key_hash).in_(old))
        return self.db.execute(statement).rowcount

    def _insert_unless_present(self) -> postgresql.Insert | sqlite.Insert:
        """The INSERT … ON CONFLICT DO NOTHING RETURNING of this dialect, values as parameters
        (one statement, compiled once: no per-row ORM work on the hot path)."""
        dialect = self.db.get_bind().dialect.name
        return _INSERT_UNLESS_PRESENT[dialect]


_INSERT_UNLESS_PRESENT = {
    name: dialect_insert(IdempotencyRecord.__table__)
    .on_conflict_do_nothing()
    .returning(IdempotencyRecord.__table__.c.key_hash)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
