"""Step latency of live servers by store, size and wire form, beside torch's in-process step;
and a server's peak memory during a 10⁷-parameter step.

For each store — `memory://`, SQLite and PostgreSQL (each with the step log, the default,
and with `OPTAAS_CHECKPOINT_EVERY=1`: every step rewrites θ and state) — one server process
is started, and Adam float32 sessions of N = 1e2, 1e4, 1e6, 1e7 parameters are stepped over
HTTP with safetensors bodies and answers, and with JSON ones (`benchmarks.service_step.Stepper`:
bodies prepared beforehand, the answer with the new θ read whole, after a warm-up). Beside
them: `torch.optim.Adam.step()` and the optimizer core's own step, in process, on the same
arrays. Peak memory: a fresh server per store, one 1e7 session, its peak resident set
(`VmHWM`, reset through /proc/<pid>/clear_refs) during one step, against what θ, the state,
the gradient and the answer must occupy (20 bytes a parameter for Adam float32).

    python benchmarks/step_latency.py [--quick] [--stores memory sqlite postgresql]

Prints the table and writes benchmarks/results/step_latency.{json,md};
benchmarks/performance.py runs it with the throughput runs and draws the chart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from tests.live_server import LiveServer  # noqa: E402

SIZES = (100, 10_000, 1_000_000, 10_000_000)
STEPS = {  # (safetensors, JSON) steps measured per size, after the warm-up
    100: (300, 300),
    10_000: (200, 100),
    1_000_000: (60, 20),
    10_000_000: (12, 5),
}
QUICK_STEPS = {100: (50, 50), 10_000: (30, 20), 1_000_000: (15, 5), 10_000_000: (4, 2)}
WARMUP = {100: 20, 10_000: 10, 1_000_000: 5, 10_000_000: 2}
MEMORY_SIZE = 10_000_000
ADAM_BYTES_PER_PARAMETER = 20
"""float32 Adam: θ, exp_avg, exp_avg_sq (12 bytes), the gradient (4) and the answer's θ (4)."""


@dataclass(frozen=True)
class Store:
    """A store as benchmarked: its backend and how often it rewrites θ and state."""

    backend: str
    checkpoint_every: int | None = None  # None: the default (the step log)

    @property
    def name(self) -> str:
        if self.checkpoint_every == 1:
            return f"{self.backend} (rewrite)"
        return self.backend

    @property
    def env(self) -> dict[str, str]:
        if self.checkpoint_every is None:
            return {}
        return {"OPTAAS_CHECKPOINT_EVERY": str(self.checkpoint_every)}


def stores_for(backends: list[str], rewrite: bool) -> list[Store]:
    stores = [Store(backend) for backend in backends]
    if rewrite:
        stores += [Store(backend, 1) for backend in backends if backend != "memory"]
    return stores


def measure_server(server: LiveServer, size: int, form: str, steps: int) -> dict[str, Any]:
    """`steps` steps of a new Adam float32 session of `size`, in `form` both ways."""
    variants = 2 if size >= MEMORY_SIZE else 8
    stepper = Stepper(server, size, form=form, accept=form, variants=variants)
    try:
        warmup = WARMUP[size]
        latencies = [stepper.step(index) for index in range(warmup + steps)][warmup:]
    finally:
        stepper.close()
    return {
        "parameters": size,
        "form": form,
        "steps": steps,
        "request_bytes": int(np.mean([len(body) for body in stepper.bodies])),
        "response_bytes": stepper.response_bytes,
        **summary_of(latencies),
    }


def measure_store(store: Store, sizes: tuple[int, ...], steps: dict) -> list[dict[str, Any]]:
    rows = []
    with ExitStack() as stack:
        server = start_server(stack, store.backend, store.env)
        for size in sizes:
            forms = ["safetensors"] if store.checkpoint_every == 1 else ["safetensors", "json"]
            if store.checkpoint_every == 1 and size < 10_000:
                continue  # nothing to rewrite that the log would spare
            for form in forms:
                count = steps[size][0 if form == "safetensors" else 1]
                row = {"store": store.name, **measure_server(server, size, form, count)}
                rows.append(row)
                print_row(row)
    return rows


def measure_in_process(sizes: tuple[int, ...], steps: dict) -> list[dict[str, Any]]:
    """torch.optim.Adam's step and the core's, on the arrays the servers step."""
    import torch

    rows = []
    for size in sizes:
        rng = np.random.default_rng(size)
        params = rng.standard_normal(size).astype(np.float32)
        gradient = rng.standard_normal(size).astype(np.float32)
        count = steps[size][0]
        warmup = WARMUP[size]

        parameter = torch.from_numpy(params.copy())
        parameter.grad = torch.from_numpy(gradient.copy())
        optimizer = torch.optim.Adam([parameter], lr=1e-3)
        rows.append(row_of("torch.optim.Adam", size, count, warmup, optimizer.step))

        step, prepare = core_step(params, gradient)
        rows.append(row_of("optaas core", size, count, warmup, step, prepare))
        for row in rows[-2:]:
            print_row(row)
    return rows


