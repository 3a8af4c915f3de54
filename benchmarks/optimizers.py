"""Every optimizer type's core step at 1e6 float32 parameters, beside its reference's strongest
setting, and the state it stores per parameter.

One 1000×1000 float32 matrix (2-D, so that Muon takes it and Adafactor factors it), each type
at its default settings. Per type: the time of `Optimizer.step` (validation, norms and update
included; on torch's number of threads) and of the reference's step on the same arrays —
torch.optim with `fused=True` where torch has a fused CPU kernel, else `foreach=True` where it
has one, else its single-tensor step; optax's update jitted (`jax.jit`, CPU) for optax's types;
the authors' packages (schedulefree, prodigyopt, dadaptation, dog-optimizer; torch, foreach
where they offer it) for the learning-rate-free family — measured in alternation
(`optim_step.median_seconds`); and the bytes of the stored state (every slot, `step` and the
session's global quantities included) per parameter. Sparse rows get rows of their own: a
gradient of 100 of the 1000 rows for the types that take them, beside torch fed a sparse COO
gradient.
Prints a table and writes benchmarks/results/optimizers.json and .md.

    python benchmarks/optimizers.py [--quick] [--types adam,muon,...]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optaas_client.torch_interop import TORCH_OPTIMIZER_NAMES

from app.optim import OPTIMIZER_TYPES, Optimizer, SparseRows, optimizer_defaults
from benchmarks.optim_step import environment, median_seconds

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (1000, 1000)
SPARSE_ROWS = 100
BUDGET_SECONDS = 3.0
OPTAX_TYPES = {"yogi", "lamb", "lars", "adabelief", "novograd", "adan"}
LEARNING_RATE_FREE_CLASSES = {
    "schedule_free_adamw": ("schedulefree", "AdamWScheduleFree"),
    "schedule_free_sgd": ("schedulefree", "SGDScheduleFree"),
    "prodigy": ("prodigyopt", "Prodigy"),
    "dadapt_adam": ("dadaptation", "DAdaptAdam"),
    "dadapt_sgd": ("dadaptation", "DAdaptSGD"),
    "dadapt_adagrad": ("dadaptation", "DAdaptAdaGrad"),
    "dog": ("dog", "DoG"),
    "ldog": ("dog", "LDoG"),
}
"""The learning-rate-free family's reference classes: (module, class) of the authors' packages."""
SPARSE_TYPES = ("sparse_adam", "adagrad", "sgd")


def torch_peer(kind: str, tensor: torch.Tensor) -> tuple[torch.optim.Optimizer, str]:
    """torch's optimizer for `kind` at the contract's defaults, in its strongest CPU setting."""
    cls = getattr(torch.optim, TORCH_OPTIMIZER_NAMES[kind])
    accepted = inspect.signature(cls).parameters
    kwargs = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in optimizer_defaults(kind).items()
        if key in accepted and key not in ("accumulator", "init")
    }
    for setting in ("fused", "foreach"):
        if setting in accepted:
            try:
                optimizer = cls([tensor], **kwargs, **{setting: True})
                optimizer.step()  # torch checks the setting at its first step
            except (RuntimeError, ValueError):
                continue
            return optimizer, f"torch {setting}"
    return cls([tensor], **kwargs), "torch single-tensor"


def learning_rate_free_peer(
    kind: str, tensor: torch.Tensor
) -> tuple[torch.optim.Optimizer, str] | None:
    """The authors' optimizer for `kind` at the contract's defaults (foreach where it has the
    switch), in its training mode; None without the package."""
    module_name, class_name = LEARNING_RATE_FREE_CLASSES[kind]
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    cls = getattr(module, class_name)
    accepted = inspect.signature(cls).parameters
    kwargs = {
        key: (tuple(value) if isinstance(value, list) else value)
        for key, value in optimizer_defaults(kind).items()
        if key in accepted
    }
    if kwargs.get("growth_rate", 0.0) is None:
        kwargs["growth_rate"] = float("inf")  # the contract's null is prodigyopt's inf
    label = f"{module_name} single-tensor"
    if "foreach" in accepted:
        kwargs["foreach"] = True
        label = f"{module_name} foreach"
    optimizer = cls([tensor], **kwargs)
    if hasattr(optimizer, "train"):
        optimizer.train()  # schedule-free's step is refused in eval mode
    return optimizer, label


def optax_peer(kind: str, theta: np.ndarray, grad: np.ndarray) -> Callable[[], Any] | None:
    """optax's update + apply_updates for `kind`, jitted, or None without jax/optax."""
    try:
        import jax
        import optax
    except ImportError:
        return None
    fields = optimizer_defaults(kind)
    fields.pop("maximize")
    fields["learning_rate"] = fields.pop("lr")
    transform = getattr(optax, kind)(**fields)
    params = {"w": jax.numpy.asarray(theta)}
    gradient = {"w": jax.numpy.asarray(grad)}
    holder = {"params": params, "state": transform.init(params)}

    @jax.jit
    def update(params: Any, state: Any, gradient: Any) -> tuple[Any, Any]:
        updates, state = transform.update(gradient, state, params)
        return optax.apply_updates(params, updates), state

    def step() -> None:
        params, state = update(holder["params"], holder["state"], gradient)
        jax.block_until_ready(params)
        holder["params"], holder["state"] = params, state

    return step


