"""Step latency of a real optaas server process, on SQLite and on PostgreSQL.

For each database, a server is started (`python -m app.cli serve`, one worker) and an Adam
float32 session is stepped over HTTP with JSON bodies: a small one (N = 10 parameters) and a
large one (N = 1e5). Latency is measured by the client around each request (request bytes
prepared beforehand; the answer, with the new parameters, read whole), after a warm-up.

    python benchmarks/service_step.py [--small-steps 500] [--large-steps 100]

Prints a table and writes benchmarks/results/service_step.{json,md}.

    python benchmarks/service_step.py --compare-history [--small-steps 2000 --large-steps 200]

measures the cost of the step history instead: three servers at once with the history off
(OPTAAS_HISTORY_MAX_RECORDS=0), on (the default limit, no pruning within the run) and pruning
(a limit of 200: old records are deleted every second step), stepped in turn (paired
measurements); writes benchmarks/results/history_overhead.{json,md}.

    python benchmarks/service_step.py --fixed-cost [--samples 2000] [--baseline PATH]

measures a step's fixed cost: the sequential p50 of a 10-parameter Adam step (JSON) divided by
the p50 of `GET /healthz` on the same server, the two requests taken in turn so that both see
the same machine (memory:// and PostgreSQL by default). With `--baseline`, a checkout of other
code is measured the same way at the same time, its server stepped in turn with this one's;
writes benchmarks/results/fixed_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from optaas_state import in_pieces  # noqa: E402

from app.tensors import SAFETENSORS_MEDIA_TYPE, tensors_to_safetensors  # noqa: E402
from tests import live_server  # noqa: E402
from tests.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
WARMUP_STEPS = 20
GRADIENT_VARIANTS = 8


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


class Stepper:
    """An Adam float32 session with `size` parameters on `server`, stepped with bodies prepared
    beforehand; `step` returns the latency (ms) the client saw, answer read whole.

    `form` is the request's form (`json` or `safetensors`), `accept` the answer's; `variants`
    gradients are prepared and sent in turn.
    """

    def __init__(
        self,
        server: LiveServer,
        size: int,
        *,
        form: str = "json",
        accept: str = "json",
        variants: int = GRADIENT_VARIANTS,
    ) -> None:
        rng = np.random.default_rng(size)
        params = rng.standard_normal(size).astype(np.float32)
        gradients = [rng.standard_normal(size).astype(np.float32) for _ in range(variants)]
        self.bodies = [gradient_body(gradient, form) for gradient in gradients]
        del gradients
        self.client = server.client()
        # Created from a safetensors file of θ₀ (settings in its metadata): any size, default
        # limits; `create_ms` is how long the creation took.
        body = tensors_to_safetensors({"params": params}, {"optaas": CREATION_SETTINGS})
        del params
        started = time.perf_counter()
        created = self.client.post(
            "/v1/sessions",
            content=in_pieces(body),
            headers={"Content-Type": SAFETENSORS_MEDIA_TYPE, "Content-Length": str(len(body))},
        )
        self.create_ms = (time.perf_counter() - started) * 1000
        del body
        created.raise_for_status()
        session = created.json()
        self.session_url = f"/v1/sessions/{session['id']}"
        self.url = f"{self.session_url}/step"
        self.headers = {
            "Authorization": f"Bearer {session['token']}",
            "Content-Type": MEDIA_TYPES[form],
            "Accept": MEDIA_TYPES[accept],
        }
        self.response_bytes = 0

    def step(self, index: int) -> float:
        started = time.perf_counter()
        body = self.bodies[index % len(self.bodies)]
        response = self.client.post(
            self.url,
            content=in_pieces(body),
            headers={**self.headers, "Content-Length": str(len(body))},
        )
        self.response_bytes = len(response.content)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(response.text)
        return elapsed * 1000

    def close(self) -> None:
        self.client.close()


MEDIA_TYPES = {"json": "application/json", "safetensors": SAFETENSORS_MEDIA_TYPE}


CREATION_SETTINGS = orjson.dumps({"optimizer": {"type": "adam", "lr": 1e-3}}).decode()


def gradient_body(gradient: np.ndarray, form: str) -> bytes:
    """A step's body: `{"gradients": […], "loss": 1.0}`, or a safetensors file of `params`."""
    if form == "safetensors":
        return tensors_to_safetensors({"params": gradient}, {"loss": "1.0"})
    return orjson.dumps({"gradients": gradient, "loss": 1.0}, option=orjson.OPT_SERIALIZE_NUMPY)


