"""The whole performance table in one run: step latency, throughput and peak memory, by store,
with the targets of issue 5 checked, and a chart.

- Step latency p50/p99, N = 1e2 … 1e7 float32 Adam, JSON and safetensors, on `memory://`,
  SQLite and PostgreSQL (the step log, and rewriting θ and state every step), beside
  `torch.optim.Adam` in process (`benchmarks/step_latency.py`).
- Throughput of small steps (N = 1e3): 16 concurrent clients on 4 sessions, JSON,
  `?return=none`, an Idempotency-Key on every step, 1 and 2 server processes per store
  (`memory://` is one process) — `benchmarks/load.py`.
- Peak server memory during one 1e7-parameter step, per store and form.
- With `--large`: large models up to 1e8 parameters (`benchmarks/large_models.py`: 24
  consecutive 1e7 steps per store, time per parameter and peak memory at 1e8, a 1e8 session
  created from a file with default settings), written to results/large_models.{json,md}.

    python benchmarks/performance.py [--quick] [--duration 20] [--large]

Prints everything and writes benchmarks/results/performance.{json,md,png}. The machine's
load average is recorded before and after: timings on a shared machine are noisy.
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

from benchmarks import large_models, load, step_latency  # noqa: E402
from benchmarks.service_step import RESULTS, context_line, environment  # noqa: E402

THROUGHPUT_RUNS = [
    ("memory", 1),
    ("sqlite", 1),
    ("sqlite", 2),
    ("postgresql", 1),
    ("postgresql", 2),
]
TARGETS = {
    "durable_vs_memory_1e6": 3.0,
    "json_vs_safetensors_1e6": 8.0,
    "postgresql_throughput_share": 0.40,
    "peak_memory_ratio_1e7": 1.5,
}


def throughput(duration: float) -> list[dict[str, Any]]:
    rows = []
    for store, servers in THROUGHPUT_RUNS:
        args = argparse.Namespace(
            clients=16,
            sessions=4,
            size=1000,
            duration=duration,
            sample=max(1.0, duration / 4),
            keys=True,
            store=store,
            servers=servers,
        )
        result = load.run(args)
        rows.append(result)
        print(
            f"{store:<11} {servers} process(es): {result['steps_per_s']} steps/s, p50 "
            f"{result['p50_ms']} ms, p99 {result['p99_ms']} ms, errors {result['errors']}, "
            f"counts exact: {result['steps_stored_equal_acknowledged']}",
            flush=True,
        )
    return rows


def latency_of(rows: list[dict[str, Any]], store: str, form: str, size: int) -> dict[str, Any]:
    for row in rows:
        if (row["store"], row["form"], row["parameters"]) == (store, form, size):
            return row
    raise KeyError((store, form, size))


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: the figure measured, the limit, met or not."""
    latency, memory, rates = results["latency"], results["memory"], results["throughput"]
    checks = []
    memory_1e6 = latency_of(latency, "memory", "safetensors", 1_000_000)
    for store in ("sqlite", "postgresql"):
        for quantile in ("p50_ms", "p99_ms"):
            durable = latency_of(latency, store, "safetensors", 1_000_000)
            ratio = durable[quantile] / memory_1e6[quantile]
            checks.append(
                check(
                    f"{store} safetensors step at 1e6, {quantile[:3]}, over memory://",
                    ratio,
                    TARGETS["durable_vs_memory_1e6"],
                )
            )
    for store in ("memory", "sqlite", "postgresql"):
        ratio = (
            latency_of(latency, store, "json", 1_000_000)["p50_ms"]
            / latency_of(latency, store, "safetensors", 1_000_000)["p50_ms"]
        )
        checks.append(
            check(
                f"{store}: JSON step at 1e6 over safetensors (p50)",
                ratio,
                TARGETS["json_vs_safetensors_1e6"],
            )
        )
    memory_rate = next(r for r in rates if r["database"] == "memory")["steps_per_s"]
    for row in rates:
        if row["database"] == "postgresql":
            checks.append(
                check(
                    f"postgresql throughput, {row['servers']} process(es), share of memory://'s",
                    row["steps_per_s"] / memory_rate,
                    TARGETS["postgresql_throughput_share"],
                    at_least=True,
                )
            )
    for row in memory:
        if row["form"] == "safetensors":
            checks.append(
                check(
                    f"{row['store']}: peak memory of a 1e7 safetensors step over the idle "
                    "server, per θ+state+gradient+answer",
                    row["ratio"],
                    TARGETS["peak_memory_ratio_1e7"],
                )
            )
    return checks


def check(what: str, value: float, limit: float, *, at_least: bool = False) -> dict[str, Any]:
    met = value >= limit if at_least else value <= limit
    return {
        "target": what,
        "value": round(value, 2),
        "limit": limit,
        "at_least": at_least,
        "met": met,
    }