def core_step(params: np.ndarray, gradient: np.ndarray) -> tuple[Any, Any]:
    """The core's Adam step on copies of `params`, and what to do before each (untimed): give
    it a fresh copy of the gradient, which it consumes. On the threads a server uses by
    default (`OPTAAS_COMPUTE_THREADS`: the CPUs the process may use)."""
    from app.config import Settings
    from app.optim import Optimizer

    threads = Settings().compute_threads
    core = Optimizer({"optimizer": {"type": "adam", "lr": 1e-3}}, ["params"], threads=threads)
    theta = {"params": params.copy()}
    state = core.init(theta)
    scratch = gradient.copy()
    return (
        lambda: core.step(theta, state, {"params": scratch}),
        lambda: np.copyto(scratch, gradient),
    )


def row_of(
    store: str, size: int, count: int, warmup: int, step: Any, prepare: Any = None
) -> dict[str, Any]:
    latencies = []
    for index in range(warmup + count):
        if prepare is not None:
            prepare()
        started = time.perf_counter()
        step()
        if index >= warmup:
            latencies.append((time.perf_counter() - started) * 1000)
    return {
        "store": store,
        "parameters": size,
        "form": "in process",
        "steps": count,
        **summary_of(latencies),
    }


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['store']:<22} {row['form']:<12} N={row['parameters']:<9,} "
        f"p50 {row['p50_ms']:9.2f} ms   p99 {row['p99_ms']:9.2f} ms",
        flush=True,
    )


# -- peak memory ---------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> None:
    """Reset the process's peak resident set (VmHWM) to its current size (Linux ≥ 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def measure_peak_memory(store: Store, form: str = "safetensors") -> dict[str, Any]:
    """Peak RSS of a fresh server during one `form` step of a 1e7 Adam float32 session."""
    with ExitStack() as stack:
        server = start_server(stack, store.backend, store.env)
        pid = server.process.pid  # type: ignore[union-attr]  (one worker: uvicorn runs in it)
        idle = status_kib(pid, "VmRSS")
        stepper = Stepper(server, MEMORY_SIZE, form=form, accept=form, variants=1)
        try:
            for index in range(3):
                stepper.step(index)
            before = status_kib(pid, "VmRSS")
            reset_peak(pid)
            latency = stepper.step(3)
            peak = status_kib(pid, "VmHWM")
        finally:
            stepper.close()
    required = ADAM_BYTES_PER_PARAMETER * MEMORY_SIZE / 2**20
    row = {
        "store": store.name,
        "form": form,
        "parameters": MEMORY_SIZE,
        "idle_rss_mib": round(idle / 1024, 1),
        "rss_before_step_mib": round(before / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "step_ms": round(latency, 1),
        "required_mib": round(required, 1),
        "peak_over_idle_mib": round((peak - idle) / 1024, 1),
        "ratio": round((peak - idle) / 1024 / required, 2),
    }
    print(
        f"{row['store']:<22} {form:<12} peak {row['peak_rss_mib']} MiB (idle {row['idle_rss_mib']}"
        f", before the step {row['rss_before_step_mib']}): {row['peak_over_idle_mib']} MiB over "
        f"idle = {row['ratio']}× the {row['required_mib']} MiB θ+state+gradient+answer",
        flush=True,
    )
    return row


# -- the table ------------------------------------------------------------------------------


def latency_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| store | form | parameters | steps | request bytes | p50 ms | p99 ms | mean ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: (r["parameters"], r["form"], r["store"])):
        request = f"{row['request_bytes']:,}" if "request_bytes" in row else "—"
        lines.append(
            f"| {row['store']} | {row['form']} | {row['parameters']:,} | {row['steps']} | "
            f"{request} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['mean_ms']:.2f} |"
        )
    return lines


def memory_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| store | form | idle RSS MiB | RSS before the step MiB | peak RSS MiB | peak − idle "
        "MiB | θ+state+gradient+answer MiB | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['store']} | {row['form']} | {row['idle_rss_mib']} | "
            f"{row['rss_before_step_mib']} | {row['peak_rss_mib']} | {row['peak_over_idle_mib']} | "
            f"{row['required_mib']} | {row['ratio']}× |"
        )
    return lines


def run(backends: list[str], *, quick: bool, rewrite: bool = True) -> dict[str, Any]:
    steps = QUICK_STEPS if quick else STEPS
    latency = measure_in_process(SIZES, steps)
    for store in stores_for(backends, rewrite):
        latency += measure_store(store, SIZES, steps)
    memory = []
    for store in stores_for(backends, rewrite=False):
        for form in ("safetensors", "json"):
            memory.append(measure_peak_memory(store, form))
    return {"latency": latency, "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["memory", "sqlite", "postgresql"])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument(
        "--no-rewrite",
        dest="rewrite",
        action="store_false",
        help="leave out the stores that rewrite θ and state every step",
    )
    args = parser.parse_args()
    results = run(args.stores, quick=args.quick, rewrite=args.rewrite)
    context = environment()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "step_latency.json").write_text(
        json.dumps({"environment": context, **results}, indent=2) + "\n"
    )
    text = "\n".join(
        [
            "# Step latency and peak memory, Adam float32, one server process",
            "",
            context_line(context),
            "",
            *latency_markdown(results["latency"]),
            "",
            *memory_markdown(results["memory"]),
            "",
        ]
    )
    (RESULTS / "step_latency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
