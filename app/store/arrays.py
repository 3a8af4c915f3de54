"""Where a session's arrays live: database rows (checkpoint + step log) or this process's memory.

Rows and bytes only: which arrays a session has, written and read back. What a step does with
them — working sets kept between steps, when to log a step and when to write a checkpoint,
replaying the log — is the stepping layer's (`app.stepping`), which reaches the `ArrayStore` of
its database (`Database.arrays`) through the SQLAlchemy session's `info` (`store_of`):

- `DatabaseArrays` keeps θ and state in `session_arrays` rows: a checkpoint, plus the step log
  of the steps since (`app.store.steplog`: one entry's rows per step). `read` gives both, the
  log unreplayed.
- `MemoryArrays` keeps them as numpy arrays in a dict (the `memory://` store). Committed arrays
  are read-only and never updated in place: a step works on copies, which become the
  committed arrays when its transaction commits, and are dropped if it rolls back. So a
  rolled-back step leaves nothing changed, and readers can use committed arrays without copies.
  It keeps no log.

Changes take effect at commit: both stores register what to do then with `on_commit`, which
`Database`'s session events run after the commit (and forget on rollback).
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
from sqlalchemy import Select, bindparam, delete, insert, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from app.store import codec, held
from app.store.held import HeldWrite
from app.store.models import SessionArray
from app.store.steplog import (
    LOG_PREFIX,
    LoggedStep,
    entry_key,
    is_log_key,
    log_rows,
    read_log,
)

AFTER_COMMIT = "optaas.after_commit"
"""`Session.info` key: actions to run once the session's transaction has committed."""


def on_commit(db: Session, action: Callable[[], None]) -> None:
    """Run `action` after `db`'s transaction commits (never if it rolls back)."""
    db.info.setdefault(AFTER_COMMIT, []).append(action)


@dataclass(frozen=True)
class StoredArrays:
    """A session's arrays as stored: the last checkpoint, and the steps logged since (in step
    order; empty when the checkpoint is current)."""

    checkpoint: dict[str, np.ndarray]
    log: list[LoggedStep]
    written_at: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """By checkpoint key, the version each of its chunks was written at (`save_chunks`), one
    per chunk in order; 0 for a chunk of a whole checkpoint (`save`), which no logged step
    precedes. Empty from a store that keeps no log."""
    chunk_bytes: dict[str, int] = field(default_factory=dict)
    """By checkpoint key, the bytes of each of its chunks but the last (as they were written,
    whatever the store's `chunk_bytes` is now)."""


class ArrayStore(Protocol):
    chunk_bytes: int
    """The most bytes of an array one row holds (each chunk but an array's last that many)."""
    keeps_committed: bool
    """Whether the arrays a transaction commits are kept as they are, never updated in place
    (the memory store), so that a reader may show them after the commit without a copy."""

    def read(self, db: Session, session_id: uuid.UUID, *, writable: bool) -> StoredArrays:
        """The session's checkpoint (read-only views unless `writable`) and its log, as of
        this transaction's snapshot (one statement)."""
        ...

    def save(
        self, db: Session, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]
    ) -> None: ...

    def save_chunks(
        self,
        db: Session,
        session_id: uuid.UUID,
        arrays: Mapping[str, np.ndarray],
        chunks: Mapping[str, Collection[int]],
        version: int,
    ) -> None: ...

    def append_log(
        self, db: Session, session_id: uuid.UUID, entry: LoggedStep, *, hold: bool = False
    ) -> None: ...

    def drop_log_entry(self, db: Session, session_id: uuid.UUID, version: int) -> None: ...

    def drop_log_through(self, db: Session, session_id: uuid.UUID, version: int) -> None: ...

    def forget(self, db: Session, session_id: uuid.UUID) -> None: ...


# -- in the database ------------------------------------------------------------------------


