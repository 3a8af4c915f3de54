"""The rest of torch.optim 2.13 — Adafactor, Muon, Rprop, ASGD, SparseAdam — against torch
itself: 120 random steps over several shapes, the displacement θ − θ₀ within 1e-9 (float64) and
1e-5 (float32) of torch's; a run continued in torch from the core's slots (50 + 50 = 100);
schedules; Muon beside AdamW in groups; ASGD's average as the weights to evaluate."""

import numpy as np
import pytest
import torch

from app.optim import Optimizer, SparseRows, optimizer_defaults
from tests.optim.reference import (
    MORE_TORCH_OPTIMIZERS,
    assert_moved_alike,
    muon_in_input_dtype,
    random_problem,
    run_core,
    run_torch,
    torch_class,
    torch_default_dtype,
    torch_gradient,
    torch_kwargs,
)

STEPS = 120
DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-9, np.float32: 1e-5}
SHAPES = {"scalar": (), "vector": (7,), "matrix": (4, 5), "cube": (2, 3, 4)}
MATRICES = {"wide": (4, 6), "tall": (7, 3), "square": (5, 5)}
TABLES = {"embedding": (10, 3), "blocks": (6, 2, 2)}

CASES = [
    ("adafactor", {}, SHAPES),
    ("adafactor", {"lr": 0.05, "weight_decay": 0.1, "beta2_decay": -0.5, "d": 2.0}, SHAPES),
    ("adafactor", {"eps": [1e-30, 1e-2], "maximize": True}, SHAPES),
    ("muon", {}, MATRICES),
    ("muon", {"lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"}, MATRICES),
    ("muon", {"lr": 0.02, "adjust_lr_fn": "original", "ns_steps": 3, "momentum": 0.5}, MATRICES),
    ("rprop", {}, SHAPES),
    ("rprop", {"lr": 0.1, "etas": [0.3, 1.5], "step_sizes": [1e-3, 0.2], "maximize": True}, SHAPES),
    ("asgd", {}, SHAPES),
    ("asgd", {"lr": 0.05, "t0": 20, "lambd": 0.01, "alpha": 0.5, "weight_decay": 0.1}, SHAPES),
    ("asgd", {"lr": 0.05, "t0": 0, "maximize": True}, SHAPES),
]


def _case_id(case):
    kind, fields, _ = case
    return kind + "".join(f"-{k}={v}" for k, v in fields.items())


def sparse_problem(seed, dtype, steps, shapes=TABLES, max_rows=8):
    """Random tables and `steps` sparse row gradients (repeats included, sometimes none)."""
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    grads = []
    for _ in range(steps):
        step = {}
        for name, value in params.items():
            count = int(rng.integers(0, max_rows))
            rows = rng.integers(0, value.shape[0], count)
            values = rng.standard_normal((count, *value.shape[1:])).astype(dtype)
            step[name] = SparseRows(rows, values)
        grads.append(step)
    return params, grads


def test_every_new_torch_type_has_cases():
    covered = {kind for kind, _, _ in CASES} | {kind for kind, _ in SPARSE_CASES}
    assert covered >= set(MORE_TORCH_OPTIMIZERS)


