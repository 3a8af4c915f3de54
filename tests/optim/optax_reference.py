"""Drive optax (on CPU, 64-bit enabled) beside the core, for the types whose reference it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the `reference` extra (jax, optax) is not installed")
optax = pytest.importorskip("optax", reason="the `reference` extra (jax, optax) is not installed")
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

from app.optim import optimizer_defaults  # noqa: E402 -- after jax's configuration

OPTAX_OPTIMIZERS = {
    "yogi": optax.yogi,
    "lamb": optax.lamb,
    "lars": optax.lars,
    "adabelief": optax.adabelief,
    "novograd": optax.novograd,
    "adan": optax.adan,
}
"""The contract's types whose reference is optax; the fields are optax's keyword arguments,
`learning_rate` spelt `lr`."""


def optax_kwargs(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's fields (defaults filled) as the optax alias's keyword arguments;
    `maximize` is not optax's (the runner negates the gradient instead)."""
    merged = {**optimizer_defaults(kind), **fields}
    merged.pop("maximize")
    merged["learning_rate"] = merged.pop("lr")
    return merged


def run_optax(
    kind: str,
    fields: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    grads: Sequence[Mapping[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """θ after optax's updates, one per step (optax steps every tensor every time), each step
    jitted as optax is used (XLA may fuse a step's operations: the last bits differ from an
    op-by-op run, well within the contract's 1e-7)."""
    sign = -1.0 if fields.get("maximize", False) else 1.0
    transform = OPTAX_OPTIMIZERS[kind](**optax_kwargs(kind, fields))
    theta = {name: jax.numpy.asarray(value) for name, value in params.items()}
    state = transform.init(theta)

    @jax.jit
    def step(theta: Any, state: Any, gradient: Any) -> tuple[Any, Any]:
        updates, state = transform.update(gradient, state, theta)
        return optax.apply_updates(theta, updates), state

    for grad in grads:
        gradient = {name: jax.numpy.asarray(sign * grad[name]) for name in theta}
        theta, state = step(theta, state, gradient)
    return {name: np.asarray(value) for name, value in theta.items()}
