"""The lecture's forms against direct transcriptions of their recurrences, `custom` as the
named optimizers, Lion against its paper, and the lecture's story on an elongated quadratic."""

import numpy as np
import pytest

from app.optim import Optimizer
from tests.optim.reference import random_problem, run_core

STEPS = 200


def test_adagrad_mean_is_the_lecture_formula():
    """σ_t = sqrt((1/(t+1))·Σ_{k≤t} g_k²), θ_{t+1} = θ_t − η·g_t/(σ_t + eps)."""
    lr, eps = 0.1, 1e-10
    params, grads = random_problem(1, np.float64, STEPS)
    ours = run_core(
        {"optimizer": {"type": "adagrad", "lr": lr, "accumulator": "mean"}}, params, grads
    )
    for name, theta in params.items():
        theta = theta.copy()
        history = []
        for t, step in enumerate(grads):
            history.append(step[name] ** 2)
            sigma = np.sqrt(sum(history) / (t + 1))
            theta = theta - lr * step[name] / (sigma + eps)
        np.testing.assert_allclose(ours[name], theta, rtol=1e-12, atol=1e-12)


def test_rmsprop_first_grad_is_the_lecture_formula():
    """σ_0 = |g_0|, σ_t² = α·σ_{t−1}² + (1 − α)·g_t², θ_{t+1} = θ_t − η·g_t/(σ_t + eps)."""
    lr, alpha, eps = 0.01, 0.9, 1e-8
    params, grads = random_problem(2, np.float64, STEPS)
    config = {"optimizer": {"type": "rmsprop", "lr": lr, "alpha": alpha, "init": "first_grad"}}
    ours = run_core(config, params, grads)
    for name, theta in params.items():
        theta = theta.copy()
        sigma_squared = None
        for step in grads:
            g = step[name]
            sigma_squared = (
                g**2 if sigma_squared is None else alpha * sigma_squared + (1 - alpha) * g**2
            )
            theta = theta - lr * g / (np.sqrt(sigma_squared) + eps)
        np.testing.assert_allclose(ours[name], theta, rtol=1e-12, atol=1e-12)


def test_lion_is_the_paper_rule():
    """c = β1·m + (1−β1)·g, θ ← θ − η·(sign(c) + λ·θ), m ← β2·m + (1−β2)·g."""
    lr, b1, b2, wd = 1e-3, 0.9, 0.99, 0.1
    params, grads = random_problem(3, np.float64, STEPS)
    config = {"optimizer": {"type": "lion", "lr": lr, "betas": [b1, b2], "weight_decay": wd}}
    ours = run_core(config, params, grads)
    for name, theta in params.items():
        theta, m = theta.copy(), np.zeros_like(theta)
        for step in grads:
            g = step[name]
            theta = theta - lr * (np.sign(b1 * m + (1 - b1) * g) + wd * theta)
            m = b2 * m + (1 - b2) * g
        np.testing.assert_allclose(ours[name], theta, rtol=1e-12, atol=1e-12)


