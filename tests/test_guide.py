"""The guide (docs/, mkdocs.yml) builds with every link checked, and its tables stay complete:
every operation of the OpenAPI document has a row in "Every endpoint", every setting of
`Settings` a row in "Configuration"."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from app.api.app import create_app
from app.config import Settings
from tests.live_server import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def table_rows(page: str) -> list[str]:
    return [line for line in (DOCS / page).read_text().splitlines() if line.startswith("| `")]


@pytest.mark.slow
def test_the_guide_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, or a page left out of the nav, fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for page in ("index.html", "sessions/index.html", "endpoints/index.html", "404.html"):
        assert (tmp_path / page).is_file(), page
    index = (tmp_path / "index.html").read_text()
    assert "fonts.googleapis.com" not in index  # nothing from other hosts


def test_every_operation_has_a_row_in_every_endpoint():
    rows = "\n".join(table_rows("endpoints.md"))
    operations = [
        (method.upper(), re.sub(r"\{session_id\}", "{id}", path))
        for path, methods in create_app().openapi()["paths"].items()
        for method in methods
    ]
    assert len(operations) >= 14
    for method, path in operations:
        assert f"`{method} {path}`" in rows or f"`GET {path}` (and `{method}`)" in rows, (
            method,
            path,
        )


def test_every_setting_has_a_row_in_configuration():
    rows = "\n".join(table_rows("configuration.md"))
    for name in Settings.model_fields:
        assert f"`OPTAAS_{name.upper()}`" in rows, name


@pytest.mark.parametrize("page", ["README.md", "clients/python/README.md"])
def test_the_readmes_links_reach_files_that_exist(page):
    """The READMEs are read outside the guide (on a code host, in a package index), where
    mkdocs checks nothing: their relative links must still lead somewhere."""
    path = REPO_ROOT / page
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    local = [target for target in targets if "://" not in target]
    assert local
    for target in local:
        assert (path.parent / target).exists(), target
