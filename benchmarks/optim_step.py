"""One optimizer step's time, optaas's core beside torch.optim's fused CPU step and its default.

For 1e3 … 1e7 parameters (one tensor), float32 and float64, and every optimizer the core runs
with a fused kernel: the time of `Optimizer.step` (gradient checks, the gradient's norm — the
non-finite test — and the update with its norm included) on one thread and on as many threads
as torch uses; torch.optim's `fused=True` step where torch has one (SGD, Adam, AdamW, Adagrad
on CPU) and its default step (single-tensor kernels), on torch's default intra-op threads; all
measured in alternation on the same arrays. Ratios: core ÷ torch fused (the strongest peer)
and core ÷ torch default; below 1 the core is faster. Lion has no torch counterpart.

Prints a table and the targets (core ÷ fused ≤ 1.0 at 1e6 and 1e7 for Adam and SGD with
momentum, float32 and float64) and writes benchmarks/results/optim_step.json and .md.

    python benchmarks/optim_step.py [--quick] [--optimizers adam sgd-momentum] [--sizes 1e6 1e7]
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

from app.optim import Optimizer, warm_up

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = 3
SIZES = [10**3, 10**4, 10**5, 10**6, 10**7]
DTYPES = [np.float32, np.float64]
TARGET_OPTIMIZERS = ("adam", "sgd-momentum")
TARGET_SIZES = (10**6, 10**7)
TARGET_RATIO = 1.0

Torch = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: dict[str, tuple[dict, Torch | None, bool]] = {
    # name: (the core's optimizer spec, torch's class with the same settings, torch has fused)
    "sgd": ({"type": "sgd", "lr": 1e-3}, functools.partial(torch.optim.SGD, lr=1e-3), True),
    "sgd-momentum": (
        {"type": "sgd", "lr": 1e-3, "momentum": 0.9},
        functools.partial(torch.optim.SGD, lr=1e-3, momentum=0.9),
        True,
    ),
    "adagrad": (
        {"type": "adagrad", "lr": 1e-2},
        functools.partial(torch.optim.Adagrad, lr=1e-2),
        True,
    ),
    "rmsprop": (
        {"type": "rmsprop", "lr": 1e-3},
        functools.partial(torch.optim.RMSprop, lr=1e-3),
        False,
    ),
    "adam": ({"type": "adam", "lr": 1e-3}, functools.partial(torch.optim.Adam, lr=1e-3), True),
    "adamw": ({"type": "adamw", "lr": 1e-3}, functools.partial(torch.optim.AdamW, lr=1e-3), True),
    "adamax": (
        {"type": "adamax", "lr": 2e-3},
        functools.partial(torch.optim.Adamax, lr=2e-3),
        False,
    ),
    "nadam": ({"type": "nadam", "lr": 2e-3}, functools.partial(torch.optim.NAdam, lr=2e-3), False),
    "radam": ({"type": "radam", "lr": 1e-3}, functools.partial(torch.optim.RAdam, lr=1e-3), False),
    "adadelta": ({"type": "adadelta"}, torch.optim.Adadelta, False),
    "lion": ({"type": "lion", "lr": 1e-4}, None, False),
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


def torch_step(make: Torch, theta: np.ndarray, grad: np.ndarray, **options: bool) -> Callable:
    tensor = torch.from_numpy(theta.copy()).requires_grad_(True)
    tensor.grad = torch.from_numpy(grad.copy())
    return make([tensor], **options).step


def measure(name: str, dtype: type, size: int, repeats: int) -> dict:
    config, make_torch, torch_fused = OPTIMIZERS[name]
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(size).astype(dtype)
    grad = rng.standard_normal(size).astype(dtype) * dtype(1e-3)

    grads = {"w": grad}  # these configurations never write into the gradient
    steps = {}
    for label, threads in (("core_1", 1), ("core", torch.get_num_threads())):
        optimizer = Optimizer({"optimizer": config}, ["w"], threads=threads)
        assert optimizer.base_group.kernel is not None, f"{name}: no fused kernel"
        params = {"w": theta.copy()}
        state = optimizer.init(params)
        steps[label] = functools.partial(optimizer.step, params, state, grads)
    if make_torch is not None:
        steps["torch_default"] = torch_step(make_torch, theta, grad)
    if torch_fused:
        steps["torch_fused"] = torch_step(make_torch, theta, grad, fused=True)

    seconds = median_seconds(steps, repeats)
    row = {
        "optimizer": name,
        "dtype": np.dtype(dtype).name,
        "parameters": size,
        "repeats": repeats,
        "core_one_thread_ms": seconds["core_1"] * 1e3,
        "core_ms": seconds["core"] * 1e3,
        "torch_default_ms": None,
        "torch_fused_ms": None,
        "core_over_fused": None,
        "core_over_default": None,
    }
    if "torch_default" in seconds:
        row["torch_default_ms"] = seconds["torch_default"] * 1e3
        row["core_over_default"] = seconds["core"] / seconds["torch_default"]
    if "torch_fused" in seconds:
        row["torch_fused_ms"] = seconds["torch_fused"] * 1e3
        row["core_over_fused"] = seconds["core"] / seconds["torch_fused"]
    return row


def cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| optimizer | dtype | parameters | core ms, 1 thread | core ms | torch default ms "
        "| torch fused ms | core ÷ fused | core ÷ default |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['optimizer']} | {row['dtype']} | {row['parameters']:.0e} "
            f"| {row['core_one_thread_ms']:.3f} | {row['core_ms']:.3f} "
            f"| {cell(row['torch_default_ms'], 3)} | {cell(row['torch_fused_ms'], 3)} "
            f"| {cell(row['core_over_fused'], 2)} | {cell(row['core_over_default'], 2)} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[dict]:
    """core ÷ torch fused at the target sizes, for the target optimizers, met or not."""
    return [
        {
            "optimizer": row["optimizer"],
            "dtype": row["dtype"],
            "parameters": row["parameters"],
            "core_over_fused": row["core_over_fused"],
            "met": row["core_over_fused"] <= TARGET_RATIO,
        }
        for row in rows
        if row["optimizer"] in TARGET_OPTIMIZERS and row["parameters"] in TARGET_SIZES
    ]


def targets_table(checked: list[dict]) -> str:
    lines = ["| target | core ÷ torch fused | limit | met |", "|---|---:|---:|---|"]
    for target in checked:
        met = "yes" if target["met"] else "**no**"
        lines.append(
            f"| {target['optimizer']} {target['dtype']} {target['parameters']:.0e} "
            f"| {target['core_over_fused']:.2f} | ≤ {TARGET_RATIO} | {met} |"
        )
    return "\n".join(lines)


def scheduling() -> str:
    """This process's scheduling policy: a run under `chrt` (real-time priority, so that the
    other work of a shared machine does not preempt it) says so."""
    policy = os.sched_getscheduler(0)
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    priority = os.sched_getparam(0).sched_priority
    return f"{names.get(policy, policy)} priority {priority}"


def environment() -> dict:
    return {
        "scheduling": scheduling(),
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
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS), default=None)
    parser.add_argument("--sizes", nargs="+", type=float, default=None)
    args = parser.parse_args()
    names = args.optimizers or list(OPTIMIZERS)
    sizes = [int(size) for size in args.sizes] if args.sizes else SIZES
    warm_up()  # compiled or loaded before anything is timed, as a server does at start
    load_before = os.getloadavg()[0]
    rows = []
    for name in names:
        for dtype in DTYPES:
            for size in sizes:
                row = measure(name, dtype, size, repeats_for(size, args.quick))
                rows.append(row)
                print(
                    f"{name:13s} {row['dtype']:8s} {size:>9.0e}  core {row['core_ms']:9.3f} ms"
                    f"  torch default {cell(row['torch_default_ms'], 3):>9} ms"
                    f"  fused {cell(row['torch_fused_ms'], 3):>9} ms"
                    f"  core/fused {cell(row['core_over_fused'], 2)}",
                    flush=True,
                )
    env = environment()
    checked = targets(rows)
    load_after = os.getloadavg()[0]
    load = f"1-minute load average: {load_before:.2f} at the start, {load_after:.2f} at the end."
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "optim_step.json").write_text(
        json.dumps({"environment": env, "load": load, "targets": checked, "rows": rows}, indent=2)
        + "\n"
    )
    header = (
        "# One optimizer step: optaas core vs torch.optim's fused and default CPU steps\n\n"
        "Time of one step on one tensor: the best of three rounds' medians, all measured in "
        "alternation; the core (`Optimizer.step`: gradient checks and norm, the fused kernel, "
        "the update norm) on one thread and on torch's number of threads "
        f"({env['torch_threads']}); torch's `fused=True` step where it has one, and its "
        "default step. Ratios: the threaded core ÷ torch (below 1: the core is faster).\n"
        f"{load}\n"
        f"Environment: {json.dumps(env)}\n\n"
    )
    text = header + "## Targets\n\n" + targets_table(checked) + "\n\n## All\n\n" + table(rows)
    (RESULTS / "optim_step.md").write_text(text + "\n")
    print()
    print(targets_table(checked))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
