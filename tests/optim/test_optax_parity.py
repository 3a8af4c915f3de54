"""optax's classics — Yogi, LAMB, LARS, AdaBelief, NovoGrad, Adan — against optax 0.2.8 on CPU
with 64-bit enabled: 120 random steps over several shapes, the displacement θ − θ₀ within 1e-7
(float64; optax's sums run in another order) and 1e-5 (float32) of optax's."""

import inspect

import numpy as np
import pytest

from app.optim import optimizer_defaults
from tests.optim.optax_reference import OPTAX_OPTIMIZERS, run_optax
from tests.optim.reference import assert_moved_alike, random_problem, run_core

STEPS = 120
DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-7, np.float32: 1e-5}
SHAPES = {"scalar": (), "vector": (7,), "matrix": (4, 5), "cube": (2, 3, 4)}

CASES = [
    ("yogi", {}),
    ("yogi", {"lr": 0.05, "b1": 0.5, "eps": 1e-2, "maximize": True}),
    ("lamb", {}),
    ("lamb", {"weight_decay": 0.1, "eps_root": 1e-8, "b1": 0.8}),
    ("lamb", {"weight_decay": 0.1, "mask": False}),
    ("lars", {"lr": 0.1}),
    ("lars", {"lr": 0.1, "weight_decay": 0.1, "nesterov": True, "eps": 1e-3}),
    ("lars", {"lr": 0.1, "weight_decay": 0.1, "trust_ratio_mask": False, "momentum": 0.0}),
    ("lars", {"lr": 0.1, "weight_decay": 0.1, "weight_decay_mask": False, "maximize": True}),
    ("adabelief", {}),
    ("adabelief", {"nesterov": True, "eps": 1e-8, "b1": 0.8}),
    ("novograd", {}),
    ("novograd", {"weight_decay": 0.1, "eps_root": 1e-8, "b2": 0.5}),
    ("adan", {}),
    ("adan", {"weight_decay": 0.1, "b1": 0.9, "mask": True, "maximize": True}),
]


def _case_id(case):
    kind, fields = case
    return kind + "".join(f"-{k}={v}" for k, v in fields.items())


def test_every_optax_type_has_cases():
    assert {kind for kind, _ in CASES} == set(OPTAX_OPTIMIZERS)


@pytest.mark.parametrize("kind", sorted(OPTAX_OPTIMIZERS))
def test_fields_and_defaults_are_the_aliass(kind):
    """optax's keyword arguments and defaults, `learning_rate` as `lr` (optax has no default
    for it) and `maximize` added; masks are booleans."""
    signature = inspect.signature(OPTAX_OPTIMIZERS[kind]).parameters
    ours = optimizer_defaults(kind)
    assert set(ours) - {"lr", "maximize"} == set(signature) - {"learning_rate"}
    for name, value in ours.items():
        if name in ("lr", "maximize"):
            continue
        assert value == signature[name].default, name


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_optax(case, dtype):
    kind, fields = case
    params, grads = random_problem(7, dtype, STEPS, SHAPES)
    theirs = run_optax(kind, fields, params, grads)
    ours = run_core({"optimizer": {"type": kind, **fields}}, params, grads)
    assert_moved_alike(ours, theirs, params, RTOL[dtype])
