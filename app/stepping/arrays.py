"""A session's θ and state as steps use them: working sets, the step log, checkpoints.

The store (`app.store.arrays`) keeps rows and bytes: a checkpoint and the log of steps since
(database rows), or committed numpy arrays (memory). This layer decides what a step reads and
writes, and keeps what a process may keep between steps:

- reading (`SessionArrays.load`) replays the log onto the checkpoint (`replay`), so every
  reader sees θ and state as of the last commit and no caller needs to know about the log; a
  reader of the version this process holds a working set of gets copies of it instead;
- a step works on a *working set* (`working_set`): this process's cached arrays of the session
  when they are at its version, else the stored ones (see `app.stepping.working_sets`);
- a step's write (`begin_step` … `finish`) appends its inputs to the log, or writes a
  checkpoint every `checkpoint_every` steps (and when the log would not pay), and puts the
  working set back into the cache once the transaction commits;
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
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sqlalchemy.orm import Session

from app.optim import Optimizer
from app.stepping.replay import replay
from app.stepping.working_sets import WorkingSet, WorkingSetCache
from app.store.arrays import ArrayStore, on_commit, store_of
from app.store.database import DATABASE, Database
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
        arrays, _ = self._materialise(session_id, writable=writable)
        return {key: array for key, array in arrays.items() if wanted(key)}

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
        arrays, logged = self._materialise(record.id, writable=True)
        return WorkingSet(record.id, record.version, arrays, logged_steps=logged)

    def begin_step(
        self,
        record: SessionRecord | SessionRow,
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
        the session's version for an applied step.

        The log replays the core's update only: a step that also changes other arrays (say, it
        resets sums of accumulated gradients kept beside the state) must pass
        `checkpoint=True`, so that everything it leaves is written in full."""
        if self.store.keeps_committed:
            return _CopiedStepWrite(self, record, working)
        logged = not checkpoint and self._logs(working, entry)
        if logged:
            self.store.append_log(self.db, record.id, entry)
        return _CachedStepWrite(self, record, working, entry, logged)

    def _logs(self, working: WorkingSet, entry: LoggedStep) -> bool:
        """Whether this step appends to the log (True) or writes a checkpoint (False)."""
        if working.logged_steps + 1 >= self.sets.checkpoint_every:
            return False
        if not working.cached and working.logged_steps > 0:
            return False  # the log was replayed here: keep the next reader from doing it again
        return working.nbytes >= LOG_PAYS_RATIO * entry.nbytes

    def _materialise(
        self, session_id: uuid.UUID, *, writable: bool
    ) -> tuple[dict[str, np.ndarray], int]:
        """The checkpoint with the log replayed onto it, and how many steps the log held."""
        stored = self.store.read(self.db, session_id, writable=writable)
        replay(stored.checkpoint, stored.log)
        return stored.checkpoint, len(stored.log)


@dataclass
class _CachedStepWrite:
    """A step on a database store: logged or checkpointed; its working set cached at commit."""

    arrays: SessionArrays
    record: SessionRecord | SessionRow
    working: WorkingSet
    entry: LoggedStep
    logged: bool

    def finish(self, arrays: dict[str, np.ndarray] | None) -> None:
        working, record, db = self.working, self.record, self.arrays.db
        store, cache = self.arrays.store, self.arrays.sets.cache
        if arrays is None:  # skipped: nothing changed, so nothing is logged
            if self.logged:
                store.drop_log_entry(db, record.id, self.entry.version)
        elif self.logged:
            working.arrays = arrays
            working.logged_steps += 1
        else:
            working.arrays = arrays
            working.logged_steps = 0
            self.arrays.save(record.id, arrays)

        def keep() -> None:
            working.version = record.version  # the version this transaction committed
            cache.put(working)

        on_commit(db, keep)

    def release(self) -> None:
        self.arrays.sets.cache.put(self.working)


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
