"""The facade the service builds on: construction, a step, errors, state round trip."""

import numpy as np
import pytest
import torch

from app.optim import (
    GradientMismatch,
    HyperParameterError,
    NonFiniteGradient,
    Optimizer,
    OptimizerState,
)
from tests.optim.reference import assert_close, random_problem, run_core, run_torch

DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("sgd", {"lr": 0.05, "momentum": 0.9}),
        ("adam", {"lr": 0.01}),
    ],
)
def test_facade_matches_torch(kind, fields, dtype):
    params, grads = random_problem(0, dtype, steps=50)
    theirs = run_torch(kind, fields, params, grads)
    ours = run_core({"optimizer": {"type": kind, **fields}}, params, grads)
    assert_close(ours, theirs, dtype)


def test_step_reports_and_advances():
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 0.5}}, ["w"])
    params = {"w": np.array([1.0, 2.0])}
    state = optimizer.init(params)
    result = optimizer.step(params, state, {"w": np.array([3.0, 4.0])})
    assert not result.skipped
    assert result.lr == 0.5
    assert result.grad_norm == pytest.approx(5.0)
    assert result.update_norm == pytest.approx(2.5)
    np.testing.assert_allclose(params["w"], [-0.5, 0.0])
    assert state.step == 1
    assert int(state.slots["w"]["step"]) == 1


def test_nonfinite_reject_names_tensor_and_changes_nothing():
    optimizer = Optimizer({"optimizer": {"type": "adam"}}, ["a", "b"])
    params = {"a": np.ones(3), "b": np.ones(2)}
    state = optimizer.init(params)
    with pytest.raises(NonFiniteGradient) as raised:
        optimizer.step(params, state, {"a": np.ones(3), "b": np.array([1.0, np.nan])})
    assert raised.value.tensor == "b"
    assert state.step == 0
    np.testing.assert_array_equal(params["a"], np.ones(3))
    np.testing.assert_array_equal(state.slots["a"]["exp_avg"], np.zeros(3))


def test_nonfinite_skip_changes_nothing():
    optimizer = Optimizer({"optimizer": {"type": "adam"}, "nonfinite": "skip"}, ["a"])
    params = {"a": np.ones(3)}
    state = optimizer.init(params)
    result = optimizer.step(params, state, {"a": np.array([np.inf, 0.0, 1.0])})
    assert result.skipped and result.grad_norm is None and result.update_norm == 0.0
    assert state.step == 0 and int(state.slots["a"]["step"]) == 0
    np.testing.assert_array_equal(params["a"], np.ones(3))


def test_gradient_shape_mismatch_is_named():
    optimizer = Optimizer({"optimizer": {"type": "sgd"}}, ["w"])
    params = {"w": np.ones((2, 2))}
    state = optimizer.init(params)
    with pytest.raises(GradientMismatch) as raised:
        optimizer.step(params, state, {"w": np.ones(3)})
    assert raised.value.tensor == "w"
    assert raised.value.expected_shape == (2, 2)
    assert raised.value.got_shape == (3,)
    assert raised.value.extras == {"tensor": "w", "expected_shape": [2, 2], "got_shape": [3]}


