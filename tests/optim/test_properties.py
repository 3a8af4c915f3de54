"""Invariants, checked on generated inputs (hypothesis)."""

import contextlib
import glob

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.optim import (
    OPTIMIZER_TYPES,
    Optimizer,
    OptimizerState,
    engine,
    get_num_threads,
    optimizer_fields,
    schedule_lrs,
    set_num_threads,
)
from app.optim.optimizers import build_optimizer
from app.optim.schedules import ABSOLUTE_SCHEDULE_TYPES
from tests.optim.reference import chains_only

FAST = settings(max_examples=40, deadline=None)

dtypes = st.sampled_from([np.float32, np.float64])
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
names = st.text(min_size=1, max_size=8)  # "/" and unicode included


def arrays(dtype, shape):
    return hnp.arrays(dtype, shape, elements=st.floats(-10, 10, width=32))


@st.composite
def sessions(draw, min_tensors=1):
    """(dtype, {name: θ}) with a few tensors of assorted shapes."""
    dtype = draw(dtypes)
    tensor_names = draw(st.lists(names, min_size=min_tensors, max_size=3, unique=True))
    return dtype, {name: draw(arrays(dtype, draw(shapes))) for name in tensor_names}


def no_decay(kind):
    """Each type with weight decay off (AdamW's and Muon's defaults are not 0, nor ASGD's own
    decay λ) and a lit-up custom."""
    if kind == "custom":
        return {
            "type": kind,
            "momentum": {"beta": 0.9, "bias_correction": True},
            "sigma": {"kind": "ema", "alpha": 0.99},
        }
    spec = {"type": kind}
    for field in ("weight_decay", "lambd"):
        if field in optimizer_fields(kind):
            spec[field] = 0.0
    return spec


def config_for(spec, params, **rest):
    """The session config stepping `params` with `spec`; Muon takes 2-D tensors only, so the
    others go to AdamW (decay off) in a group of its own, as Muon is meant to be used."""
    if spec["type"] != "muon":
        return {"optimizer": spec, **rest}
    matrices = [glob.escape(name) for name, value in params.items() if np.ndim(value) == 2]
    base = {"type": "adamw", "weight_decay": 0.0, "maximize": spec.get("maximize", False)}
    return {"optimizer": base, "groups": [{"match": matrices, "optimizer": spec}], **rest}


def with_a_matrix(params, kind):
    """Muon needs a 2-D tensor to have something to step."""
    return (
        {**params, "matrix": np.ones((2, 3), next(iter(params.values())).dtype)}
        if kind == "muon"
        else params
    )


def gradients_like(params, draw, scale=1.0):
    return {
        name: draw(arrays(value.dtype, value.shape)) * value.dtype.type(scale)
        for name, value in params.items()
    }


@FAST
@given(
    session=sessions(),
    kind=st.sampled_from(sorted(OPTIMIZER_TYPES - {"yogi"})),
    steps=st.integers(1, 5),
)
def test_zero_gradient_from_rest_leaves_theta_unchanged(session, kind, steps):
    """(Not Yogi: optax starts its moments at 1e-6, so a zero gradient still moves θ.)"""
    _, params = session
    params = with_a_matrix(params, kind)
    optimizer = Optimizer(config_for(no_decay(kind), params), list(params))
    theta = {n: v.copy() for n, v in params.items()}
    state = optimizer.init(theta)
    for _ in range(steps):
        optimizer.step(theta, state, {n: np.zeros_like(v) for n, v in theta.items()})
    for name in params:
        np.testing.assert_array_equal(theta[name], params[name])
    assert state.step == steps


