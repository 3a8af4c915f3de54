"""Engines and transactions, with the per-dialect settings that make steps safe.

Writers are serialised per session: on PostgreSQL by `SELECT … FOR UPDATE` on the session row
(`SessionRepository.get(for_update=True)`); on SQLite, which has no row locks, by starting every
write transaction with `BEGIN IMMEDIATE`, which takes the database's write lock before the first
read. pysqlite's default would start the transaction only at the first write, so two concurrent
read-modify-write steps could read the same state and one update would be lost.

Waits are bounded: a write transaction waits for a lock at most `lock_timeout_seconds`
(PostgreSQL: the connections' `lock_timeout`; SQLite's busy timeout), and a request waits as
long for a pooled connection. Connections idle for a second are checked before use, so a
database that restarted is reconnected to without restarting the service. `transient_failure`
tells those failures (and outages) apart from real errors, for the API to answer 503 rather
than 500.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from app.store.arrays import (
    AFTER_COMMIT,
    ARRAY_STORE,
    CHUNK_BYTES,
    ArrayStore,
    DatabaseArrays,
    MemoryArrays,
)
from app.store.base import Base
from app.store.held import drop, send

WRITE_OPTION = "optaas_write"
"""Execution option marking a connection whose transaction will write (SQLite: BEGIN IMMEDIATE)."""

SQLITE_UNBOUNDED_BUSY_TIMEOUT_SECONDS = 30.0
"""SQLite's busy timeout for engines made without a bound (migrations, tools)."""

POSTGRES_CONNECT_TIMEOUT_SECONDS = 5

PING_IDLE_SECONDS = 1.0
"""A pooled PostgreSQL connection idle this long is pinged before use."""
_CHECKED_IN = "optaas.checked_in"

SQLITE_WAL_CHECKPOINT_BYTES = 64 * 1024**2
"""WAL written between checkpoints (`wal_autocheckpoint` counts pages of the file's size)."""

SQLITE_PAGE_SIZE = 65536
"""The page size of a SQLite file this server creates (SQLite's largest; its default is 4 KiB).
A large array is a chain of overflow pages, each written to the WAL with a frame header, then
copied into the database, and walked to free it: at 64 KiB a step's 40 MB log entry is 640 pages
instead of 10 000. Measured (`benchmarks/results/sqlite_pages.md`): a transaction writing
40 MB took about 40 % less time than at 4 KiB, a tiny one about 0.2 ms more. A file keeps the
page size it was made with (WAL mode cannot change it): older files stay at 4 KiB."""


def load_json_column(text: str) -> Any:
    """A JSON column's value (the session's config, tensors, schedule state: read on every
    step) by orjson, several times faster than `json.loads`; text orjson refuses — `NaN`,
    which `json.dumps` writes — by `json.loads`, as before."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str, lock_timeout_seconds: float | None = None) -> Engine:
    """An engine for `url`; with `lock_timeout_seconds`, lock and pool waits end after that long.

    SQLite gets WAL, foreign keys, a busy timeout and explicit BEGINs; PostgreSQL connections
    idle for a second are pinged before use, and with a bound their `lock_timeout` is set.
    Migrations run unbounded: a server waiting for another one's upgrade must not give up.
    """
    parsed = make_url(url)
    engine_options: dict[str, Any] = {"json_deserializer": load_json_column}
    if lock_timeout_seconds is not None:
        engine_options["pool_timeout"] = lock_timeout_seconds
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy_timeout = lock_timeout_seconds or SQLITE_UNBOUNDED_BUSY_TIMEOUT_SECONDS
        engine = create_engine(parsed, connect_args={"timeout": busy_timeout}, **engine_options)
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
    if lock_timeout_seconds is not None:
        # The connection's own setting: no `SET LOCAL` round trip per transaction. Only writers
        # wait for row locks (plain reads never do), so it bounds exactly what it bounded.
        milliseconds = max(1, round(lock_timeout_seconds * 1000))
        connect_args["options"] = f"-c lock_timeout={milliseconds}"
    engine = create_engine(parsed, connect_args=connect_args, **engine_options)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before use if it sat idle for `PING_IDLE_SECONDS` or more.

    A database that restarted (or a connection dropped by a proxy) is found then, and the pool
    connects anew, as `pool_pre_ping` would find it; but a connection handed back and forth
    between steps — the hot path — pays no round trip for it. A connection that breaks within
    the second fails its request (503, `transient_failure`) and is replaced."""

    def checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
            return  # just connected, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except psycopg.Error as error:
            raise DisconnectionError(str(error)) from error  # the pool connects anew

    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checkout)