EQUIVALENT = [
    (
        {"type": "adam", "lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1},
        {
            "type": "custom",
            "lr": 0.01,
            "eps": 1e-6,
            "weight_decay": 0.1,
            "momentum": {"beta": 0.8, "dampening": 0.8, "bias_correction": True},
            "sigma": {"kind": "ema", "alpha": 0.99, "bias_correction": True},
        },
    ),
    (
        {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "maximize": True},
        {"type": "custom", "lr": 0.01, "maximize": True, "sigma": {"kind": "ema", "alpha": 0.9}},
    ),
    (
        {"type": "rmsprop", "lr": 0.01, "init": "first_grad"},
        {
            "type": "custom",
            "lr": 0.01,
            "sigma": {"kind": "ema", "alpha": 0.99, "init": "first_grad"},
        },
    ),
    (
        {"type": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.01},
        {"type": "custom", "lr": 0.01, "weight_decay": 0.01, "momentum": {"beta": 0.9}},
    ),
    ({"type": "sgd", "lr": 0.01}, {"type": "custom", "lr": 0.01}),
    (
        {"type": "adagrad", "lr": 0.1, "eps": 1e-8, "accumulator": "mean"},
        {"type": "custom", "lr": 0.1, "sigma": {"kind": "mean"}},
    ),
    (
        {"type": "adagrad", "lr": 0.1, "eps": 1e-8},
        {"type": "custom", "lr": 0.1, "sigma": {"kind": "sum"}},
    ),
]


@pytest.mark.parametrize(("named", "custom"), EQUIVALENT, ids=[n["type"] for n, _ in EQUIVALENT])
def test_custom_configured_as_a_named_optimizer_is_that_optimizer(named, custom):
    params, grads = random_problem(4, np.float64, STEPS)
    expected = run_core({"optimizer": named}, params, grads)
    ours = run_core({"optimizer": custom}, params, grads)
    for name in params:
        np.testing.assert_allclose(ours[name], expected[name], rtol=1e-12, atol=1e-12)


def test_custom_momentum_starts_from_zero_with_dampening():
    """custom's m_1 = (1 − dampening)·g_1 (torch's SGD would take m_1 = g_1)."""
    config = {"type": "custom", "lr": 1.0, "momentum": {"beta": 0.5, "dampening": 0.5}}
    ours = run_core({"optimizer": config}, {"w": np.zeros(2)}, [{"w": np.array([2.0, -4.0])}])
    np.testing.assert_allclose(ours["w"], [-1.0, 2.0])


# -------------------------------------------------------------------------------------------
# The lecture's story on a 2-D elongated quadratic
# -------------------------------------------------------------------------------------------
#
# E(x, y) = ½·(100·x² + y²): x is the steep direction, y the flat one; the minimum is (0, 0).
STEEP, FLAT = 100.0, 1.0
START = (1.0, 1.0)
NEAR = 0.05  # "the neighbourhood of the minimum"


def descend(optimizer, schedule=None, steps=2000):
    """The trajectory θ_0 … θ_steps and the gradient norms on E."""
    engine = Optimizer({"optimizer": optimizer, "schedule": schedule}, ["theta"])
    params = {"theta": np.array(START)}
    state = engine.init(params)
    path, grad_norms = [params["theta"].copy()], []
    for _ in range(steps):
        grad = np.array([STEEP, FLAT]) * params["theta"]
        grad_norms.append(float(np.linalg.norm(grad)))
        engine.step(params, state, {"theta": grad})
        path.append(params["theta"].copy())
    return np.array(path), np.array(grad_norms)


def loss(path):
    return 0.5 * (STEEP * path[:, 0] ** 2 + FLAT * path[:, 1] ** 2)


def first_arrival(path):
    """The first step within NEAR of the minimum, or None."""
    near = np.linalg.norm(path, axis=1) < NEAR
    return int(np.argmax(near)) if near.any() else None


GD_TOO_LARGE = {"type": "sgd", "lr": 2.0 / STEEP}  # |1 − η·100| = 1: x never settles
ADAGRAD_MEAN = {"type": "adagrad", "lr": 0.2, "accumulator": "mean"}
INVERSE_SQRT = {"type": "inverse_sqrt"}


def assert_stuck_with_large_gradient(path, grad_norms):
    """Training stuck ≠ small gradient: the loss stays at its start, the gradient large."""
    assert loss(path[-100:]).min() > 0.99 * 0.5 * STEEP  # the steep part of E never drops
    assert grad_norms[-100:].min() > 0.99 * STEEP
    assert np.all(np.sign(path[-100:-1, 0]) != np.sign(path[-99:, 0]))  # x flips every step


def assert_reaches_the_neighbourhood(path):
    assert first_arrival(path) is not None and first_arrival(path) < 100


def assert_bursts_in_the_flat_direction(path):
    """After arriving, y is thrown out again beyond where it started."""
    arrival = first_arrival(path)
    assert np.abs(path[arrival:, 1]).max() > START[1]


def assert_stays_near_and_converges(path):
    arrival = first_arrival(path)
    assert np.linalg.norm(path[arrival:], axis=1).max() < NEAR
    assert np.linalg.norm(path[-1]) < 1e-6


def test_story_gradient_descent_with_too_large_a_step_is_stuck_with_a_large_gradient():
    path, grad_norms = descend(GD_TOO_LARGE)
    assert_stuck_with_large_gradient(path, grad_norms)
    assert abs(path[-1, 1]) < 1e-6  # meanwhile the flat direction has converged
    assert first_arrival(path) is None


def test_story_adagrad_reaches_the_neighbourhood():
    path, _ = descend(ADAGRAD_MEAN)
    assert_reaches_the_neighbourhood(path)


def test_story_adagrad_with_a_constant_rate_bursts_once_sigma_has_shrunk():
    """σ_t² = mean of g² shrinks like 1/t once the gradients are small, so η/σ_t grows until
    the flat direction is unstable and y bursts out."""
    path, _ = descend(ADAGRAD_MEAN)
    assert_bursts_in_the_flat_direction(path)


def test_story_inverse_sqrt_decay_removes_the_bursts():
    path, _ = descend(ADAGRAD_MEAN, INVERSE_SQRT)
    assert_reaches_the_neighbourhood(path)
    assert_stays_near_and_converges(path)


@pytest.mark.parametrize(
    ("check", "optimizer", "schedule"),
    [
        (assert_stuck_with_large_gradient, ADAGRAD_MEAN, INVERSE_SQRT),
        (assert_reaches_the_neighbourhood, GD_TOO_LARGE, None),
        (assert_bursts_in_the_flat_direction, ADAGRAD_MEAN, INVERSE_SQRT),
        (assert_bursts_in_the_flat_direction, {"type": "adagrad", "lr": 0.2}, None),
        (assert_stays_near_and_converges, ADAGRAD_MEAN, None),
    ],
)
def test_story_checks_fail_without_the_behaviour(check, optimizer, schedule):
    """Each assertion of the story, given an optimizer without the behaviour, fails."""
    path, grad_norms = descend(optimizer, schedule)
    with pytest.raises(AssertionError):
        if check is assert_stuck_with_large_gradient:
            check(path, grad_norms)
        else:
            check(path)
