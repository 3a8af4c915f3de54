"""Engines and transactions, with the per-dialect settings that make steps safe.

Writers are serialised per session: on PostgreSQL by `SELECT … FOR UPDATE` on the session row
(`SessionRepository.get(for_update=True)`); on SQLite, which has no row locks, by starting every
write transaction with `BEGIN IMMEDIATE`, which takes the database's write lock before the first
read. pysqlite's default would start the transaction only at the first write, so two concurrent
read-modify-write steps could read the same state and one update would be lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

WRITE_OPTION = "optaas_write"
"""Execution option marking a connection whose transaction will write (SQLite: BEGIN IMMEDIATE)."""

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys, a busy timeout and explicit BEGINs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: object) -> None:
    # isolation_level=None stops pysqlite from issuing BEGIN itself; `_begin_sqlite_transaction`
    # issues it instead, in the mode the transaction needs (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer, nor it them
    cursor.execute("PRAGMA foreign_keys=ON")  # session_arrays rows go with their session
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """One database: its engine and the transactions the service runs in."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        """A unit of work: commits when the block ends normally, rolls back when it raises.

        `write=True` on SQLite takes the write lock up front (BEGIN IMMEDIATE).
        """
        factory = self._writers if write else self._readers
        with factory.begin() as session:
            yield session

    def ping(self) -> None:
        """Raises unless the database answers a trivial query."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
