"""One optimizer step's time, optaas's core beside torch.optim, on the same arrays.

For 1e3 … 1e7 parameters (one tensor), float32 and float64, and adam, rmsprop, adagrad and
sgd with momentum: the time of `Optimizer.step` (validation, norms and update included) on one
thread and on as many threads as torch uses, and of torch.optim's default CPU step
(`opt.step()`: single-tensor kernels, torch's default intra-op threads), measured in
alternation, and the ratio of the threaded core to torch (optaas / torch: below 1 is faster).
Prints a table and writes benchmarks/results/optim_step.json and .md.

    python benchmarks/optim_step.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.optim import Optimizer

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = 3
SIZES = [10**3, 10**4, 10**5, 10**6, 10**7]
DTYPES = [np.float32, np.float64]
OPTIMIZERS = {
    "adam": ({"type": "adam", "lr": 1e-3}, lambda p: torch.optim.Adam(p, lr=1e-3)),
    "rmsprop": ({"type": "rmsprop", "lr": 1e-3}, lambda p: torch.optim.RMSprop(p, lr=1e-3)),
    "adagrad": ({"type": "adagrad", "lr": 1e-2}, lambda p: torch.optim.Adagrad(p, lr=1e-2)),
    "sgd-momentum": (
        {"type": "sgd", "lr": 1e-3, "momentum": 0.9},
        lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
    ),
}


def repeats_for(size: int, quick: bool) -> int:
    """Enough repeats for a stable median, fewer for big arrays."""
    count = max(9, min(600, int(3e7 / size)))
    return max(3, count // 5) if quick else count


def median_seconds(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each `step()`'s time: the best of three rounds' medians, the steps measured in
    alternation (so that all see the same load on a shared machine) in a random order, after
    two warm-up calls each (state and buffers allocated). The garbage collector is off while
    timing."""
    for step in steps.values():
        step()
        step()
    best = dict.fromkeys(steps, float("inf"))
    order = np.random.default_rng(0)
    gc.disable()
    try:
        for _ in range(ROUNDS):
            times: dict[str, list[float]] = {name: [] for name in steps}
            for _ in range(max(1, repeats // ROUNDS)):
                # A new order each repeat: what runs right after torch's step shares the CPUs
                # with its intra-op threads, which spin a while before they sleep (and runs on
                # a colder cache), so no step may always be the one that follows it.
                for name in order.permutation(list(steps)):
                    start = time.perf_counter()
                    steps[name]()
                    times[name].append(time.perf_counter() - start)
            for name, values in times.items():
                best[name] = min(best[name], statistics.median(values))
    finally:
        gc.enable()
    return best


def measure(name: str, dtype: type, size: int, repeats: int) -> dict:
    config, make_torch = OPTIMIZERS[name]
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(size).astype(dtype)
    grad = rng.standard_normal(size).astype(dtype) * dtype(1e-3)

    grads = {"w": grad}  # these configurations never write into the gradient
    steps = {}
    for label, threads in (("optaas_1", 1), ("optaas", torch.get_num_threads())):
        optimizer = Optimizer({"optimizer": config}, ["w"], threads=threads)
        params = {"w": theta.copy()}
        state = optimizer.init(params)
        steps[label] = functools.partial(optimizer.step, params, state, grads)

    tensor = torch.from_numpy(theta.copy()).requires_grad_(True)
    tensor.grad = torch.from_numpy(grad.copy())
    steps["torch"] = make_torch([tensor]).step

    seconds = median_seconds(steps, repeats)
    return {
        "optimizer": name,
        "dtype": np.dtype(dtype).name,
        "parameters": size,
        "repeats": repeats,
        "optaas_one_thread_ms": seconds["optaas_1"] * 1e3,
        "optaas_ms": seconds["optaas"] * 1e3,
        "torch_ms": seconds["torch"] * 1e3,
        "ratio": seconds["optaas"] / seconds["torch"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| optimizer | dtype | parameters | optaas ms, 1 thread | optaas ms | torch ms | ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['optimizer']} | {row['dtype']} | {row['parameters']:.0e} "
            f"| {row['optaas_one_thread_ms']:.3f} | {row['optaas_ms']:.3f} "
            f"| {row['torch_ms']:.3f} | {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    rows = []
    for name in OPTIMIZERS:
        for dtype in DTYPES:
            for size in SIZES:
                row = measure(name, dtype, size, repeats_for(size, args.quick))
                rows.append(row)
                print(
                    f"{name:13s} {row['dtype']:8s} {size:>9.0e}  optaas {row['optaas_ms']:9.3f} ms"
                    f"  torch {row['torch_ms']:9.3f} ms  ratio {row['ratio']:.2f}",
                    flush=True,
                )
    env = environment()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "optim_step.json").write_text(
        json.dumps({"environment": env, "rows": rows}, indent=2) + "\n"
    )
    header = (
        "# One optimizer step: optaas core vs torch.optim (CPU)\n\n"
        "Time of one step on one tensor: the best of three rounds' medians, all measured in "
        "alternation; optaas on one thread and on torch's number of threads "
        f"({env['torch_threads']}); "
        "ratio = optaas (threaded) / torch (below 1: optaas is faster).\n"
        f"1-minute load average at the end: {os.getloadavg()[0]:.2f}.\n"
        f"Environment: {json.dumps(env)}\n\n"
    )
    (RESULTS / "optim_step.md").write_text(header + table(rows) + "\n")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
