"""Durable steps against a baseline checkout, side by side (issue 13's 1e7 targets).

Two servers on fresh databases of one store run at once — this checkout's code and another
checkout's (`--baseline`, e.g. `git archive <commit> | tar -x -C /tmp/base`) — each with one
Adam float32 session of each `--sizes` created from a file, default settings unless `--env`
says (both sides); the client steps them in alternation (safetensors in and out), so both meet
the same machine load. Each side's p50, worst step and worst ÷ p50, and this side's p50 ÷ the
baseline's, with the load average before and after. `--env-this` sets variables for this
checkout's server only (to compare settings on one code).

    python benchmarks/durable_steps.py --baseline /tmp/base --name sqlite_pages
        [--stores sqlite postgresql] [--sizes 10 10000000] [--steps 24]
        [--env NAME=VALUE …] [--env-this NAME=VALUE …]

Prints the figures and writes benchmarks/results/<name>.{json,md}.
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

SIDES = ("baseline", "this")


def warmup_of(size: int) -> int:
    return 20 if size < 100_000 else 3


def alternated(
    store: str, sides: dict[str, tuple[Path, dict[str, str]]], size: int, steps: int, warmup: int
) -> dict[str, list[float]]:
    """Each side's server — its checkout and its variables — on a fresh database of `store`,
    with one Adam float32 session of `size` created from a file; the sessions stepped in
    alternation (safetensors in and out), so that every side meets the same machine load.
    Each side's step latencies (ms) after `warmup` steps."""
    with ExitStack() as stack:
        steppers = {}
        for side, (root, env) in sides.items():
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = database_url(stack, store, directory)
            log = directory / "server.log"
            server = stack.enter_context(LiveServer(url, log, root=root, env=env))
            steppers[side] = Stepper(server, size, form="safetensors", accept="safetensors")
            stack.callback(steppers[side].close)
        latencies: dict[str, list[float]] = {side: [] for side in sides}
        for index in range(warmup + steps):
            for side, stepper in steppers.items():
                latency = stepper.step(index)
                if index >= warmup:
                    latencies[side].append(latency)
    return latencies


def summarised(latencies: list[float]) -> dict[str, Any]:
    """One side's p50, p99 and mean, its worst step and worst ÷ p50, and every step."""
    summary = summary_of(latencies)
    worst = max(latencies)
    return {
        **summary,
        "worst_ms": worst,
        "worst_over_p50": round(worst / summary["p50_ms"], 2),
        "latencies_ms": [round(latency, 2) for latency in latencies],
    }


def side_by_side(
    store: str,
    baseline: Path,
    size: int,
    steps: int,
    env: dict[str, str],
    env_this: dict[str, str],
) -> dict[str, Any]:
    """Both servers on `store`, their sessions of `size` stepped in alternation."""
    sides = {"baseline": (baseline, env), "this": (REPO_ROOT, {**env, **env_this})}
    latencies = alternated(store, sides, size, steps, warmup_of(size))
    result: dict[str, Any] = {
        "store": store,
        "parameters": size,
        "steps": steps,
        "env": env,
        "env_this": env_this,
        **{side: summarised(latencies[side]) for side in SIDES},
    }
    result["p50_ratio"] = round(result["this"]["p50_ms"] / result["baseline"]["p50_ms"], 3)
    for side in SIDES:
        item = result[side]
        print(
            f"{store:<11} {size:>11,} {side:<9} p50 {item['p50_ms']:9.2f} ms  worst "
            f"{item['worst_ms']:9.2f} ms  worst ÷ p50 {item['worst_over_p50']:.2f}",
            flush=True,
        )
    print(f"{'':<11} {'':>11} this ÷ baseline p50 {result['p50_ratio']:.3f}", flush=True)
    return result


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Durable steps side by side: {results['name']}",
        "",
        f"{context_line(results['environment'])} Load average {results['load_before']} at the "
        f"start, {results['load_after']} at the end. Baseline: {results['baseline']}. Adam "
        "float32, safetensors in and out, default settings unless the row says; the two "
        "servers stepped in alternation after a warm-up.",
        "",
        "| store | parameters | settings (both) | this side only | code | steps | p50 ms | "
        "p99 ms | worst ms | worst ÷ p50 | p50 ÷ baseline |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        both = " ".join(f"{name}={value}" for name, value in row["env"].items()) or "defaults"
        this = " ".join(f"{name}={value}" for name, value in row["env_this"].items()) or "—"
        for side in SIDES:
            item = row[side]
            ratio = f"{row['p50_ratio']:.3f}" if side == "this" else ""
            lines.append(
                f"| {row['store']} | {row['parameters']:,} | {both} | {this} | {side} | "
                f"{row['steps']} | {item['p50_ms']:.2f} | {item['p99_ms']:.2f} | "
                f"{item['worst_ms']:.2f} | {item['worst_over_p50']} | {ratio} |"
            )
    lines += ["", "Every large step's latency (ms), in order:", ""]
    for row in results["rows"]:
        if row["parameters"] < 100_000:
            continue
        for side in SIDES:
            steps = ", ".join(f"{latency:.0f}" for latency in row[side]["latencies_ms"])
            lines.append(f"- {row['store']} {row['parameters']:,}, {side}: {steps}")
    return "\n".join(lines) + "\n"


def variables(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare")
    parser.add_argument("--name", required=True, help="the results' file name")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--small-steps", type=int, default=300, help="steps below 1e5 params")
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for both servers")
    parser.add_argument("--env-this", nargs="*", default=[], help="NAME=VALUE, this side only")
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    rows = [
        side_by_side(
            store,
            args.baseline,
            size,
            args.steps if size >= 100_000 else args.small_steps,
            variables(args.env),
            variables(args.env_this),
        )
        for store in args.stores
        for size in args.sizes
    ]
    results = {
        "name": args.name,
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "baseline": str(args.baseline),
        "rows": rows,
        "environment": environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
