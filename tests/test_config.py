"""Settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("OPTAAS_"):
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
    settings = Settings()
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


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("OPTAAS_WORKERS", "0")
    with pytest.raises(ValueError, match="workers"):
        Settings()


def test_tombstones_must_outlive_the_answers_they_replace(monkeypatch):
    monkeypatch.setenv("OPTAAS_IDEMPOTENCY_TTL_SECONDS", "600")
    monkeypatch.setenv("OPTAAS_IDEMPOTENCY_TOMBSTONE_TTL_SECONDS", "60")
    with pytest.raises(ValueError, match="TOMBSTONE_TTL"):
        Settings()


def test_data_dir_default_is_relative_to_the_working_directory():
    assert Settings().data_dir == Path("./optaas-data")
