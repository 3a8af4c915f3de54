"""Sparse row gradients in the core: coalescing, what a step changes and reports, norms,
clipping and the non-finite policy over rows, and every bad input refused before anything
changes (the parity with torch's sparse COO gradients is in test_more_torch.py)."""

import numpy as np
import pytest

from app.optim import (
    GradientMismatch,
    NonFiniteGradient,
    Optimizer,
    SparseRows,
    UnsupportedTensor,
    coalesce_rows,
)


def session(kind="sparse_adam", dtype=np.float64, **fields):
    rng = np.random.default_rng(0)
    params = {
        "table": rng.standard_normal((6, 3)).astype(dtype),
        "bias": rng.standard_normal(3).astype(dtype),
    }
    optimizer = Optimizer({"optimizer": {"type": kind, **fields}}, list(params))
    return optimizer, params, optimizer.init(params)


def snapshot(params, state):
    return (
        {n: v.copy() for n, v in params.items()},
        {n: {k: v.copy() for k, v in s.items()} for n, s in state.slots.items()},
        state.step,
    )


def assert_unchanged(params, state, before):
    theta, slots, step = before
    assert state.step == step
    for name in params:
        np.testing.assert_array_equal(params[name], theta[name])
        assert state.slots[name].keys() == slots[name].keys()
        for slot, value in slots[name].items():
            np.testing.assert_array_equal(state.slots[name][slot], value)


def test_coalescing_sums_repeated_rows_in_the_order_given_and_sorts():
    rows = np.array([4, 1, 4, 4, 0])
    values = np.array([[1.0], [2.0], [1e16], [-1e16], [5.0]])
    merged = coalesce_rows(rows, values)
    np.testing.assert_array_equal(merged.rows, [0, 1, 4])
    # ((1 + 1e16) − 1e16) = 0 in float64: a left fold in the given order, as torch's small sums
    np.testing.assert_array_equal(merged.values, [[5.0], [2.0], [0.0]])


def test_a_step_changes_only_the_rows_given_and_reports_them():
    optimizer, params, state = session()
    before = snapshot(params, state)
    grads = {
        "table": SparseRows(np.array([4, 1, 4]), np.ones((3, 3))),
        "bias": np.ones(3),
    }
    result = optimizer.step(params, state, grads)
    np.testing.assert_array_equal(result.changed_rows["table"], [1, 4])
    assert "bias" not in result.changed_rows
    untouched = [0, 2, 3, 5]
    theta, slots, _ = before
    np.testing.assert_array_equal(params["table"][untouched], theta["table"][untouched])
    for slot in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(
            state.slots["table"][slot][untouched], slots["table"][slot][untouched]
        )
        assert np.all(state.slots["table"][slot][[1, 4]] != 0)
    assert not np.array_equal(params["table"][[1, 4]], theta["table"][[1, 4]])
    assert int(state.slots["table"]["step"]) == 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("kind", "fields"),
    [("sgd", {"lr": 0.1}), ("adagrad", {"lr": 0.1}), ("sparse_adam", {"lr": 0.1})],
)
def test_rows_step_as_the_dense_tensor_of_those_rows_would(kind, fields, dtype):
    """The chain over the gathered rows is the chain over a tensor of those rows: repeated
    rows summed, the rest untouched."""
    rng = np.random.default_rng(1)
    table = rng.standard_normal((8, 2, 2)).astype(dtype)
    rows = np.array([6, 2, 6, 0])
    values = rng.standard_normal((4, 2, 2)).astype(dtype)
    optimizer = Optimizer({"optimizer": {"type": kind, **fields}}, ["t"])
    theta = {"t": table.copy()}
    state = optimizer.init(theta)
    optimizer.step(theta, state, {"t": SparseRows(rows, values)})

    touched = np.array([0, 2, 6])
    summed = np.stack([values[3], values[1], values[0] + values[2]])
    dense = Optimizer({"optimizer": {"type": kind, **fields}}, ["t"])
    block = {"t": table[touched].copy()}
    dense.step(block, dense.init(block), {"t": summed})
    np.testing.assert_array_equal(theta["t"][touched], block["t"])
    rest = np.setdiff1d(np.arange(8), touched)
    np.testing.assert_array_equal(theta["t"][rest], table[rest])