def summary_of(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": float(np.mean(latencies)),
    }


def measure(server: LiveServer, size: int, steps: int) -> dict[str, float]:
    """Latencies (ms) of `steps` JSON steps of an Adam float32 session with `size` parameters."""
    stepper = Stepper(server, size)
    try:
        latencies = [stepper.step(index) for index in range(WARMUP_STEPS + steps)]
    finally:
        stepper.close()
    return {
        "parameters": size,
        "steps": steps,
        "request_bytes": int(np.mean([len(body) for body in stepper.bodies])),
        "response_bytes": stepper.response_bytes,
        **summary_of(latencies[WARMUP_STEPS:]),
    }


def start_server(stack: ExitStack, backend: str, env: dict[str, str] | None = None) -> LiveServer:
    """A server on a fresh database of `backend` (`memory`, `sqlite`, `postgresql`), stopped
    (and the database dropped) by `stack`."""
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    return stack.enter_context(
        LiveServer(database_url(stack, backend, directory), directory / "server.log", env=env)
    )


def database_url(stack: ExitStack, backend: str, directory: Path) -> str:
    """A fresh database of `backend` (a PostgreSQL one is dropped by `stack`)."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{directory / 'optaas.sqlite3'}"
    url = create_postgres_database()
    stack.callback(drop_postgres_database, url)
    return url


def run(backends: list[str], small_steps: int, large_steps: int) -> list[dict[str, object]]:
    rows = []
    for backend in backends:
        with ExitStack() as stack:
            server = start_server(stack, backend)
            for size, steps in ((10, small_steps), (100_000, large_steps)):
                row = {"database": backend, **measure(server, size, steps)}
                rows.append(row)
                print(
                    f"{backend:<10} N={size:<7} p50 {row['p50_ms']:7.2f} ms   "
                    f"p99 {row['p99_ms']:7.2f} ms   mean {row['mean_ms']:7.2f} ms",
                    flush=True,
                )
    return rows


def measured_code() -> str:
    """The commit measured, marked `+changes` when the work tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _code_of(root: Path) -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    )
    return f"{root} at {result.stdout.strip() or 'unknown'}"


def environment() -> dict[str, object]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": measured_code(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine
        "machine": platform.platform(),
    }


def context_line(context: dict[str, object]) -> str:
    return (
        f"{context['when']}, code {context['code']}, Python {context['python']}, "
        f"{context['cpus']} CPUs, "
        f"SQLite {context['sqlite']}, 1-minute load average {context['load_average_1min']} at "
        "the end. Client and server on the same machine."
    )