@dataclass
class DatabaseArrays:
    """Arrays in `session_arrays` rows: a checkpoint and the step log since."""

    keeps_committed = False
    chunk_bytes: int = field(default_factory=lambda: CHUNK_BYTES)
    """The most bytes of an array in one row (`_chunked`)."""

    def read(self, db: Session, session_id: uuid.UUID, *, writable: bool) -> StoredArrays:
        """The checkpoint and the log, read in one statement (one snapshot). With a log the
        checkpoint is writable whatever `writable` says: replaying it updates it in place."""
        rows = _fetch(db, session_id, writable=writable)
        log = [row[:4] for row in rows if is_log_key(row[0])]
        writable = writable or bool(log)
        checkpoint = {
            key: codec.decode(dtype, shape, data, writable=writable)
            for key, dtype, shape, data, *_ in rows
            if not is_log_key(key)
        }
        written_at = {row[0]: row[4] for row in rows if not is_log_key(row[0])}
        chunk_bytes = {row[0]: row[5] for row in rows if not is_log_key(row[0])}
        return StoredArrays(checkpoint, read_log(log), written_at, chunk_bytes)

    def save(self, db: Session, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]) -> None:
        """A checkpoint: the rows become exactly `arrays` (the log goes).

        Large arrays on PostgreSQL: the session's rows are deleted and written again with COPY
        (see `_copy_rows`); otherwise rewritten in place (upsert; on SQLite faster than
        deleting and inserting them).
        """
        rows = _chunked(
            (_row(session_id, key, codec.encode(array)) for key, array in arrays.items()),
            self.chunk_bytes,
        )
        if _is_postgresql(db) and _copy_pays(rows):
            db.execute(delete(SessionArray).where(SessionArray.session_id == session_id))
            _copy_rows(db, rows)
            return
        _delete_other_rows(db, session_id, rows)
        if rows:
            db.execute(_UPSERT[db.get_bind().dialect.name], rows)

    def save_chunks(
        self,
        db: Session,
        session_id: uuid.UUID,
        arrays: Mapping[str, np.ndarray],
        chunks: Mapping[str, Collection[int]],
        version: int,
    ) -> None:
        """Rewrite chunks `chunks[key]` of the stored arrays `arrays[key]` (each as stored: same
        size), recording `version` as the version they were written at. The others and the
        log stay as they are (a spread checkpoint, see `app.stepping.arrays`).

        On PostgreSQL, large ones are deleted and written again with COPY (`_copy_rows`);
        otherwise rewritten in place (upsert).
        """
        rows = [
            {**row, "written_at": version}
            for key, wanted in chunks.items()
            for row in self._chunks_of(session_id, key, arrays[key])
            if row["chunk"] in wanted
        ]
        if not rows:
            return
        if _is_postgresql(db) and _copy_pays(rows):
            pairs = [(row["key"], row["chunk"]) for row in rows]
            for start in range(0, len(pairs), KEYS_PER_STATEMENT):
                batch = pairs[start : start + KEYS_PER_STATEMENT]
                db.execute(
                    delete(SessionArray).where(
                        SessionArray.session_id == session_id,
                        tuple_(SessionArray.key, SessionArray.chunk).in_(batch),
                    )
                )
            _copy_rows(db, rows)
            return
        db.execute(_UPSERT[db.get_bind().dialect.name], rows)

    def _chunks_of(
        self, session_id: uuid.UUID, key: str, array: np.ndarray
    ) -> list[dict[str, Any]]:
        return _chunked([_row(session_id, key, codec.encode(array))], self.chunk_bytes)

    def append_log(
        self, db: Session, session_id: uuid.UUID, entry: LoggedStep, *, hold: bool = False
    ) -> None:
        """Add `entry`'s rows to the session's log.

        With `hold`, rows of fewer than `_COPY_FROM_BYTES` in all are held back to go with
        the step's other writes (`app.store.held`), as copies of their bytes (the core may use
        the gradients as scratch once this returns); larger ones go now, by COPY. A held entry
        taken back by `drop_log_entry` is never sent."""
        rows = _chunked(
            ({"session_id": session_id, **row} for row in log_rows(entry)), self.chunk_bytes
        )
        if _is_postgresql(db) and _copy_pays(rows):
            _copy_rows(db, rows)
        elif hold:
            values = {
                f"r{index}_{column}": bytes(row[column]) if column == "data" else row[column]
                for index, row in enumerate(rows)
                for column in _LOG_COLUMNS
            }
            write = HeldWrite(
                ("log", len(rows)),
                functools.partial(_log_insert, rows=len(rows)),
                values,
                tag=(LOG_PREFIX, session_id, entry.version),
            )
            held.hold(db, write)
        else:
            db.execute(insert(SessionArray), rows)

    def drop_log_entry(self, db: Session, session_id: uuid.UUID, version: int) -> None:
        """Remove the logged step to `version` (it was skipped after all: nothing changed)."""
        if held.take_back(db, (LOG_PREFIX, session_id, version)):
            return
        db.execute(
            delete(SessionArray).where(
                SessionArray.session_id == session_id,
                SessionArray.key.startswith(entry_key(version)),
            )
        )

    def drop_log_through(self, db: Session, session_id: uuid.UUID, version: int) -> None:
        """Remove the logged steps to versions up to `version` (every chunk is past them)."""
        db.execute(
            delete(SessionArray).where(
                SessionArray.session_id == session_id,
                SessionArray.key >= LOG_PREFIX,
                SessionArray.key < entry_key(version + 1),
            )
        )

    def forget(self, db: Session, session_id: uuid.UUID) -> None:
        """The session is being deleted (its rows go by ON DELETE CASCADE)."""