@pytest.mark.parametrize("kind", sorted(MORE_TORCH_OPTIMIZERS))
def test_defaults_are_torchs(kind):
    """Field names and defaults are torch's (tuples as lists; Muon's `maximize` is the
    contract's, which torch's Muon lacks)."""
    with torch_default_dtype(np.float32):
        torch_defaults = torch_class(kind)([torch.zeros(2, 2, requires_grad=True)]).defaults
    for name, value in optimizer_defaults(kind).items():
        if kind == "muon" and name == "maximize":
            continue
        expected = torch_defaults[name]
        assert value == (list(expected) if isinstance(expected, tuple) else expected), name


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch(case, dtype):
    kind, fields, shapes = case
    params, grads = random_problem(7, dtype, STEPS, shapes)
    theirs = run_torch(kind, fields, params, grads)
    ours = run_core({"optimizer": {"type": kind, **fields}}, params, grads)
    assert_moved_alike(ours, theirs, params, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_muon_maximize_is_torchs_muon_on_the_negated_gradient(dtype):
    params, grads = random_problem(3, dtype, 30, MATRICES)
    theirs = run_torch("muon", {}, params, [{n: -g for n, g in s.items()} for s in grads])
    ours = run_core({"optimizer": {"type": "muon", "maximize": True}}, params, grads)
    assert_moved_alike(ours, theirs, params, RTOL[dtype])


SPARSE_CASES = [
    ("sparse_adam", {"lr": 0.01}),
    ("sparse_adam", {"lr": 0.01, "betas": [0.3, 0.4], "eps": 1e-6, "maximize": True}),
    ("adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "maximize": True}),
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "maximize": True}),
]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", SPARSE_CASES, ids=[f"{k}-{f}" for k, f in SPARSE_CASES])
def test_sparse_rows_match_torch_sparse_coo_gradients(case, dtype):
    """Sparse row gradients (repeated rows, empty steps) against torch fed the same rows as
    uncoalesced sparse COO tensors, as `nn.Embedding(sparse=True)` makes them."""
    kind, fields = case
    params, grads = sparse_problem(5, dtype, STEPS)
    theirs = run_torch(kind, fields, params, grads)
    ours = run_core({"optimizer": {"type": kind, **fields}}, params, grads)
    assert_moved_alike(ours, theirs, params, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_sparse_adam_takes_a_dense_gradient_as_every_row(dtype):
    """A vector has no rows to leave out: its dense gradient is torch's SparseAdam given every
    element as a sparse entry."""
    rng = np.random.default_rng(2)
    params = {"bias": rng.standard_normal(6).astype(dtype)}
    grads = [{"bias": rng.standard_normal(6).astype(dtype)} for _ in range(40)]
    everything = [
        {"bias": SparseRows(np.arange(6), step["bias"].copy())} for step in grads
    ]  # what torch gets: every element listed (the core refuses rows of a vector)
    theirs = run_torch("sparse_adam", {"lr": 0.01}, params, everything)
    ours = run_core({"optimizer": {"type": "sparse_adam", "lr": 0.01}}, params, grads)
    assert_moved_alike(ours, theirs, params, RTOL[dtype])


ROUND_TRIPS = [
    ("adafactor", {"lr": 0.05, "weight_decay": 0.1}, SHAPES, False),
    ("muon", {"lr": 0.02}, MATRICES, False),
    ("rprop", {"lr": 0.05}, SHAPES, False),
    ("asgd", {"lr": 0.05, "t0": 20, "lambd": 0.01}, SHAPES, False),
    ("sparse_adam", {"lr": 0.01}, TABLES, True),
]


def torch_state_of(kind, slots):
    """One tensor's core slots as torch's state for it: the same names and arrays, and `step`
    as torch keeps it (a Python int for SparseAdam, none for Muon, else a 0-d float)."""
    state = {k: torch.from_numpy(v.copy()) for k, v in slots.items() if k != "step"}
    if kind == "sparse_adam":
        state["step"] = int(slots["step"])
    elif kind != "muon":
        state["step"] = torch.tensor(float(slots["step"]), dtype=torch.get_default_dtype())
    return state


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
def test_fifty_steps_here_then_fifty_in_torch_equal_a_hundred_here(case, dtype):
    """The slots are torch's `state_dict` entries under torch's names and shapes (Adafactor's
    row and column factors included): loaded into torch, the run goes on as it would here."""
    kind, fields, shapes, sparse = case
    if sparse:
        params, grads = sparse_problem(9, dtype, 100, shapes)
    else:
        params, grads = random_problem(9, dtype, 100, shapes)
    config = {"optimizer": {"type": kind, **fields}}
    hundred = run_core(config, params, grads)

    optimizer = Optimizer(config, list(params))
    theta = {n: v.copy() for n, v in params.items()}
    state = optimizer.init(theta)
    for step in grads[:50]:
        optimizer.step(theta, state, {n: _copy(g) for n, g in step.items()})

    with torch_default_dtype(dtype), muon_in_input_dtype():
        tensors = {n: torch.tensor(v.copy(), requires_grad=True) for n, v in theta.items()}
        reference = torch_class(kind)(list(tensors.values()), **torch_kwargs(kind, fields))
        saved = reference.state_dict()
        saved["state"] = {
            i: torch_state_of(kind, state.slots[name]) for i, name in enumerate(tensors)
        }
        reference.load_state_dict(saved)
        for step in grads[50:]:
            for name, tensor in tensors.items():
                tensor.grad = torch_gradient(step[name], tensor.shape)
            reference.step()
    continued = {n: t.detach().numpy() for n, t in tensors.items()}
    assert_moved_alike(continued, hundred, params, RTOL[dtype])


def _copy(grad):
    if isinstance(grad, SparseRows):
        return SparseRows(grad.rows.copy(), grad.values.copy())
    return grad.copy()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("asgd", {"lr": 0.05, "lambd": 0.01, "t0": 10}),
        ("rprop", {"lr": 0.05}),
        ("adafactor", {"lr": 0.05, "weight_decay": 0.1}),
        ("muon", {"lr": 0.02}),
    ],
)
def test_a_schedule_moves_the_rate_as_torchs_scheduler_does(kind, fields, dtype):
    """These types use the rate in their own ways (ASGD's η from it, Rprop's first step size,
    Adafactor's ceiling and decay, Muon's adjusted rate): under ExponentialLR as in torch."""
    shapes = MATRICES if kind == "muon" else SHAPES
    params, grads = random_problem(4, dtype, 60, shapes)
    config = {
        "optimizer": {"type": kind, **fields},
        "schedule": {"type": "exponential", "gamma": 0.95},
    }
    ours = run_core(config, params, grads)
    with torch_default_dtype(dtype), muon_in_input_dtype():
        tensors = {n: torch.tensor(v.copy(), requires_grad=True) for n, v in params.items()}
        reference = torch_class(kind)(list(tensors.values()), **torch_kwargs(kind, fields))
        scheduler = torch.optim.lr_scheduler.ExponentialLR(reference, gamma=0.95)
        for step in grads:
            for name, tensor in tensors.items():
                tensor.grad = torch.tensor(step[name].copy())
            reference.step()
            scheduler.step()
    theirs = {n: t.detach().numpy() for n, t in tensors.items()}
    assert_moved_alike(ours, theirs, params, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_muon_for_matrices_and_adamw_for_the_rest_is_torchs_pair_of_optimizers(dtype):
    """A group with its own optimizer (optax's multi_transform): Muon for the 2-D weights,
    the session's AdamW for biases — torch's documented Muon + AdamW recipe."""
    shapes = {"layer.weight": (6, 4), "layer.bias": (6,), "head.weight": (3, 6), "head.bias": (3,)}
    params, grads = random_problem(12, dtype, 60, shapes)
    config = {
        "optimizer": {"type": "adamw", "lr": 3e-3, "weight_decay": 0.01},
        "groups": [{"match": ["*.weight"], "optimizer": {"type": "muon", "lr": 0.02}}],
    }
    ours = run_core(config, params, grads)
    matrices = [n for n in params if n.endswith(".weight")]
    vectors = [n for n in params if n.endswith(".bias")]
    muon = run_torch(
        "muon",
        {"lr": 0.02},
        {n: params[n] for n in matrices},
        [{n: s[n] for n in matrices} for s in grads],
    )
    adamw = run_torch(
        "adamw",
        {"lr": 3e-3, "weight_decay": 0.01},
        {n: params[n] for n in vectors},
        [{n: s[n] for n in vectors} for s in grads],
    )
    assert_moved_alike(ours, {**muon, **adamw}, params, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_asgd_weights_to_evaluate_are_torchs_average(dtype):
    """`eval_params` is torch's `ax`, averaged from step t0 on; θ itself before any step."""
    params, grads = random_problem(6, dtype, 80, SHAPES)
    fields = {"lr": 0.05, "t0": 30, "lambd": 0.001}
    optimizer = Optimizer({"optimizer": {"type": "asgd", **fields}}, list(params))
    theta = {n: v.copy() for n, v in params.items()}
    state = optimizer.init(theta)
    for name, weights in optimizer.eval_params(theta, state).items():
        np.testing.assert_array_equal(weights, params[name])
    for step in grads:
        optimizer.step(theta, state, {n: g.copy() for n, g in step.items()})
    with torch_default_dtype(dtype):
        tensors = {n: torch.tensor(v.copy(), requires_grad=True) for n, v in params.items()}
        reference = torch.optim.ASGD(list(tensors.values()), **torch_kwargs("asgd", fields))
        for step in grads:
            for name, tensor in tensors.items():
                tensor.grad = torch.tensor(step[name].copy())
            reference.step()
    averages = {n: reference.state[t]["ax"].numpy() for n, t in tensors.items()}
    evaluated = optimizer.eval_params(theta, state)
    assert_moved_alike(evaluated, averages, params, RTOL[dtype])
    assert not any(np.array_equal(evaluated[n], theta[n]) for n in ("matrix", "cube"))
