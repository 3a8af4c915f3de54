"""The examples in `examples/`, each run as a user runs it — a separate process against a live
server — in its short mode, and what it produced checked: the lecture's figure and the story its
trajectories tell, the digits accuracies of optaas and torch.optim, the shell walk-through's
numbers."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import colors
from matplotlib import pyplot as plt

from tests.conftest import sqlite_url
from tests.live_server import REPO_ROOT, source_environment
from tests.optim.test_lecture import (
    assert_bursts_in_the_flat_direction,
    assert_reaches_the_neighbourhood,
    assert_stays_near_and_converges,
    assert_stuck_with_large_gradient,
)

EXAMPLES = REPO_ROOT / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(module_start_server, tmp_path_factory):
    """One SQLite server for the examples (they exercise the client, not the database)."""
    return module_start_server(sqlite_url(tmp_path_factory.mktemp("examples")))


def run(command, **options):
    env = source_environment(NO_PROXY="127.0.0.1")
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, **options
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE
    return struct.unpack(">II", header[16:24])


def test_error_surface_draws_the_lecture_story(server, tmp_path):
    figure, data = tmp_path / "surface.png", tmp_path / "trajectories.json"
    output = run(
        [
            sys.executable,
            str(EXAMPLES / "error_surface.py"),
            "--url",
            server.url,
            "--quick",
            "--output",
            str(figure),
            "--data",
            str(data),
        ]
    )
    assert f"figure: {figure}" in output

    width, height = png_size(figure)
    assert width >= 1200 and height >= 400 and figure.stat().st_size > 50_000
    pixels = plt.imread(figure)[..., :3]
    sys.path.insert(0, str(EXAMPLES))
    try:
        import error_surface
    finally:
        sys.path.remove(str(EXAMPLES))
    for colour in error_surface.COLOURS:  # every run is drawn
        near = np.abs(pixels - np.array(colors.to_rgb(colour))).max(axis=-1) < 0.05
        assert near.sum() > 500, colour

    runs = json.loads(data.read_text())["runs"]
    assert len(runs) == 5
    assert all(len(run["path"]) == error_surface.QUICK_STEPS + 1 for run in runs.values())
    gd, adagrad, decayed, *_ = (
        (np.array(run["path"]), np.array(run["grad_norms"])) for run in runs.values()
    )
    assert_stuck_with_large_gradient(*gd)  # GD oscillates: x flips every step
    assert_reaches_the_neighbourhood(adagrad[0])
    assert_bursts_in_the_flat_direction(adagrad[0])  # Adagrad's burst …
    assert_reaches_the_neighbourhood(decayed[0])
    assert_stays_near_and_converges(decayed[0])  # … tamed by the decay
    assert runs[error_surface.RUNS[2][0]]["lr"][:4] == pytest.approx(0.5 / np.sqrt([1, 2, 3, 4]))


def test_train_digits_matches_local_torch(server, tmp_path):
    results_file = tmp_path / "digits.json"
    output = run(
        [
            sys.executable,
            str(EXAMPLES / "train_digits.py"),
            "--url",
            server.url,
            "--quick",
            "--no-progress",
            "--output",
            str(results_file),
        ]
    )
    results = json.loads(results_file.read_text())
    remote, local = results["optaas"], results["torch.optim"]
    assert remote["steps"] == local["steps"] == results["session"]["step"] > 100
    assert remote["test_accuracy"] > 0.85 and local["test_accuracy"] > 0.85
    assert abs(remote["test_accuracy"] - local["test_accuracy"]) <= 0.01
    assert results["largest_weight_difference"] < 1e-4  # float32, torch's numbers
    assert f"test accuracy {remote['test_accuracy']:.4f}" in output


@pytest.mark.slow
def test_federated_matches_flowers_fedadam_and_resumes(server, tmp_path):
    pytest.importorskip("flwr", reason="the client's `flower` extra (flwr) is not installed")
    results_file, session_file = tmp_path / "federated.json", tmp_path / "session.json"
    output = run(
        [
            sys.executable,
            str(EXAMPLES / "federated.py"),
            "--url",
            server.url,
            "--quick",
            "--session-file",
            str(session_file),
            "--output",
            str(results_file),
        ]
    )
    results = json.loads(results_file.read_text())
    assert results["rounds"] == 6 and results["resumed_after"] == 4
    assert results["session"]["step"] == 6  # two runs of one session: 4 rounds, then 2
    assert json.loads(session_file.read_text())["id"] == results["session"]["id"]
    assert len(results["relative_difference_by_round"]) == 6
    assert results["largest_relative_difference"] < 1e-10  # float64, sums in other orders
    ours, flowers = results["optaas"]["test_accuracy"], results["flower_fedadam"]["test_accuracy"]
    assert ours > 0.75 and abs(ours - flowers) < 0.005  # ten classes; at most one test digit
    assert "resumed at step 4, now at step 6" in output


def test_the_shell_walkthrough(server):
    if shutil.which("jq") is None or shutil.which("curl") is None:
        pytest.skip("the walk-through needs curl and jq (.ci/run installs them)")
    output = run(["bash", str(EXAMPLES / "walkthrough.sh"), server.url], input="")
    lines = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
    final = json.loads(lines["final params"])
    assert final == [1 - 2**-20, -2 * (1 - 2**-20), 3 * (1 - 2**-20)]  # θ_t = target·(1 − ½ᵗ)
    assert lines["final step"] == "20"
    assert lines["retry of step 20"] == "Idempotent-Replayed: true"
    assert json.loads(lines['If-Match "0"']) == {"status": 412, "current_step": 20}
    assert lines["wrong shape"].startswith("422 ")
    assert lines["history"].startswith("20 records")
    assert lines["deleted"] == "204"
