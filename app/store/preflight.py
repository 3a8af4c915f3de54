"""A database URL checked before anything runs on it: one connection, one `SELECT 1`.

`optaas serve` and `optaas migrate` call `check_database` before the migrations, so that a URL
of a kind optaas does not speak, a server that cannot be reached, a database that does not
exist or credentials it refuses are one sentence saying what is wrong and how to fix it
(`UnusableDatabaseError`), not a traceback out of Alembic.
"""

from __future__ import annotations

from sqlalchemy import make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from app.store.database import is_memory_url, make_engine

SUPPORTED = (
    "sqlite:///path/to/file.sqlite3, postgresql://user:password@host:5432/dbname or memory://"
)

# PostgreSQL's refusals, by a phrase of psycopg's message, and what to do about each.
POSTGRES_ADVICE = (
    ('role "', "the PostgreSQL server at {where} has no user {user}",
     "fix the user in the URL, or create the role"),
    ('database "', "the database {database} does not exist on the PostgreSQL server at {where}",
     "create it (createdb -h {host} -p {port} -U {user} {database}) or fix the URL"),
    ("password authentication failed",
     "the PostgreSQL server at {where} refused the password of user {user}",
     "fix the user or password in the URL"),
    ("no password supplied", "the PostgreSQL server at {where} asks user {user} for a password",
     "put it in the URL (postgresql://user:password@…)"),
    ("translate host name", "the host {host} is unknown", "fix the host in the URL"),
    ("failed to resolve host", "the host {host} is unknown", "fix the host in the URL"),
    ("Connection refused", "no PostgreSQL server answers at {where}",
     "start it, or fix the host and port in the URL"),
    ("timeout expired", "the PostgreSQL server at {where} did not answer in time",
     "check that PostgreSQL runs there and that no firewall drops the connection"),
)  # fmt: skip


class UnusableDatabaseError(Exception):
    """The database cannot be used; the message says what is wrong and how to fix it."""


def shown_url(url: str) -> str:
    """The URL as it may be printed: its password, if any, as `***`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def check_database(url: str) -> None:
    """Connect to `url` once and run `SELECT 1`; raise `UnusableDatabaseError` if that fails."""
    if is_memory_url(url):
        return
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql") or (
        backend == "postgresql" and parsed.get_driver_name() != "psycopg"
    ):
        raise UnusableDatabaseError(
            f"{shown_url(url)}: optaas stores sessions in SQLite or PostgreSQL (through "
            f"psycopg), not {parsed.drivername}; use {SUPPORTED}"
        )
    try:
        engine = make_engine(url)
    except OSError as error:  # SQLite: the file's directory could not be made
        raise UnusableDatabaseError(
            f"cannot make the directory of the SQLite file {parsed.database} ({error.strerror}):"
            " choose a writable place (OPTAAS_DATA_DIR or the URL)"
        ) from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as error:
        raise UnusableDatabaseError(_advice(parsed, error)) from None
    finally:
        engine.dispose()


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError):
        raise UnusableDatabaseError(f"{shown_url(url)} is not a database URL optaas can use: use "
                               f"{SUPPORTED}") from None  # fmt: skip
    return parsed


def _advice(url: URL, error: DBAPIError) -> str:
    """One sentence for a refused connection: what, then how to fix it."""
    message = str(error.orig).strip()
    if url.get_backend_name() == "sqlite":
        return (
            f"cannot use the SQLite file {url.database} ({message}): it must be a SQLite "
            "database (or not exist yet) in a directory optaas can write"
        )
    facts = {
        "database": url.database,
        "user": url.username,
        "host": url.host or "localhost",
        "port": url.port or 5432,
    }
    facts["where"] = f"{facts['host']}:{facts['port']}"
    for phrase, what, fix in POSTGRES_ADVICE:
        if phrase in message:
            return f"{what.format(**facts)}: {fix.format(**facts)}"
    first_line = message.splitlines()[0] if message else type(error.orig).__name__
    return f"cannot use {shown_url(url.render_as_string(hide_password=False))}: {first_line}"
