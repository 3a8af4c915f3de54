"""Step latency of a real optaas server process, on SQLite and on PostgreSQL.

For each database, a server is started (`python -m app.cli serve`, one worker) and an Adam
float32 session is stepped over HTTP with JSON bodies: a small one (N = 10 parameters) and a
large one (N = 1e5). Latency is measured by the client around each request (request bytes
prepared beforehand; the answer, with the new parameters, read whole), after a warm-up.

    python benchmarks/service_step.py [--small-steps 500] [--large-steps 100]

Prints a table and writes benchmarks/results/service_step.{json,md}.

    python benchmarks/service_step.py --compare-history ROUNDS

measures the cost of the step history instead: servers with the history off
(OPTAAS_HISTORY_MAX_RECORDS=0), on (the default limit, no pruning within the run) and pruning
(a limit of 200: old records are deleted every second step), in alternating order, ROUNDS times,
each on a fresh database; writes benchmarks/results/history_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
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

from tests.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
WARMUP_STEPS = 20
GRADIENT_VARIANTS = 8


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def measure(server: LiveServer, size: int, steps: int) -> dict[str, float]:
    """Latencies (ms) of `steps` JSON steps of an Adam float32 session with `size` parameters."""
    rng = np.random.default_rng(size)
    params = rng.standard_normal(size).astype(np.float32)
    bodies = [
        orjson.dumps(
            {"gradients": rng.standard_normal(size).astype(np.float32), "loss": 1.0},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        for _ in range(GRADIENT_VARIANTS)
    ]
    with server.client() as client:
        created = client.post(
            "/v1/sessions",
            content=orjson.dumps(
                {"params": params, "optimizer": {"type": "adam", "lr": 1e-3}},
                option=orjson.OPT_SERIALIZE_NUMPY,
            ),
            headers={"Content-Type": "application/json"},
        )
        created.raise_for_status()
        session = created.json()
        url = f"/v1/sessions/{session['id']}/step"
        headers = {
            "Authorization": f"Bearer {session['token']}",
            "Content-Type": "application/json",
        }
        latencies = []
        for index in range(WARMUP_STEPS + steps):
            started = time.perf_counter()
            response = client.post(url, content=bodies[index % GRADIENT_VARIANTS], headers=headers)
            _ = response.content
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(response.text)
            if index >= WARMUP_STEPS:
                latencies.append(elapsed * 1000)
    return {
        "parameters": size,
        "steps": steps,
        "request_bytes": int(np.mean([len(body) for body in bodies])),
        "response_bytes": len(response.content),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": float(np.mean(latencies)),
    }


def start_server(stack: ExitStack, backend: str, env: dict[str, str] | None = None) -> LiveServer:
    """A server on a fresh database of `backend`, stopped (and the database dropped) by `stack`."""
    directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    if backend == "sqlite":
        url = f"sqlite:///{directory / 'optaas.sqlite3'}"
    else:
        url = create_postgres_database()
        stack.callback(drop_postgres_database, url)
    return stack.enter_context(LiveServer(url, directory / "server.log", env=env))


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


def environment() -> dict[str, object]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine
        "machine": platform.platform(),
    }


def context_line(context: dict[str, object]) -> str:
    return (
        f"{context['when']}, Python {context['python']}, {context['cpus']} CPUs, "
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


def compare_history(
    backends: list[str], rounds: int, small_steps: int, large_steps: int
) -> list[dict[str, object]]:
    """Every configuration `rounds` times per backend, in alternating order (drift cancels)."""
    rows = []
    for backend in backends:
        for round_number in range(rounds):
            order = list(HISTORY_SETTINGS)
            if round_number % 2:
                order.reverse()
            for history in order:
                env = {"OPTAAS_HISTORY_MAX_RECORDS": HISTORY_SETTINGS[history]}
                with ExitStack() as stack:
                    server = start_server(stack, backend, env)
                    for size, steps in ((10, small_steps), (100_000, large_steps)):
                        row = {
                            "database": backend,
                            "history": history,
                            "round": round_number,
                            **measure(server, size, steps),
                        }
                        rows.append(row)
                        print(
                            f"{backend:<10} {history:<8} round {round_number} N={size:<7} "
                            f"p50 {row['p50_ms']:7.3f} ms  mean {row['mean_ms']:7.3f} ms",
                            flush=True,
                        )
    return rows


def history_summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per database, size and configuration: the median over rounds of each round's p50 and
    mean, the spread of the p50s between rounds (the noise), and the difference to `off`."""
    summary = []
    keys = sorted({(row["database"], row["parameters"]) for row in rows})
    for database, size in keys:

        def p50s(history: str, database=database, size=size) -> list[float]:
            return [
                row["p50_ms"]
                for row in rows
                if (row["database"], row["parameters"], row["history"]) == (database, size, history)
            ]

        baseline = float(np.median(p50s("off")))
        for history in HISTORY_SETTINGS:
            samples = p50s(history)
            means = [
                row["mean_ms"]
                for row in rows
                if (row["database"], row["parameters"], row["history"]) == (database, size, history)
            ]
            median = float(np.median(samples))
            summary.append(
                {
                    "database": database,
                    "parameters": size,
                    "history": history,
                    "rounds": len(samples),
                    "p50_ms_median": median,
                    "p50_ms_min": min(samples),
                    "p50_ms_max": max(samples),
                    "mean_ms_median": float(np.median(means)),
                    "p50_difference_ms": median - baseline,
                    "p50_difference_percent": 100 * (median - baseline) / baseline,
                }
            )
    return summary


def history_markdown(summary: list[dict[str, object]], context: dict[str, object]) -> str:
    lines = [
        "# Step history: its cost on the step path (JSON, Adam float32, one server process)",
        "",
        context_line(context)
        + " `off`: OPTAAS_HISTORY_MAX_RECORDS=0; `on`: the default 100000 (no pruning in "
        "the run); `pruning`: 200 (2 old records deleted every second step). Each round is a "
        "fresh server and database; configurations alternate order between rounds. The p50 "
        "range is the lowest and highest round: the noise.",
        "",
        "| database | parameters | history | rounds | p50 ms (median) | p50 range ms | "
        "mean ms | p50 vs off |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        lines.append(
            f"| {row['database']} | {row['parameters']:,} | {row['history']} | {row['rounds']} | "
            f"{row['p50_ms_median']:.3f} | {row['p50_ms_min']:.3f}–{row['p50_ms_max']:.3f} | "
            f"{row['mean_ms_median']:.3f} | {row['p50_difference_ms']:+.3f} ms "
            f"({row['p50_difference_percent']:+.1f} %) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-steps", type=int, default=500)
    parser.add_argument("--large-steps", type=int, default=100)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--compare-history", type=int, metavar="ROUNDS", default=0)
    args = parser.parse_args()
    if args.compare_history:
        rows = compare_history(
            args.backends, args.compare_history, args.small_steps, args.large_steps
        )
        summary = history_summary(rows)
        context = environment()
        RESULTS.mkdir(parents=True, exist_ok=True)
        document = {"environment": context, "summary": summary, "rounds": rows}
        (RESULTS / "history_overhead.json").write_text(json.dumps(document, indent=2) + "\n")
        (RESULTS / "history_overhead.md").write_text(history_markdown(summary, context))
        print(history_markdown(summary, context))
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