@FAST
@given(session=sessions(), kind=st.sampled_from(sorted(OPTIMIZER_TYPES)), data=st.data())
def test_state_round_trips_through_its_serialised_form(session, kind, data):
    _, params = session
    params = with_a_matrix(params, kind)
    optimizer = Optimizer(
        config_for(no_decay(kind), params, schedule={"type": "reduce_on_plateau"}), list(params)
    )
    state = optimizer.init(params)
    for _ in range(data.draw(st.integers(0, 3))):
        optimizer.step(
            params, state, gradients_like(params, data.draw), loss=data.draw(st.floats(0, 1))
        )
    arrays_ = state.to_arrays()
    assert all("/" not in key.partition("/")[0] for key in arrays_)
    copy = OptimizerState.from_arrays(state.step, arrays_, state.schedule)
    assert copy.step == state.step
    assert copy.schedule == state.schedule
    assert copy.slots.keys() == state.slots.keys()
    for tensor, slots in state.slots.items():
        assert copy.slots[tensor].keys() == slots.keys()
        for slot, value in slots.items():
            assert copy.slots[tensor][slot].dtype == value.dtype
            assert copy.slots[tensor][slot].shape == value.shape
            np.testing.assert_array_equal(copy.slots[tensor][slot], value)


@FAST
@given(session=sessions(), kind=st.sampled_from(sorted(OPTIMIZER_TYPES)), data=st.data())
def test_maximize_is_descent_on_the_negated_gradient(session, kind, data):
    _, params = session
    params = with_a_matrix(params, kind)
    spec = no_decay(kind)
    if "weight_decay" in spec:
        spec["weight_decay"] = 0.01
    grads = [gradients_like(params, data.draw) for _ in range(3)]
    results = []
    for maximize, sign in ((True, 1), (False, -1)):
        optimizer = Optimizer(config_for({**spec, "maximize": maximize}, params), list(params))
        theta = {n: v.copy() for n, v in params.items()}
        state = optimizer.init(theta)
        for step in grads:
            optimizer.step(theta, state, {n: sign * g for n, g in step.items()})
        results.append(theta)
    for name in params:
        np.testing.assert_array_equal(results[0][name], results[1][name])


@FAST
@given(session=sessions(), kind=st.sampled_from(sorted(OPTIMIZER_TYPES)), data=st.data())
def test_no_silent_upcasting(session, kind, data):
    dtype, params = session
    params = with_a_matrix(params, kind)
    optimizer = Optimizer(config_for({"type": kind}, params), list(params))
    state = optimizer.init(params)
    optimizer.step(params, state, gradients_like(params, data.draw))
    assert all(value.dtype == dtype for value in params.values())
    for slots in state.slots.values():
        for slot, value in slots.items():
            assert value.dtype == (np.int64 if slot == "step" else dtype), slot


@FAST
@given(session=sessions(), max_norm=st.floats(1e-3, 10), data=st.data())
def test_clipped_update_is_within_max_norm(session, max_norm, data):
    _, params = session
    config = {"optimizer": {"type": "sgd", "lr": 1.0}, "clip_grad_norm": max_norm}
    optimizer = Optimizer(config, list(params))
    state = optimizer.init(params)
    result = optimizer.step(params, state, gradients_like(params, data.draw, scale=100.0))
    assert result.update_norm <= max_norm * (1 + 1e-5)
    if result.grad_norm < max_norm:
        assert result.update_norm == pytest.approx(result.grad_norm, rel=1e-5, abs=1e-6)


TAKE_PARTIAL_STEPS = sorted(
    kind
    for kind in OPTIMIZER_TYPES
    if getattr(build_optimizer({"type": kind})[1], "partial_steps", True)
)
"""Every type but those whose norms need every tensor (DoG and LDoG refuse partial steps)."""


