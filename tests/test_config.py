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
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'optaas.sqlite3'}"
    assert settings.api_keys == ["one", "two"]
    assert settings.max_body_bytes == 1024
    assert settings.workers == 3
    assert settings.log_level == "debug"


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


def test_data_dir_default_is_relative_to_the_working_directory():
    assert Settings().data_dir == Path("./optaas-data")
