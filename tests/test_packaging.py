"""The built wheels: the server's carries the migrations (and an installed copy migrates from any
directory) but not the client; the client's carries the client and the format module it shares
with the server, nothing of the server, and works where the server is not installed."""

from __future__ import annotations

import email
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.live_server import CLIENT_SOURCE, REPO_ROOT

# Builds and installs wheels: seconds each.
pytestmark = pytest.mark.slow

MIGRATIONS = sorted(
    path.relative_to(REPO_ROOT).as_posix()
    for path in (REPO_ROOT / "migrations").rglob("*")
    if path.is_file() and "__pycache__" not in path.parts
)


def build_wheel(project: Path, out: Path, pattern: str) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(project),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob(pattern)
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(REPO_ROOT, tmp_path_factory.mktemp("wheel"), "optaas-*.whl")


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory) -> Path:
    return build_wheel(
        CLIENT_SOURCE.parent, tmp_path_factory.mktemp("client-wheel"), "optaas_client-*.whl"
    )


def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(metadata)).get_all("Requires-Dist") or []


def test_the_server_wheel_holds_no_client_and_depends_on_the_client_distribution(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"app"}
    # Parsed, not matched as text: packaging releases write `name @ url` or `name@ url`.
    client = [
        requirement
        for requirement in map(Requirement, requirements(wheel))
        if requirement.name == "optaas-client" and requirement.marker is None
    ]
    assert [(requirement.url or "").startswith("file:") for requirement in client] == [True]


def test_the_client_wheel_holds_the_client_and_the_format_module_only(client_wheel):
    names = zipfile.ZipFile(client_wheel).namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"optaas_client", "optaas_state.py"}
    modules = {path.name for path in (CLIENT_SOURCE / "optaas_client").glob("*.py")}
    assert {name.removeprefix("optaas_client/") for name in names} >= modules
    required = sorted(line.split(";")[0].strip() for line in requirements(client_wheel))
    assert required == [
        "flwr==1.32.1",  # the `flower` extra
        "httpx>=0.27",
        "numpy>=2.0",
        "torch==2.13.0",  # the `torch` extra
    ]


def site_packages_without_optaas(directory: Path) -> Path:
    """This environment's installed packages (links to them) but for the server and the client."""
    directory.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not entry.name.startswith(("app", "optaas", "_editable_impl_optaas")):
            (directory / entry.name).symlink_to(entry)
    return directory


def test_the_installed_client_works_where_the_server_is_not(client_wheel, tmp_path):
    """The client's wheel alone, beside its dependencies, with the server nowhere on the path."""
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    dependencies = site_packages_without_optaas(tmp_path / "dependencies")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(client_wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    script = """
import importlib.util, sys
import numpy as np
import optaas_client, optaas_state
from optaas_client import Client, export_from_safetensors, export_to_safetensors
assert importlib.util.find_spec("app") is None, "the server is importable"
export = {"dtype": "float64", "params": {"w": np.arange(3.0)}, "step": 2,
          "config": {"optimizer": {"type": "sgd"}}, "state": {"w": {"step": 2}}}
back = export_from_safetensors(export_to_safetensors(export))
assert back["params"]["w"].tolist() == [0.0, 1.0, 2.0] and back["state"] == {"w": {"step": 2}}
with Client("http://127.0.0.1:9") as client:
    assert not client.ready()
print(optaas_client.__file__, optaas_state.__file__)
"""
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=elsewhere,
        env={"PYTHONPATH": f"{target}:{dependencies}", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        str(target / "optaas_client" / "__init__.py"),
        str(target / "optaas_state.py"),
    ]


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
