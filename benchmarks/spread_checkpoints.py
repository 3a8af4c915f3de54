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
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.store.arrays import CHUNK_BYTES  # noqa: E402
from benchmarks.durable_steps import alternated, summarised  # noqa: E402
from benchmarks.service_step import RESULTS, context_line, environment  # noqa: E402

WARMUP = 3
SIDES = ("baseline", "spread")


def side_by_side(
    store: str, baseline: Path, size: int, steps: int, env: dict[str, str]
) -> dict[str, Any]:
    """Both servers on `store` (with `env`), their sessions stepped in alternation."""
    sides = {"baseline": (baseline, env), "spread": (REPO_ROOT, env)}
    latencies = alternated(store, sides, size, steps, WARMUP)
    result: dict[str, Any] = {"store": store, "parameters": size, "steps": steps, "env": env}
    for side in SIDES:
        result[side] = item = summarised(latencies[side])
        print(
            f"{store:<11} {side:<9} p50 {item['p50_ms']:8.1f} ms  worst {item['worst_ms']:8.1f} "
            f"ms  worst ÷ p50 {item['worst_over_p50']:.2f}",
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
        "float32, safetensors in and out, default settings (`OPTAAS_CHECKPOINT_EVERY` 8, "
        f"{CHUNK_BYTES // 2**20} MiB chunks) unless the row says; {results['steps']} steps "
        f"after {WARMUP}, the two servers stepped in alternation.",
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