def repeats_for(step: Callable[[], Any], quick: bool) -> int:
    """As many repeats as fit the time budget (at least 3), from one timed call."""
    start = time.perf_counter()
    step()
    seconds = max(time.perf_counter() - start, 1e-6)
    budget = BUDGET_SECONDS / (4 if quick else 1)
    return int(min(300, max(3, budget / seconds)))


def measure(kind: str, quick: bool, sparse: bool = False) -> dict:
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(SHAPE).astype(np.float32)
    grad = (rng.standard_normal(SHAPE) * 1e-3).astype(np.float32)
    rows = np.sort(rng.choice(SHAPE[0], SPARSE_ROWS, replace=False))

    optimizer = Optimizer({"optimizer": {"type": kind}}, ["w"], threads=torch.get_num_threads())
    params = {"w": theta.copy()}
    state = optimizer.init(params)
    # Default settings never write into a dense gradient (no maximize, no coupled decay).
    gradient: Any = SparseRows(rows, grad[rows]) if sparse else grad
    steps: dict[str, Callable[[], Any]] = {
        "optaas": functools.partial(optimizer.step, params, state, {"w": gradient})
    }
    peer = "-"
    if kind in TORCH_OPTIMIZER_NAMES:
        tensor = torch.from_numpy(theta.copy()).requires_grad_(True)
        if sparse or kind == "sparse_adam":
            indices = torch.from_numpy(rows if sparse else np.arange(SHAPE[0]))[None]
            values = torch.from_numpy(grad[rows] if sparse else grad)
            tensor.grad = torch.sparse_coo_tensor(indices, values, SHAPE)
        else:
            tensor.grad = torch.from_numpy(grad.copy())
        reference, peer = torch_peer(kind, tensor)
        steps["peer"] = reference.step
    elif kind in LEARNING_RATE_FREE_CLASSES:
        tensor = torch.from_numpy(theta.copy()).requires_grad_(True)
        tensor.grad = torch.from_numpy(grad.copy())
        found = learning_rate_free_peer(kind, tensor)
        if found is not None:
            steps["peer"] = found[0].step
            peer = found[1]
    elif kind in OPTAX_TYPES:
        step = optax_peer(kind, theta, grad)
        if step is not None:
            steps["peer"], peer = step, "optax jit"
    repeats = min(repeats_for(step, quick) for step in steps.values())
    seconds = median_seconds(steps, repeats)
    stored = sum(array.nbytes for array in state.to_arrays().values())
    optaas_ms = seconds["optaas"] * 1e3
    peer_ms = seconds["peer"] * 1e3 if "peer" in seconds else None
    return {
        "optimizer": kind + (f" ({SPARSE_ROWS} rows)" if sparse else ""),
        "parameters": int(np.prod(SHAPE)),
        "repeats": repeats,
        "optaas_ms": optaas_ms,
        "peer": peer,
        "peer_ms": peer_ms,
        "ratio": optaas_ms / peer_ms if peer_ms else None,
        "state_bytes_per_parameter": stored / np.prod(SHAPE),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| optimizer | optaas ms | peer | peer ms | ratio | state bytes / parameter |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        peer_ms = "-" if row["peer_ms"] is None else f"{row['peer_ms']:.3f}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['optimizer']} | {row['optaas_ms']:.3f} | {row['peer']} | {peer_ms} "
            f"| {ratio} | {row['state_bytes_per_parameter']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the time budget")
    parser.add_argument("--types", help="comma-separated types (default: every type)")
    args = parser.parse_args()
    kinds = args.types.split(",") if args.types else sorted(OPTIMIZER_TYPES)
    runs = [(kind, False) for kind in kinds]
    runs += [(kind, True) for kind in SPARSE_TYPES if kind in kinds]
    rows = []
    for kind, sparse in runs:
        row = measure(kind, args.quick, sparse)
        rows.append(row)
        peer = "" if row["peer_ms"] is None else f"  {row['peer']} {row['peer_ms']:9.3f} ms"
        print(
            f"{row['optimizer']:24s} optaas {row['optaas_ms']:9.3f} ms{peer}"
            f"  state {row['state_bytes_per_parameter']:.3f} B/param",
            flush=True,
        )
    env = environment()
    load = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "optimizers.json").write_text(
        json.dumps({"environment": env, "load_average": load, "rows": rows}, indent=2) + "\n"
    )
    header = (
        "# Every optimizer type: one core step at 1e6 float32 parameters, and its state\n\n"
        f"One {SHAPE[0]}×{SHAPE[1]} float32 matrix, default settings; the best of three rounds' "
        "medians, optaas and its peer measured in alternation; optaas on torch's number of "
        f"threads ({env['torch_threads']}). Peer: torch.optim fused where it has a fused CPU "
        "kernel, else foreach, else single-tensor; optax jitted on CPU; the learning-rate-free "
        "family's own packages (foreach where offered). Ratio = optaas / peer "
        "(below 1: optaas is faster). State: stored bytes per parameter, every slot, `step` "
        "and the session's global quantities.\n"
        f"Load average (1, 5, 15 min) at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.\n"
        f"Environment: {json.dumps(env)}\n\n"
    )
    (RESULTS / "optimizers.md").write_text(header + table(rows) + "\n")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
