"""Alembic, driven from code: `optaas serve` and `optaas migrate` upgrade the database to head.

The migration scripts ship inside the wheel as `app/migrations` (pyproject's hatch
`force-include`); in a source checkout they are the repository's `migrations/`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config

import app


def migrations_dir() -> Path:
    """The Alembic script directory: packaged beside the code, else the source tree's."""
    packaged = Path(str(resources.files(app) / "migrations"))
    if (packaged / "env.py").is_file():
        return packaged
    source_tree = Path(app.__file__).resolve().parent.parent / "migrations"
    if (source_tree / "env.py").is_file():
        return source_tree
    raise FileNotFoundError(f"no Alembic migrations in {packaged} or {source_tree}")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would read "%" in passwords as a placeholder.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
