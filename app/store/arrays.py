"""Where a session's arrays live: database rows (checkpoint + step log) or this process's memory.

`SessionRepository` delegates its array methods to the `ArrayStore` of its database
(`Database.arrays`, reached through the SQLAlchemy session's `info`):

- `DatabaseArrays` keeps θ and state in `session_arrays` rows: a checkpoint, plus the step log
  of the steps since (`app.store.steplog`), and this process's working sets in a
  `WorkingSetCache`. A step appends its gradient to the log and the arrays are rewritten only
  every `checkpoint_every` steps (and when another process stepped the session since, so that
  logs stay short when a session moves between processes).
- `MemoryArrays` keeps them as numpy arrays in a dict (the `memory://` store). Committed arrays
  are read-only and never updated in place: a step works on copies, which become the
  committed arrays when its transaction commits, and are dropped if it rolls back. So a
  rolled-back step leaves nothing changed, and readers can use committed arrays without copies.

Changes take effect at commit: both stores register what to do then with `on_commit`, which
`Database`'s session events run after the commit (and forget on rollback).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
from sqlalchemy import Select, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.store import codec
from app.store.models import SessionArray, SessionRecord
from app.store.steplog import LoggedStep, entry_key, is_log_key, log_rows, read_log, replay
from app.store.working_sets import WorkingSet, WorkingSetCache

AFTER_COMMIT = "optaas.after_commit"
"""`Session.info` key: actions to run once the session's transaction has committed."""

LOG_PAYS_RATIO = 1.5
"""A step is logged only if the session's arrays are at least this many times its gradient's
bytes; below (plain SGD: θ alone), rewriting the arrays costs no more and reads are cheaper."""


def on_commit(db: Session, action: Callable[[], None]) -> None:
    """Run `action` after `db`'s transaction commits (never if it rolls back)."""
    db.info.setdefault(AFTER_COMMIT, []).append(action)


def slot_filter(slot: str | None) -> Callable[[str], bool]:
    """Keys of one slot (`"param"`: θ), or every key."""
    if slot is None:
        return lambda _key: True
    prefix = f"{slot}/"
    return lambda key: key.startswith(prefix)


class StepWrite(Protocol):
    def finish(self, arrays: dict[str, np.ndarray] | None) -> None:
        """The step's outcome: the arrays after it, or None if it was skipped (no change)."""

    def release(self) -> None:
        """The step was refused before anything changed (a bad gradient): the working set is
        still the session's, and may serve the next step although this transaction rolls back."""


class ArrayStore(Protocol):
    reuses_working_sets: bool
    """Whether a committed step's arrays are updated in place by the next step (so anything
    that shows them after the commit must copy them first)."""

    def load(
        self,
        db: Session,
        session_id: uuid.UUID,
        *,
        writable: bool,
        version: int | None,
        slot: str | None,
    ) -> dict[str, np.ndarray]: ...

    def save(
        self, db: Session, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]
    ) -> None: ...

    def forget(self, db: Session, session_id: uuid.UUID) -> None: ...

    def working_set(self, db: Session, record: SessionRecord) -> WorkingSet: ...

    def begin_step(
        self,
        db: Session,
        record: SessionRecord,
        working: WorkingSet,
        entry: LoggedStep,
        *,
        checkpoint: bool = False,
    ) -> StepWrite: ...


# -- in the database ------------------------------------------------------------------------


