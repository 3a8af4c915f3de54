"""Sessions, their arrays and idempotency records in the database.

Repositories flush; the caller's unit of work commits. The sessions' interface is kept narrow on
purpose — get/add/delete a session row, load and save its arrays, and a step's working set —
so that how arrays are kept (a checkpoint and a step log in the database, or numpy arrays in
memory: `app.store.arrays`) stays behind it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

import numpy as np
from sqlalchemy import delete, null, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.store.arrays import StepWrite, store_of
from app.store.models import IdempotencyRecord, SessionRecord
from app.store.steplog import LoggedStep
from app.store.working_sets import WorkingSet

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
        store_of(self.db).forget(self.db, record.id)
        self.db.delete(record)
        self.db.flush()

    def load_arrays(
        self,
        session_id: uuid.UUID,
        *,
        writable: bool = False,
        version: int | None = None,
        slot: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Every stored array of the session by key, as of this transaction's snapshot.

        Read-only views unless `writable` (then the caller's own copies). Steps logged since
        the last checkpoint are replayed (`app.store.steplog`): callers always get θ and state
        as of the last commit. `version` (the session's, as read in this transaction) lets the
        arrays be copied from this process's working set when it holds that version; `slot`
        keeps one slot's arrays only (`"param"`: θ).
        """
        return store_of(self.db).load(
            self.db, session_id, writable=writable, version=version, slot=slot
        )

    def save_arrays(self, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace every stored array of the session with `arrays` (a checkpoint: the step log
        goes with the arrays it replaces)."""
        store_of(self.db).save(self.db, session_id, arrays)

    def working_set(self, record: SessionRecord) -> WorkingSet:
        """The arrays of `record` — locked by this transaction — at its version, writable, to
        be updated in place by a step (`begin_step`): this process's cached working set if it
        holds that version, else read from the database (`load_arrays`)."""
        return store_of(self.db).working_set(self.db, record)

    def begin_step(
        self,
        record: SessionRecord,
        working: WorkingSet,
        entry: LoggedStep,
        *,
        checkpoint: bool = False,
    ) -> StepWrite:
        """Start writing a step of `record` on `working`, before the core runs it: appends
        `entry` to the step log now if this step is logged (the core may use the gradients as
        scratch). Then `finish(arrays)` with the arrays after the step (None if it was
        skipped) writes a checkpoint if due, and keeps the working set for the next step once
        the transaction commits; `release()` if the core refused the gradient. The caller bumps
        `record.version` for an applied step.

        The log replays the core's update only: a step that also changes other arrays (say, it
        resets sums of accumulated gradients kept beside the state) must pass
        `checkpoint=True`, so that everything it leaves is written in full."""
        return store_of(self.db).begin_step(self.db, record, working, entry, checkpoint=checkpoint)


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