def markdown(results: dict[str, Any]) -> str:
    context = results["environment"]
    lines = [
        "# Performance: step latency, throughput, peak memory (issue 5)",
        "",
        context_line(context) + f" 1-minute load average at the start: "
        f"{results['load_average_at_start']}.",
        "",
        "## Targets",
        "",
        "| target | measured | limit | met |",
        "|---|---:|---:|---|",
    ]
    for item in results["targets"]:
        sign = "≥" if item["at_least"] else "≤"
        lines.append(
            f"| {item['target']} | {item['value']} | {sign} {item['limit']} | "
            f"{'yes' if item['met'] else '**no**'} |"
        )
    lines += [
        "",
        "## Step latency (Adam float32, one server process; the answer carries θ)",
        "",
        "`(rewrite)`: `OPTAAS_CHECKPOINT_EVERY=1`, every step rewrites θ and state; the others "
        "log the gradient and rewrite every 8 steps (the default). `in process`: no HTTP, no "
        "store.",
        "",
        *step_latency.latency_markdown(results["latency"]),
        "",
        "## Throughput of small steps (N = 1e3, 16 clients, 4 sessions, JSON, `?return=none`, "
        "an Idempotency-Key on every step)",
        "",
        "| store | server processes | steps/s | p50 ms | p99 ms | errors | counts exact |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["throughput"]:
        lines.append(
            f"| {row['database']} | {row['servers']} | {row['steps_per_s']} | {row['p50_ms']} | "
            f"{row['p99_ms']} | {row['errors']} | "
            f"{'yes' if row['steps_stored_equal_acknowledged'] else 'NO'} |"
        )
    lines += [
        "",
        "## Peak server memory during one 1e7-parameter step",
        "",
        *step_latency.memory_markdown(results["memory"]),
        "",
        "![step latency, throughput and memory](performance.png)",
        "",
    ]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    latency = results["latency"]
    for axis, form in zip(axes[0], ("safetensors", "json"), strict=True):
        stores = sorted({row["store"] for row in latency if row["form"] == form})
        for store in stores:
            points = sorted(
                (row["parameters"], row["p50_ms"])
                for row in latency
                if row["store"] == store and row["form"] == form
            )
            axis.plot(*zip(*points, strict=True), marker="o", label=store)
        for store in ("torch.optim.Adam", "optaas core"):
            points = sorted(
                (row["parameters"], row["p50_ms"]) for row in latency if row["store"] == store
            )
            axis.plot(*zip(*points, strict=True), marker=".", linestyle="--", label=store)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("parameters")
        axis.set_ylabel("step latency p50 (ms)")
        axis.set_title(f"{form} in and out")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    rates = results["throughput"]
    labels = [f"{row['database']}\n{row['servers']} proc." for row in rates]
    axes[1][0].bar(labels, [row["steps_per_s"] for row in rates], color="tab:blue")
    axes[1][0].set_ylabel("steps/s")
    axes[1][0].set_title("small steps (N = 1e3), 16 clients")
    memory = sorted(results["memory"], key=lambda row: row["form"] != "safetensors")
    labels = [f"{row['store']}\n{row['form']}" for row in memory]
    colours = ["tab:green" if row["form"] == "safetensors" else "tab:orange" for row in memory]
    axes[1][1].bar(labels, [row["peak_over_idle_mib"] for row in memory], color=colours)
    required = memory[0]["required_mib"] if memory else 0
    axes[1][1].axhline(required, color="black", linestyle="--", label="θ+state+gradient+answer")
    axes[1][1].axhline(1.5 * required, color="red", linestyle=":", label="1.5× that")
    axes[1][1].set_ylabel("MiB")
    axes[1][1].set_title("peak server memory over the idle server, one 1e7 step")
    axes[1][1].legend(fontsize=8, loc="upper left")
    figure.suptitle(
        f"optaas, Adam float32 — {results['environment']['when']}, code "
        f"{results['environment']['code']}, load average {results['load_average_at_start']}"
        f" → {results['environment']['load_average_1min']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per throughput run")
    parser.add_argument(
        "--large",
        action="store_true",
        help="also large models up to 1e8 parameters (benchmarks/large_models.py: GBs of "
        "memory and minutes per store); written to results/large_models.{json,md}",
    )
    args = parser.parse_args()
    started_load = round(os.getloadavg()[0], 2)
    measured = step_latency.run(["memory", "sqlite", "postgresql"], quick=args.quick)
    results: dict[str, Any] = {
        "load_average_at_start": started_load,
        **measured,
        "throughput": throughput(args.duration),
    }
    results["environment"] = environment()
    results["targets"] = targets(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "performance.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (RESULTS / "performance.md").write_text(text)
    chart(results, RESULTS / "performance.png")
    print(text)
    print(f"written to {RESULTS}/performance.{{md,json,png}}")
    if args.large:
        large = large_models.run(["memory", "sqlite", "postgresql"], large_models.LARGE)
        large_models.write_results(large)


if __name__ == "__main__":
    main()
