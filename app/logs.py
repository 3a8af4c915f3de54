"""Logging: one configuration for uvicorn's and optaas's loggers, as text lines or JSON objects.

`optaas serve` hands `logging_config(...)` to uvicorn, which applies it in every worker. uvicorn's
own access log is switched off; `app.api.observability` writes one line per request instead to
the `optaas.access` logger, with the request's facts as fields (in JSON, keys of the object).
JSON objects are written by python-json-logger.
"""

from __future__ import annotations

from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from uvicorn.config import LOG_LEVELS

from app.config import LogFormat, LogLevel

ACCESS_LOGGER = "optaas.access"

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
_UVICORN_EXTRAS = ["color_message"]  # uvicorn's message with terminal colours: not for JSON


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


def logging_config(log_format: LogFormat, log_level: LogLevel) -> dict[str, Any]:
    """A `logging.config.dictConfig` document: every record to stderr in `log_format`."""
    level = LOG_LEVELS[log_level]
    handler = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"optaas": _formatter(log_format)},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "optaas",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"uvicorn": handler, "optaas": handler},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