def test_norms_and_clipping_see_the_gradient_the_rows_stand_for():
    """grad_norm is the dense gradient's (repeats summed first); clipping by norm and by value
    acts on it as on that dense gradient (torch's utilities refuse sparse gradients)."""
    rows = np.array([2, 2, 5])
    values = np.array([[3.0, 0.0], [0.0, 4.0], [12.0, -100.0]])
    dense = np.zeros((7, 2))
    np.add.at(dense, rows, values)
    outcomes = []
    for grad in (SparseRows(rows, values.copy()), dense.copy()):
        optimizer = Optimizer(
            {
                "optimizer": {"type": "sgd", "lr": 1.0},
                "clip_grad_value": 50.0,
                "clip_grad_norm": 5.0,
            },
            ["t"],
        )
        theta = {"t": np.zeros((7, 2))}
        result = optimizer.step(theta, optimizer.init(theta), {"t": grad})
        outcomes.append((result.grad_norm, result.update_norm, theta["t"]))
    (norm_rows, update_rows, theta_rows), (norm_dense, update_dense, theta_dense) = outcomes
    assert norm_rows == pytest.approx(np.linalg.norm(dense))
    assert norm_rows == pytest.approx(norm_dense)
    assert update_rows == pytest.approx(update_dense)
    np.testing.assert_allclose(theta_rows, theta_dense, rtol=1e-15)


@pytest.mark.parametrize(
    "empty",
    [SparseRows(np.zeros(0, np.int64), np.zeros((0, 3))), SparseRows([], [])],
    ids=["arrays", "empty lists"],
)
def test_an_empty_list_of_rows_counts_a_step_and_moves_nothing(empty):
    """torch's SparseAdam counts a step whose sparse gradient is empty, and skips the update."""
    optimizer, params, state = session()
    before = snapshot(params, state)
    result = optimizer.step(params, state, {"table": empty, "bias": np.zeros(3)})
    np.testing.assert_array_equal(params["table"], before[0]["table"])
    assert int(state.slots["table"]["step"]) == 1
    assert result.changed_rows["table"].size == 0


@pytest.mark.parametrize("policy", ["reject", "skip"])
def test_nonfinite_values_follow_the_policy(policy):
    optimizer = Optimizer({"optimizer": {"type": "sparse_adam"}, "nonfinite": policy}, ["t"])
    params = {"t": np.ones((4, 2))}
    state = optimizer.init(params)
    before = snapshot(params, state)
    grads = {"t": SparseRows(np.array([1, 3]), np.array([[0.0, 1.0], [np.inf, 0.0]]))}
    if policy == "reject":
        with pytest.raises(NonFiniteGradient) as raised:
            optimizer.step(params, state, grads)
        assert raised.value.tensor == "t"
    else:
        assert optimizer.step(params, state, grads).skipped
    assert_unchanged(params, state, before)


BAD_ROWS = [
    (
        "negative row",
        {"table": SparseRows(np.array([0, -1]), np.ones((2, 3)))},
        GradientMismatch,
        "row -1",
    ),
    (
        "row out of range",
        {"table": SparseRows(np.array([6]), np.ones((1, 3)))},
        GradientMismatch,
        "row 6",
    ),
    (
        "values of the wrong shape",
        {"table": SparseRows(np.array([0, 1]), np.ones((2, 4)))},
        GradientMismatch,
        "shape",
    ),
    (
        "one value too few",
        {"table": SparseRows(np.array([0, 1, 2]), np.ones((2, 3)))},
        GradientMismatch,
        "shape",
    ),
    (
        "rows that are not integers",
        {"table": SparseRows(np.array([0.0, 1.0]), np.ones((2, 3)))},
        GradientMismatch,
        "integers",
    ),
    (
        "rows of a matrix of rows",
        {"table": SparseRows(np.array([[0, 1]]), np.ones((2, 3)))},
        GradientMismatch,
        "integers",
    ),
    (
        "values that are not numbers",
        {"table": SparseRows(np.array([0]), np.array([["a", "b", "c"]]))},
        GradientMismatch,
        "real numbers",
    ),
    (
        "rows for a 1-d tensor",
        {"bias": SparseRows(np.array([0]), np.ones(1))},
        GradientMismatch,
        "2 or more dimensions",
    ),
]


