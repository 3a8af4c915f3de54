"""Throw-away PostgreSQL databases, for tests and benchmarks (no pytest here)."""

from __future__ import annotations

import os
import secrets

from sqlalchemy import create_engine, make_url, text

POSTGRES_SERVER_URL = os.environ.get(
    "OPTAAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)


def _run_as_admin(statement: str) -> None:
    """One statement outside any transaction (CREATE/DROP DATABASE need that)."""
    admin = create_engine(f"{POSTGRES_SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def create_postgres_database() -> str:
    """A new, empty database with a random name: its URL (OperationalError without a server)."""
    name = f"optaas_test_{secrets.token_hex(6)}"
    _run_as_admin(f'CREATE DATABASE "{name}"')
    return f"{POSTGRES_SERVER_URL}/{name}"


def drop_postgres_database(url: str) -> None:
    """Drop a database made by `create_postgres_database`, closing its connections."""
    name = make_url(url).database
    assert name and name.startswith("optaas_test_"), f"refusing to drop {name!r}"
    _run_as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