def test_clip_grad_norm_scales_like_torch_rule():
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 1.0}, "clip_grad_norm": 1.0}, ["w"])
    params = {"w": np.zeros(2)}
    state = optimizer.init(params)
    result = optimizer.step(params, state, {"w": np.array([3.0, 4.0])})
    assert result.grad_norm == pytest.approx(5.0)
    np.testing.assert_allclose(params["w"], -np.array([3.0, 4.0]) * (1.0 / (5.0 + 1e-6)))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"optimizer": {"type": "adam", "betas": [0.9, 1.0]}}, "optimizer.betas"),
        ({"optimizer": {"type": "adam", "lr": -1}}, "optimizer.lr"),
        ({"optimizer": {"type": "adam", "bogus": 1}}, "optimizer.bogus"),
        ({"optimizer": {"type": "nope"}}, "optimizer.type"),
        ({"optimizer": {"type": "sgd"}, "schedule": {"type": "constant", "x": 1}}, "schedule.x"),
        ({"optimizer": {"type": "sgd"}, "clip_grad_norm": 0}, "clip_grad_norm"),
        ({"optimizer": {"type": "sgd"}, "nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_invalid_config_names_field(config, field):
    with pytest.raises(HyperParameterError) as raised:
        Optimizer(config, ["w"])
    assert raised.value.field == field
    assert raised.value.extras["field"] == field


def test_state_round_trip_through_arrays():
    optimizer = Optimizer({"optimizer": {"type": "adam"}}, ["w", "x/y"])
    params = {"w": np.ones(3, np.float32), "x/y": np.zeros((2, 2), np.float32)}
    state = optimizer.init(params)
    optimizer.step(params, state, {"w": np.ones(3, np.float32), "x/y": np.ones((2, 2), np.float32)})
    arrays = state.to_arrays()
    assert "exp_avg/x/y" in arrays
    copy = OptimizerState.from_arrays(state.step, arrays, state.schedule)
    assert copy.step == state.step and copy.schedule == state.schedule
    assert copy.slots.keys() == state.slots.keys()
    for tensor, slots in state.slots.items():
        for slot, array in slots.items():
            np.testing.assert_array_equal(copy.slots[tensor][slot], array)
            assert copy.slots[tensor][slot].dtype == array.dtype


def test_changed_configuration_keeps_state_and_starts_new_slots_like_torch():
    """PATCH mid-run: momentum switched on for SGD starts its buffer as torch does (with
    dampening 0, torch's first-step copy and a fresh zero buffer agree)."""
    params, grads = random_problem(8, np.float64, 40)
    tensors = {n: torch.tensor(v.copy(), requires_grad=True) for n, v in params.items()}
    reference = torch.optim.SGD(list(tensors.values()), lr=0.05)
    theta = {n: v.copy() for n, v in params.items()}
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 0.05}}, list(params))
    state = optimizer.init(theta)
    for t, step in enumerate(grads):
        if t == 20:
            reference.param_groups[0]["momentum"] = 0.9
            optimizer = Optimizer(
                {"optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9}}, list(params)
            )
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(step[name].copy())
        reference.step()
        optimizer.step(theta, state, {n: g.copy() for n, g in step.items()})
    assert_close(theta, {n: t.detach().numpy() for n, t in tensors.items()}, np.float64)
    assert "momentum_buffer" in state.slots["vector"]


def test_group_hyperparameters_have_defaults_filled_in():
    optimizer = Optimizer(
        {"optimizer": {"type": "adam"}, "groups": [{"match": ["enc.*"], "lr": 1e-4}]},
        ["enc.w", "dec.w"],
    )
    assert optimizer.group_of["dec.w"] is optimizer.base_group
    encoder = optimizer.group_of["enc.w"].hyperparameters
    assert encoder == {**optimizer.base_group.hyperparameters, "lr": 1e-4}
    assert optimizer.base_group.hyperparameters["betas"] == [0.9, 0.999]
    assert optimizer.base_group.hyperparameters["type"] == "adam"


def test_init_wants_float_parameters_with_the_named_tensors():
    optimizer = Optimizer({"optimizer": {"type": "sgd"}}, ["w"])
    with pytest.raises(ValueError, match="float32 or float64"):
        optimizer.init({"w": np.ones(2, np.int64)})
    with pytest.raises(ValueError, match="tensors"):
        optimizer.init({"v": np.ones(2)})


def test_lr_is_the_rate_of_the_next_step():
    optimizer = Optimizer(
        {
            "optimizer": {"type": "sgd", "lr": 1.0},
            "schedule": {"type": "exponential", "gamma": 0.5},
        },
        ["w"],
    )
    params = {"w": np.zeros(1)}
    state = optimizer.init(params)
    assert optimizer.lr(state) == 1.0
    assert optimizer.step(params, state, {"w": np.ones(1)}).lr == 1.0
    assert optimizer.lr(state) == 0.5
    np.testing.assert_allclose(params["w"], [-1.0])


def test_read_only_parameters_are_refused_before_anything_changes():
    optimizer = Optimizer({"optimizer": {"type": "adam"}}, ["a", "b"])
    params = {"a": np.ones(2), "b": np.frombuffer(np.ones(2).tobytes())}
    state = optimizer.init(params)
    with pytest.raises(ValueError, match="read-only"):
        optimizer.step(params, state, {"a": np.ones(2), "b": np.ones(2)})
    np.testing.assert_array_equal(params["a"], np.ones(2))
    assert state.step == 0 and int(state.slots["a"]["step"]) == 0