@FAST
@given(session=sessions(min_tensors=2), kind=st.sampled_from(TAKE_PARTIAL_STEPS), data=st.data())
def test_partial_step_leaves_the_other_tensors_and_their_state_alone(session, kind, data):
    _, params = session
    params = with_a_matrix(params, kind)
    optimizer = Optimizer(config_for({"type": kind}, params), list(params))
    state = optimizer.init(params)
    optimizer.step(params, state, gradients_like(params, data.draw))
    carried = data.draw(st.sampled_from(list(params)))
    before_theta = {n: v.copy() for n, v in params.items()}
    before_slots = {n: {k: v.copy() for k, v in s.items()} for n, s in state.slots.items()}
    grads = gradients_like(params, data.draw)
    optimizer.step(params, state, {carried: grads[carried]}, partial=True)
    for name in params:
        if name == carried:
            assert int(state.slots[name]["step"]) == 2
            continue
        np.testing.assert_array_equal(params[name], before_theta[name])
        for slot, value in before_slots[name].items():
            np.testing.assert_array_equal(state.slots[name][slot], value)
    assert state.step == 2


MULTIPLICATIVE = [
    {"type": "step", "step_size": 7, "gamma": 0.5},
    {"type": "multistep", "milestones": [3, 9], "gamma": 0.5},
    {"type": "exponential", "gamma": 0.97},
    {"type": "inverse_sqrt"},
    {"type": "linear"},
    {"type": "polynomial", "total_steps": 20, "power": 2},
    {"type": "cosine", "total_steps": 20, "min_lr": 0.0},
    {"type": "cosine_restarts", "t_0": 5, "t_mult": 2},
    {"type": "warmup", "warmup_steps": 4, "then": {"type": "cosine", "total_steps": 10}},
]
ABSOLUTE = [
    {"type": "one_cycle", "max_lr": 1.0, "total_steps": 20},
    {"type": "noam", "d_model": 64, "warmup_steps": 5},
    {"type": "piecewise_constant", "boundaries": [4], "values": [1.0, 0.1]},
]


def test_absolute_types_are_the_ones_listed():
    assert {s["type"] for s in ABSOLUTE} == ABSOLUTE_SCHEDULE_TYPES


@settings(max_examples=60, deadline=None)
@given(spec=st.sampled_from(MULTIPLICATIVE), lr=st.floats(1e-6, 10), scale=st.floats(0.1, 10))
def test_multiplicative_schedules_scale_with_lr(spec, lr, scale):
    np.testing.assert_allclose(
        schedule_lrs(spec, lr * scale, 40), np.array(schedule_lrs(spec, lr, 40)) * scale, rtol=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(spec=st.sampled_from(ABSOLUTE), lr=st.floats(1e-6, 10))
def test_absolute_schedules_ignore_lr(spec, lr):
    assert schedule_lrs(spec, lr, 40) == schedule_lrs(spec, 1.0, 40)


@settings(max_examples=60, deadline=None)
@given(
    milestones=st.lists(st.integers(0, 30), min_size=1, max_size=3, unique=True).map(sorted),
    data=st.data(),
)
def test_sequential_is_its_parts_on_their_own_clocks(milestones, data):
    parts = [data.draw(st.sampled_from(MULTIPLICATIVE)) for _ in range(len(milestones) + 1)]
    spec = {"type": "sequential", "schedules": parts, "milestones": milestones}
    ours = schedule_lrs(spec, 0.1, 40)
    starts = [0, *milestones]
    for t, rate in enumerate(ours):
        k = max(i for i, start in enumerate(starts) if start <= t)
        assert rate == schedule_lrs(parts[k], 0.1, t - starts[k] + 1)[-1]


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(OPTIMIZER_TYPES)),
    size=st.integers(11, 60),
    chunk=st.integers(1, 5),
    data=st.data(),
)
def test_slicing_a_large_tensor_changes_no_number(kind, size, chunk, data):
    """The engine's cache blocking (a chain over slices), on one thread or several, gives
    bit-identical θ and state, per-tensor scalar slots (NAdam's mu_product) included, and the
    same update norm. (The chains: the kernels cut their work otherwise, see test_kernels.)"""
    rng = np.random.default_rng(data.draw(st.integers(0, 100)))
    threads = data.draw(st.integers(1, 3))
    params = {
        "w": rng.standard_normal((size, 3)),
        "b": rng.standard_normal(()),
        "v": rng.standard_normal(size),
    }
    grads = [{n: rng.standard_normal(v.shape) for n, v in params.items()} for _ in range(4)]
    results = []
    for chunk_elements, lanes in ((10**9, 1), (chunk, threads)):
        engine.CHUNK_ELEMENTS, saved = chunk_elements, engine.CHUNK_ELEMENTS
        engine.PARALLEL_MIN_ELEMENTS, saved_min = 0, engine.PARALLEL_MIN_ELEMENTS
        try:
            config = config_for(no_decay(kind), params)
            with chains_only():
                optimizer = Optimizer(config, list(params), threads=lanes)
            theta = {n: v.copy() for n, v in params.items()}
            state = optimizer.init(theta)
            norms = [
                optimizer.step(theta, state, {n: g.copy() for n, g in s.items()}).update_norm
                for s in grads
            ]
        finally:
            engine.CHUNK_ELEMENTS = saved
            engine.PARALLEL_MIN_ELEMENTS = saved_min
        results.append((theta, state, norms))
    (theta_a, state_a, norms_a), (theta_b, state_b, norms_b) = results
    for name in params:
        np.testing.assert_array_equal(theta_a[name], theta_b[name])
        for slot, value in state_a.slots[name].items():
            np.testing.assert_array_equal(state_b.slots[name][slot], value)
    np.testing.assert_allclose(norms_a, norms_b, rtol=1e-12)


