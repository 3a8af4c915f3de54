"""Large models on every store (issue 13), in one run: Adam float32, safetensors in and out,
one server process per store with default settings.

- 1e7: 24 consecutive steps after a warm-up: p50 and the worst step; durable p50 ÷ memory://
  p50 (target ≤ 1.5×) and each store's worst ÷ its p50 (≤ 1.5×).
- 1e6 and 1e8: time per parameter (p50 ÷ N); 1e8 ÷ 1e6 (target ≤ 1.2×).
- 1e8: a fresh server: the session created from a file of θ₀ with default settings (time and
  peak memory), its first step, then more steps; the server's peak resident set over the idle
  server ÷ what θ, m, v, g and θ′ occupy (20 bytes a parameter; target ≤ 1.5×).

    python benchmarks/large_models.py [--stores memory sqlite postgresql] [--no-1e8]
        [--large 100000000]

Prints the figures and writes benchmarks/results/large_models.{json,md}. A 1e8 run needs some
4-6 GB of memory (the server and this client) and minutes per store. The load average is
recorded before and after: the ratios are what to trust on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.service_step import (  # noqa: E402
    RESULTS,
    Stepper,
    context_line,
    environment,
    start_server,
    summary_of,
)
from benchmarks.step_latency import reset_peak, status_kib  # noqa: E402

CONSECUTIVE_STEPS = 24
SMALL, MEDIUM, LARGE = 1_000_000, 10_000_000, 100_000_000
WARMUP = {SMALL: 5, MEDIUM: 3}
LARGE_STEPS = 4
ADAM_BYTES_PER_PARAMETER = 20
"""float32 Adam: θ, m, v (12 bytes), the gradient g (4) and the answer θ′ (4)."""
TARGETS = {
    "durable_p50_1e7": 1.5,
    "worst_over_p50_1e7": 1.5,
    "per_parameter_1e8": 1.2,
    "peak_memory_1e8": 1.5,
}


def steps_of(server: Any, size: int, steps: int, warmup: int) -> dict[str, Any]:
    """`steps` consecutive safetensors steps of a new session of `size`, after `warmup`."""
    stepper = Stepper(server, size, form="safetensors", accept="safetensors", variants=2)
    try:
        latencies = [stepper.step(index) for index in range(warmup + steps)][warmup:]
        stepper.client.delete(stepper.session_url, headers=stepper.headers)
    finally:
        stepper.close()
    return {
        "parameters": size,
        "steps": steps,
        **summary_of(latencies),
        "worst_ms": max(latencies),
        "latencies_ms": [round(latency, 1) for latency in latencies],
    }


def large_session(server: Any, size: int) -> dict[str, Any]:
    """Create a session of `size` from a file on the idle `server`, step it: times and peaks."""
    pid = server.process.pid
    idle = status_kib(pid, "VmRSS")
    reset_peak(pid)
    stepper = Stepper(server, size, form="safetensors", accept="safetensors", variants=1)
    create_peak = status_kib(pid, "VmHWM")
    try:
        reset_peak(pid)
        first = stepper.step(0)
        first_peak = status_kib(pid, "VmHWM")
        reset_peak(pid)
        latencies = [stepper.step(index) for index in range(1, 1 + LARGE_STEPS)]
        steps_peak = status_kib(pid, "VmHWM")
    finally:
        stepper.close()
    floor_mib = ADAM_BYTES_PER_PARAMETER * size / 2**20
    peak = max(first_peak, steps_peak)
    return {
        "parameters": size,
        "create_ms": stepper.create_ms,
        "create_peak_over_idle_mib": round((create_peak - idle) / 1024, 1),
        "first_step_ms": first,
        "steps": LARGE_STEPS,
        **summary_of(latencies),
        "worst_ms": max(latencies),
        "idle_rss_mib": round(idle / 1024, 1),
        "peak_over_idle_mib": round((peak - idle) / 1024, 1),
        "floor_mib": round(floor_mib, 1),
        "peak_ratio": round((peak - idle) / 1024 / floor_mib, 2),
    }


def run_store(store: str, large: int | None) -> dict[str, Any]:
    result: dict[str, Any] = {"store": store}
    with ExitStack() as stack:
        server = start_server(stack, store)
        for size in (SMALL, MEDIUM):
            row = steps_of(server, size, CONSECUTIVE_STEPS, WARMUP[size])
            result[str(size)] = row
            print(
                f"{store:<11} N={size:<11,} p50 {row['p50_ms']:9.1f} ms  worst "
                f"{row['worst_ms']:9.1f} ms",
                flush=True,
            )
    if large:
        gc.collect()
        with ExitStack() as stack:
            server = start_server(stack, store)
            row = large_session(server, large)
        result[str(large)] = row
        print(
            f"{store:<11} N={large:<11,} create {row['create_ms']:.0f} ms (peak +"
            f"{row['create_peak_over_idle_mib']} MiB), first step {row['first_step_ms']:.0f} ms, "
            f"p50 {row['p50_ms']:.0f} ms, peak {row['peak_ratio']}× the floor",
            flush=True,
        )
    return result


def check(what: str, value: float, limit: float) -> dict[str, Any]:
    return {"target": what, "value": round(value, 2), "limit": limit, "met": value <= limit}


def targets(stores: list[dict[str, Any]], large: int | None) -> list[dict[str, Any]]:
    by_store = {row["store"]: row for row in stores}
    checks = []
    memory = by_store.get("memory")
    for row in stores:
        medium = row[str(MEDIUM)]
        if memory is not None and row["store"] != "memory":
            ratio = medium["p50_ms"] / memory[str(MEDIUM)]["p50_ms"]
            checks.append(
                check(f"{row['store']}: 1e7 p50 ÷ memory:// p50", ratio, TARGETS["durable_p50_1e7"])
            )
        checks.append(
            check(
                f"{row['store']}: worst of {CONSECUTIVE_STEPS} 1e7 steps ÷ p50",
                medium["worst_ms"] / medium["p50_ms"],
                TARGETS["worst_over_p50_1e7"],
            )
        )
        if large:
            big, small = row[str(large)], row[str(SMALL)]
            per_parameter = (big["p50_ms"] / large) / (small["p50_ms"] / SMALL)
            checks.append(
                check(
                    f"{row['store']}: time per parameter, {large:.0e} ÷ 1e6",
                    per_parameter,
                    TARGETS["per_parameter_1e8"],
                )
            )
            checks.append(
                check(
                    f"{row['store']}: peak memory of {large:.0e} ÷ (θ, m, v, g, θ′)",
                    big["peak_ratio"],
                    TARGETS["peak_memory_1e8"],
                )
            )
    return checks


def markdown(results: dict[str, Any]) -> str:
    large = results["large"]
    lines = [
        "# Large models (issue 13): Adam float32, safetensors in and out, default settings",
        "",
        context_line(results["environment"]) + f" Load average {results['load_before']} at "
        f"the start, {results['load_after']} at the end.",
        "",
        "## Targets",
        "",
        "| target | measured | limit | met |",
        "|---|---:|---:|---|",
    ]
    for item in results["targets"]:
        lines.append(
            f"| {item['target']} | {item['value']} | ≤ {item['limit']} | "
            f"{'yes' if item['met'] else '**no**'} |"
        )
    lines += [
        "",
        f"## Consecutive steps ({CONSECUTIVE_STEPS} after a warm-up)",
        "",
        "| store | parameters | p50 ms | worst ms | worst ÷ p50 | µs per 1e3 parameters |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["stores"]:
        for size in (SMALL, MEDIUM):
            item = row[str(size)]
            lines.append(
                f"| {row['store']} | {size:,} | {item['p50_ms']:.1f} | {item['worst_ms']:.1f} | "
                f"{item['worst_ms'] / item['p50_ms']:.2f} | {1e6 * item['p50_ms'] / size:.2f} |"
            )
    if large:
        lines += [
            "",
            f"## {large:.0e} parameters: created from a file, then stepped (a fresh server)",
            "",
            "| store | create ms | create peak MiB over idle | first step ms | step p50 ms | "
            "µs per 1e3 parameters | peak MiB over idle | floor MiB | peak ÷ floor |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["stores"]:
            item = row[str(large)]
            lines.append(
                f"| {row['store']} | {item['create_ms']:.0f} | "
                f"{item['create_peak_over_idle_mib']} | {item['first_step_ms']:.0f} | "
                f"{item['p50_ms']:.0f} | {1e6 * item['p50_ms'] / large:.2f} | "
                f"{item['peak_over_idle_mib']} | {item['floor_mib']} | {item['peak_ratio']}× |"
            )
    return "\n".join(lines) + "\n"


def run(store_names: list[str], large: int | None) -> dict[str, Any]:
    """Every store's figures and the targets checked (`benchmarks/performance.py --large`
    runs this too)."""
    load_before = round(os.getloadavg()[0], 2)
    stores = [run_store(store, large) for store in store_names]
    results = {
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "large": large,
        "stores": stores,
        "environment": environment(),
    }
    results["targets"] = targets(stores, large)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["memory", "sqlite", "postgresql"])
    parser.add_argument("--large", type=int, default=LARGE, help="the large size (parameters)")
    parser.add_argument(
        "--no-1e8", dest="run_large", action="store_false", help="leave out the large sessions"
    )
    args = parser.parse_args()
    results = run(args.stores, args.large if args.run_large else None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "large_models.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / "large_models.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