@dataclass
class DatabaseArrays:
    """Arrays in `session_arrays` rows: a checkpoint and the step log since; working sets cached."""

    cache: WorkingSetCache = field(default_factory=lambda: WorkingSetCache(0))
    checkpoint_every: int = 1
    """A checkpoint at least every this many steps (1: every step rewrites the arrays)."""
    reuses_working_sets = True

    def load(
        self,
        db: Session,
        session_id: uuid.UUID,
        *,
        writable: bool,
        version: int | None = None,
        slot: str | None = None,
    ) -> dict[str, np.ndarray]:
        wanted = slot_filter(slot)
        if version is not None:
            copies = self.cache.copy_of(session_id, version, wanted)
            if copies is not None:
                return copies
        arrays, _ = self._materialise(db, session_id, writable=writable)
        return {key: array for key, array in arrays.items() if wanted(key)}

    def save(self, db: Session, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]) -> None:
        """A checkpoint: the rows become exactly `arrays` (the log goes).

        Large arrays on PostgreSQL: the session's rows are deleted and written again with COPY
        (see `_copy_rows`); otherwise rewritten in place (upsert; on SQLite faster than
        deleting and inserting them).
        """
        self.cache.discard(session_id)
        rows = [_row(session_id, key, codec.encode(array)) for key, array in arrays.items()]
        if _is_postgresql(db) and _copy_pays(rows):
            db.execute(delete(SessionArray).where(SessionArray.session_id == session_id))
            _copy_rows(db, rows)
            return
        _delete_other_keys(db, session_id, arrays.keys())
        if rows:
            db.execute(_UPSERT[db.get_bind().dialect.name], rows)

    def forget(self, db: Session, session_id: uuid.UUID) -> None:
        """The session is being deleted (its rows go by ON DELETE CASCADE)."""
        self.cache.discard(session_id)

    def working_set(self, db: Session, record: SessionRecord) -> WorkingSet:
        """The locked session's arrays at its version: from the cache, else the database."""
        working = self.cache.take(record.id, record.version)
        if working is not None:
            return working
        arrays, logged = self._materialise(db, record.id, writable=True)
        return WorkingSet(record.id, record.version, arrays, logged_steps=logged)

    def begin_step(
        self,
        db: Session,
        record: SessionRecord,
        working: WorkingSet,
        entry: LoggedStep,
        *,
        checkpoint: bool = False,
    ) -> StepWrite:
        """Log the step now (before the core uses the gradient as scratch), if this step logs."""
        logged = not checkpoint and self._logs(working, entry)
        if logged:
            rows = [{"session_id": record.id, **row} for row in log_rows(entry)]
            if _is_postgresql(db) and _copy_pays(rows):
                _copy_rows(db, rows)
            else:
                db.execute(insert(SessionArray), rows)
        return _DatabaseStepWrite(self, db, record, working, entry, logged)

    def _logs(self, working: WorkingSet, entry: LoggedStep) -> bool:
        """Whether this step appends to the log (True) or writes a checkpoint (False)."""
        if working.logged_steps + 1 >= self.checkpoint_every:
            return False
        if not working.cached and working.logged_steps > 0:
            return False  # the log was replayed here: keep the next reader from doing it again
        return working.nbytes >= LOG_PAYS_RATIO * entry.nbytes

    def _materialise(
        self, db: Session, session_id: uuid.UUID, *, writable: bool
    ) -> tuple[dict[str, np.ndarray], int]:
        """The checkpoint with the log replayed onto it (one statement: one snapshot), and how
        many steps the log held."""
        rows = _fetch(db, session_id)
        log = [row for row in rows if is_log_key(row[0])]
        writable = writable or bool(log)
        arrays = {
            key: codec.decode(dtype, shape, data, writable=writable)
            for key, dtype, shape, data in rows
            if not is_log_key(key)
        }
        entries = read_log(log)
        replay(arrays, entries)
        return arrays, len(entries)


@dataclass
class _DatabaseStepWrite:
    store: DatabaseArrays
    db: Session
    record: SessionRecord
    working: WorkingSet
    entry: LoggedStep
    logged: bool

    def finish(self, arrays: dict[str, np.ndarray] | None) -> None:
        working, record = self.working, self.record
        if arrays is None:  # skipped: nothing changed, so nothing is logged
            if self.logged:
                self.db.execute(
                    delete(SessionArray).where(
                        SessionArray.session_id == record.id,
                        SessionArray.key.startswith(entry_key(self.entry.version)),
                    )
                )
        elif self.logged:
            working.arrays = arrays
            working.logged_steps += 1
        else:
            working.arrays = arrays
            working.logged_steps = 0
            self.store.save(self.db, record.id, arrays)

        def keep() -> None:
            working.version = record.version  # the version this transaction committed
            self.store.cache.put(working)

        on_commit(self.db, keep)

    def release(self) -> None:
        self.store.cache.put(self.working)


KEYS_PER_STATEMENT = 500
"""Keys bound in one statement: below the 999 variables of SQLite builds before 3.32 (32 766
since) and PostgreSQL's 65 535 parameters, whatever the number of tensors."""


