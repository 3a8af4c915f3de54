"""A session's θ and state as steps use them: working sets, the step log, checkpoints.

The store (`app.store.arrays`) keeps rows and bytes: a checkpoint and the log of steps since
(database rows), or committed numpy arrays (memory). This layer decides what a step reads and
writes, and keeps what a process may keep between steps:

- reading (`SessionArrays.load`) replays the log onto the checkpoint (`replay`), so every
  reader sees θ and state as of the last commit and no caller needs to know about the log; a
  reader of the version this process holds a working set of gets copies of it instead;
- a step works on a *working set* (`working_set`): this process's cached arrays of the session
  when they are at its version, else the stored ones (see `app.stepping.working_sets`);
- a step's write (`begin_step` … `finish`) appends its inputs to the log and, for a large
  session whose rule is piecewise, rewrites the oldest 1/`checkpoint_every` of its chunks (a
  spread checkpoint, `app.stepping.spread`), dropping the logged steps no chunk needs any more;
  otherwise it writes a whole checkpoint every `checkpoint_every` steps (and when the log would
  not pay). It puts the working set back into the cache once the transaction commits;
- an answer made after the commit copies θ if the next step may update it in place by then
  (`Stepped.detached`): the cached working sets of a database store, never the memory store's
  committed arrays.

One `WorkingSets` per database and process holds the cache, the checkpoint policy and, for the
memory store, the optimizer kept with a session's last committed arrays.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np
from optaas_state import split_key
from sqlalchemy.orm import Session

from app.optim import Optimizer
from app.stepping import spread
from app.stepping.replay import replay, replays_by_parts
from app.stepping.working_sets import WorkingSet, WorkingSetCache
from app.store.arrays import ArrayStore, StoredArrays, on_commit, store_of
from app.store.database import DATABASE, Database, Redo
from app.store.models import SessionRecord
from app.store.repository import SessionRow
from app.store.steplog import LoggedStep

LOG_PAYS_RATIO = 1.5
"""A step is logged only if the session's arrays are at least this many times its gradient's
bytes; below (plain SGD: θ alone), rewriting the arrays costs no more and reads are cheaper."""


class StepWrite(Protocol):
    def finish(self, arrays: dict[str, np.ndarray] | None) -> None:
        """The step's outcome: the arrays after it, or None if it was skipped (no change)."""

    def release(self) -> None:
        """The step was refused before anything changed (a bad gradient): the working set is
        still the session's, and may serve the next step although this transaction rolls back."""


@dataclass
class WorkingSets:
    """This process's working sets of one database's sessions, and when its steps checkpoint."""

    store: ArrayStore
    cache: WorkingSetCache = field(default_factory=lambda: WorkingSetCache(0))
    checkpoint_every: int = 1
    """A checkpoint at least every this many steps (1: every step rewrites the arrays)."""
    _optimizers: dict[uuid.UUID, tuple[int, Optimizer | None]] = field(default_factory=dict)
    """Memory store: the optimizer of a session's last committed working set, by its version."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keep_optimizer(
        self, session_id: uuid.UUID, version: int, optimizer: Optimizer | None
    ) -> None:
        with self._lock:
            self._optimizers[session_id] = (version, optimizer)

    def optimizer_at(self, session_id: uuid.UUID, version: int) -> Optimizer | None:
        with self._lock:
            kept_version, optimizer = self._optimizers.get(session_id, (None, None))
        return optimizer if kept_version == version else None

    def forget(self, session_id: uuid.UUID) -> None:
        self.cache.discard(session_id)
        with self._lock:
            self._optimizers.pop(session_id, None)


_BY_DATABASE: weakref.WeakKeyDictionary[Database, WorkingSets] = weakref.WeakKeyDictionary()
_BY_DATABASE_LOCK = threading.Lock()
_UNCONFIGURED: dict[int, WorkingSets] = {}


def working_sets_of(database: Database) -> WorkingSets:
    """The database's `WorkingSets` in this process, made at first use from its settings."""
    with _BY_DATABASE_LOCK:
        kept = _BY_DATABASE.get(database)
        if kept is None:
            kept = _BY_DATABASE[database] = WorkingSets(
                database.arrays,
                WorkingSetCache(database.cache_max_bytes),
                database.checkpoint_every,
            )
        return kept


