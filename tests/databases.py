"""Throw-away PostgreSQL databases and clusters, for tests and benchmarks (no pytest here)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

POSTGRES_SERVER_URL = os.environ.get(
    "OPTAAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
TEMPLATE_ATTEMPTS = 50


def _run_as_admin(statement: str, server_url: str) -> None:
    """One statement outside any transaction (CREATE/DROP DATABASE need that)."""
    admin = create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def create_postgres_database(server_url: str = POSTGRES_SERVER_URL, *, template: str = "") -> str:
    """A new database with a random name on the server at `server_url` (no database in it): its
    URL (OperationalError without a server). Empty, or a copy of the database at the URL
    `template` (one that nobody is connected to) — a copy is cheaper than migrating anew."""
    name = f"optaas_test_{secrets.token_hex(6)}"
    if not template:
        _run_as_admin(f'CREATE DATABASE "{name}"', server_url)
        return f"{server_url}/{name}"
    source = make_url(template).database
    for attempt in range(TEMPLATE_ATTEMPTS):
        try:
            _run_as_admin(f'CREATE DATABASE "{name}" TEMPLATE "{source}"', server_url)
            return f"{server_url}/{name}"
        except OperationalError as error:
            # PostgreSQL copies only a database nobody is connected to; autovacuum may be, briefly.
            if (
                "being accessed by other users" not in str(error)
                or attempt + 1 == TEMPLATE_ATTEMPTS
            ):
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def drop_postgres_database(url: str) -> None:
    """Drop a database made by `create_postgres_database`, closing its connections."""
    name = make_url(url).database
    assert name and name.startswith("optaas_test_"), f"refusing to drop {name!r}"
    server_url = url.removesuffix(f"/{name}")  # as create_postgres_database made it
    _run_as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', server_url)


class PrivatePostgres:
    """A PostgreSQL cluster of its own — `initdb` in a temporary directory, a free port — for
    tests that stop and start the database. The machine's shared server is never touched.

    Runs the server binaries of the newest PostgreSQL under /usr/lib/postgresql; as root, as the
    `postgres` OS user (the server refuses to run as root).
    """

    def __init__(self) -> None:
        versions = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"),
            key=lambda path: int(Path(path).parts[-3]),
        )
        if not versions:
            raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin_dir = Path(versions[-1]).parent
        self.directory = Path(tempfile.mkdtemp(prefix="optaas-pg-"))
        self.data_dir = self.directory / "data"
        self.port = _free_port()
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)

    @property
    def server_url(self) -> str:
        """The server's URL without a database (for `create_postgres_database`)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.server_url}/postgres"

    def init(self) -> PrivatePostgres:
        self._run("initdb", "-D", self.data_dir, "-U", "postgres", "--auth=trust", "--no-sync")
        return self

    def start(self, *, durable: bool = False) -> None:
        """Start the server: with fsync and full-page writes off (tests), or as a production
        server runs (`durable`: PostgreSQL's defaults, for measurements)."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        log = self.directory / "server.log"
        self._run("pg_ctl", "-D", self.data_dir, "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: open transactions are rolled back, connections closed."""
        self._run("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")

    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: object) -> None:
        command = [str(self.bin_dir / program), *map(str, args)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