KEYS_PER_STATEMENT = 500
"""Keys bound in one statement: below the 999 variables of SQLite builds before 3.32 (32 766
since) and PostgreSQL's 65 535 parameters, whatever the number of tensors."""


def _delete_other_rows(db: Session, session_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
    """Delete the session's rows that `rows` do not rewrite: other keys, and chunks past a
    key's last (cut by a smaller `chunk_bytes` before: a key's size never changes, its number
    of chunks does with the setting).

    When every row is a chunk 0 and the keys fit in one statement, one `DELETE … WHERE key NOT
    IN (…) OR chunk > 0`; else the stored (key, chunk) pairs are read and the others deleted
    `KEYS_PER_STATEMENT` // 2 at a time.
    """
    of_session = SessionArray.session_id == session_id
    kept = {row["key"] for row in rows}
    if len(kept) <= KEYS_PER_STATEMENT and all(row["chunk"] == 0 for row in rows):
        others = or_(SessionArray.key.not_in(list(kept)), SessionArray.chunk > 0)
        db.execute(delete(SessionArray).where(of_session, others))
        return
    written = {(row["key"], row["chunk"]) for row in rows}
    stored = db.execute(select(SessionArray.key, SessionArray.chunk).where(of_session)).all()
    stale = [(key, chunk) for key, chunk in stored if (key, chunk) not in written]
    pairs_per_statement = KEYS_PER_STATEMENT // 2
    for start in range(0, len(stale), pairs_per_statement):
        batch = stale[start : start + pairs_per_statement]
        db.execute(
            delete(SessionArray).where(
                of_session, tuple_(SessionArray.key, SessionArray.chunk).in_(batch)
            )
        )


CHUNK_BYTES = 4 * 1024**2
"""The most bytes of an array one row holds by default (`OPTAAS_ARRAY_CHUNK_BYTES`); a larger
array takes several rows (`chunk` 0, 1, …). Far below PostgreSQL's 1 GB per value and
SQLite's 1e9-byte blobs, so any array can be stored; large enough that a row's own cost (a
statement's parameters, PostgreSQL's TOAST entry) is nothing beside its bytes; and small
enough that a read holds one row of the database's at a time beside the array it fills (see
`_joined`), and that a spread checkpoint's pieces (chunk c of θ and each slot: 12 MiB for
Adam) are near a step's share of the bytes, so every step writes about as much. Chosen by
measurement against 16 MiB (`benchmarks/results/chunk_bytes.md`, 1e7 Adam float32, two runs):
worst of 24 steps ÷ p50 1.48/1.22 against 1.99/1.67 on SQLite and 1.54/1.22 against
2.94/3.91 on PostgreSQL, mean step 0.94/0.96 and 1.06/0.95 of 16 MiB's; PostgreSQL's p50
rises (1.37/1.47×) because 16 MiB's p50 is a step that writes no piece."""


def _chunked(rows: Iterable[dict[str, Any]], chunk_bytes: int) -> list[dict[str, Any]]:
    """Each row of an array as the rows of its chunks: views of its bytes, no copies.

    A key's size never changes within a session (θ's and the slots' shapes are fixed when it
    is made), so rewriting a key's chunks in place leaves none over.
    """
    chunks = []
    for row in rows:
        data = memoryview(row["data"]).cast("B")
        for chunk, start in enumerate(range(0, max(len(data), 1), chunk_bytes)):
            chunks.append({**row, "chunk": chunk, "data": data[start : start + chunk_bytes]})
    return chunks


def _row(session_id: uuid.UUID, key: str, encoded: codec.EncodedArray) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "key": key,
        "dtype": encoded.dtype,
        "shape": encoded.shape,
        "data": encoded.data,
        "written_at": None,
    }