@pytest.mark.parametrize(
    ("grads", "error", "words"),
    [case[1:] for case in BAD_ROWS],
    ids=[case[0] for case in BAD_ROWS],
)
def test_bad_rows_name_the_tensor_and_change_nothing(grads, error, words):
    optimizer, params, state = session()
    optimizer.step(params, state, {"table": np.ones((6, 3)), "bias": np.ones(3)})
    before = snapshot(params, state)
    full = {"table": np.ones((6, 3)), "bias": np.ones(3), **grads}
    with pytest.raises(error, match=words) as raised:
        optimizer.step(params, state, full)
    assert raised.value.tensor == next(iter(grads))
    assert raised.value.extras["tensor"] == next(iter(grads))
    assert_unchanged(params, state, before)


def test_rows_for_a_scalar_tensor_are_refused():
    optimizer = Optimizer({"optimizer": {"type": "sgd"}}, ["s"])
    params = {"s": np.ones(())}
    state = optimizer.init(params)
    with pytest.raises(GradientMismatch, match="2 or more dimensions") as raised:
        optimizer.step(params, state, {"s": SparseRows(np.array([0]), np.ones(1))})
    assert raised.value.tensor == "s"


REFUSING = [
    ({"type": "adam"}, "adam takes dense gradients only"),
    ({"type": "muon"}, "muon takes dense gradients only"),
    ({"type": "sgd", "momentum": 0.9}, "momentum"),
    ({"type": "sgd", "weight_decay": 0.1}, "weight_decay"),
    ({"type": "adagrad", "weight_decay": 0.1}, "weight_decay"),
]


@pytest.mark.parametrize(
    ("spec", "words"), REFUSING, ids=[s["type"] + str(len(s)) for s, _ in REFUSING]
)
def test_types_without_sparse_support_refuse_rows_naming_the_tensor(spec, words):
    """torch's sparse support: SparseAdam, Adagrad without weight decay, SGD without momentum
    (and here without weight decay, which would move every row). Nothing changes."""
    optimizer = Optimizer(
        {"optimizer": {"type": "sgd"}, "groups": [{"match": ["table"], "optimizer": spec}]},
        ["table", "other"],
    )
    params = {"table": np.ones((6, 3)), "other": np.ones((2, 2))}
    state = optimizer.init(params)
    before = snapshot(params, state)
    grads = {"other": np.ones((2, 2)), "table": SparseRows(np.array([1]), np.ones((1, 3)))}
    assert not optimizer.takes_sparse_rows("table")
    with pytest.raises(UnsupportedTensor, match=words) as raised:
        optimizer.step(params, state, grads)
    assert raised.value.tensor == "table"
    assert raised.value.extras == {"tensor": "table", "field": "groups.0.optimizer.type"}
    assert_unchanged(params, state, before)


@pytest.mark.parametrize(
    "spec", [{"type": "sparse_adam"}, {"type": "adagrad"}, {"type": "sgd", "lr": 0.5}]
)
def test_types_with_sparse_support_say_so(spec):
    assert Optimizer({"optimizer": spec}, ["t"]).takes_sparse_rows("t")


def test_partial_steps_mix_rows_and_absent_tensors():
    optimizer, params, state = session("adagrad")
    before = snapshot(params, state)
    optimizer.step(
        params, state, {"table": SparseRows(np.array([3]), np.ones((1, 3)))}, partial=True
    )
    np.testing.assert_array_equal(params["bias"], before[0]["bias"])
    assert int(state.slots["bias"]["step"]) == 0
    assert int(state.slots["table"]["step"]) == 1
