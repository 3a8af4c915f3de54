"""A session's history: one row per step taken (applied or skipped) and per configuration change.

Rows are numbered per session by `seq` (1, 2, 3, …), the cursor clients page with. They are
written in the transaction of the step (or change) they record, under the session's row lock, so
`seq` grows in the order the session changed and a rolled-back step leaves no record.

Retention: a session keeps at most `max_records` rows. Pruning deletes the oldest in batches of
`prune_interval(max_records)` (1 % of the limit) rather than one row per step: it runs when `seq`
is a multiple of the interval and deletes down to `max_records − interval + 1` rows, so that the
count never passes `max_records` between prunes. `max_records = 0` keeps no history at all.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    String,
    Uuid,
    bindparam,
    delete,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.dml import Insert

from app.store.base import Base
from app.store.held import HeldWrite, hold, send

STEP = "step"
CHANGE = "change"


class HistoryEntry(Base):
    """One record of a session's history: a step (`kind="step"`) or a change (`kind="change"`)."""

    __tablename__ = "session_history"

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, comment="1, 2, 3, … per session: the pagination cursor"
    )
    kind: Mapped[str] = mapped_column(String(8), comment="step | change")
    step: Mapped[int] = mapped_column(BigInteger, comment="t after the step, or at the change")
    at: Mapped[datetime]
    lr: Mapped[float | None] = mapped_column(Double, comment="η_t the step used")
    loss: Mapped[float | None] = mapped_column(Double)
    grad_norm: Mapped[float | None] = mapped_column(Double)
    update_norm: Mapped[float | None] = mapped_column(Double)
    skipped: Mapped[bool | None] = mapped_column(Boolean)
    duration_ms: Mapped[float | None] = mapped_column(Double)
    changes: Mapped[dict[str, Any] | None] = mapped_column(
        comment='{"<dotted field>": {"old": …, "new": …}, …}'
    )


_TABLE = HistoryEntry.__table__
_RECORD_COLUMNS = ("lr", "loss", "grad_norm", "update_norm", "skipped", "duration_ms", "changes")
_VALUE_COLUMNS = ("session_id", "kind", "step", "at", *_RECORD_COLUMNS)


def _append_statement(prefix: str) -> Insert:
    """INSERT … VALUES (…, (SELECT max(seq) + 1 of the session), …) RETURNING seq, its bind
    names prefixed (see `app.store.held`)."""
    session_id = bindparam(f"{prefix}session_id")
    last = select(func.coalesce(func.max(_TABLE.c.seq), 0) + 1).where(
        _TABLE.c.session_id == session_id
    )
    values = {column: bindparam(f"{prefix}{column}") for column in _VALUE_COLUMNS}
    return _TABLE.insert().values(**values, seq=last.scalar_subquery()).returning(_TABLE.c.seq)


def prune_interval(max_records: int) -> int:
    """How many records are written between two prunes: 1 % of the limit, at least 1."""
    return max(1, max_records // 100)


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`{"<dotted path>": {"old", "new"}}` for every leaf that differs between two configs.

    Objects are compared key by key (`optimizer.lr`, `schedule.then.total_steps`); anything else
    (numbers, strings, lists such as `betas` or `groups`) as a whole. A key present on one side
    only shows `null` on the other.
    """
    changes: dict[str, dict[str, Any]] = {}
    _collect_changes(old, new, "", changes)
    return changes


def _collect_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str, out: dict[str, dict[str, Any]]
) -> None:
    for key in [*old, *(key for key in new if key not in old)]:
        path = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            _collect_changes(before, after, f"{path}.", out)
        elif before != after:
            out[path] = {"old": before, "new": after}


def finite_or_none(value: float | None) -> float | None:
    """JSON has no Inf or NaN, and neither does the history."""
    return value if value is not None and math.isfinite(value) else None


class HistoryRepository:
    """Appends to and pages through sessions' histories. Flushes; the caller commits."""

    def __init__(self, db: Session, max_records: int | None = None) -> None:
        """`max_records`: the retention applied when writing (None: no limit; 0: keep nothing)."""
        if max_records is not None and max_records < 0:
            raise ValueError("max_records must be ≥ 0")
        self.db = db
        self.max_records = max_records

    def record_step(
        self,
        session_id: uuid.UUID,
        *,
        step: int,
        lr: float | None,
        loss: float | None,
        grad_norm: float | None,
        update_norm: float | None,
        skipped: bool,
        duration_ms: float,
    ) -> None:
        """One step: `step` is t after it (unchanged when `skipped`); non-finite numbers → null."""
        self._append(
            session_id,
            kind=STEP,
            step=step,
            lr=finite_or_none(lr),
            loss=finite_or_none(loss),
            grad_norm=finite_or_none(grad_norm),
            update_norm=finite_or_none(update_norm),
            skipped=skipped,
            duration_ms=duration_ms,
        )

    def record_change(
        self, session_id: uuid.UUID, *, step: int, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> dict[str, dict[str, Any]]:
        """A configuration change at step `step` (e.g. a PATCH): records and returns the fields
        that differ between `old` and `new` (see `changed_fields`); nothing when none does."""
        changes = changed_fields(old, new)
        if changes:
            self._append(session_id, kind=CHANGE, step=step, changes=changes)
            send(self.db)  # now: only a step's writes wait for the step's others
        return changes

    def page(
        self, session_id: uuid.UUID, *, after: int, limit: int
    ) -> tuple[list[HistoryEntry], int | None]:
        """Up to `limit` records with `seq > after`, oldest first, and the cursor of the next
        page: the last `seq` shown when more records follow, else None."""
        rows = list(
            self.db.scalars(
                select(HistoryEntry)
                .where(HistoryEntry.session_id == session_id, HistoryEntry.seq > after)
                .order_by(HistoryEntry.seq)
                .limit(limit + 1)
            )
        )
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].seq
        return rows, None

    def _append(self, session_id: uuid.UUID, **values: Any) -> None:
        """Hold the next record (seq = last + 1) back until the unit of work sends its writes
        (`app.store.held`); prune the oldest then, when a batch is due.

        One statement, the numbering included (`_append_statement`), because it sits on every
        step's path. The caller holds the session's row lock, so no other writer numbers records
        meanwhile.
        """
        if self.max_records == 0:
            return
        row = {column: None for column in _RECORD_COLUMNS} | values
        row |= {"session_id": session_id, "at": datetime.now(UTC)}
        max_records = self.max_records

        def done(seq: int) -> None:
            if max_records is not None:
                self._prune(session_id, seq, max_records)

        hold(self.db, HeldWrite("history", _append_statement, row, done))

    def _prune(self, session_id: uuid.UUID, seq: int, max_records: int) -> None:
        """Every `interval` records, delete all but the newest `max_records − interval + 1`."""
        interval = prune_interval(max_records)
        keep = max_records - interval + 1
        if seq % interval == 0 and seq > keep:
            self.db.execute(
                delete(HistoryEntry).where(
                    HistoryEntry.session_id == session_id, HistoryEntry.seq <= seq - keep
                )
            )
