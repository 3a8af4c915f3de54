"""Working sets: a session's θ and state as live arrays, kept between steps by this process.

A step needs the session's arrays as writable numpy arrays, and leaves them updated. Reading
them back from the database on every step (and decoding them) is most of the cost of a large
step, so each process keeps the working set of the sessions it stepped lately, keyed by the
session's `version` — which every change bumps, under the session's lock:

- a step *takes* the working set out of the cache after locking the session, and uses it only
  if its version is the session's current one (read under the lock); another process, or
  anything else that changed the session, has bumped the version, and the arrays are read from
  the database instead. Several server processes and replicas stay correct with no
  coordination: the database's version is the arbiter.
- the step updates the arrays in place; the working set goes back into the cache at the
  *commit* of the step's transaction, labelled with the version that transaction wrote. If the
  transaction rolls back (an idempotent repeat found at the end, a failed write, a commit that
  fails), the working set is simply not put back: the arrays no longer match the database, and
  the next step reads the database. A crash loses only the cache.

An optimistic step (PostgreSQL, `app.service.stepping`) skips the locking read: it takes the
working set with the session row its last step committed (`row`) and steps from them; the
step's UPDATE, which carries the version read (`… WHERE version = v`), then finds no row if the
session moved on meanwhile, and the step is rolled back and run again the locking way.

Taking the working set out while a step holds it also keeps other threads of this process from
reading arrays that are being updated. Readers (`GET …/params`) may copy from a working set that
is in the cache at the version they read (`copy_of`), under the cache's lock.

The cache is bounded by bytes (least recently used first out).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.optim import Optimizer
from app.store.repository import SessionRow


@dataclass
class WorkingSet:
    """One session's stored arrays at `version`, writable, owned by whoever holds it.

    `arrays` are keyed as stored (`param/<tensor>`, `<slot>/<tensor>`); `log` holds the
    versions of the steps kept in the database's step log (see `app.store.steplog`), and
    `log_by_parts` whether each of them replays by parts (`app.stepping.replay`); `chunks`, by
    key, the version each stored chunk was written at (0: by a whole checkpoint), or None when
    the stored chunks are not cut as the store cuts them now (no spread checkpoint then: see
    `app.stepping.arrays`); `optimizer` is the session's optimizer at this version (whose config
    the version fixes), kept with the scratch buffers it reuses. `cached` says
    whether it came from the cache (False: just read from the database). `shared`: the arrays
    will be updated in place by the next step once this one commits, so an answer that shows
    them after the commit must copy them first.
    """

    session_id: uuid.UUID
    version: int
    arrays: dict[str, np.ndarray]
    log: list[int] = field(default_factory=list)
    log_by_parts: bool = True
    chunks: dict[str, list[int]] | None = None
    spread_credit: int = 0
    """Bytes the spread checkpoints of the next step may write beyond its share (negative: the
    last steps wrote ahead)."""
    optimizer: Optimizer | None = None
    cached: bool = False
    shared: bool = True
    row: SessionRow | None = None
    """The session row at `version` as the step that left the working set committed it (None
    if another change did): what an optimistic step starts from."""

    @property
    def logged_steps(self) -> int:
        """How many steps the database's log holds beside the stored chunks."""
        return len(self.log)

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())


@dataclass
class WorkingSetCache:
    """Working sets by session id, at most `max_bytes` of arrays in all (0: keep none)."""

    max_bytes: int
    _entries: OrderedDict[uuid.UUID, WorkingSet] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    hits: int = 0
    misses: int = 0

    def take(self, session_id: uuid.UUID, version: int) -> WorkingSet | None:
        """Remove and return the session's working set if it is at `version`; else None (a
        working set at another version is dropped: it can never be used again)."""
        with self._lock:
            working = self._entries.pop(session_id, None)
            if working is not None:
                self._bytes -= working.nbytes
            if working is None or working.version != version:
                self.misses += 1
                return None
            self.hits += 1
        working.cached = True
        return working

    def take_with_row(self, session_id: uuid.UUID) -> WorkingSet | None:
        """Remove and return the session's working set if it holds the row its version was
        committed with (`WorkingSet.row`), else None (and the cache is left as it was)."""
        with self._lock:
            working = self._entries.get(session_id)
            if working is None or working.row is None or working.row.version != working.version:
                return None
            del self._entries[session_id]
            self._bytes -= working.nbytes
            self.hits += 1
        working.cached = True
        return working

    def put(self, working: WorkingSet) -> None:
        """Keep `working` (after its transaction committed), evicting the least recently used.

        A working set older than the one kept already is not kept (a slower commit of an
        earlier step of the same session, in another thread).
        """
        size = working.nbytes
        with self._lock:
            existing = self._entries.get(working.session_id)
            if existing is not None:
                if existing.version > working.version:
                    return
                self._remove(working.session_id)
            if size > self.max_bytes:
                return
            while self._bytes + size > self.max_bytes and self._entries:
                self._remove(next(iter(self._entries)))
            self._entries[working.session_id] = working
            self._bytes += size

    def drain(self) -> list[WorkingSet]:
        """Remove and return every working set (at a clean stop)."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            self._bytes = 0
        return entries

    def discard(self, session_id: uuid.UUID) -> None:
        with self._lock:
            self._remove(session_id)

    def copy_of(
        self, session_id: uuid.UUID, version: int, wanted: Callable[[str], bool]
    ) -> dict[str, np.ndarray] | None:
        """Copies of the wanted arrays of the session's working set at `version`, or None if the
        cache does not hold that version (taken by a step, evicted, or another version)."""
        with self._lock:
            working = self._entries.get(session_id)
            if working is None or working.version != version:
                return None
            self._entries.move_to_end(session_id)
            return {key: array.copy() for key, array in working.arrays.items() if wanted(key)}

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _remove(self, session_id: uuid.UUID) -> None:
        working = self._entries.pop(session_id, None)
        if working is not None:
            self._bytes -= working.nbytes
