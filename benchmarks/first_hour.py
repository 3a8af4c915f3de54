"""A newcomer's first hour, timed: from `git clone` to the first step answered, with the README's
own commands, in a fresh virtual environment — and, with `--tests`, the README's test command.

1. `git clone` of this repository (its committed HEAD) into a temporary directory;
2. `python3 -m venv .venv` there, then the README's `pip install .` (pip takes packages from its
   index or cache as configured on the machine; nothing is prebuilt for it);
3. the README's `optaas serve` (default SQLite under ./optaas-data, numba's cache empty: the
   kernels are compiled, as on a fresh machine), until it answers;
4. the README's walk-through up to its first step (create a session, post a gradient), as
   printed — its answer checked against the README's;
5. with `--tests`: `pip install -e '.[test]' && pytest` in the clone, the test command exactly.

    python benchmarks/first_hour.py [--tests]

Prints each phase's seconds and writes benchmarks/results/first_hour.{json,md}, with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.service_step import RESULTS, environment  # noqa: E402
from tests.live_server import free_port  # noqa: E402
from tests.test_readme import answers_as_printed, run_in_order, walkthrough  # noqa: E402

READY_TIMEOUT_SECONDS = 900


class Phases:
    """Seconds of each phase, and the 1-minute load average when it ended."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self.started = time.monotonic()

    def run(self, name: str, command: str, cwd: Path, env: dict[str, str]) -> None:
        began = time.monotonic()
        subprocess.run(["bash", "-c", command], cwd=cwd, env=env, check=True)
        self.record(name, command, began)

    def record(self, name: str, command: str, began: float) -> None:
        seconds = time.monotonic() - began
        row = {"phase": name, "command": command, "seconds": round(seconds, 1),
               "since_clone": round(time.monotonic() - self.started, 1),
               "load_1min": round(os.getloadavg()[0], 1)}  # fmt: skip
        self.rows.append(row)
        print(f"{name}: {seconds:.1f} s (load {row['load_1min']})", flush=True)


def fresh_environment(clone: Path) -> dict[str, str]:
    """This environment without the project's settings or a virtual environment of its own."""
    kept = {name: value for name, value in os.environ.items()
            if not name.startswith(("OPTAAS_", "VIRTUAL_ENV", "PYTHON", "NUMBA_"))}  # fmt: skip
    path = [part for part in kept.get("PATH", "").split(":") if ".venv" not in part]
    return {**kept, "PATH": ":".join([str(clone / ".venv" / "bin"), *path])}


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("optaas serve exited before it answered")
        probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"{url}/readyz"], capture_output=True, text=True)  # fmt: skip
        if probe.stdout == "200":
            return
        time.sleep(0.2)
    raise RuntimeError("optaas serve did not answer in time")


def first_step(phases: Phases, clone: Path, url: str) -> None:
    """The README's walk-through up to its first step, run as printed in one shell."""
    steps = walkthrough("README.md")
    until = next(i for i, step in enumerate(steps) if "/step" in step.command.text) + 1
    began = time.monotonic()
    outputs = run_in_order(steps[:until], url, clone)
    for step, output in zip(steps[:until], outputs, strict=True):
        if not answers_as_printed(step.answer, output):
            raise RuntimeError(f"the README's answer differs:\n{output}")
    phases.record("README walk-through to the first step", "create, step (curl)", began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", action="store_true", help="also time the test command")
    args = parser.parse_args()
    phases = Phases()
    with tempfile.TemporaryDirectory(prefix="optaas-first-hour-") as directory:
        clone = Path(directory) / "optaas"
        began = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
        phases.record("git clone", "git clone <this repository>", began)
        env = fresh_environment(clone)
        phases.run("python3 -m venv .venv", "python3 -m venv .venv", clone, env)
        phases.run("pip install .", "pip install --quiet .", clone, env)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        began = time.monotonic()
        with (clone / "serve.log").open("wb") as log:
            server = subprocess.Popen(["optaas", "serve", f"--port={port}"], cwd=clone, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                wait_ready(url, server)
                phases.record("optaas serve until it answers", "optaas serve", began)
                first_step(phases, clone, url)
            finally:
                server.terminate()
                server.wait(timeout=60)
        first_answer = phases.rows[-1]["since_clone"]
        if args.tests:
            phases.run("pip install -e '.[test]'", "pip install --quiet -e '.[test]'", clone, env)
            phases.run("pytest", "pytest -q -p no:cacheprovider", clone, env)
    context = environment()
    write_results(phases.rows, context, first_answer)


def write_results(rows: list[dict[str, object]], context: dict[str, object], first: object) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "first_hour.json").write_text(
        json.dumps({"context": context, "phases": rows}, indent=2) + "\n"
    )
    lines = [
        "# The first hour: from `git clone` to a first step, with the README's commands",
        "",
        f"{context['when']}, code {context['code']}, Python {context['python']}, "
        f"{context['cpus']} CPUs; 1-minute load average at the end of each phase below "
        "(the machine was shared with other work).",
        "",
        "| phase | command | seconds | since `git clone` | load |",
        "|---|---|---:|---:|---:|",
        *[
            f"| {r['phase']} | `{r['command']}` | {r['seconds']} | {r['since_clone']} | "
            f"{r['load_1min']} |"
            for r in rows
        ],
        "",
        f"From `git clone` to the first step answered: **{first} s**.",
        "",
    ]
    (RESULTS / "first_hour.md").write_text("\n".join(lines))
    print(f"from git clone to the first step answered: {first} s")


if __name__ == "__main__":
    main()
