"""Settings from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.config import Settings

PLATFORM_VARIABLES = ("PORT", "DATABASE_URL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("OPTAAS_") or name in PLATFORM_VARIABLES:
            monkeypatch.delenv(name)


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'optaas-data' / 'optaas.sqlite3'}"
    assert settings.api_keys == []
    assert settings.max_body_bytes == 512 * 1024**2
    assert settings.lock_timeout_seconds == 10.0
    assert settings.idempotency_ttl_seconds == 86400
    assert settings.idempotency_tombstone_ttl_seconds == 30 * 86400
    assert settings.compute_threads == len(os.sched_getaffinity(0))
    assert (settings.host, settings.port, settings.workers, settings.log_level) == (
        "127.0.0.1",
        8000,
        1,
        "info",
    )


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTAAS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPTAAS_API_KEYS", " one, two ,,")
    monkeypatch.setenv("OPTAAS_MAX_BODY_BYTES", "1024")
    monkeypatch.setenv("OPTAAS_WORKERS", "3")
    monkeypatch.setenv("OPTAAS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("OPTAAS_LOCK_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("OPTAAS_IDEMPOTENCY_TTL_SECONDS", "60")
    monkeypatch.setenv("OPTAAS_IDEMPOTENCY_TOMBSTONE_TTL_SECONDS", "120")
    monkeypatch.setenv("OPTAAS_COMPUTE_THREADS", "3")
    settings = Settings()
    assert settings.compute_threads == 3
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'optaas.sqlite3'}"
    assert settings.api_keys == ["one", "two"]
    assert settings.max_body_bytes == 1024
    assert settings.workers == 3
    assert settings.log_level == "debug"
    assert settings.lock_timeout_seconds == 0.5
    assert (settings.idempotency_ttl_seconds, settings.idempotency_tombstone_ttl_seconds) == (
        60,
        120,
    )


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
    ],
)
def test_database_urls_are_normalised_to_psycopg_3(monkeypatch, given, used):
    monkeypatch.setenv("OPTAAS_DATABASE_URL", given)
    assert Settings().database_url == used


@pytest.mark.parametrize("field", ["workers", "compute_threads"])
def test_invalid_values_are_refused(monkeypatch, field):
    monkeypatch.setenv(f"OPTAAS_{field.upper()}", "0")
    with pytest.raises(ValueError, match=field):
        Settings()


def test_tombstones_must_outlive_the_answers_they_replace(monkeypatch):
    monkeypatch.setenv("OPTAAS_IDEMPOTENCY_TTL_SECONDS", "600")
    monkeypatch.setenv("OPTAAS_IDEMPOTENCY_TOMBSTONE_TTL_SECONDS", "60")
    with pytest.raises(ValueError, match="TOMBSTONE_TTL"):
        Settings()


def test_data_dir_default_is_relative_to_the_working_directory():
    assert Settings().data_dir == Path("./optaas-data")


@pytest.mark.parametrize(
    ("environment", "port", "database_url"),
    [
        (
            {"PORT": "9123", "DATABASE_URL": "postgres://u@h/db"},
            9123,
            "postgresql+psycopg://u@h/db",
        ),
        (
            {
                "PORT": "9123",
                "OPTAAS_PORT": "9200",
                "DATABASE_URL": "postgresql://u@h/platform",
                "OPTAAS_DATABASE_URL": "postgresql://u@h/optaas",
            },
            9200,
            "postgresql+psycopg://u@h/optaas",
        ),
    ],
    ids=["platform-variables-alone", "optaas-variables-win"],
)
def test_platform_port_and_database_url_are_fallbacks(monkeypatch, environment, port, database_url):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.port, settings.database_url) == (port, database_url)


def test_an_invalid_platform_port_is_refused(monkeypatch):
    monkeypatch.setenv("PORT", "http")
    with pytest.raises(ValueError, match="valid integer"):
        Settings()


def test_fields_can_still_be_given_by_name():
    assert Settings(port=9300).port == 9300