_LOG_COLUMNS = ("session_id", "key", "chunk", "dtype", "shape", "data")


def _log_insert(prefix: str, *, rows: int) -> Insert:
    """A held log entry's INSERT of `rows` rows, its bind names prefixed (`app.store.held`)."""
    table = SessionArray.__table__
    return insert(table).values(
        [
            {
                column: bindparam(f"{prefix}r{index}_{column}", type_=table.c[column].type)
                for column in _LOG_COLUMNS
            }
            for index in range(rows)
        ]
    )


def _upsert(dialect_insert: Any) -> Any:
    statement = dialect_insert(SessionArray.__table__)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["session_id", "key", "chunk"],
        set_={
            "dtype": excluded.dtype,
            "shape": excluded.shape,
            "data": excluded.data,
            "written_at": excluded.written_at,
        },
    )


_UPSERT = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}
"""INSERT … ON CONFLICT (session_id, key, chunk) DO UPDATE: an array is rewritten where it is
(on SQLite a quarter faster than deleting and inserting it again)."""

_COPY = (
    "COPY session_arrays (session_id, key, chunk, dtype, shape, written_at, data) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_COPY_FIELDS = (7).to_bytes(2, "big")
_COPY_NULL = (-1).to_bytes(4, "big", signed=True)
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
                row["chunk"].to_bytes(4, "big", signed=True),
                row["dtype"].encode(),
                orjson.dumps(row["shape"]),
            )
            prefix = b"".join(len(field).to_bytes(4, "big") + field for field in fields)
            written_at = row.get("written_at")
            prefix += (
                _COPY_NULL
                if written_at is None
                else (8).to_bytes(4, "big") + written_at.to_bytes(8, "big", signed=True)
            )
            copy.write(_COPY_FIELDS + prefix + len(data).to_bytes(4, "big"))
            for start in range(0, len(data), _COPY_CHUNK_BYTES):
                copy.write(data[start : start + _COPY_CHUNK_BYTES])
        copy.write(_COPY_TRAILER)


Joined = tuple[str, str, list[int], Any, tuple[int, ...], int]
"""An array read back whole: key, dtype, shape, data, the version each chunk was written at (0
for NULL), and the bytes of its first chunk."""


def _fetch(db: Session, session_id: uuid.UUID, *, writable: bool) -> list[Joined]:
    """The session's arrays as `Joined` (key, dtype, shape, data, …), each whole; with
    `writable`, each array's data is a buffer of its own (see `_joined`)."""
    statement = (
        select(
            SessionArray.key,
            SessionArray.chunk,
            SessionArray.dtype,
            SessionArray.shape,
            SessionArray.data,
            SessionArray.written_at,
        )
        .where(SessionArray.session_id == session_id)
        .order_by(SessionArray.key, SessionArray.chunk)
    )
    if _is_postgresql(db):
        return _joined(_stream_binary(db, statement), own=writable)
    # The connection's result fetches row by row (the ORM session's buffers every row first).
    return _joined(db.connection().execute(statement), own=writable)


class CorruptChunksError(RuntimeError):
    """An array's chunks do not make it whole (a bug, or rows changed by hand)."""


def _joined(rows: Iterable[Any], *, own: bool) -> list[Joined]:
    """Chunk rows, in (key, chunk) order, as one `Joined` per array (with each chunk's
    `written_at`, 0 for NULL, and the first chunk's bytes).

    The chunks of an array of several — of every array, with `own` — are copied, as they
    arrive, into one buffer of its own (uninitialised numpy bytes, handed to `codec.decode` as
    the array's memory, writable), so a read holds the arrays and one row at a time, not the
    rows and then the arrays too. Otherwise a one-chunk array's data is the row's bytes as
    they came (a read-only view of them needs no copy at all).
    """
    arrays: list[Joined] = []
    filling: np.ndarray | None = None
    filled = 0
    written: list[int] = []
    for key, chunk, dtype, shape, data, written_at in rows:
        size = len(memoryview(data).cast("B"))
        if chunk == 0:
            _require_whole(arrays, filling, filled)
            total = codec.nbytes(dtype, shape) if dtype in codec.STORED_DTYPES else size
            filling, filled, written = None, size, [written_at or 0]
            if size != total or (own and dtype in codec.STORED_DTYPES):
                filling = np.empty(total, np.uint8)
                filling[:size] = np.frombuffer(data, np.uint8)
                data = filling
            arrays.append((key, dtype, shape, data, written, size))  # type: ignore[arg-type]
            continue
        if arrays and arrays[-1][0] == key and dtype not in codec.STORED_DTYPES:
            joined = arrays[-1][3]  # a log entry's JSON longer than a chunk: joined as it comes
            if not isinstance(joined, bytearray):
                joined = bytearray(joined)
            joined += memoryview(data).cast("B")
            arrays[-1] = (*arrays[-1][:3], joined, *arrays[-1][4:])
            written.append(written_at or 0)
            continue
        if filling is None or arrays[-1][0] != key or filled + size > filling.size:
            raise CorruptChunksError(f"chunk {chunk} of {key!r} does not follow its array")
        filling[filled : filled + size] = np.frombuffer(data, np.uint8)
        filled += size
        written.append(written_at or 0)
    _require_whole(arrays, filling, filled)
    return [(*array[:4], tuple(array[4]), array[5]) for array in arrays]


