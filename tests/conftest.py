"""Shared fixtures: throw-away databases (SQLite and PostgreSQL), servers in this process and
live server processes; and the markers every test gets from what it uses (`slow`, `system`).

PostgreSQL cases use a fresh database with a random name on 127.0.0.1:5432 (user postgres),
dropped afterwards. Without a PostgreSQL server they are skipped with the reason shown, unless
OPTAAS_REQUIRE_POSTGRES=1 (set by .ci/run), which makes them fail instead. Migrated databases are
copies of a template migrated once per test process (a file copy for SQLite, `CREATE DATABASE …
TEMPLATE` on PostgreSQL).
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from app.store.database import Database
from app.store.migrate import upgrade
from tests.databases import POSTGRES_SERVER_URL, create_postgres_database, drop_postgres_database
from tests.in_process import InProcessServer
from tests.live_server import LiveServer

REQUIRE_POSTGRES = os.environ.get("OPTAAS_REQUIRE_POSTGRES") == "1"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def run_lengths(short: int, full: int) -> list[Any]:
    """Parameters for a long run's number of steps: `short` in the fast loop, `full` with the
    slow tests. Both make the same assertions; the full run adds what builds up over many steps
    (rounding that accumulates, a warm-up that ends, a late regime of a step size). The short
    run is not collected on PostgreSQL, where the full run covers it."""
    return [
        pytest.param(short, id=f"{short}-steps", marks=pytest.mark.short_run),
        pytest.param(full, id=f"{full}-steps", marks=pytest.mark.slow),
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    """The optimizer kernels compiled (or loaded from numba's disk cache) once, before any test
    and in the controlling process only: the first run of a checkout fills the cache that every
    test worker and every server process the tests start then loads, instead of each compiling
    them while a test waits (a server compiles them before it reports ready)."""
    if not hasattr(session.config, "workerinput"):
        from app.optim import warm_up

        warm_up()


# -- markers from what a test uses ---------------------------------------------------------

LIVE_SERVER_FIXTURES = frozenset({"start_server", "module_start_server", "module_server"})
"""conftest's fixtures that start `optaas serve` processes."""
PROCESS_SIGNS = ("LiveServer(", "PrivatePostgres(", "subprocess.", "Popen(", "sync_playwright")
"""Source text of a test or fixture that starts a process of its own: a server, a database
cluster, a browser, a build, a command."""
SHARED_SCOPES = frozenset({"module", "class", "package", "session"})


@cache
def _own_source_starts_processes(function: Callable[..., object]) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return any(sign in source for sign in PROCESS_SIGNS)


@cache
def _starts_processes(function: Callable[..., object]) -> bool:
    """Whether a test's or fixture's source, or that of a function of its own module it calls,
    starts a process (`PROCESS_SIGNS`)."""
    if _own_source_starts_processes(function):
        return True
    code = getattr(function, "__code__", None)
    scope = getattr(function, "__globals__", {})
    helpers = [scope.get(name) for name in (code.co_names if code else ())]
    return any(
        inspect.isfunction(helper)
        and helper.__module__ == function.__module__
        and _own_source_starts_processes(helper)
        for helper in helpers
    )


def _live_fixtures(item: pytest.Item) -> list[pytest.FixtureDef[object]]:
    """The fixtures in `item`'s closure that start server (or other) processes."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [
        definition
        for name, definitions in info.name2fixturedefs.items()
        for definition in definitions
        if name in LIVE_SERVER_FIXTURES or _starts_processes(definition.func)
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it uses, so that `-m "not slow"` is the fast inner loop:

    - `slow`: it starts processes (a live server fixture or any fixture or test whose source
      starts one, `PROCESS_SIGNS`) — seconds each, where an in-process server takes milliseconds;
    - `postgres` and `system`: it needs the PostgreSQL server (a `postgres`-marked parameter, the
      `postgres_url` fixture or a private cluster); `system` also marks what needs Chromium,
      nginx, Node or docker-compose (those modules say so themselves);
    - `xdist_group` by module: a slow test that shares a module's processes (a module-scoped
      server) runs on the worker that started them, so each is started once per run;
    - `slow` also for the PostgreSQL variant of a test marked `slow_on_postgres`: a long run
      whose SQLite variant stays in the fast loop (each round trip to the server costs several
      times SQLite's, and the run repeats work that PostgreSQL-specific tests cover);
    - the short run of `run_lengths` on PostgreSQL is deselected: its full run covers it.
    """
    for item in items:
        live = _live_fixtures(item)
        function = getattr(item, "function", None)
        own = function is not None and _starts_processes(function)
        if live or own:
            item.add_marker(pytest.mark.slow)
        if "postgres_url" in getattr(item, "fixturenames", ()) or any(
            "PrivatePostgres(" in inspect.getsource(definition.func)
            for definition in live
            if _starts_processes(definition.func)
        ):
            item.add_marker(pytest.mark.postgres)
        if item.get_closest_marker("postgres") is not None:
            item.add_marker(pytest.mark.system)
            if item.get_closest_marker("slow_on_postgres") is not None:
                item.add_marker(pytest.mark.slow)
        if any(definition.scope in SHARED_SCOPES for definition in live):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    covered = [
        item
        for item in items
        if item.get_closest_marker("short_run") and item.get_closest_marker("postgres")
    ]
    if covered:
        items[:] = [item for item in items if item not in covered]
        config.hook.pytest_deselected(items=covered)


def _unavailable(reason: str) -> None:
    if REQUIRE_POSTGRES:
        pytest.fail(f"OPTAAS_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def _postgres_reachable() -> Iterator[None]:
    """Skip (or fail, under OPTAAS_REQUIRE_POSTGRES=1) when the server cannot be reached."""
    try:
        yield
    except OperationalError as error:
        _unavailable(f"no PostgreSQL at {POSTGRES_SERVER_URL}: {str(error).splitlines()[0]}")


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database with a random name; dropped (connections and all) after."""
    with _postgres_reachable():
        url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


SQLITE_FILE = "optaas.sqlite3"


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / SQLITE_FILE}"


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


class DatabaseTemplates:
    """One migrated database of each kind per test process, copied for every test that wants a
    migrated one: a copy costs a file copy (SQLite) or a `CREATE DATABASE … TEMPLATE` (PostgreSQL)
    where migrating anew runs every migration."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite: Path | None = None
        self._postgres = ""

    def sqlite(self, directory: Path) -> str:
        """A migrated SQLite file in `directory`: its URL."""
        if self._sqlite is None:
            upgrade(sqlite_url(self.directory))
            self._sqlite = self.directory / SQLITE_FILE
        shutil.copyfile(self._sqlite, directory / SQLITE_FILE)
        return sqlite_url(directory)

    @contextmanager
    def postgres(self) -> Iterator[str]:
        """A migrated PostgreSQL database with a random name, dropped after."""
        if not self._postgres:
            with _postgres_reachable():
                template = create_postgres_database()
            upgrade(template)
            self._postgres = template
        url = create_postgres_database(template=self._postgres)
        try:
            yield url
        finally:
            drop_postgres_database(url)

    def close(self) -> None:
        if self._postgres:
            drop_postgres_database(self._postgres)


@pytest.fixture(scope="session")
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseTemplates]:
    templates = DatabaseTemplates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.close()


@contextmanager
def migrated_database(backend: str, directory: Path, templates: DatabaseTemplates) -> Iterator[str]:
    if backend == "sqlite":
        yield templates.sqlite(directory)
    else:
        with templates.postgres() as url:
            yield url


@pytest.fixture(params=BACKENDS)
def migrated_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, database_templates: DatabaseTemplates
) -> Iterator[str]:
    """A database with the newest schema and nothing in it: a SQLite file, then PostgreSQL."""
    with migrated_database(request.param, tmp_path, database_templates) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_migrated_database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    database_templates: DatabaseTemplates,
) -> Iterator[str]:
    """As `migrated_database_url`, shared by a module's tests (with a server made once)."""
    directory = tmp_path_factory.mktemp("db")
    with migrated_database(request.param, directory, database_templates) as url:
        yield url


@pytest.fixture
def database(migrated_database_url: str) -> Iterator[Database]:
    """`migrated_database_url` as a `Database`."""
    database = Database(migrated_database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def module_app(module_migrated_database_url: str) -> Iterator[InProcessServer]:
    """The app in this process (`tests.in_process`), one per module and backend, with default
    settings: for HTTP behaviour that needs no server process."""
    with InProcessServer(module_migrated_database_url) as app:
        yield app


@pytest.fixture
def start_app() -> Iterator[Callable[..., InProcessServer]]:
    """`start_app(database_url, env={}, **settings)` → a started `InProcessServer`, then stopped."""
    with ExitStack() as apps:

        def start(database_url: str, **options: Any) -> InProcessServer:
            return apps.enter_context(InProcessServer(database_url, **options))

        yield start


@pytest.fixture(scope="module")
def module_migrated_database(module_migrated_database_url: str) -> Iterator[Database]:
    """A `Database` over `module_migrated_database_url`: to look at what a module's app stored."""
    database = Database(module_migrated_database_url)
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