def _delete_other_keys(db: Session, session_id: uuid.UUID, kept: Collection[str]) -> None:
    """Delete the session's rows whose key is not in `kept`.

    One `DELETE … NOT IN (…)` when the keys fit in one statement; else the stored keys are
    read and the others deleted `KEYS_PER_STATEMENT` at a time.
    """
    of_session = SessionArray.session_id == session_id
    if len(kept) <= KEYS_PER_STATEMENT:
        db.execute(delete(SessionArray).where(of_session, SessionArray.key.not_in(list(kept))))
        return
    stored = db.scalars(select(SessionArray.key).where(of_session)).all()
    kept = set(kept)
    others = [key for key in stored if key not in kept]
    for start in range(0, len(others), KEYS_PER_STATEMENT):
        batch = others[start : start + KEYS_PER_STATEMENT]
        db.execute(delete(SessionArray).where(of_session, SessionArray.key.in_(batch)))


def _row(session_id: uuid.UUID, key: str, encoded: codec.EncodedArray) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "key": key,
        "dtype": encoded.dtype,
        "shape": encoded.shape,
        "data": encoded.data,
    }


def _upsert(dialect_insert: Any) -> Any:
    statement = dialect_insert(SessionArray.__table__)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["session_id", "key"],
        set_={"dtype": excluded.dtype, "shape": excluded.shape, "data": excluded.data},
    )


_UPSERT = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}
"""INSERT … ON CONFLICT (session_id, key) DO UPDATE: an array is rewritten where it is (on
SQLite a quarter faster than deleting and inserting it again)."""

_COPY = "COPY session_arrays (session_id, key, dtype, shape, data) FROM STDIN (FORMAT BINARY)"
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_COPY_FIELDS = (5).to_bytes(2, "big")
_COPY_CHUNK_BYTES = 1 << 20


_COPY_FROM_BYTES = 256 * 1024
"""Rows of fewer bytes go in one INSERT: one round trip, where COPY takes two."""


def _is_postgresql(db: Session) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def _copy_pays(rows: list[dict[str, Any]]) -> bool:
    return sum(memoryview(row["data"]).nbytes for row in rows) >= _COPY_FROM_BYTES