def _configure_sqlite_connection(dbapi_connection: Any, _record: object) -> None:
    _configure_sqlite(dbapi_connection, SQLITE_PAGE_SIZE)


def _configure_memory_connection(dbapi_connection: Any, _record: object) -> None:
    _configure_sqlite(dbapi_connection, None)  # its rows are small: SQLite's own pages


def _configure_sqlite(dbapi_connection: Any, page_size: int | None) -> None:
    # isolation_level=None stops pysqlite from issuing BEGIN itself; `_begin_sqlite_transaction`
    # issues it instead, in the mode the transaction needs (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    if page_size is not None:
        # Only a file not written yet takes it (the next statement writes its header); an
        # existing file keeps its own.
        cursor.execute(f"PRAGMA page_size={page_size}")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer, nor it them
    cursor.execute("PRAGMA foreign_keys=ON")  # session_arrays rows go with their session
    # The WAL is copied into the database file (a checkpoint, run by the committing writer)
    # once it passes 64 MiB: SQLite's default of 1000 pages (4 MB at 4 KiB) made nearly every
    # large step pay one. Every commit is still synced (synchronous=FULL); the file is
    # truncated back to the same size after checkpoints.
    (file_page_size,) = cursor.execute("PRAGMA page_size").fetchone()
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_BYTES // file_page_size}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_CHECKPOINT_BYTES}")
    # Debian's SQLite zeroes every freed page (SQLITE_SECURE_DELETE): each checkpoint would
    # write the whole dropped step log again, as zeros. FAST zeroes only what costs no I/O.
    cursor.execute("PRAGMA secure_delete=FAST")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    # On the driver itself: every transaction begins here, and `exec_driver_sql` cost ten
    # times the statement. Its errors (SQLITE_BUSY: the lock not had in the busy timeout) are
    # raised as `Connection.execute` raises them, for `transient_failure`.
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    statement = "BEGIN IMMEDIATE" if write else "BEGIN"
    try:
        connection.connection.dbapi_connection.execute(statement)
    except sqlite3.Error as error:
        raise DBAPIError.instance(
            statement, (), error, sqlite3.Error, dialect=connection.dialect
        ) from error


class TransientFailure(enum.Enum):
    """A database failure that passes by itself: the request may be sent again."""

    LOCK_TIMEOUT = "lock-timeout"
    """A lock (or a pooled connection) was not had within the lock timeout."""
    UNAVAILABLE = "unavailable"
    """The database cannot be reached, is shutting down, or dropped the connection."""


