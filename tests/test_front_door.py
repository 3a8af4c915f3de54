"""The front door, as a newcomer meets it: `GET /` in a browser, the guide at /guide/, the one
start line, a database URL that cannot work, `optaas --version`, `optaas healthcheck --port`.

Against real server processes, a real guide (built by mkdocs) and real bad databases: a URL
of a kind optaas does not speak, a port nothing listens on, a database missing on the real
PostgreSQL server, a file that is not SQLite.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from sqlalchemy import make_url

from app.cli import start_line
from app.config import Settings
from tests.conftest import sqlite_url, temporary_postgres_database
from tests.live_server import REPO_ROOT, free_port, source_environment

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-Pa55"


def optaas(*arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`optaas …` from the source tree, with this environment less its OPTAAS_* settings."""
    kept = {name: value for name, value in source_environment().items()
            if not name.startswith("OPTAAS_") and name not in {"PORT", "DATABASE_URL"}}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *arguments],
        cwd=REPO_ROOT, env={**kept, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def guide(tmp_path_factory) -> Path:
    """The guide, built by mkdocs from docs/ as .ci/run builds it."""
    site = tmp_path_factory.mktemp("guide")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", str(site)],
        cwd=REPO_ROOT, check=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    return site


@pytest.fixture(scope="module")
def server(module_start_server, tmp_path_factory, guide):
    """A server that serves the built guide, logging at info (its start line)."""
    directory = tmp_path_factory.mktemp("front")
    return module_start_server(
        sqlite_url(directory), log_level="info", env={"OPTAAS_GUIDE_DIR": str(guide)}
    )


@pytest.fixture(scope="module")
def server_without_guide(module_start_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("no-guide")
    return module_start_server(
        sqlite_url(directory), env={"OPTAAS_GUIDE_DIR": str(directory / "not-built")}
    )


def inline_script_hashes(html: str) -> set[str]:
    return {
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in re.findall(r"<script>(.*?)</script>", html, re.S)
    }


# -- GET / and the landing page -------------------------------------------------------------


def test_the_root_redirects_a_browser_to_the_landing_page(server):
    with server.client() as client:
        root = client.get("/")
        landing = client.get("/", follow_redirects=True)
    assert root.status_code == 307 and root.headers["location"] == "/welcome"
    assert landing.status_code == 200 and landing.headers["content-type"].startswith("text/html")
    links = set(re.findall(r'href="([^"]+)"', landing.text))
    assert {"/docs", "/redoc", "/ui", "/guide/"} <= links
    assert f"optaas <small>{version('optaas')}</small>" in landing.text
    policy = landing.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert landing.headers["x-frame-options"] == "DENY"


def test_the_landing_page_says_how_to_build_a_missing_guide(server_without_guide):
    with server_without_guide.client() as client:
        landing = client.get("/welcome")
        guide = client.get("/guide/")
    assert 'href="/guide/"' not in landing.text
    assert "mkdocs build" in landing.text and "OPTAAS_GUIDE_DIR" in landing.text
    assert guide.status_code == 404


# -- /guide/ ------------------------------------------------------------------------------------


def test_the_guide_is_served_with_its_inline_scripts_allowed_by_hash(server, guide):
    with server.client() as client:
        bare = client.get("/guide")
        index = client.get("/guide/")
        sessions = client.get("/guide/sessions/")
        stylesheet = re.search(r'href="(assets/stylesheets/main\.[^"]+\.css)"', index.text)
        css = client.get(f"/guide/{stylesheet.group(1)}")
    assert bare.status_code in (301, 307) and bare.headers["location"].endswith("/guide/")
    assert index.status_code == 200 and index.text == (guide / "index.html").read_text()
    assert sessions.status_code == 200 and "Sessions over HTTP" in sessions.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    policy = index.headers["content-security-policy"]
    hashes = inline_script_hashes(index.text)
    assert hashes and all(digest in policy for digest in hashes)
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    assert index.headers["x-content-type-options"] == "nosniff"


def test_the_guide_serves_nothing_outside_its_directory(server):
    with server.client() as client:
        escaped = client.get("/guide/..%2F..%2Fpyproject.toml")
        missing = client.get("/guide/no-such-page/")
    assert escaped.status_code == 404 and missing.status_code == 404


# -- the start line -----------------------------------------------------------------------------


def test_the_server_starts_with_one_line_saying_version_urls_and_database(server):
    log = server.log_path.read_text()
    started = log[log.rindex("=== ") :].splitlines()[1:]
    lines = [line for line in started if line.strip() and "optaas.access" not in line]
    assert len(lines) == 1, lines
    assert " INFO optaas: " in lines[0]
    base = f"http://127.0.0.1:{server.port}"
    assert f"optaas {version('optaas')} at {base}/ — " in lines[0]
    for url in (f"{base}/docs", f"{base}/ui", f"{base}/guide/"):
        assert url in lines[0]
    assert f"database {server.database_url}" in lines[0]


def test_the_start_line_hides_the_databases_password():
    url = f"postgresql://optaas:{PASSWORD}@db.example:5432/optaas"
    line = start_line(Settings(database_url=url, port=8123, guide_dir=Path("/nonexistent")))
    assert PASSWORD not in line
    assert "database postgresql+psycopg://optaas:***@db.example:5432/optaas" in line
    assert "guide not built (mkdocs build)" in line


# -- friendly failures -------------------------------------------------------------------------


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("optaas: ")
    for phrase in phrases:
        assert phrase in line


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_database_of_another_kind_is_one_line_saying_which_kinds_work(command):
    result = optaas(command, f"--database-url=mysql://root:{PASSWORD}@127.0.0.1/optaas")
    assert_one_line_failure(result, "mysql://root:***@127.0.0.1/optaas", "not mysql", "sqlite:///")


def test_an_unreachable_postgresql_is_one_line_saying_to_start_it():
    port = free_port()
    result = optaas("serve", f"--database-url=postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/x")
    assert_one_line_failure(result, f"no PostgreSQL server answers at 127.0.0.1:{port}", "start it")


def test_a_missing_postgresql_database_is_one_line_saying_how_to_create_it():
    with temporary_postgres_database() as existing:  # the server runs (or the test skips)
        server = make_url(existing)
    missing = f"optaas_test_missing_{secrets.token_hex(4)}"
    url = server.set(password=PASSWORD, database=missing).render_as_string(hide_password=False)
    result = optaas("serve", f"--database-url={url}")
    assert_one_line_failure(result, f"the database {missing} does not exist", "createdb")


def test_a_file_that_is_not_sqlite_is_one_line(tmp_path):
    (tmp_path / "notes.sqlite3").write_text("not a database\n" * 100)
    result = optaas("migrate", f"--database-url=sqlite:///{tmp_path / 'notes.sqlite3'}")
    assert_one_line_failure(result, "file is not a database")


def test_a_bad_setting_is_one_line_too():
    result = optaas("serve", OPTAAS_WORKERS="0")
    assert_one_line_failure(result, "workers")


# -- --version and healthcheck --port ------------------------------------------------------


def test_version():
    result = optaas("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"optaas {version('optaas')}"


def test_healthcheck_reaches_the_port_serve_was_given(server):
    healthy = optaas("healthcheck", f"--port={server.port}")
    nobody = free_port()
    unhealthy = optaas("healthcheck", "--host=127.0.0.1", f"--port={nobody}")
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.strip() == f"healthy: {server.url}/healthz"
    assert unhealthy.returncode == 1
    assert f"unhealthy: http://127.0.0.1:{nobody}/healthz" in unhealthy.stderr
