"""Clipping, norms, non-finite handling and gradient checks, against torch's own utilities."""

import numpy as np
import pytest
import torch

from app.optim import GradientMismatch, NonFiniteGradient, Optimizer
from tests.optim.reference import (
    TORCH_OPTIMIZERS,
    assert_close,
    random_problem,
    torch_default_dtype,
    torch_kwargs,
)

DTYPES = [np.float64, np.float32]


def _run_clipped(kind, fields, clip_value, clip_norm, dtype):
    """θ from torch (clip_grad_value_, then clip_grad_norm_, then step) and from the core."""
    params, grads = random_problem(2, dtype, 200)
    grads = [{n: 3 * g for n, g in step.items()} for step in grads]  # norms around 3·sqrt(31)
    tensors = {n: torch.tensor(v.copy(), requires_grad=True) for n, v in params.items()}
    config = {"optimizer": {"type": kind, **fields}}
    if clip_value is not None:
        config["clip_grad_value"] = clip_value
    if clip_norm is not None:
        config["clip_grad_norm"] = clip_norm
    optimizer = Optimizer(config, list(params))
    theta = {n: v.copy() for n, v in params.items()}
    state = optimizer.init(theta)
    with torch_default_dtype(dtype):
        reference = TORCH_OPTIMIZERS[kind](list(tensors.values()), **torch_kwargs(kind, fields))
        for step in grads:
            for name, tensor in tensors.items():
                tensor.grad = torch.tensor(step[name].copy())
            if clip_value is not None:
                torch.nn.utils.clip_grad_value_(list(tensors.values()), clip_value)
            total = torch.nn.utils.clip_grad_norm_(list(tensors.values()), clip_norm or np.inf)
            reference.step()
            result = optimizer.step(theta, state, {n: g.copy() for n, g in step.items()})
            if clip_value is None:
                assert result.grad_norm == pytest.approx(float(total), rel=1e-6)
    return theta, {n: t.detach().numpy() for n, t in tensors.items()}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize(
    ("clip_value", "clip_norm"), [(None, 1.0), (0.5, None), (0.5, 1.0), (None, 1e6)]
)
@pytest.mark.parametrize(("kind", "fields"), [("sgd", {"lr": 0.1, "momentum": 0.9}), ("adam", {})])
def test_clipping_matches_torch_utilities(kind, fields, clip_value, clip_norm, dtype):
    ours, theirs = _run_clipped(kind, fields, clip_value, clip_norm, dtype)
    assert_close(ours, theirs, dtype)


def test_grad_norm_is_before_clipping():
    optimizer = Optimizer(
        {"optimizer": {"type": "sgd", "lr": 1.0}, "clip_grad_value": 1.0, "clip_grad_norm": 1.0},
        ["a", "b"],
    )
    params = {"a": np.zeros(2), "b": np.zeros(())}
    state = optimizer.init(params)
    result = optimizer.step(params, state, {"a": np.array([3.0, -4.0]), "b": np.array(12.0)})
    assert result.grad_norm == pytest.approx(13.0)
    # value clipping leaves (1, −1, 1), norm sqrt(3); norm clipping scales it to ~1
    clipped = np.array([1.0, -1.0, 1.0]) / (np.sqrt(3) + 1e-6)
    np.testing.assert_allclose(np.append(params["a"], params["b"]), -clipped)
    assert result.update_norm == pytest.approx(np.linalg.norm(clipped))