_LOCK_SQLSTATES = frozenset({"55P03", "40P01"})  # lock_not_available, deadlock_detected
# 08: connection exception; 53: insufficient resources (too many connections, …);
# 57P0x: admin shutdown, crash shutdown, cannot connect now, database dropped.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def transient_failure(error: BaseException) -> TransientFailure | None:
    """Which transient failure `error` is, or None for every other error (a bug, a constraint…)."""
    if isinstance(error, PoolTimeoutError):
        return TransientFailure.LOCK_TIMEOUT
    if not isinstance(error, DBAPIError):
        return None
    if error.connection_invalidated:
        return TransientFailure.UNAVAILABLE
    driver_error = error.orig
    if isinstance(driver_error, sqlite3.OperationalError):
        # Extended result codes (e.g. SQLITE_BUSY_SNAPSHOT) keep the primary code in the low byte.
        code = getattr(driver_error, "sqlite_errorcode", 0) & 0xFF
        return TransientFailure.LOCK_TIMEOUT if code in _SQLITE_BUSY_CODES else None
    if not isinstance(driver_error, psycopg.Error):
        return None
    sqlstate = driver_error.sqlstate
    if sqlstate in _LOCK_SQLSTATES:
        return TransientFailure.LOCK_TIMEOUT
    if sqlstate is not None and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
        return TransientFailure.UNAVAILABLE
    if sqlstate is None and isinstance(driver_error, psycopg.OperationalError):
        return TransientFailure.UNAVAILABLE  # no server reply at all: refused, reset, timed out
    return None


MEMORY_URL = "memory://"
"""`OPTAAS_DATABASE_URL=memory://`: sessions in this process only, lost when it stops."""


DATABASE = "optaas.database"
"""`Session.info` key: the `Database` the session belongs to."""

NOWAIT = "optaas.nowait"
"""`Session.info` key, set in a transaction that must not wait for a lock (`wait=False`): its
row locks are taken with `FOR UPDATE NOWAIT`."""

LOCK_FIRST = "optaas.lock_first"
"""`Session.info` key, set in a unit of work run again after `Redo`: it reads what it changes
under its locks (no optimistic step)."""

_LOCK_NOT_AVAILABLE = "55P03"


class Redo(Exception):  # noqa: N818 (not an error: the caller runs the work again)
    """A unit of work found at its writes that what it had read without a lock had moved on
    (an optimistic step: `app.service.stepping`); nothing of it was kept (it rolled back).
    Its caller runs it again in a transaction begun with `lock_first=True`."""


class WouldWait(Exception):  # noqa: N818 (not an error: the caller runs the work where it may wait)
    """A transaction begun with `wait=False` met a lock another transaction holds; nothing of
    it was kept (it rolled back)."""


def is_memory_url(url: str) -> bool:
    return url.startswith("memory:")


