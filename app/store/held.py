"""Writes a unit of work holds back, to send to the database together.

A step writes three things once its row is locked: its step-log entry, the session row's new
t and version, and its history record. Sent one by one they cost a round trip each (and on
PostgreSQL an `executemany` of the log's rows cost a pipeline's sync on top). Held instead
(`hold`), they go at once when the unit of work `send`s them: on PostgreSQL as one statement
— each write a data-modifying CTE of it, their results read back in one row — and elsewhere
(SQLite has no data-modifying CTEs) one after another, each compiled once and run on the
driver (`app.store.driver`).

Held writes must not depend on one another's effects within the statement (on PostgreSQL its
parts see one snapshot, taken when it starts) and must not be needed by a read before they are
sent: the step holds them only after its last read, under the row lock it took first, so the
snapshot that the combined statement reads (say, the history's last `seq`) is taken after
every earlier writer of the session committed. Whoever holds writes sends them (`send`), and
`Database` sends whatever is still held before a commit; a rollback drops them.

Each write brings its statement (`build`, its bind names prefixed as `build` is told, with
RETURNING of at most one column of at most one row) and what to do with that value (`done`:
the value, or None when no row came back, e.g. an UPDATE that matched none).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import null, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from app.store.driver import DriverStatement

HELD = "optaas.held"
"""`Session.info` key: the writes held back in this unit of work, in order."""


@dataclass(frozen=True)
class HeldWrite:
    shape: Hashable
    """Which statement `build` makes (with any size it depends on, e.g. a number of rows):
    writes of equal shapes share a compiled statement."""
    build: Callable[[str], UpdateBase]
    """The write's statement, every bind name prefixed with the given string (never empty:
    a bind name may not be a column's own in an INSERT or UPDATE)."""
    params: dict[str, Any]
    """Its parameters, by unprefixed name."""
    done: Callable[[Any], None] | None = None
    """Called once the write is sent, with the value its RETURNING gave (None: no row)."""
    tag: Hashable = None
    """What its holder knows it by, to take it back (`take_back`)."""


def hold(db: Session, write: HeldWrite, *, first: bool = False) -> None:
    """Hold `write` until this unit of work sends its writes; `first`: before those held
    already (on PostgreSQL the parts of the one statement run in their order)."""
    writes = db.info.setdefault(HELD, [])
    if first:
        writes.insert(0, write)
    else:
        writes.append(write)


def take_back(db: Session, tag: Hashable) -> bool:
    """Drop the held writes tagged `tag`, unsent; whether there were any."""
    writes = db.info.get(HELD, [])
    kept = [write for write in writes if write.tag != tag]
    db.info[HELD] = kept
    return len(kept) < len(writes)


def send(db: Session) -> None:
    """Send every held write (see the module), then run each one's `done`."""
    writes = db.info.pop(HELD, [])
    if not writes:
        return
    if db.get_bind().dialect.name == "postgresql" and len(writes) > 1:
        statement = _together(tuple(write.shape for write in writes), writes)
        values = list(statement.execute(db, _prefixed(writes)).rows[0])
    else:
        values = []
        for write in writes:
            result = _alone(write).execute(db, _prefixed([write]))
            values.append(result.rows[0][0] if result.rows else None)
    for write, value in zip(writes, values, strict=True):
        if write.done is not None:
            write.done(value)


def drop(db: Session) -> None:
    """Forget the held writes (the transaction rolls back)."""
    db.info.pop(HELD, None)


_STATEMENTS: dict[Hashable, DriverStatement] = {}
_STATEMENTS_LOCK = threading.Lock()


def _alone(write: HeldWrite) -> DriverStatement:
    return _statement(("alone", write.shape), lambda: write.build(_prefix(0)))


def _together(shapes: tuple[Hashable, ...], writes: list[HeldWrite]) -> DriverStatement:
    def build() -> Any:
        parts = [write.build(_prefix(index)).cte(f"w{index}") for index, write in enumerate(writes)]
        results = [select(part.c[0]).scalar_subquery() if len(part.c) else null() for part in parts]
        return select(*results).add_cte(*parts)

    return _statement(("together", shapes), build)


def _statement(key: Hashable, build: Callable[[], Any]) -> DriverStatement:
    statement = _STATEMENTS.get(key)
    if statement is None:
        with _STATEMENTS_LOCK:
            statement = _STATEMENTS.setdefault(key, DriverStatement(build()))
    return statement


def _prefixed(writes: list[HeldWrite]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for index, write in enumerate(writes):
        prefix = _prefix(index)
        params.update({f"{prefix}{name}": value for name, value in write.params.items()})
    return params


def _prefix(index: int) -> str:
    return f"w{index}_"
