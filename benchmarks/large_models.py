"""Large models on every store (issue 13), in one run: Adam float32, safetensors in and out,
one server process per store with default settings.

- 1e7: 24 consecutive steps after a warm-up: p50 and the worst step; durable p50 ÷ memory://
  p50 (target ≤ 1.5×) and each store's worst ÷ its p50 (≤ 1.5×).
- 1e6 and 1e8: time per parameter (p50 ÷ N); 1e8 ÷ 1e6 (target ≤ 1.2×).
- 1e8: a fresh server: the session created from a file of θ₀ with default settings (time and
  peak memory), its first step, then more steps; the server's peak resident set over the idle
  server ÷ what θ, m, v, g and θ′ occupy (20 bytes a parameter; target ≤ 1.5×).
- The disk's floor: the bytes a durable 1e7 step must keep (its gradient in the log, 4 bytes a
  parameter, and on average 1/`OPTAAS_CHECKPOINT_EVERY` of θ, m and v, 12 bytes a parameter),
  written to a file beside the SQLite database and flushed (`fdatasync`), timed: no store can
  keep a step faster than that.

    python benchmarks/large_models.py [--stores memory sqlite postgresql] [--no-1e8]
        [--large 100000000]

Prints the figures and writes benchmarks/results/large_models.{json,md,png}. A 1e8 run needs some
4-6 GB of memory (the server and this client) and minutes per store. The load average is
recorded before and after: the ratios are what to trust on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
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
STATE_BYTES_PER_PARAMETER = 12
"""float32 Adam's θ, m and v: what a checkpoint rewrites."""
CHECKPOINT_EVERY = 8
"""`OPTAAS_CHECKPOINT_EVERY`'s default: a step rewrites 1/8 of θ and state on average."""
DISK_REPEATS = 5
TARGETS = {
    "durable_p50_1e7": 1.5,
    "worst_over_p50_1e7": 1.5,
    "per_parameter_1e8": 1.2,
    "peak_memory_1e8": 1.5,
}


def kept_bytes_per_step(size: int) -> int:
    """What a durable float32 Adam step of `size` parameters must write: its gradient (the log)
    and, on average, 1/CHECKPOINT_EVERY of θ, m and v (the spread checkpoint)."""
    gradient = 4 * size
    return gradient + STATE_BYTES_PER_PARAMETER * size // CHECKPOINT_EVERY


def disk_floor_ms(nbytes: int, directory: Path, repeats: int = DISK_REPEATS) -> dict[str, Any]:
    """The p50 time to write `nbytes` to a new file in `directory` and `fdatasync` it, in
    pieces of 4 MiB (as the stores write chunks): the disk's own rate for a step's bytes."""
    piece = os.urandom(4 * 2**20)
    times = []
    for _ in range(repeats):
        with tempfile.NamedTemporaryFile(dir=directory) as file:
            started = time.perf_counter()
            left = nbytes
            while left > 0:
                left -= os.write(file.fileno(), piece[: min(left, len(piece))])
            os.fdatasync(file.fileno())
            times.append((time.perf_counter() - started) * 1e3)
    p50 = statistics.median(times)
    return {"bytes": nbytes, "p50_ms": round(p50, 1), "mb_per_s": round(nbytes / p50 / 1e3)}


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
    lines += floor_lines(results)
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
    lines += ["", "![time per parameter and consecutive steps](large_models.png)"]
    return "\n".join(lines) + "\n"


