"""`optaas serve` (apply migrations, then run uvicorn) and `optaas migrate`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from app.config import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optaas",
        description="Optimisation as a service. Options override OPTAAS_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply pending migrations, then serve HTTP")
    serve.add_argument("--host", help="address to listen on (OPTAAS_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (OPTAAS_PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (OPTAAS_WORKERS, 1)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (OPTAAS_DATABASE_URL)")
    serve.add_argument("--log-level", help="uvicorn log level (OPTAAS_LOG_LEVEL, info)")

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the newest")
    migrate.add_argument("--database-url", help="SQLAlchemy URL (OPTAAS_DATABASE_URL)")
    return parser


def export_options(args: argparse.Namespace) -> None:
    """Put the given options into the environment, where every uvicorn worker reads them."""
    for name in ("host", "port", "workers", "database_url", "log_level"):
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"OPTAAS_{name.upper()}"] = str(value)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    export_options(args)
    settings = Settings()

    from app.store.migrate import upgrade  # imported late: `optaas --help` stays fast

    upgrade(settings.database_url)
    if args.command == "serve":
        import uvicorn

        uvicorn.run(
            "app.api.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
        )


if __name__ == "__main__":
    main()
