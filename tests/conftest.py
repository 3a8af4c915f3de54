"""Shared fixtures: throw-away databases (SQLite and PostgreSQL) and live server processes.

PostgreSQL cases use a fresh database with a random name on 127.0.0.1:5432 (user postgres),
dropped afterwards. Without a PostgreSQL server they are skipped with the reason shown, unless
OPTAAS_REQUIRE_POSTGRES=1 (set by .ci/run), which makes them fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app.store.database import Database
from app.store.migrate import upgrade
from tests.databases import POSTGRES_SERVER_URL, create_postgres_database, drop_postgres_database
from tests.live_server import LiveServer

REQUIRE_POSTGRES = os.environ.get("OPTAAS_REQUIRE_POSTGRES") == "1"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pytest_sessionstart(session: pytest.Session) -> None:
    """The optimizer kernels compiled (or loaded from numba's disk cache) once, before any test
    and in the controlling process only: the first run of a checkout fills the cache that every
    test worker and every server process the tests start then loads, instead of each compiling
    them while a test waits (a server compiles them before it reports ready)."""
    if not hasattr(session.config, "workerinput"):
        from app.optim import warm_up

        warm_up()


def _unavailable(reason: str) -> None:
    if REQUIRE_POSTGRES:
        pytest.fail(f"OPTAAS_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database with a random name; dropped (connections and all) after."""
    try:
        url = create_postgres_database()
    except OperationalError as error:
        _unavailable(f"no PostgreSQL at {POSTGRES_SERVER_URL}: {str(error).splitlines()[0]}")
    try:
        yield url
    finally:
        drop_postgres_database(url)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'optaas.sqlite3'}"


@contextmanager
def temporary_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url(directory)
    else:
        with temporary_postgres_database() as url:
            yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, then a PostgreSQL database."""
    with temporary_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """As `database_url`, shared by a module's tests (with a server started once)."""
    with temporary_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """`database_url` migrated to the newest schema, as a `Database`."""
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


StartServer = Callable[..., LiveServer]


@contextmanager
def _server_factory(log_dir: Path) -> Iterator[StartServer]:
    with ExitStack() as servers:

        def start(database_url: str, **options: object) -> LiveServer:
            number = len(list(log_dir.glob("server-*.log")))
            server = LiveServer(database_url, log_dir / f"server-{number}.log", **options)
            return servers.enter_context(server)

        yield start


@pytest.fixture(scope="module")
def module_database(module_database_url: str) -> Iterator[Database]:
    """A `Database` over the module's database: to look at what its servers stored."""
    database = Database(module_database_url)
    yield database
    database.dispose()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """`start_server(database_url, workers=1, env={}, log_level="warning")` → a running
    `LiveServer`, stopped after."""
    with _server_factory(tmp_path / "logs") as start:
        yield start


@pytest.fixture(scope="module")
def module_start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """As `start_server`, for servers shared by a module's tests."""
    with _server_factory(tmp_path_factory.mktemp("logs")) as start:
        yield start


@pytest.fixture(scope="module")
def module_server(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server per module and backend, for tests that do not stop it."""
    with _server_factory(tmp_path_factory.mktemp("logs")) as start:
        yield start(module_database_url)
