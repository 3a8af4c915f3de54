"""Alembic environment: online migrations over the service's own engine settings.

The URL comes from the Alembic config (set by `app.store.migrate`) or else from `Settings`, so
`alembic upgrade head` / `alembic revision --autogenerate` work from the repository root too.
Concurrent upgrades (several servers starting at once) are serialised: on PostgreSQL by an
advisory lock held for the migration's transaction, on SQLite by BEGIN IMMEDIATE.
"""

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator, text

from app.config import Settings
from app.store import history, models  # noqa: F401  (register the tables on Base.metadata)
from app.store.base import Base
from app.store.database import WRITE_OPTION, make_engine

MIGRATION_LOCK_KEY = 0x6F707461  # "opta": any constant, shared by every optaas process


def database_url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or Settings().database_url


def render_item(kind: str, item: object, autogen_context: AutogenContext) -> str | bool:
    """Write our column types as their SQLAlchemy base type: migrations never import app code."""
    if kind == "type" and isinstance(item, TypeDecorator):
        return f"sa.{item.impl!r}"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            run_migrations(connection.execution_options(**{WRITE_OPTION: True}))
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("optaas migrations run online only (alembic upgrade head)")
run_online()