def _require_whole(arrays: list[Any], filling: np.ndarray | None, filled: int) -> None:
    if filling is not None and filled != filling.size:
        key = arrays[-1][0]
        raise CorruptChunksError(f"{key!r} has {filled} of its {filling.size} bytes")


def _stream_binary(db: Session, statement: Select[Any]) -> Iterator[Any]:
    """Rows of `statement` one at a time, from psycopg in binary, in the session's transaction.

    psycopg 3 returns results as text by default, and bytea as text is hex: twice the bytes on
    the wire plus a decoding pass; binary gets the bytes as they are stored. Streamed (libpq's
    single-row mode), so a session's rows are never all in memory at once.
    """
    connection = db.connection()
    compiled = statement.compile(dialect=connection.dialect)
    driver_connection = connection.connection.driver_connection
    with driver_connection.cursor() as cursor:
        yield from cursor.stream(str(compiled), compiled.params, binary=True)


# -- in memory ------------------------------------------------------------------------------


_DELETED = None


@dataclass
class MemoryArrays:
    """Arrays as numpy arrays in this process (the `memory://` store): lost when it stops."""

    _committed: dict[uuid.UUID, dict[str, np.ndarray]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    keeps_committed = True
    chunk_bytes = CHUNK_BYTES  # unused: no rows

    def read(self, db: Session, session_id: uuid.UUID, *, writable: bool) -> StoredArrays:
        """The committed arrays (read-only, no copy), or with `writable` copies of them."""
        arrays = self._visible(db, session_id)
        if writable:
            arrays = {key: array.copy() for key, array in arrays.items()}
        return StoredArrays(dict(arrays), [])

    def save(self, db: Session, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]) -> None:
        """`arrays` become the session's at commit (they are the store's from now on)."""
        self._pending(db)[session_id] = dict(arrays)

    def append_log(
        self, db: Session, session_id: uuid.UUID, entry: LoggedStep, *, hold: bool = False
    ) -> None:
        raise NotImplementedError("the memory store keeps no log: a step saves its arrays")

    def drop_log_entry(self, db: Session, session_id: uuid.UUID, version: int) -> None:
        raise NotImplementedError("the memory store keeps no log")

    def save_chunks(
        self,
        db: Session,
        session_id: uuid.UUID,
        arrays: Mapping[str, np.ndarray],
        chunks: Mapping[str, Collection[int]],
        version: int,
    ) -> None:
        raise NotImplementedError("the memory store keeps no chunks: a step saves its arrays")

    def drop_log_through(self, db: Session, session_id: uuid.UUID, version: int) -> None:
        raise NotImplementedError("the memory store keeps no log")

    def forget(self, db: Session, session_id: uuid.UUID) -> None:
        self._pending(db)[session_id] = _DELETED

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
                    continue
                for array in arrays.values():
                    array.flags.writeable = False  # committed arrays never change
                self._committed[session_id] = arrays

    def __len__(self) -> int:
        return len(self._committed)


_MEMORY_PENDING = "optaas.memory.pending"


def store_of(db: Session) -> ArrayStore:
    """The array store of `db`'s database (rows in the database, when none is configured)."""
    return db.info.get(ARRAY_STORE, _IN_ROWS)


ARRAY_STORE = "optaas.arrays"
"""`Session.info` key: the database's `ArrayStore` (see `Database`)."""
_IN_ROWS = DatabaseArrays()