@pytest.mark.parametrize("path", ["kernel", "chain"])
@pytest.mark.parametrize("kind", ["adam", "nadam", "sgd"])
def test_threads_change_no_number_at_all(kind, path, monkeypatch):
    """Above PARALLEL_MIN_ELEMENTS the slices run on several threads: θ, state and the update
    norm are exactly those of one thread (each unit is computed alike, summed in unit order)."""
    monkeypatch.setattr(engine, "PARALLEL_MIN_ELEMENTS", 2 * engine.CHUNK_ELEMENTS)
    rng = np.random.default_rng(7)
    size = engine.PARALLEL_MIN_ELEMENTS + 3 * engine.CHUNK_ELEMENTS + 5
    params = {"big": rng.standard_normal(size).astype(np.float32), "small": np.ones(3, np.float32)}
    grads = [{n: rng.standard_normal(v.shape).astype(np.float32) for n, v in params.items()}]
    outcomes = []
    for threads in (1, 2, 3):
        with chains_only() if path == "chain" else contextlib.nullcontext():
            optimizer = Optimizer({"optimizer": no_decay(kind)}, list(params), threads=threads)
        theta = {n: v.copy() for n, v in params.items()}
        state = optimizer.init(theta)
        norms = [optimizer.step(theta, state, {n: g.copy() for n, g in grads[0].items()})]
        norms.append(optimizer.step(theta, state, {n: g * 2 for n, g in grads[0].items()}))
        outcomes.append((theta, state, [result.update_norm for result in norms]))
    theta_1, state_1, norms_1 = outcomes[0]
    for theta, state, norms in outcomes[1:]:
        assert norms == norms_1
        for name in params:
            np.testing.assert_array_equal(theta[name], theta_1[name])
            for slot, value in state_1.slots[name].items():
                np.testing.assert_array_equal(state.slots[name][slot], value)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_threads_must_be_a_positive_whole_number(threads):
    with pytest.raises(ValueError, match="threads"):
        Optimizer({"optimizer": {"type": "sgd"}}, ["w"], threads=threads)
    with pytest.raises(ValueError, match="threads"):
        set_num_threads(threads)


def test_the_process_default_applies_to_optimizers_made_without_threads():
    saved = get_num_threads()
    try:
        set_num_threads(3)
        assert Optimizer({"optimizer": {"type": "sgd"}}, ["w"]).threads == 3
        assert Optimizer({"optimizer": {"type": "sgd"}}, ["w"], threads=2).threads == 2
    finally:
        set_num_threads(saved)
    assert Optimizer({"optimizer": {"type": "sgd"}}, ["w"]).threads == saved