def _working_sets(db: Session) -> WorkingSets:
    database = db.info.get(DATABASE)
    if database is not None:
        return working_sets_of(database)
    store = store_of(db)  # a session made outside `Database`: no cache, every step checkpoints
    with _BY_DATABASE_LOCK:
        return _UNCONFIGURED.setdefault(id(store), WorkingSets(store))


def slot_filter(slot: str | None) -> Callable[[str], bool]:
    """Keys of one slot (`"param"`: θ), or every key."""
    if slot is None:
        return lambda _key: True
    prefix = f"{slot}/"
    return lambda key: key.startswith(prefix)


class SessionArrays:
    """A session's arrays within one unit of work (`db`): read, written, stepped."""

    def __init__(self, db: Session) -> None:
        self.db = db
        self.sets = _working_sets(db)
        self.store = self.sets.store

    def load(
        self,
        session_id: uuid.UUID,
        *,
        writable: bool = False,
        version: int | None = None,
        slot: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Every array of the session by key, as of this transaction's snapshot.

        Read-only views unless `writable` (then the caller's own copies). Steps logged since
        the last checkpoint are replayed: callers always get θ and state as of the last commit.
        `version` (the session's, as read in this transaction) lets the arrays be copied from
        this process's working set when it holds that version; `slot` keeps one slot's arrays
        only (`"param"`: θ).
        """
        wanted = slot_filter(slot)
        if version is not None:
            copies = self.sets.cache.copy_of(session_id, version, wanted)
            if copies is not None:
                return copies
        stored, _ = self._materialise(session_id, writable=writable)
        return {key: array for key, array in stored.checkpoint.items() if wanted(key)}

    def save(self, session_id: uuid.UUID, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace every stored array of the session with `arrays` (a checkpoint: the step log
        goes with the arrays it replaces)."""
        self.sets.cache.discard(session_id)
        self.store.save(self.db, session_id, arrays)

    def forget(self, session_id: uuid.UUID) -> None:
        """The session is being deleted: this process keeps nothing of it (its stored arrays go
        with its row: `SessionRepository.delete`)."""
        self.sets.forget(session_id)

    def working_set(self, record: SessionRecord | SessionRow) -> WorkingSet:
        """The arrays of `record` — locked by this transaction — at its version, writable, to
        be updated in place by a step (`begin_step`): this process's cached working set if it
        holds that version, else read from the store.

        The memory store's committed arrays are never updated in place: its working set is a
        copy of them, which only the step's commit makes the session's."""
        if self.store.keeps_committed:
            arrays = self.store.read(self.db, record.id, writable=True).checkpoint
            optimizer = self.sets.optimizer_at(record.id, record.version)
            return WorkingSet(record.id, record.version, arrays, optimizer=optimizer, shared=False)
        working = self.sets.cache.take(record.id, record.version)
        if working is not None:
            return working
        stored, by_parts = self._materialise(record.id, writable=True)
        return WorkingSet(
            record.id,
            record.version,
            stored.checkpoint,
            log=[entry.version for entry in stored.log],
            log_by_parts=by_parts,
            chunks=self._chunks_as_cut(stored),
        )

    def optimistic(self, session_id: uuid.UUID) -> WorkingSet | None:
        """This process's working set of the session with the row its last step committed
        (`WorkingSet.row`), taken out of the cache for a step that reads no row first; None
        where such steps are not taken (only PostgreSQL's row locks are worth skipping: SQLite
        locks the whole database at BEGIN anyway; the memory store keeps no working sets)."""
        if self.store.keeps_committed or self.db.get_bind().dialect.name != "postgresql":
            return None
        return self.sets.cache.take_with_row(session_id)

    def begin_step(
        self,
        record: SessionRecord | SessionRow,
        working: WorkingSet,
        entry: LoggedStep,
        *,
        checkpoint: bool = False,
        optimistic: bool = False,
    ) -> StepWrite:
        """Start writing a step of `record` on `working`, before the core runs it: appends
        `entry` to the step log now if this step is logged (the core may use the gradients as
        scratch). Then `finish(arrays)` with the arrays after the step (None if it was
        skipped) writes a checkpoint if due, and keeps the working set for the next step once
        the transaction commits; `release()` if the core refused the gradient. The caller bumps
        the session's version for an applied step.

        The log replays the core's update only: a step that also changes other arrays (say, it
        resets sums of accumulated gradients kept beside the state) must pass
        `checkpoint=True`, so that everything it leaves is written in full.

        `optimistic`: the row is not locked yet (its UPDATE, held, will lock it), so nothing may
        be written before that UPDATE: a step that would write more than its held log entry (a
        checkpoint, a spread one: callers ask `logs_alone` first) puts the working set back and
        raises `Redo`, to run locking first. (Written before the lock, such rows could wait for
        a locking step of the session that waits for this step's lock in turn: a deadlock.)"""
        if self.store.keeps_committed:
            return _CopiedStepWrite(self, record, working)
        by_parts = working.optimizer is not None and replays_by_parts(working.optimizer, entry)
        if by_parts:  # a later step may checkpoint some of its chunks only: see `replay`
            entry = replace(entry, scalars=_scalars_before(working.arrays, entry))
        pieces = None if checkpoint else self._spread_pieces(working, entry, by_parts)
        if pieces is not None:
            write: _Write = "spread"
        else:
            write = "log" if not checkpoint and self._logs(working, entry) else "checkpoint"
        if optimistic and write != "log":
            self.sets.cache.put(working)
            raise Redo()
        if write != "checkpoint":  # a plain log entry goes with the step's other writes
            self.store.append_log(self.db, record.id, entry, hold=write == "log")
        return _CachedStepWrite(self, record, working, entry, write, by_parts, pieces or [])

    def logs_alone(self, working: WorkingSet, entry: LoggedStep) -> bool:
        """Whether a step with `entry` on `working` writes its log entry and no other arrays (no
        checkpoint, no spread one): what `begin_step(optimistic=True)` takes."""
        by_parts = working.optimizer is not None and replays_by_parts(working.optimizer, entry)
        return self._spread_pieces(working, entry, by_parts) is None and self._logs(working, entry)

    def _logs(self, working: WorkingSet, entry: LoggedStep) -> bool:
        """Whether this step appends to the log (True) or writes a checkpoint (False)."""
        if working.logged_steps + 1 >= self.sets.checkpoint_every:
            return False
        if not working.cached and working.logged_steps > 0:
            return False  # the log was replayed here: keep the next reader from doing it again
        return working.nbytes >= LOG_PAYS_RATIO * entry.nbytes

    def _spread_pieces(
        self, working: WorkingSet, entry: LoggedStep, by_parts: bool
    ) -> list[spread.Piece] | None:
        """The session's pieces if this step logs and writes a spread checkpoint: its rule and
        every logged step replay by parts, its chunks are cut as the store cuts them, and it is
        larger than a chunk, in two pieces or more, with a log that pays (see `_logs`)."""
        chunk_bytes = self.store.chunk_bytes
        if not (by_parts and working.log_by_parts and working.chunks is not None):
            return None
        if self.sets.checkpoint_every < 2 or working.nbytes <= chunk_bytes:
            return None
        if working.nbytes < LOG_PAYS_RATIO * entry.nbytes:
            return None
        pieces = spread.pieces_of(working.arrays, chunk_bytes)
        return pieces if pieces is not None and len(pieces) > 1 else None

    def _materialise(self, session_id: uuid.UUID, *, writable: bool) -> tuple[StoredArrays, bool]:
        """The stored arrays with the log replayed onto the checkpoint, and whether every
        logged step replays by parts."""
        stored = self.store.read(self.db, session_id, writable=writable)
        by_parts = replay(stored.checkpoint, stored.log, stored.written_at, stored.chunk_bytes)
        return stored, by_parts

    def _chunks_as_cut(self, stored: StoredArrays) -> dict[str, list[int]] | None:
        """Each stored key's chunks' versions, if every key is cut as the store cuts arrays
        now (else None: rows from before chunks, or another chunk size)."""
        chunk_bytes = self.store.chunk_bytes
        for key, array in stored.checkpoint.items():
            count = spread.chunk_count(array.nbytes, chunk_bytes)
            written = stored.written_at.get(key, ())
            if len(written) != count or (count > 1 and stored.chunk_bytes[key] != chunk_bytes):
                return None
        return {key: list(written) for key, written in stored.written_at.items()}

    def whole_chunks(self, arrays: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
        """The chunks' versions after a whole checkpoint of `arrays`: every one 0."""
        chunk_bytes = self.store.chunk_bytes
        return {
            key: [0] * spread.chunk_count(array.nbytes, chunk_bytes)
            for key, array in arrays.items()
        }


_Write = Literal["log", "spread", "checkpoint"]
"""What a step writes: its log entry; its log entry and a spread checkpoint; a checkpoint."""


@dataclass
class _CachedStepWrite:
    """A step on a database store: logged, spread or checkpointed; its working set cached at
    commit."""

    arrays: SessionArrays
    record: SessionRecord | SessionRow
    working: WorkingSet
    entry: LoggedStep
    write: _Write
    by_parts: bool
    pieces: list[spread.Piece]

    def finish(self, arrays: dict[str, np.ndarray] | None) -> None:
        working, record, db = self.working, self.record, self.arrays.db
        store, cache = self.arrays.store, self.arrays.sets.cache
        if arrays is None:  # skipped: nothing changed, so nothing is logged
            if self.write != "checkpoint":
                store.drop_log_entry(db, record.id, self.entry.version)
        elif self.write == "checkpoint":
            working.arrays = arrays
            working.log, working.log_by_parts = [], True
            working.chunks = self.arrays.whole_chunks(arrays)
            self.arrays.save(record.id, arrays)
        else:
            working.arrays = arrays
            working.log.append(self.entry.version)
            working.log_by_parts = working.log_by_parts and self.by_parts
            if self.write == "spread":
                self._spread_checkpoint()

        def keep() -> None:
            working.version = record.version  # the version this transaction committed
            # The row as committed, for the next step (an optimistic one may start from it).
            working.row = replace(record) if isinstance(record, SessionRow) else None
            cache.put(working)

        on_commit(db, keep)

    def release(self) -> None:
        self.arrays.sets.cache.put(self.working)

    def _spread_checkpoint(self) -> None:
        """Rewrite the oldest pieces, 1/`checkpoint_every` of the bytes on average (what the last
        steps wrote beyond their share is carried), at this step's version; then drop the
        logged steps every piece is past."""
        working, version = self.working, self.entry.version
        chunks = working.chunks
        assert chunks is not None  # a spread step has them (`_spread_pieces`)
        share = sum(piece.nbytes for piece in self.pieces) // self.arrays.sets.checkpoint_every
        share += working.spread_credit
        written: dict[str, list[int]] = {}
        for piece in spread.due(self.pieces, chunks, share):
            share -= piece.nbytes
            for key in (*piece.cut, *piece.whole):
                written.setdefault(key, []).append(piece.chunk)
                chunks[key][piece.chunk] = version
        working.spread_credit = share  # ≤ 0: written ahead; carried to the next step
        db, session_id = self.arrays.db, self.record.id
        self.arrays.store.save_chunks(db, session_id, working.arrays, written, version)
        oldest = spread.oldest(self.pieces, chunks)
        if working.log and working.log[0] <= oldest:
            self.arrays.store.drop_log_through(db, session_id, oldest)
            working.log = [logged for logged in working.log if logged > oldest]


@dataclass
class _CopiedStepWrite:
    """A step on the memory store: its copies become the committed arrays at commit."""

    arrays: SessionArrays
    record: SessionRecord | SessionRow
    working: WorkingSet

    def finish(self, arrays: dict[str, np.ndarray] | None) -> None:
        if arrays is not None:
            self.arrays.store.save(self.arrays.db, self.record.id, arrays)
        record, working, sets = self.record, self.working, self.arrays.sets
        on_commit(
            self.arrays.db,
            lambda: sets.keep_optimizer(record.id, record.version, working.optimizer),
        )

    def release(self) -> None:
        """Nothing to do: the working set was a copy."""


def _scalars_before(arrays: Mapping[str, np.ndarray], entry: LoggedStep) -> dict[str, np.ndarray]:
    """Copies of the 0-d slots of the tensors the step carries, before it runs."""
    carried = set(entry.gradients)
    return {
        key: array.copy()
        for key, array in arrays.items()
        if not array.ndim and not key.startswith("~") and split_key(key)[1] in carried
    }


def checkpoint_logged_sessions(database: Database) -> int:
    """At a clean stop: a checkpoint of every session this process holds a working set of
    with steps in its log, if the session is still at that version (checked under its
    lock). So logs do not outlive the code that wrote them: an upgrade after a clean stop
    replays nothing written by the old code. Returns how many were written."""
    sets = working_sets_of(database)
    written = 0
    for working in sets.cache.drain():
        if not working.logged_steps:
            continue
        with database.transaction(write=True) as db:
            record = db.get(
                SessionRecord,
                working.session_id,
                with_for_update=True,
                populate_existing=True,
            )
            if record is None or record.version != working.version:
                continue  # changed elsewhere since: not ours to write
            sets.store.save(db, record.id, working.arrays)
            written += 1
    return written
