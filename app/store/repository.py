"""Session rows and idempotency records in the database.

Repositories flush; the caller's unit of work commits. A session's arrays are read and written
through the stepping layer (`app.stepping.SessionArrays`), over the array store of
`app.store.arrays`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, null, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql.dml import Update

from app.store.arrays import store_of
from app.store.database import NOWAIT
from app.store.driver import DriverStatement
from app.store.held import HeldWrite, hold
from app.store.models import IdempotencyRecord, SessionRecord

PRUNE_BATCH_ROWS = 1000
"""Rows pruned per statement, so that no prune holds a write lock for long."""


@dataclass
class SessionRow:
    """A session's row as plain values, read and written by single Core statements: what the
    step path uses, with none of the ORM's per-object bookkeeping. The fields are
    `SessionRecord`'s."""

    id: uuid.UUID
    name: str | None
    token_hash: str
    dtype: str
    layout: str
    tensors: list[Any]
    config: dict[str, Any]
    step: int
    version: int
    schedule_state: dict[str, Any]
    last_loss: float | None
    created_at: datetime
    updated_at: datetime
    accumulated: int
    accumulated_losses: int
    accumulated_loss_sum: float | None


_SESSIONS = SessionRecord.__table__
_SELECT_ROW = select(*_SESSIONS.c).where(_SESSIONS.c.id == bindparam("id"))
_ROW = DriverStatement(_SELECT_ROW)
_LOCKED_ROW = DriverStatement(_SELECT_ROW.with_for_update())
_LOCKED_ROW_NOWAIT = DriverStatement(_SELECT_ROW.with_for_update(nowait=True))
"""The step path's read, compiled once and run on the driver (`app.store.driver`)."""


def _advance(prefix: str) -> Update:
    """The step path's UPDATE of the row (bind names prefixed: see `app.store.held`), which
    returns the new version where the version read was still there, and no row otherwise."""
    return (
        update(_SESSIONS)
        .where(
            _SESSIONS.c.id == bindparam(f"{prefix}row_id"),
            _SESSIONS.c.version == bindparam(f"{prefix}read"),
        )
        .values(
            step=bindparam(f"{prefix}step"),
            schedule_state=bindparam(f"{prefix}schedule_state"),
            last_loss=bindparam(f"{prefix}last_loss"),
            updated_at=bindparam(f"{prefix}updated_at"),
            version=bindparam(f"{prefix}version"),
        )
        .returning(_SESSIONS.c.version)
    )


def _advance_unlocked_nowait(prefix: str) -> Update:
    """`_advance` of a row this transaction has not locked (an optimistic step), in a
    transaction that must not wait: the row is locked `NOWAIT` first, by a sub-select the UPDATE
    evaluates before it takes the row (a row another transaction holds fails at once,
    `WouldWait`, instead of waiting for it)."""
    row_id = bindparam(f"{prefix}row_id")
    locked = select(_SESSIONS.c.id).where(_SESSIONS.c.id == row_id).with_for_update(nowait=True)
    return _advance(prefix).where(_SESSIONS.c.id == locked.scalar_subquery())


class SessionRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def row(self, session_id: uuid.UUID, *, for_update: bool = False) -> SessionRow | None:
        """The session row as a `SessionRow` (one SELECT); `for_update` locks it as `get` does.

        Not an ORM object: change it with `advance`, or read `get` for the ORM's. In a
        transaction that must not wait (`Database.transaction(wait=False)`) the lock is taken
        with NOWAIT: a row locked by another transaction fails at once (`WouldWait`)."""
        statement = _ROW
        if for_update:
            statement = _LOCKED_ROW_NOWAIT if self.db.info.get(NOWAIT) else _LOCKED_ROW
        found = statement.execute(self.db, {"id": session_id})
        if not found.rows:
            return None
        return SessionRow(**dict(zip(found.keys, found.rows[0], strict=True)))

    def advance(
        self,
        row: SessionRow,
        *,
        step: int,
        schedule_state: dict[str, Any],
        last_loss: float | None,
        locked: bool = True,
    ) -> None:
        """The row after an applied step: t, the schedule's state, the loss, `updated_at` and
        the next version, in one UPDATE — the mapper's `version_id_col` rule written in SQL
        (version + 1 where the version read is still there). Held (`app.store.held`): it goes
        with the step's other writes, when the unit of work sends them; `StaleDataError` then
        if the row had moved on.

        `locked=False`: the row was not locked by this transaction (an optimistic step that
        read it from this process's cache); the UPDATE takes the lock (`NOWAIT` in a
        transaction that must not wait), and the version check refuses a stale row. It goes
        first among the held writes, so that the row lock is taken before anything else is
        written: a locking step of the session that holds the row and is about to write the
        same log entry must not find that entry written by a transaction waiting for its lock
        (each would wait for the other until the lock timeout)."""
        now = datetime.now(UTC)
        values = {
            "row_id": row.id,
            "read": row.version,
            "step": step,
            "schedule_state": schedule_state,
            "last_loss": last_loss,
            "updated_at": now,
            "version": row.version + 1,
        }
        session_id, read = row.id, row.version

        def done(version: int | None) -> None:
            if version is None:
                raise StaleDataError(f"session {session_id} is no longer at version {read}")

        if locked:
            hold(self.db, HeldWrite("advance", _advance, values, done))
        elif not self.db.info.get(NOWAIT):
            hold(self.db, HeldWrite("advance", _advance, values, done), first=True)
        else:
            write = HeldWrite("advance-nowait", _advance_unlocked_nowait, values, done)
            hold(self.db, write, first=True)
        row.step, row.schedule_state, row.last_loss = step, schedule_state, last_loss
        row.updated_at, row.version = now, row.version + 1

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
        """Delete the session; its arrays go with it (rows: ON DELETE CASCADE)."""
        store_of(self.db).forget(self.db, record.id)
        self.db.delete(record)
        self.db.flush()

    def touch(self, record: SessionRecord) -> None:
        """Write a change of the session's stored state now, with `updated_at`.

        Every change of a session row — a step, an accumulated post, a PATCH — bumps its
        `version` by one: the mapper does it on every UPDATE (`version_id_col`), which also
        checks that the row was still at the version this transaction read. Working sets are
        keyed by the version, so one bumped is never used again."""
        record.updated_at = datetime.now(UTC)
        self.db.flush()


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
