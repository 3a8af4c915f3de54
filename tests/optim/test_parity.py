"""Parity with torch.optim (torch 2.13.0, CPU): 200 random gradients over a 0-d, a vector and a
3-d tensor; float64 within relative 1e-9, float32 within 1e-5 (the contract's numbers)."""

import numpy as np
import pytest
import torch

from app.optim import OPTIMIZER_TYPES, optimizer_defaults
from app.optim.learning_rate_free import LEARNING_RATE_FREE
from tests.optim.reference import (
    CORE_ONLY_FIELDS,
    TORCH_OPTIMIZERS,
    assert_close,
    random_problem,
    run_core,
    run_torch,
    torch_default_dtype,
)

STEPS = 200
DTYPES = [np.float64, np.float32]

CASES = [
    ("sgd", {"lr": 0.01}),
    ("sgd", {"lr": 0.01, "momentum": 0.9}),
    ("sgd", {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.01, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1, "maximize": True}),
    ("adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.5}),
    ("adagrad", {"lr": 0.1, "weight_decay": 0.1, "eps": 1e-6, "maximize": True}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "centered": True}),
    ("rmsprop", {"lr": 0.01, "centered": True, "momentum": 0.9}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9, "maximize": True}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adam", {"lr": 0.01, "betas": [0.8, 0.99], "amsgrad": True, "maximize": True}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    ("adamax", {"lr": 0.01}),
    ("adamax", {"lr": 0.01, "weight_decay": 0.1, "betas": [0.5, 0.9], "maximize": True}),
    ("nadam", {"lr": 0.01}),
    ("nadam", {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 0.01}),
    ("nadam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
    ("radam", {"lr": 0.01}),
    ("radam", {"lr": 0.01, "weight_decay": 0.1}),
    ("radam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
    ("adadelta", {}),
    ("adadelta", {"lr": 0.5, "rho": 0.5, "weight_decay": 0.1, "maximize": True}),
]


def _case_id(case):
    kind, fields = case
    return kind + "".join(f"-{k}={v}" for k, v in fields.items())


def test_every_torch_type_has_cases():
    assert {kind for kind, _ in CASES} == set(TORCH_OPTIMIZERS)
    others = {"lion", "custom"} | set(LEARNING_RATE_FREE)  # tests/optim/test_learning_rate_free.py
    assert set(TORCH_OPTIMIZERS) | others <= OPTIMIZER_TYPES


@pytest.mark.parametrize("kind", sorted(TORCH_OPTIMIZERS))
def test_defaults_are_torchs(kind):
    with torch_default_dtype(np.float32):
        torch_defaults = TORCH_OPTIMIZERS[kind]([torch.zeros(1, requires_grad=True)]).defaults
    ours = {k: v for k, v in optimizer_defaults(kind).items() if k not in CORE_ONLY_FIELDS}
    for name, value in ours.items():
        expected = list(torch_defaults[name]) if name == "betas" else torch_defaults[name]
        assert value == expected, name


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch_after_200_steps(case, dtype):
    kind, fields = case
    params, grads = random_problem(7, dtype, STEPS)
    theirs = run_torch(kind, fields, params, grads)
    ours = run_core({"optimizer": {"type": kind, **fields}}, params, grads)
    assert_close(ours, theirs, dtype)
    assert not any(np.allclose(ours[n], params[n]) for n in params), "nothing moved"


PARTIAL_CASES = [
    ("sgd", {"lr": 0.01, "momentum": 0.9, "dampening": 0.3}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.05}),
    ("rmsprop", {"lr": 0.01, "centered": True, "momentum": 0.9}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("nadam", {"lr": 0.01}),
    ("radam", {"lr": 0.01}),
    ("adamax", {"lr": 0.01}),
    ("adadelta", {"lr": 0.5}),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", PARTIAL_CASES, ids=[_case_id(c) for c in PARTIAL_CASES])
def test_partial_steps_match_torch_grad_none(case, dtype):
    """A tensor left out of a step is torch's `grad is None`: neither it nor its state (its own
    step count, which bias corrections use) moves."""
    kind, fields = case
    params, grads = random_problem(11, dtype, STEPS)
    rng = np.random.default_rng(3)
    for step in grads:
        for name in step:
            if rng.random() < 0.4:
                step[name] = None
    grads[0]["cube"] = None  # a tensor whose first update comes later
    theirs = run_torch(kind, fields, params, grads)
    ours = run_core({"optimizer": {"type": kind, **fields}}, params, grads)
    assert_close(ours, theirs, dtype)


GROUP_CASES = [
    ("sgd", {"lr": 0.01, "momentum": 0.9}, {"lr": 0.1, "nesterov": True}),
    ("adam", {"lr": 0.01}, {"lr": 0.001, "weight_decay": 0.1, "amsgrad": True}),
    ("rmsprop", {"lr": 0.01}, {"alpha": 0.9, "centered": True}),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_groups_match_torch_param_groups(case, dtype):
    """`groups` are torch's param_groups: the first matching glob wins, the rest use the base."""
    kind, fields, overrides = case
    params, grads = random_problem(5, dtype, STEPS)
    theirs = run_torch(
        kind, fields, params, grads, groups=[(["cube"], overrides), (["vector"], {"lr": 0.05})]
    )
    config = {
        "optimizer": {"type": kind, **fields},
        "groups": [
            {"match": ["c*"], **overrides},
            {"match": ["cu*", "v?ctor"], "lr": 0.05},
        ],
    }
    assert_close(run_core(config, params, grads), theirs, dtype)
