"""Drive torch.optim and the core side by side on the same θ and gradients."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from app.optim import Optimizer, SparseRows, fused, optimizer_defaults

TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adadelta": torch.optim.Adadelta,
}
"""Every contract type torch has; the field names are torch's keyword arguments."""

MORE_TORCH_OPTIMIZERS = {
    "adafactor": torch.optim.Adafactor,
    "muon": torch.optim.Muon,
    "rprop": torch.optim.Rprop,
    "asgd": torch.optim.ASGD,
    "sparse_adam": torch.optim.SparseAdam,
}
"""The rest of torch.optim 2.13 (issue 16): its own tests in test_more_torch.py."""

CORE_ONLY_FIELDS = {"accumulator", "init"}
"""Fields torch does not have (the lecture's forms); parity runs leave them at torch's value."""

SHAPES = {"scalar": (), "vector": (7,), "cube": (2, 3, 4)}
"""A 0-d, a vector and a 3-d tensor, as the issue asks."""


@contextlib.contextmanager
def chains_only() -> Iterator[None]:
    """Optimizers made inside run every group through its chain: no kernel covers any."""
    saved = fused.FUSED_TYPES
    fused.FUSED_TYPES = {}
    try:
        yield
    finally:
        fused.FUSED_TYPES = saved


@contextlib.contextmanager
def torch_default_dtype(dtype: np.dtype) -> Iterator[None]:
    """torch keeps scalar state (`step`, NAdam's `mu_product`) in its default dtype: float64
    parity needs it to be float64. Restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def random_problem(
    seed: int, dtype: np.dtype, steps: int, shapes: Mapping[str, tuple[int, ...]] = SHAPES
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Random θ and `steps` random gradients for the given shapes."""
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    grads = [
        {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
        for _ in range(steps)
    ]
    return params, grads


def torch_kwargs(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's fields (defaults filled) as torch keyword arguments: lists as tuples, and
    `maximize` left out where torch has none (Muon: its tests negate the gradient instead)."""
    merged = {**optimizer_defaults(kind), **fields}
    kwargs = {k: v for k, v in merged.items() if k not in CORE_ONLY_FIELDS}
    if "maximize" not in inspect.signature(torch_class(kind)).parameters:
        kwargs.pop("maximize", None)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def torch_class(kind: str) -> type[torch.optim.Optimizer]:
    """torch's optimizer class for a contract type."""
    return {**TORCH_OPTIMIZERS, **MORE_TORCH_OPTIMIZERS}[kind]


def torch_gradient(grad: np.ndarray | SparseRows, shape: tuple[int, ...]) -> torch.Tensor:
    """A dense gradient, or sparse rows as an uncoalesced sparse COO tensor (repeats kept, as
    `nn.Embedding(sparse=True)` makes them)."""
    if isinstance(grad, SparseRows):
        rows, values = torch.tensor(grad.rows.copy())[None], torch.tensor(grad.values.copy())
        return torch.sparse_coo_tensor(rows, values, shape, check_invariants=True)
    return torch.tensor(grad.copy())


def _newton_schulz_in_input_dtype(grad, ns_coefficients, ns_steps, eps):
    """torch's `_zeropower_via_newtonschulz` without its cast to bfloat16: the same algorithm
    in the gradient's own dtype, the contract's reference for Muon."""
    a, b, c = ns_coefficients
    ortho = grad.clone()
    if grad.size(0) > grad.size(1):
        ortho = ortho.T
    ortho.div_(ortho.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = ortho @ ortho.T
        update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        ortho = torch.addmm(ortho, update, ortho, beta=a)
    if grad.size(0) > grad.size(1):
        ortho = ortho.T
    return ortho


@contextlib.contextmanager
def muon_in_input_dtype() -> Iterator[None]:
    """torch's Muon with Newton–Schulz in the parameters' dtype (it runs it in bfloat16)."""
    module = torch.optim._muon
    saved = module._zeropower_via_newtonschulz
    module._zeropower_via_newtonschulz = _newton_schulz_in_input_dtype
    try:
        yield
    finally:
        module._zeropower_via_newtonschulz = saved


def run_torch(
    kind: str,
    fields: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    grads: Sequence[Mapping[str, np.ndarray | None]],
    *,
    groups: Sequence[tuple[Sequence[str], Mapping[str, Any]]] = (),
) -> dict[str, np.ndarray]:
    """θ after torch.optim's steps; a None gradient is torch's `grad is None`. `groups` are
    (tensor names, overrides) param groups; the remaining tensors form the first group."""
    dtype = next(iter(params.values())).dtype
    tensors = {
        name: torch.tensor(value.copy(), requires_grad=True) for name, value in params.items()
    }
    grouped = {name for names, _ in groups for name in names}
    param_groups = [{"params": [t for n, t in tensors.items() if n not in grouped]}]
    param_groups += [
        {"params": [tensors[n] for n in names], **overrides} for names, overrides in groups
    ]
    with torch_default_dtype(dtype), muon_in_input_dtype():
        optimizer = torch_class(kind)(
            [g for g in param_groups if g["params"]], **torch_kwargs(kind, fields)
        )
        for step in grads:
            for name, tensor in tensors.items():
                grad = step.get(name)
                tensor.grad = None if grad is None else torch_gradient(grad, tensor.shape)
            optimizer.step()
    return {name: tensor.detach().numpy() for name, tensor in tensors.items()}


def run_core(
    config: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    grads: Sequence[Mapping[str, np.ndarray | None]],
) -> dict[str, np.ndarray]:
    """θ after the core's steps; a None gradient leaves the tensor out (a partial step)."""
    optimizer = Optimizer(config, list(params))
    theta = {name: value.copy() for name, value in params.items()}
    state = optimizer.init(theta)
    for step in grads:
        present = {n: _copy(g) for n, g in step.items() if g is not None}
        optimizer.step(theta, state, present, partial=len(present) < len(theta))
    return theta


def _copy(grad: np.ndarray | SparseRows) -> np.ndarray | SparseRows:
    if isinstance(grad, SparseRows):
        return SparseRows(grad.rows.copy(), grad.values.copy())
    return grad.copy()


def tolerance(dtype: np.dtype) -> float:
    """The contract's relative agreement after 200 steps."""
    return 1e-9 if dtype == np.float64 else 1e-5


def assert_moved_alike(
    ours: Mapping[str, np.ndarray],
    theirs: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    rtol: float,
) -> None:
    """The displacements θ − θ₀ agree per tensor to `rtol`, relative to the largest movement of
    that tensor (an entry that barely moved is held to the same absolute error as the rest);
    θ₀ itself would hide a wrong update, since it dominates θ after few steps."""
    for name in theirs:
        assert ours[name].dtype == start[name].dtype, name
        moved_ours = ours[name].astype(np.float64) - start[name]
        moved_theirs = np.asarray(theirs[name], np.float64) - start[name]
        scale = float(np.max(np.abs(moved_theirs), initial=0.0))
        assert scale > 0, f"{name} did not move"
        np.testing.assert_allclose(
            moved_ours, moved_theirs, rtol=rtol, atol=rtol * scale, err_msg=name
        )


def assert_close(
    ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray], dtype: np.dtype
) -> None:
    """Relative agreement per tensor, with an absolute floor of the same size for entries
    near zero."""
    rtol = tolerance(dtype)
    for name in theirs:
        assert ours[name].dtype == dtype, name
        np.testing.assert_allclose(ours[name], theirs[name], rtol=rtol, atol=rtol, err_msg=name)