def markdown(rows: list[dict[str, object]], context: dict[str, object]) -> str:
    lines = [
        "# Step latency, JSON, Adam float32, one server process",
        "",
        context_line(context),
        "",
        "| database | parameters | steps | request bytes | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['database']} | {row['parameters']:,} | {row['steps']} | "
            f"{row['request_bytes']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['mean_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


HISTORY_SETTINGS = {"off": "0", "on": "100000", "pruning": "200"}
"""OPTAAS_HISTORY_MAX_RECORDS for each configuration compared."""
BOOTSTRAP_SAMPLES = 2000


def median_interval(differences: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A 95 % bootstrap interval of the median of `differences`."""
    picks = rng.integers(0, len(differences), size=(BOOTSTRAP_SAMPLES, len(differences)))
    medians = np.median(differences[picks], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def compare_history(backends: list[str], small_steps: int, large_steps: int) -> list[dict]:
    """One server per configuration, all running at once; each step index posts to every
    server in turn (the order rotating), so the machine's load falls on all of them alike and
    the latencies pair up: the cost of the history is the median of the paired differences."""
    rows = []
    rng = np.random.default_rng(0)
    for backend in backends:
        with ExitStack() as stack:
            servers = {
                history: start_server(stack, backend, {"OPTAAS_HISTORY_MAX_RECORDS": limit})
                for history, limit in HISTORY_SETTINGS.items()
            }
            for size, steps in ((10, small_steps), (100_000, large_steps)):
                steppers = {name: Stepper(server, size) for name, server in servers.items()}
                names = list(steppers)
                latencies: dict[str, list[float]] = {name: [] for name in names}
                for index in range(WARMUP_STEPS + steps):
                    shift = index % len(names)
                    for name in names[shift:] + names[:shift]:
                        elapsed = steppers[name].step(index)
                        if index >= WARMUP_STEPS:
                            latencies[name].append(elapsed)
                for stepper in steppers.values():
                    stepper.close()
                off = np.asarray(latencies["off"])
                for name in names:
                    differences = np.asarray(latencies[name]) - off
                    low, high = median_interval(differences, rng)
                    row = {
                        "database": backend,
                        "parameters": size,
                        "steps": steps,
                        "history": name,
                        **summary_of(latencies[name]),
                        "paired_difference_median_ms": float(np.median(differences)),
                        "paired_difference_95ci_ms": [low, high],
                    }
                    rows.append(row)
                    print(
                        f"{backend:<10} N={size:<7} {name:<8} p50 {row['p50_ms']:7.3f} ms  "
                        f"vs off {row['paired_difference_median_ms']:+.3f} ms "
                        f"[{low:+.3f}, {high:+.3f}]",
                        flush=True,
                    )
    return rows


def history_markdown(rows: list[dict], context: dict[str, object]) -> str:
    lines = [
        "# Step history: its cost on the step path (JSON, Adam float32, one server process)",
        "",
        context_line(context),
        "",
        "Three servers at once, each on its own fresh database: `off` "
        "(OPTAAS_HISTORY_MAX_RECORDS=0), `on` (the default 100000; no pruning within the run) and "
        "`pruning` (200: two old records deleted every second step). Every step index is posted "
        "to all three in rotating order, so load on the machine falls on all alike; the cost is "
        "the median of the paired differences to `off`, with a 95 % bootstrap interval.",
        "",
        "| database | parameters | steps | history | p50 ms | p99 ms | mean ms | "
        "vs off: median paired difference | 95 % interval |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        low, high = row["paired_difference_95ci_ms"]
        lines.append(
            f"| {row['database']} | {row['parameters']:,} | {row['steps']} | {row['history']} | "
            f"{row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['mean_ms']:.3f} | "
            f"{row['paired_difference_median_ms']:+.3f} ms | {low:+.3f} … {high:+.3f} ms |"
        )
    return "\n".join(lines) + "\n"


def fixed_cost(backends: list[str], samples: int, baseline: Path | None) -> list[dict]:
    """For each backend: servers of this tree (and of `baseline`), each stepped and asked
    /healthz in turn, `samples` times, after a warm-up; the p50s and their ratio."""
    trees = {"this": REPO_ROOT, **({"baseline": baseline} if baseline else {})}
    # Another checkout compiles its kernels at its first start (numba caches by file): wait.
    live_server.START_TIMEOUT_SECONDS = max(live_server.START_TIMEOUT_SECONDS, 900)
    rows = []
    for backend in backends:
        with ExitStack() as stack:
            probes = {}
            for name, root in trees.items():
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                url = database_url(stack, backend, directory)
                server = LiveServer(url, directory / "server.log", root=root)
                stack.enter_context(server)
                stepper = Stepper(server, 10)
                stack.callback(stepper.close)
                probes[name] = stepper
            times: dict[str, dict[str, list[float]]] = {
                n: {"step": [], "healthz": []} for n in trees
            }
            for index in range(WARMUP_STEPS * 5 + samples):
                for name, stepper in probes.items():
                    step_ms = stepper.step(index)
                    started = time.perf_counter()
                    stepper.client.get("/healthz").raise_for_status()
                    health_ms = (time.perf_counter() - started) * 1000
                    if index >= WARMUP_STEPS * 5:
                        times[name]["step"].append(step_ms)
                        times[name]["healthz"].append(health_ms)
            for name in trees:
                step_p50 = percentile(times[name]["step"], 50)
                health_p50 = percentile(times[name]["healthz"], 50)
                row = {
                    "database": backend,
                    "code": name,
                    "samples": samples,
                    "step_p50_ms": step_p50,
                    "healthz_p50_ms": health_p50,
                    "ratio": step_p50 / health_p50,
                }
                rows.append(row)
                print(
                    f"{backend:<10} {name:<8} step p50 {step_p50:6.3f} ms  healthz p50 "
                    f"{health_p50:6.3f} ms  ratio {row['ratio']:5.2f}",
                    flush=True,
                )
    return rows


def fixed_cost_markdown(rows: list[dict], context: dict[str, object], baseline: str) -> str:
    lines = [
        "# A step's fixed cost: 10-parameter Adam step p50 ÷ GET /healthz p50, same server",
        "",
        context_line(context),
        f"Requests sequential, step and /healthz in turn; baseline: {baseline}.",
        "Targets: ≤ 2× on memory://, ≤ 3× on PostgreSQL.",
        "",
        "| database | code | samples | step p50 ms | /healthz p50 ms | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['database']} | {row['code']} | {row['samples']} | "
            f"{row['step_p50_ms']:.3f} | {row['healthz_p50_ms']:.3f} | {row['ratio']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-steps", type=int, default=500)
    parser.add_argument("--large-steps", type=int, default=100)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument(
        "--compare-history", action="store_true", help="measure the step history's cost instead"
    )
    parser.add_argument("--fixed-cost", action="store_true", help="step ÷ /healthz, 10 params")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--baseline", type=Path, help="a checkout of other code to compare")
    args = parser.parse_args()
    if args.fixed_cost:
        backends = args.backends if args.backends != ["sqlite", "postgresql"] else None
        rows = fixed_cost(backends or ["memory", "postgresql"], args.samples, args.baseline)
        context = environment()
        baseline = "none" if args.baseline is None else _code_of(args.baseline)
        RESULTS.mkdir(parents=True, exist_ok=True)
        document = {"environment": context, "baseline": baseline, "results": rows}
        (RESULTS / "fixed_cost.json").write_text(json.dumps(document, indent=2) + "\n")
        (RESULTS / "fixed_cost.md").write_text(fixed_cost_markdown(rows, context, baseline))
        print(fixed_cost_markdown(rows, context, baseline))
        return
    if args.compare_history:
        rows = compare_history(args.backends, args.small_steps, args.large_steps)
        context = environment()
        RESULTS.mkdir(parents=True, exist_ok=True)
        document = {"environment": context, "results": rows}
        (RESULTS / "history_overhead.json").write_text(json.dumps(document, indent=2) + "\n")
        (RESULTS / "history_overhead.md").write_text(history_markdown(rows, context))
        print(history_markdown(rows, context))
        return
    rows = run(args.backends, args.small_steps, args.large_steps)
    context = environment()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service_step.json").write_text(
        json.dumps({"environment": context, "results": rows}, indent=2) + "\n"
    )
    (RESULTS / "service_step.md").write_text(markdown(rows, context))
    print(f"written to {RESULTS / 'service_step.md'} and .json")


if __name__ == "__main__":
    main()