def _copy_rows(db: Session, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` with COPY … FROM STDIN (FORMAT BINARY), in the session's transaction.

    Each array's bytes go to the server in 1 MiB pieces of the array's own memory. A bytea
    parameter of an INSERT would instead be copied whole into libpq's output buffer — which
    stays that large on the pooled connection — so a 40 MB gradient would cost 40 MB more of
    this process's memory, for good.
    """
    if not rows:
        return
    driver_connection = db.connection().connection.driver_connection
    with driver_connection.cursor() as cursor, cursor.copy(_COPY) as copy:
        copy.write(_COPY_HEADER)
        for row in rows:
            data = memoryview(row["data"]).cast("B")
            fields = (
                row["session_id"].bytes,
                row["key"].encode(),
                row["dtype"].encode(),
                orjson.dumps(row["shape"]),
            )
            prefix = b"".join(len(field).to_bytes(4, "big") + field for field in fields)
            copy.write(_COPY_FIELDS + prefix + len(data).to_bytes(4, "big"))
            for start in range(0, len(data), _COPY_CHUNK_BYTES):
                copy.write(data[start : start + _COPY_CHUNK_BYTES])
        copy.write(_COPY_TRAILER)


def _fetch(db: Session, session_id: uuid.UUID) -> list[Any]:
    statement = select(
        SessionArray.key, SessionArray.dtype, SessionArray.shape, SessionArray.data
    ).where(SessionArray.session_id == session_id)
    if _is_postgresql(db):
        return _fetch_binary(db, statement)
    return list(db.execute(statement).all())


def _fetch_binary(db: Session, statement: Select[Any]) -> list[Any]:
    """Run `statement` on psycopg with a binary cursor, in the session's transaction.

    psycopg 3 returns results as text by default, and bytea as text is hex: twice the bytes on
    the wire plus a decoding pass. A binary cursor gets the bytes as they are stored.
    """
    connection = db.connection()
    compiled = statement.compile(dialect=connection.dialect)
    driver_connection = connection.connection.driver_connection
    with driver_connection.cursor(binary=True) as cursor:
        cursor.execute(str(compiled), compiled.params)
        return cursor.fetchall()


# -- in memory ------------------------------------------------------------------------------


_DELETED = None


@dataclass
class MemoryArrays:
    """Arrays as numpy arrays in this process (the `memory://` store): lost when it stops."""

    _committed: dict[uuid.UUID, dict[str, np.ndarray]] = field(default_factory=dict)
    _attachments: dict[uuid.UUID, tuple[int, Any]] = field(default_factory=dict)
    """What the service kept with a session's last committed working set, by its version."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    reuses_working_sets = False

    def load(
        self,
        db: Session,
        session_id: uuid.UUID,
        *,
        writable: bool,
        version: int | None = None,
        slot: str | None = None,
    ) -> dict[str, np.ndarray]:
        """The committed arrays (read-only, no copy), or with `writable` copies of them."""
        wanted = slot_filter(slot)
        arrays = self._visible(db, session_id)
        return {
            key: array.copy() if writable else array for key, array in arrays.items() if wanted(key)
        }

    def save(self, db: Session, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]) -> None:
        """`arrays` become the session's at commit (they are the store's from now on)."""
        self._pending(db)[session_id] = dict(arrays)

    def forget(self, db: Session, session_id: uuid.UUID) -> None:
        self._pending(db)[session_id] = _DELETED

    def working_set(self, db: Session, record: SessionRecord) -> WorkingSet:
        """Copies of the committed arrays: the step updates those, and only its commit makes
        them the session's (so a rolled-back step changes nothing)."""
        arrays = self.load(db, record.id, writable=True)
        version, attachment = self._attachments.get(record.id, (None, None))
        attachment = attachment if version == record.version else None
        return WorkingSet(record.id, record.version, arrays, attachment=attachment, shared=False)

    def begin_step(
        self,
        db: Session,
        record: SessionRecord,
        working: WorkingSet,
        entry: LoggedStep,
        *,
        checkpoint: bool = False,
    ) -> StepWrite:
        return _MemoryStepWrite(self, db, record, working)

    def keep_attachment(self, session_id: uuid.UUID, version: int, attachment: Any) -> None:
        with self._lock:
            self._attachments[session_id] = (version, attachment)

    def _visible(self, db: Session, session_id: uuid.UUID) -> dict[str, np.ndarray]:
        """What this transaction sees: its own writes, else the committed arrays."""
        pending = db.info.get(_MEMORY_PENDING, {})
        if session_id in pending:
            return pending[session_id] or {}
        with self._lock:
            return self._committed.get(session_id, {})

    def _pending(self, db: Session) -> dict[uuid.UUID, dict[str, np.ndarray] | None]:
        if _MEMORY_PENDING not in db.info:
            pending: dict[uuid.UUID, dict[str, np.ndarray] | None] = {}
            db.info[_MEMORY_PENDING] = pending
            on_commit(db, lambda: self._apply(pending))
        return db.info[_MEMORY_PENDING]

    def _apply(self, pending: Mapping[uuid.UUID, dict[str, np.ndarray] | None]) -> None:
        with self._lock:
            for session_id, arrays in pending.items():
                if arrays is _DELETED:
                    self._committed.pop(session_id, None)
                    self._attachments.pop(session_id, None)
                    continue
                for array in arrays.values():
                    array.flags.writeable = False  # committed arrays never change
                self._committed[session_id] = arrays

    def __len__(self) -> int:
        return len(self._committed)


_MEMORY_PENDING = "optaas.memory.pending"


@dataclass
class _MemoryStepWrite:
    store: MemoryArrays
    db: Session
    record: SessionRecord
    working: WorkingSet

    def finish(self, arrays: dict[str, np.ndarray] | None) -> None:
        if arrays is not None:
            self.store.save(self.db, self.record.id, arrays)
        record, working = self.record, self.working
        on_commit(
            self.db,
            lambda: self.store.keep_attachment(record.id, record.version, working.attachment),
        )

    def release(self) -> None:
        """Nothing to do: the working set was a copy."""


def store_of(db: Session) -> ArrayStore:
    """The array store of `db`'s database (rows in the database, when none is configured)."""
    return db.info.get(ARRAY_STORE, _UNCACHED)


ARRAY_STORE = "optaas.arrays"
"""`Session.info` key: the database's `ArrayStore` (see `Database`)."""
_UNCACHED = DatabaseArrays()