class Database:
    """One database: its engine, the transactions the service runs in, and where arrays live.

    `memory://` is SQLite in memory (one connection, one transaction at a time) for the rows,
    with the arrays kept as numpy arrays (`MemoryArrays`): for one process, lost on restart.
    Any other URL keeps the arrays in the database (`DatabaseArrays`). `cache_max_bytes` and
    `checkpoint_every` are the stepping layer's settings for this database (its working sets
    and how often a step writes a checkpoint: `app.stepping`), which finds them through the
    sessions' `info` (`DATABASE`). Each array is stored in rows of up to `chunk_bytes`
    (`app.store.arrays`). Actions registered with `arrays.on_commit` run after a commit and
    are dropped on rollback.
    """

    def __init__(
        self,
        url: str,
        *,
        lock_timeout_seconds: float | None = None,
        cache_max_bytes: int = 0,
        checkpoint_every: int = 1,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.memory = is_memory_url(url)
        self.lock_timeout_seconds = lock_timeout_seconds
        self.cache_max_bytes = cache_max_bytes
        self.checkpoint_every = checkpoint_every
        self._turns = threading.RLock()
        self.arrays: ArrayStore
        if self.memory:
            self.engine = _memory_engine()
            self.arrays = MemoryArrays()
        else:
            self.engine = make_engine(url, lock_timeout_seconds)
            self.arrays = DatabaseArrays(chunk_bytes)
        info = {ARRAY_STORE: self.arrays, DATABASE: self}
        readers = self.engine
        if self.engine.dialect.name == "postgresql":
            # One snapshot for a whole read (a session's row and its arrays agree).
            readers = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self._readers = sessionmaker(readers, expire_on_commit=False, info=info)
        self._writers = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False, info=info
        )
        for factory in (self._readers, self._writers):
            event.listen(factory, "before_commit", send)  # writes still held (`app.store.held`)
            event.listen(factory, "after_commit", _run_commit_actions)
            event.listen(factory, "after_soft_rollback", _drop_commit_actions)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def waits_only_for_locks(self) -> bool:
        """Whether a transaction here can be run with `wait=False`: in memory (its one lock is
        this process's) and on PostgreSQL (row locks by `NOWAIT`). A SQLite file's lock may be
        another process's, met only in SQLite's busy handler."""
        return self.memory or self.dialect == "postgresql"

    @contextmanager
    def transaction(
        self, *, write: bool, wait: bool = True, lock_first: bool = False
    ) -> Iterator[Session]:
        """A unit of work: commits when the block ends normally, rolls back when it raises.

        `write=True` on SQLite takes the write lock up front (BEGIN IMMEDIATE). In memory, one
        transaction runs at a time (they share one connection).

        `wait=False` (where `waits_only_for_locks`): instead of waiting for a lock that another
        transaction holds — memory's turn, a PostgreSQL row locked `FOR UPDATE` — the
        transaction rolls back and raises `WouldWait` (on PostgreSQL also when the pool has no
        idle connection). For work small enough to run on the event loop, which must never
        sleep on a lock.

        `lock_first`: the work is run again after `Redo`, and must lock what it reads
        (`LOCK_FIRST`).
        """
        factory = self._writers if write else self._readers
        if not wait and self.dialect == "postgresql" and self.engine.pool.checkedin() == 0:
            raise WouldWait()  # no idle connection: one would be made, or waited for
        with self._taking_turns(write, wait), factory.begin() as session:
            if lock_first:
                session.info[LOCK_FIRST] = True
            if wait:
                yield session
                return
            session.info[NOWAIT] = True
            try:
                yield session
            except DBAPIError as error:
                if getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                    raise WouldWait() from error
                raise

    def ping(self) -> None:
        """Raises unless the database answers a trivial query."""
        with self._taking_turns(write=False), self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _taking_turns(self, write: bool, wait: bool = True) -> Iterator[None]:
        """Transactions of this process that cannot run at once wait for their turn here.

        In memory, every transaction (they share one connection). On SQLite, the writers: the
        database has one writer at a time anyway, and a writer refused by SQLite's lock retries
        after sleeps of up to 100 ms (its busy handler), which made tail latencies of a second
        under many clients; here the next writer starts as soon as the last one ends. Writers
        of other processes still meet SQLite's lock and its busy timeout. The wait is bounded
        by the lock timeout (then 503, as for a lock held too long). Without `wait`, a turn
        that is not free at once is `WouldWait`.
        """
        if not (self.memory or (write and self.dialect == "sqlite")):
            yield
            return
        if not wait:
            if not self._turns.acquire(blocking=False):
                raise WouldWait()
        elif not self._turns.acquire(timeout=self._turn_timeout()):
            raise PoolTimeoutError("the database stayed busy with other writers past the timeout")
        try:
            yield
        finally:
            self._turns.release()

    def _turn_timeout(self) -> float:
        return self.lock_timeout_seconds if self.lock_timeout_seconds is not None else -1


def _memory_engine() -> Engine:
    """SQLite in memory, one connection shared by every thread (`Database` takes turns on it),
    with the tables made from the models (there is nothing to migrate)."""
    engine = create_engine(
        "sqlite://",
        poolclass=StaticPool,
        connect_args={"check_same_thread": False},
        json_deserializer=load_json_column,
    )
    event.listen(engine, "connect", _configure_memory_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    from app.store import history, models  # noqa: F401  (their tables are the metadata's)

    Base.metadata.create_all(engine)
    return engine


def _run_commit_actions(session: Session) -> None:
    for action in session.info.pop(AFTER_COMMIT, []):
        action()


def _drop_commit_actions(session: Session, _transaction: object) -> None:
    session.info.pop(AFTER_COMMIT, None)
    drop(session)
