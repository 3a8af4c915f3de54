"""Spread checkpoints against whole ones (issue 13): consecutive 1e7 steps, side by side.

Two servers on fresh databases of one store run at once — this checkout's code and another
checkout's (`--baseline`, e.g. `git archive <commit> | tar -x -C /tmp/base`) — each with one
Adam float32 session of `--size` parameters created from a file, default settings; the client
steps them in alternation (safetensors in and out), so both meet the same machine load. Each
side's p50, worst step and worst ÷ p50 over `--steps` steps after a warm-up (target ≤ 1.5 at
1e7), and the load average before and after.

    python benchmarks/spread_checkpoints.py --baseline /tmp/base [--stores sqlite postgresql]
        [--size 10000000] [--steps 24]

Prints the figures and writes benchmarks/results/spread_checkpoints.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.service_step import (  # noqa: E402
    RESULTS,
    Stepper,
    context_line,
    database_url,
    environment,
    summary_of,
)
from tests.live_server import LiveServer  # noqa: E402

WARMUP = 3
SIDES = ("baseline", "spread")


def side_by_side(
    store: str, baseline: Path, size: int, steps: int, env: dict[str, str]
) -> dict[str, Any]:
    """Both servers on `store` (with `env`), their sessions stepped in alternation."""
    with ExitStack() as stack:
        steppers = {}
        for side, root in zip(SIDES, (baseline, REPO_ROOT), strict=True):
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = database_url(stack, store, directory)
            log = directory / "server.log"
            server = stack.enter_context(LiveServer(url, log, root=root, env=env))
            steppers[side] = Stepper(server, size, form="safetensors", accept="safetensors")
            stack.callback(steppers[side].close)
        latencies: dict[str, list[float]] = {side: [] for side in SIDES}
        for index in range(WARMUP + steps):
            for side in SIDES:
                latency = steppers[side].step(index)
                if index >= WARMUP:
                    latencies[side].append(latency)
    result: dict[str, Any] = {"store": store, "parameters": size, "steps": steps, "env": env}
    for side in SIDES:
        summary = summary_of(latencies[side])
        worst = max(latencies[side])
        result[side] = {
            **summary,
            "worst_ms": worst,
            "worst_over_p50": round(worst / summary["p50_ms"], 2),
            "latencies_ms": [round(latency, 1) for latency in latencies[side]],
        }
        print(
            f"{store:<11} {side:<9} p50 {summary['p50_ms']:8.1f} ms  worst {worst:8.1f} ms  "
            f"worst ÷ p50 {worst / summary['p50_ms']:.2f}",
            flush=True,
        )
    return result


def chunk_env(chunk_mib: float | None) -> dict[str, str]:
    if chunk_mib is None:
        return {}
    return {"OPTAAS_ARRAY_CHUNK_BYTES": str(int(chunk_mib * 2**20))}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Spread checkpoints against whole ones: consecutive steps, side by side",
        "",
        f"{context_line(results['environment'])} Load average {results['load_before']} at the "
        f"start, {results['load_after']} at the end. Baseline: {results['baseline']}. Adam "
        "float32, safetensors in and out, default settings (`OPTAAS_CHECKPOINT_EVERY` 8, 16 MiB "
        f"chunks) unless the row says; {results['steps']} steps after {WARMUP}, the two "
        "servers stepped in alternation.",
        "",
        "| store | parameters | settings | code | p50 ms | p99 ms | worst ms | worst ÷ p50 |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        settings = " ".join(f"{name}={value}" for name, value in row["env"].items()) or "defaults"
        for side in SIDES:
            item = row[side]
            lines.append(
                f"| {row['store']} | {row['parameters']:,} | {settings} | {side} | "
                f"{item['p50_ms']:.1f} | "
                f"{item['p99_ms']:.1f} | {item['worst_ms']:.1f} | {item['worst_over_p50']} |"
            )
    lines += ["", "Every step's latency (ms), in order:", ""]
    for row in results["rows"]:
        for side in SIDES:
            steps = ", ".join(f"{latency:.0f}" for latency in row[side]["latencies_ms"])
            lines.append(f"- {row['store']}, {side}, {row['env'] or 'defaults'}: {steps}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument(
        "--chunk-mib",
        type=float,
        nargs="+",
        default=[None],
        help="OPTAAS_ARRAY_CHUNK_BYTES in MiB for both sides, one run each (default: the default)",
    )
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    rows = [
        side_by_side(store, args.baseline, args.size, args.steps, chunk_env(chunk))
        for chunk in args.chunk_mib
        for store in args.stores
    ]
    results = {
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "baseline": str(args.baseline),
        "steps": args.steps,
        "rows": rows,
        "environment": environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "spread_checkpoints.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / "spread_checkpoints.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
