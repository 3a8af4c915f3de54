"""Logging: one configuration for uvicorn's and optaas's loggers, as text lines or JSON objects.

`optaas serve` hands `logging_config(...)` to uvicorn, which applies it in every worker. uvicorn's
own access log is switched off; `app.api.observability` writes one line per request instead to
the `optaas.access` logger, with the request's facts as fields (in JSON, keys of the object).
JSON objects are written by python-json-logger. At `info`, uvicorn's start-up lines become one
line of optaas's (`StartLine`): the version, the URLs and the database.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from uvicorn.config import LOG_LEVELS

from app.config import LogFormat, LogLevel

ACCESS_LOGGER = "optaas.access"

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
_UVICORN_EXTRAS = ["color_message"]  # uvicorn's message with terminal colours: not for JSON


class StartLine(logging.Filter):
    """uvicorn's start-up lines (the process started, waiting for the app, the app started)
    are dropped, and its "Uvicorn running on …" becomes `line`, logged as optaas's — with
    `{port}` filled in from it, as the port bound (port 0 binds any free one)."""

    QUIET = (
        "Started server process",
        "Started parent process",
        "Waiting for application startup",
        "Application startup complete",
    )

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(self.QUIET):
            return False
        if message.startswith("Uvicorn running on") and isinstance(record.args, tuple):
            port = record.args[-1]
            # Formatted here, arguments dropped: a `%` in the line is not a placeholder.
            record.msg, record.args = self.line.replace("{port}", str(port)), ()
            record.__dict__.pop("color_message", None)
            record.name = "optaas"
        return True


def _formatter(log_format: LogFormat) -> dict[str, Any]:
    if log_format == "json":
        return {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": _JSON_FIELDS,
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601 in UTC
            "reserved_attrs": [*RESERVED_ATTRS, *_UVICORN_EXTRAS],
        }
    return {"format": _TEXT_FORMAT}


def logging_config(
    log_format: LogFormat, log_level: LogLevel, start_line: str | None = None
) -> dict[str, Any]:
    """A `logging.config.dictConfig` document: every record to stderr in `log_format`; with
    `start_line`, uvicorn's start-up lines are that one line (`StartLine`) at `info` and above."""
    level = LOG_LEVELS[log_level]
    handler: dict[str, Any] = {"handlers": ["stderr"], "level": level, "propagate": False}
    filters: dict[str, Any] = {}
    if start_line is not None and level >= logging.INFO:
        filters["start_line"] = {"()": "app.logs.StartLine", "line": start_line}
    server_log = {**handler, "filters": list(filters)}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": {"optaas": _formatter(log_format)},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "optaas",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"uvicorn": handler, "uvicorn.error": server_log, "optaas": handler},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
