"""`optaas serve` (apply migrations, then run uvicorn), `optaas migrate`, `optaas healthcheck`,
`optaas --version`.

A configuration or a database that cannot work is one line on stderr, `optaas: <what>: <how to
fix it>`, and exit status 2 (`USAGE_ERROR`), before anything runs: no traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from pydantic import ValidationError

from app.config import PROMETHEUS_MULTIPROC_ENV, Settings
from app.version import VERSION

USAGE_ERROR = 2
"""Exit status of a configuration or database that cannot work (argparse's, for bad options)."""

WORKER_HEALTHCHECK_SECONDS = 60
"""How long uvicorn's supervisor waits for a worker to answer its ping before it kills it (its
default, 5 s, killed workers still importing numpy and numba on a busy machine, over and over)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optaas",
        description="Optimisation as a service. Options override OPTAAS_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"optaas {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply pending migrations, then serve HTTP")
    serve.add_argument("--host", help="address to listen on (OPTAAS_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (OPTAAS_PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (OPTAAS_WORKERS, 1)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (OPTAAS_DATABASE_URL)")
    serve.add_argument("--log-level", help="uvicorn log level (OPTAAS_LOG_LEVEL, info)")
    serve.add_argument(
        "--log-format", choices=["text", "json"], help="log lines (OPTAAS_LOG_FORMAT, text)"
    )

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the newest")
    migrate.add_argument("--database-url", help="SQLAlchemy URL (OPTAAS_DATABASE_URL)")

    check = commands.add_parser(
        "healthcheck",
        help="exit 0 if the server configured by the environment answers GET /healthz (containers)",
    )
    check.add_argument("--host", help="the server's address, as given to serve (OPTAAS_HOST)")
    check.add_argument("--port", type=int, help="its port, as given to serve (OPTAAS_PORT)")
    return parser


def export_options(args: argparse.Namespace) -> None:
    """Put the given options into the environment, where every uvicorn worker reads them."""
    for name in ("host", "port", "workers", "database_url", "log_level", "log_format"):
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"OPTAAS_{name.upper()}"] = str(value)


def prepare_metrics_dir() -> tuple[Path, bool]:
    """Point `PROMETHEUS_MULTIPROC_DIR` at an empty directory, before any worker starts.

    Every worker process writes its metrics to files there and `/metrics` sums them (see
    `app.metrics`). A directory already configured is emptied of metric files — an earlier run's
    counts, whose process ids may be reused, must not add to this one's; otherwise a new
    temporary directory is made. Returns the directory and whether it was made here. Must run
    before prometheus_client is imported, which reads the variable once.
    """
    configured = os.environ.get(PROMETHEUS_MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return directory, False
    directory = Path(tempfile.mkdtemp(prefix="optaas-metrics-"))
    os.environ[PROMETHEUS_MULTIPROC_ENV] = str(directory)
    return directory, True


class Stopped(SystemExit):
    """SIGTERM or SIGINT after uvicorn's graceful shutdown: a clean exit (status 0)."""

    def __init__(self) -> None:
        super().__init__(0)


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped()


def start_line(settings: Settings) -> str:
    """The one line a server logs once it listens: version, URLs, database (password hidden).

    `{port}` is left for the log filter to fill in with the port bound (`app.logs.StartLine`).
    """
    from app.api.pages import guide_is_built
    from app.store.preflight import shown_url

    base = f"http://{local_address(settings.host)}:{{port}}"
    guide = f"{base}/guide/" if guide_is_built(settings.guide_dir) else "not built (mkdocs build)"
    return (
        f"optaas {VERSION} at {base}/ — API {base}/docs, runs {base}/ui, guide {guide} — "
        f"database {shown_url(settings.database_url)}"
    )


def serve(settings: Settings) -> None:
    """uvicorn with optaas's logging (its own access log off), multiprocess metrics, and
    problem+json for the requests uvicorn's parser refuses.

    SIGTERM (how Docker, systemd and Kubernetes stop a service) and SIGINT (Ctrl-C) stop it
    cleanly: uvicorn shuts down gracefully, then raises the signal again for whoever handled it
    before — here a handler that exits with status 0, after the metrics directory is removed.
    """
    metrics_dir, made_here = prepare_metrics_dir()
    import uvicorn

    from app.api.protocol import ProblemHttpProtocol
    from app.logs import logging_config

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        uvicorn.run(
            "app.api.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=logging_config(
                settings.log_format, settings.log_level, start_line(settings)
            ),
            access_log=False,
            http=ProblemHttpProtocol,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        )
    finally:
        if made_here:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def local_address(host: str) -> str:
    """The address a client on this machine reaches a server listening on `host` by.

    A wildcard (`0.0.0.0`, `::`) becomes loopback of its family; IPv6 comes bracketed for URLs.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name, e.g. localhost
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def healthcheck(settings: Settings, timeout_seconds: float = 5.0) -> int:
    """0 if `GET /healthz` on the configured host and port answers 200, else 1 (Docker's rule)."""
    import httpx  # imported late, as uvicorn is: the other commands do not need it

    url = f"http://{local_address(settings.host)}:{settings.port}/healthz"
    try:
        # trust_env=False: a proxy set in the environment must not stand between us and loopback.
        response = httpx.get(url, timeout=timeout_seconds, trust_env=False)
    except httpx.HTTPError as error:
        print(f"unhealthy: {url}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"unhealthy: {url} answered {response.status_code}", file=sys.stderr)
        return 1
    print(f"healthy: {url}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    export_options(args)
    try:
        settings = Settings()
    except ValidationError as error:
        fail(_first_problem(error))
    if args.command == "healthcheck":
        sys.exit(healthcheck(settings))

    from app.store.database import is_memory_url  # imported late: `optaas --help` stays fast
    from app.store.migrate import upgrade
    from app.store.preflight import UnusableDatabaseError, check_database

    try:
        check_database(settings.database_url)
    except UnusableDatabaseError as error:
        fail(str(error))
    if not is_memory_url(settings.database_url):  # memory:// makes its tables as it starts
        upgrade(settings.database_url)
    if args.command == "serve":
        serve(settings)


def fail(message: str) -> NoReturn:
    """`optaas: <message>` on stderr, exit status 2."""
    print(f"optaas: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _first_problem(error: ValidationError) -> str:
    """The first configuration error, as one sentence naming the setting (if there is one)."""
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem.get("loc", ()))
    message = str(problem.get("msg", error)).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


if __name__ == "__main__":
    main()
