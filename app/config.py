"""Configuration: one `Settings`, read from `OPTAAS_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SQLITE_FILE_NAME = "optaas.sqlite3"
SOURCE_TREE_GUIDE_DIR = Path(__file__).resolve().parent.parent / "site"
"""Where `mkdocs build` puts the guide in a source checkout (mkdocs.yml's `site_dir`)."""
PROMETHEUS_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess directory; it reads the variable when it is imported."""

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LogFormat = Literal["text", "json"]


def platform_fallback(field: str, platform_variable: str) -> AliasChoices:
    """Read `OPTAAS_<FIELD>`, else the variable container platforms set (`PORT`, `DATABASE_URL`)."""
    return AliasChoices(f"OPTAAS_{field.upper()}", platform_variable)


class Settings(BaseSettings):
    """Everything the server can be told, each field as `OPTAAS_<FIELD>` in the environment.

    `port` and `database_url` also read `PORT` and `DATABASE_URL`, which container platforms
    (Heroku, Cloud Run, Render, …) set; the `OPTAAS_` variable wins when both are set.
    """

    model_config = SettingsConfigDict(env_prefix="OPTAAS_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        default=Path("./optaas-data"),
        description="Directory of the default SQLite database (created on start when used).",
    )
    database_url: str = Field(
        default="",
        validation_alias=platform_fallback("database_url", "DATABASE_URL"),
        description=(
            "SQLAlchemy URL of the database. Empty: a SQLite file in `data_dir`. "
            "`postgresql://…` is read as `postgresql+psycopg://…`. `memory://`: sessions in "
            "this one server process only, lost when it stops (no migrations, one worker)."
        ),
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys; when set, creating a session needs `X-API-Key`.",
    )
    max_body_bytes: int = Field(
        default=512 * 1024**2, gt=0, description="Largest request body accepted (413 above)."
    )
    max_json_body_bytes: int = Field(
        default=32 * 1024**2,
        gt=0,
        description=(
            "Largest JSON body of a creation or an import (413 above): JSON is for small "
            "models, safetensors for large ones. A step's body is bounded by its session's size."
        ),
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Longest wait for the next piece of a request body; a body that stalls longer is "
            "dropped with 408 and its connection closed."
        ),
    )
    creation_rate_limit: str = Field(
        default="10/second;120/minute",
        description=(
            "Creations, imports and forks allowed per API key (per client address without "
            "keys) and server process, in the `limits` notation (`N/second;M/minute`); empty: "
            "no limit. Above it: 429 with `Retry-After`."
        ),
    )
    preview_rate_limit: str = Field(
        default="10/second;300/minute",
        description=(
            "Schedule previews allowed per API key (per client address without keys) and "
            "server process; empty: no limit."
        ),
    )
    lock_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Longest wait for a session's lock (PostgreSQL `lock_timeout`, SQLite busy timeout) "
            "or for a pooled database connection; past it the request gets 503 + Retry-After."
        ),
    )
    idempotency_ttl_seconds: int = Field(
        default=86400,
        gt=0,
        description="How long the response to a request with an `Idempotency-Key` is kept.",
    )
    idempotency_tombstone_ttl_seconds: int = Field(
        default=30 * 86400,
        gt=0,
        description=(
            "How long a creation's key is remembered (as a tombstone, its response dropped) so "
            "that a late retry is refused rather than applied twice. A session's own keys are "
            "remembered as long as the session lives."
        ),
    )
    host: str = "127.0.0.1"
    port: int = Field(
        default=8000, ge=0, le=65535, validation_alias=platform_fallback("port", "PORT")
    )
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes.")
    log_level: LogLevel = "info"
    log_format: LogFormat = Field(
        default="text", description="`text` lines or `json` objects, one per log record."
    )
    max_wait_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "Longest `timeout` of `GET …/params?wait_for_step=` (a larger one is a 422); the "
            "default timeout is the smaller of 10 s and this."
        ),
    )
    cache_max_bytes: int = Field(
        # 2 GiB holds one 1e8-parameter float32 Adam session (θ, m, v: 1.2 GB), so that its steps
        # are logged ones by default.
        default=2 * 1024**3,
        ge=0,
        description=(
            "Bytes of arrays each server process keeps of the sessions it stepped lately (their "
            "working sets), so that a step does not read θ and state back; 0 keeps none."
        ),
    )
    checkpoint_every: int = Field(
        default=8,
        ge=1,
        description=(
            "A step writes its gradient to the session's step log; θ and state are rewritten "
            "in full (a checkpoint) at least every this many steps. 1: every step rewrites them."
        ),
    )
    array_chunk_bytes: int = Field(
        default=4 * 1024**2,
        ge=1024,
        le=64 * 1024**2,
        description=(
            "The most bytes of an array one database row holds; larger arrays are stored in "
            "several rows (chunks), written and read chunk by chunk. A spread checkpoint "
            "rewrites whole chunks: 4 MiB (measured against 16 MiB) lets every step write its "
            "share, where larger chunks make one step in a few write a large piece."
        ),
    )
    compute_threads: int = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)),
        ge=1,
        description=(
            "Threads one large step computes on (the fused kernels above 262 144 parameters, "
            "chains above 4 194 304); default: the CPUs this process may use (torch's default "
            "too). Smaller steps use one; the numbers are the same either way."
        ),
    )
    guide_dir: Path = Field(
        default=SOURCE_TREE_GUIDE_DIR,
        description=(
            "The built guide (`mkdocs build`), served at /guide/ when it holds an index.html; "
            "default: the source checkout's `site/`."
        ),
    )
    history_max_records: int = Field(
        default=100_000,
        ge=0,
        description="Records kept per session's history (oldest pruned in batches); 0: none.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def split_api_keys(cls, value: object) -> object:
        """`"k1, k2"` → `["k1", "k2"]`; empty items are dropped."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("creation_rate_limit", "preview_rate_limit")
    @classmethod
    def readable_rate_limit(cls, value: str) -> str:
        """A rate limit in the `limits` notation (`10/second;300/minute`), or empty for none."""
        value = value.strip()
        if value:
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate limit such as 10/second;300/minute"
                ) from None
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def tombstones_outlive_responses(self) -> Settings:
        if self.idempotency_tombstone_ttl_seconds < self.idempotency_ttl_seconds:
            raise ValueError(
                "OPTAAS_IDEMPOTENCY_TOMBSTONE_TTL_SECONDS must be at least "
                "OPTAAS_IDEMPOTENCY_TTL_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def memory_is_one_process(self) -> Settings:
        if self.database_url.startswith("memory:") and self.workers > 1:
            raise ValueError(
                "OPTAAS_DATABASE_URL=memory:// keeps sessions inside one server process: "
                f"run it with one worker, not {self.workers} (or use SQLite or PostgreSQL)"
            )
        return self

    @model_validator(mode="after")
    def resolve_database_url(self) -> Settings:
        """Default to SQLite in `data_dir`; make PostgreSQL URLs use the psycopg 3 driver."""
        if not self.database_url:
            path = (self.data_dir / SQLITE_FILE_NAME).resolve()
            self.database_url = f"sqlite:///{path}"
        self.database_url = normalise_database_url(self.database_url)
        return self


def normalise_database_url(url: str) -> str:
    """`postgres://` and `postgresql://` → `postgresql+psycopg://` (psycopg 3); others unchanged."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url