def test_norm_of_huge_float32_gradient_is_finite():
    """Σg² overflows float32 here although every value is finite: it is summed in float64."""
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 0.0}}, ["w"])
    params = {"w": np.zeros(4, np.float32)}
    state = optimizer.init(params)
    result = optimizer.step(params, state, {"w": np.full(4, 1e30, np.float32)})
    assert not result.skipped
    assert result.grad_norm == pytest.approx(2e30, rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_reject_names_the_first_bad_tensor_in_parameter_order(bad):
    optimizer = Optimizer({"optimizer": {"type": "sgd"}}, ["a", "b", "c"])
    params = {"a": np.ones(2), "b": np.ones(2), "c": np.ones(2)}
    state = optimizer.init(params)
    grads = {"c": np.array([bad, 0.0]), "b": np.array([0.0, bad]), "a": np.ones(2)}
    with pytest.raises(NonFiniteGradient) as raised:
        optimizer.step(params, state, grads)
    assert raised.value.tensor == "b"
    assert raised.value.extras == {"tensor": "b"}


def test_float64_gradient_overflowing_float32_is_nonfinite():
    """Gradients are cast to the session dtype first; what overflows there is non-finite."""
    optimizer = Optimizer({"optimizer": {"type": "sgd"}}, ["w"])
    params = {"w": np.ones(2, np.float32)}
    state = optimizer.init(params)
    with pytest.raises(NonFiniteGradient):
        optimizer.step(params, state, {"w": np.array([1e300, 0.0])})


def test_skip_leaves_everything_and_later_steps_continue():
    optimizer = Optimizer({"optimizer": {"type": "adam", "lr": 0.1}, "nonfinite": "skip"}, ["w"])
    params = {"w": np.ones(3)}
    state = optimizer.init(params)
    optimizer.step(params, state, {"w": np.ones(3)})
    before = {k: v.copy() for k, v in state.slots["w"].items()}
    theta = params["w"].copy()
    result = optimizer.step(params, state, {"w": np.array([1.0, np.nan, 1.0])}, loss=1.0)
    assert result.skipped and result.lr == 0.1
    assert state.step == 1
    np.testing.assert_array_equal(params["w"], theta)
    for slot, value in before.items():
        np.testing.assert_array_equal(state.slots["w"][slot], value)
    assert not optimizer.step(params, state, {"w": np.ones(3)}).skipped
    assert state.step == 2


@pytest.mark.parametrize(
    ("grads", "partial", "tensor", "expected", "got"),
    [
        ({"w": np.ones(3)}, False, "b", (2,), None),
        ({"w": np.ones(3), "b": np.ones(2), "z": np.ones(1)}, False, "z", None, (1,)),
        ({"w": np.ones((3, 1)), "b": np.ones(2)}, False, "w", (3,), (3, 1)),
        ({"w": np.ones(4)}, True, "w", (3,), (4,)),
        ({"w": np.array(["a", "b", "c"]), "b": np.ones(2)}, False, "w", (3,), (3,)),
    ],
)
def test_gradient_mismatch_says_which_and_how(grads, partial, tensor, expected, got):
    optimizer = Optimizer({"optimizer": {"type": "adam"}}, ["w", "b"])
    params = {"w": np.ones(3), "b": np.ones(2)}
    state = optimizer.init(params)
    with pytest.raises(GradientMismatch) as raised:
        optimizer.step(params, state, grads, partial=partial)
    error = raised.value
    assert (error.tensor, error.expected_shape, error.got_shape) == (tensor, expected, got)
    assert tensor in error.detail
    assert state.step == 0
    np.testing.assert_array_equal(params["w"], np.ones(3))


def test_gradients_are_cast_to_the_session_dtype():
    optimizer = Optimizer({"optimizer": {"type": "adam"}}, ["w"])
    params = {"w": np.ones(3, np.float32)}
    state = optimizer.init(params)
    optimizer.step(params, state, {"w": np.array([1, 2, 3])})  # int64 in
    assert params["w"].dtype == np.float32
    assert all(a.dtype == np.float32 for k, a in state.slots["w"].items() if k != "step")


def test_read_only_gradients_are_not_written():
    optimizer = Optimizer({"optimizer": {"type": "sgd", "weight_decay": 0.1}}, ["w"])
    params = {"w": np.ones(3)}
    state = optimizer.init(params)
    grad = np.frombuffer(np.ones(3).tobytes(), np.float64)
    optimizer.step(params, state, {"w": grad})
    np.testing.assert_array_equal(grad, np.ones(3))


def test_a_gradient_that_is_theta_itself_does_not_corrupt_theta():
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 0.5, "maximize": True}}, ["w"])
    params = {"w": np.array([1.0, -2.0])}
    state = optimizer.init(params)
    optimizer.step(params, state, {"w": params["w"]})
    np.testing.assert_allclose(params["w"], [1.5, -3.0])
