"""The TypeScript client (clients/typescript) run from the Python suite: its own tests (`npm
test`) against a live server, the check that its generated types match the server's OpenAPI
document, and its error-surface example against the Python one on the same server.

Needs Node ≥ 20 and npm: skipped with the reason when they are missing, failed instead under
OPTAAS_REQUIRE_NODE=1 (set by .ci/run). `npm ci` runs first when node_modules is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.live_server import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.system]

PACKAGE = REPO_ROOT / "clients" / "typescript"
REQUIRE_NODE = os.environ.get("OPTAAS_REQUIRE_NODE") == "1"
MINIMUM_NODE = 20


def _unavailable(reason: str) -> None:
    if REQUIRE_NODE:
        pytest.fail(f"OPTAAS_REQUIRE_NODE=1 but {reason}")
    pytest.skip(reason)


def node_major_version(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    match = re.match(r"v(\d+)\.", version.stdout.strip())
    return int(match.group(1)) if match else 0


def run(command: list[str], **options) -> str:
    """Run `command` in the package; its output, or a failure showing both streams."""
    env = {
        **os.environ,
        "OPTAAS_PYTHON": sys.executable,
        "NO_PROXY": "127.0.0.1",
        "FORCE_COLOR": "0",
        **options.pop("env", {}),
    }
    result = subprocess.run(
        command, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=900, **options
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-8000:]}\n{result.stderr[-8000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def npm() -> str:
    """npm, with the package's dependencies installed (`npm ci` from the lockfile if missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("the TypeScript client needs Node and npm (.ci/run checks for them)")
    if (major := node_major_version(node)) < MINIMUM_NODE:
        _unavailable(f"the TypeScript client needs Node {MINIMUM_NODE} or newer, not {major}")
    if not (PACKAGE / "node_modules").is_dir():
        run([npm, "ci", "--no-audit", "--no-fund"])
    return npm


@pytest.fixture(scope="module")
def server(module_start_server):
    return module_start_server("memory://")


def test_the_typescript_client_passes_its_tests_against_a_live_server(npm, server):
    output = run([npm, "test"], env={"OPTAAS_URL": server.url})
    counts = dict(re.findall(r"^ℹ (tests|pass|fail|skipped|cancelled) (\d+)$", output, re.M))
    assert int(counts["tests"]) >= 50, output[-3000:]
    assert counts["fail"] == counts["cancelled"] == counts["skipped"] == "0", output[-3000:]


def test_the_generated_types_match_the_servers_openapi_document(npm):
    output = run([npm, "run", "check-types"])
    assert "matches the server's OpenAPI document" in output


def test_the_typescript_example_walks_the_surface_exactly_as_the_python_one(npm, server, tmp_path):
    run([npm, "run", "build"])
    ours, theirs = tmp_path / "typescript.json", tmp_path / "python.json"
    example = ["node", "dist/examples/error_surface.js", "--url", server.url, "--quick"]
    typescript_lines = run([*example, "--data", str(ours)]).splitlines()
    python_lines = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "error_surface.py"),
            "--url",
            server.url,
            "--quick",
            "--output",
            str(tmp_path / "surface.png"),
            "--data",
            str(theirs),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout.splitlines()
    # The same table, line for line, learning-rate-free runs included (the Python example also
    # names its figure file).
    assert typescript_lines[:9] == python_lines[:9]
    assert [
        line.split(" ‖θ")[0].split(" lands at")[0].strip() for line in typescript_lines[:9]
    ] == [
        "gradient descent, η = 0.02",
        "Adagrad (lecture's σ), η = 0.5",
        "Adagrad, η_t = 0.5/√(t+1)",
        "RMSProp (σ₀ = |g₀|), η = 0.01",
        "Adam, η = 0.05",
        "Prodigy",
        "D-Adaptation Adam",
        "DoG",
        "schedule-free AdamW",
    ]
    # The same runs, settings and every number of every step, where each lands included.
    assert json.loads(ours.read_text()) == json.loads(theirs.read_text())
