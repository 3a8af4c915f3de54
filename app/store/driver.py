"""Statements of the step path compiled once per dialect and run on the driver's own cursor.

`Connection.execute` does per execution what a statement of the hot path does not need done
again: its cache key, the compiled form's lookup, a parameter set built and processed through
several layers, a result object wrapped around the cursor. Measured on a 10-parameter step,
that was about 40 µs per statement on SQLite in memory against 6 µs for the driver's own
`execute`; for a statement SQLAlchemy cannot cache (a multi-row VALUES inside a CTE) it was
the whole compilation, each time. `DriverStatement` compiles its Core statement once per
dialect and keeps what an execution needs: the SQL text, the order of its parameters and each
column type's bind processor (SQLAlchemy's own: a UUID becomes what the database stores, JSON
its text, a datetime SQLite's text), so values go in exactly as `Connection.execute` would put
them; rows come back through each column type's result processor likewise (JSON parsed, a
UUID and SQLite's datetimes made objects), found at the first execution from the driver's own
description of the columns.

It runs in the unit of work's transaction, on its connection. A driver error is raised as
SQLAlchemy's `DBAPIError` (the connection invalidated where the dialect says it is gone), so
callers and `transient_failure` see what they would see from `Connection.execute`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import Compiled


@dataclass(frozen=True)
class _Ready:
    """A statement as one dialect runs it."""

    sql: str
    compiled: Compiled
    defaults: Mapping[str, Any]
    """The values of the parameters the statement fixes itself (literals such as a `+ 1`)."""
    required: frozenset[str]
    """The parameters an execution must give."""
    processors: Mapping[str, Any]
    positional: tuple[str, ...] | None
    """The parameters' order for a positional paramstyle (SQLite's `?`); None: by name."""
    keys: tuple[str, ...]
    """The names of the columns it returns."""


class DriverStatement:
    """A Core statement, compiled once per dialect, run on the driver's cursor (see module)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._ready: dict[str, _Ready] = {}
        self._results: dict[str, list[tuple[int, Any]]] = {}
        """Per dialect, the returned columns that have a result processor: (index, processor)."""
        self._lock = threading.Lock()

    def execute(self, db: Session, params: Mapping[str, Any]) -> DriverResult:
        """Run in `db`'s transaction with `params` (by bind name, as `Connection.execute`
        takes them; every parameter without a value in the statement given)."""
        connection = db.connection()
        dialect = connection.dialect
        ready = self._ready.get(dialect.name) or self._prepare(dialect)
        missing = ready.required.difference(params)
        if missing:
            raise ValueError(f"no value for the parameters {sorted(missing)}")
        values = {**ready.defaults, **params}
        for name, process in ready.processors.items():
            values[name] = process(values[name])
        bound: Sequence[Any] | Mapping[str, Any] = (
            values if ready.positional is None else tuple(values[n] for n in ready.positional)
        )
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(ready.sql, bound)
            if cursor.description is None:
                return DriverResult([], cursor.rowcount, ready.keys)
            rows = cursor.fetchall()
            processors = self._results.get(dialect.name)
            if processors is None:
                processors = self._result_processors(ready, dialect, cursor.description)
            if processors:
                rows = [_processed(row, processors) for row in rows]
            return DriverResult(rows, cursor.rowcount, ready.keys)
        except dialect.loaded_dbapi.Error as error:
            gone = dialect.is_disconnect(error, dbapi_connection, cursor)
            if gone:
                connection.invalidate(error)
            raise DBAPIError.instance(
                ready.sql,
                bound,
                error,
                dialect.loaded_dbapi.Error,
                connection_invalidated=gone,
                dialect=dialect,
            ) from error
        finally:
            cursor.close()

    def _prepare(self, dialect: Dialect) -> _Ready:
        with self._lock:
            compiled = self.statement.compile(dialect=dialect)
            if compiled.escaped_bind_names:  # names that need quoting: none of ours
                raise ValueError("DriverStatement takes plain bind names only")
            binds = {name: compiled.binds[name] for name in compiled.bind_names.values()}
            ready = _Ready(
                sql=compiled.string,
                compiled=compiled,
                defaults={
                    name: bind.effective_value for name, bind in binds.items() if not bind.required
                },
                required=frozenset(name for name, bind in binds.items() if bind.required),
                processors={
                    name: process
                    for name, process in compiled._bind_processors.items()
                    if process is not None
                },
                positional=tuple(compiled.positiontup) if compiled.positional else None,
                keys=tuple(column.keyname for column in compiled._result_columns),
            )
            self._ready[dialect.name] = ready
            return ready

    def _result_processors(
        self, ready: _Ready, dialect: Dialect, description: Sequence[Any]
    ) -> list[tuple[int, Any]]:
        columns = ready.compiled._result_columns
        processors = [
            (index, column.type._cached_result_processor(dialect, described[1]))
            for index, (column, described) in enumerate(zip(columns, description, strict=True))
        ]
        processors = [(index, process) for index, process in processors if process is not None]
        self._results[dialect.name] = processors
        return processors


@dataclass(frozen=True)
class DriverResult:
    rows: list[Sequence[Any]]
    rowcount: int
    keys: tuple[str, ...]
    """The returned columns' names, in the rows' order."""


def _processed(row: Sequence[Any], processors: list[tuple[int, Any]]) -> tuple[Any, ...]:
    values = list(row)
    for index, process in processors:
        values[index] = process(values[index])
    return tuple(values)