def floor_lines(results: dict[str, Any]) -> list[str]:
    """The disk's floor for a durable 1e7 step beside what each durable store adds to a
    memory:// step."""
    floor = results.get("disk_floor_1e7")
    by_store = {row["store"]: row for row in results["stores"]}
    if floor is None or "memory" not in by_store:
        return []
    memory = by_store["memory"][str(MEDIUM)]["p50_ms"]
    lines = [
        "",
        "## The disk's floor at 1e7",
        "",
        f"A durable step keeps {floor['bytes'] / 1e6:.0f} MB (its gradient, and on average "
        f"1/{CHECKPOINT_EVERY} of θ, m and v); written and flushed to a file on the same disk: "
        f"{floor['p50_ms']} ms ({floor['mb_per_s']} MB/s). memory:// plus that: "
        f"{memory + floor['p50_ms']:.0f} ms ({(memory + floor['p50_ms']) / memory:.2f}× memory://).",
        "",
        "| store | p50 ms | added to memory:// ms | added ÷ the disk's floor |",
        "|---|---:|---:|---:|",
    ]
    for row in results["stores"]:
        if row["store"] == "memory":
            continue
        p50 = row[str(MEDIUM)]["p50_ms"]
        added = p50 - memory
        lines.append(
            f"| {row['store']} | {p50:.1f} | {added:.1f} | {added / floor['p50_ms']:.1f}× |"
        )
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    """Time per parameter by size, and the consecutive 1e7 steps, one line per store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (per_parameter, consecutive) = plt.subplots(1, 2, figsize=(13, 5))
    large = results["large"]
    for row in results["stores"]:
        sizes = [size for size in (SMALL, MEDIUM, large) if size and str(size) in row]
        per_1e3 = [1e6 * row[str(size)]["p50_ms"] / size for size in sizes]
        per_parameter.plot(sizes, per_1e3, marker="o", label=row["store"])
        steps = row[str(MEDIUM)]["latencies_ms"]
        (line,) = consecutive.plot(range(1, len(steps) + 1), steps, marker=".", label=row["store"])
        limit = TARGETS["worst_over_p50_1e7"] * row[str(MEDIUM)]["p50_ms"]
        consecutive.axhline(limit, color=line.get_color(), linestyle=":", linewidth=1)
    floor = results.get("disk_floor_1e7")
    memory = next((row for row in results["stores"] if row["store"] == "memory"), None)
    if floor is not None and memory is not None:
        floor_per_1e3 = 1e6 * (memory[str(MEDIUM)]["p50_ms"] + floor["p50_ms"]) / MEDIUM
        per_parameter.plot(
            [MEDIUM],
            [floor_per_1e3],
            marker="*",
            markersize=12,
            linestyle="none",
            color="black",
            label="memory:// + the disk's floor",
        )
    per_parameter.set(
        xscale="log",
        xlabel="parameters",
        ylabel="step p50, µs per 1e3 parameters",
        title="time per parameter (flat = scales linearly)",
    )
    per_parameter.set_ylim(bottom=0)
    consecutive.set(
        xlabel="step",
        ylabel="ms",
        title=f"{CONSECUTIVE_STEPS} consecutive 1e7 steps "
        f"(dotted: {TARGETS['worst_over_p50_1e7']}× each store's p50)",
    )
    consecutive.set_ylim(bottom=0)
    for axes in (per_parameter, consecutive):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    environment_ = results["environment"]
    figure.suptitle(
        f"optaas large models, Adam float32, safetensors — {environment_['when']}, code "
        f"{environment_['code']}, load average {results['load_before']} → {results['load_after']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(store_names: list[str], large: int | None) -> dict[str, Any]:
    """Every store's figures and the targets checked (`benchmarks/performance.py --large`
    runs this too)."""
    load_before = round(os.getloadavg()[0], 2)
    floor = disk_floor_ms(kept_bytes_per_step(MEDIUM), Path(tempfile.gettempdir()))
    stores = [run_store(store, large) for store in store_names]
    results = {
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "large": large,
        "disk_floor_1e7": floor,
        "stores": stores,
        "environment": environment(),
    }
    results["targets"] = targets(stores, large)
    return results


def write_results(results: dict[str, Any]) -> None:
    """Print the report and write benchmarks/results/large_models.{json,md,png}."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "large_models.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / "large_models.md").write_text(text)
    chart(results, RESULTS / "large_models.png")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["memory", "sqlite", "postgresql"])
    parser.add_argument("--large", type=int, default=LARGE, help="the large size (parameters)")
    parser.add_argument(
        "--no-1e8", dest="run_large", action="store_false", help="leave out the large sessions"
    )
    args = parser.parse_args()
    results = run(args.stores, args.large if args.run_large else None)
    write_results(results)


if __name__ == "__main__":
    main()
