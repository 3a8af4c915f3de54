"""The built wheel carries the migrations, and an installed copy migrates from any directory."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.live_server import REPO_ROOT

MIGRATIONS = sorted(
    path.relative_to(REPO_ROOT).as_posix()
    for path in (REPO_ROOT / "migrations").rglob("*")
    if path.is_file() and "__pycache__" not in path.parts
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO_ROOT),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("optaas-*.whl")
    return built


def test_wheel_contains_the_migrations_inside_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert MIGRATIONS, "no migrations in the source tree"
    for path in MIGRATIONS:
        assert f"app/{path}" in names, path


def test_wheel_contains_the_static_assets_and_their_licences(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    static = sorted(
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "app" / "static").rglob("*")
        if path.is_file()
    )
    assert any(path.endswith("/LICENSE") for path in static)
    assert "app/static/ui/index.html" in static
    assert "app/static/vendor/redoc/redoc.standalone.js" in static
    for path in static:
        assert path in names, path


def test_installed_wheel_migrates_from_another_directory(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    database = tmp_path / "data" / "optaas.sqlite3"
    script = (
        "import app.cli, app.store.migrate as m; "
        "print(m.migrations_dir()); "
        f"app.cli.main(['migrate', '--database-url', 'sqlite:///{database}'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        env={"PYTHONPATH": str(target), "PATH": ""},
        check=True,
        capture_output=True,
        text=True,
    )
    assert result.stdout.splitlines()[0] == str(target / "app" / "migrations")
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"sessions", "session_arrays", "alembic_version"} <= tables
