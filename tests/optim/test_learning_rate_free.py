"""The learning-rate-free family against its authors' packages (the `reference` extra):
displacement θ − θ₀ (and x − θ₀ for schedule-free's weights to evaluate), the step size each
reports, and the global quantities, over 120 steps of a noisy quadratic on a 0-d, a vector and
a 3-d tensor; partial steps, param groups, restarts, and the bad inputs."""

import inspect
import math

import numpy as np
import pytest

from app.optim import (
    OPTIMIZER_TYPES,
    GradientMismatch,
    HyperParameterError,
    Optimizer,
    OptimizerState,
    optimizer_defaults,
    optimizer_fields,
    optimizer_group_fields,
)
from app.optim.base import GradientTransformation, chain
from app.optim.learning_rate_free import LEARNING_RATE_FREE, SESSION_FIELDS
from app.optim.transforms import ema
from tests.optim.learning_rate_free_reference import (
    CORE_ONLY,
    GROUP_ONLY,
    LEFT_OUT,
    REFERENCES,
    CoreRun,
    NoisyQuadratic,
    ReferenceRun,
    assert_displacement_close,
    quantity_tolerance,
)

STEPS = 120
DTYPES = [np.float64, np.float32]
PARITY_DTYPES = [
    pytest.param(np.float64, id="float64"),
    pytest.param(np.float32, id="float32", marks=pytest.mark.slow),
]
"""The reference runs cost ~0.2 s each: float64 in the fast loop, float32 with the slow tests."""

CASES = [
    ("schedule_free_adamw", {"lr": 0.01}),
    (
        "schedule_free_adamw",
        {
            "lr": 0.05,
            "betas": [0.8, 0.99],
            "eps": 1e-6,
            "weight_decay": 0.1,
            "warmup_steps": 10,
            "r": 0.5,
            "weight_lr_power": 1.0,
        },
    ),
    ("schedule_free_sgd", {"lr": 0.1}),
    (
        "schedule_free_sgd",
        {
            "lr": 0.2,
            "momentum": 0.8,
            "weight_decay": 0.05,
            "warmup_steps": 20,
            "r": 1.0,
            "weight_lr_power": 0.0,
            "maximize": True,
        },
    ),
    ("prodigy", {}),
    (
        "prodigy",
        {
            "betas": [0.0, 0.99],
            "weight_decay": 0.1,
            "decouple": False,
            "use_bias_correction": True,
            "safeguard_warmup": True,
            "slice_p": 3,
            "growth_rate": 1.05,
        },
    ),
    (
        "prodigy",
        {
            "lr": 0.5,
            "beta3": 0.9,
            "weight_decay": 0.01,
            "d0": 1e-4,
            "d_coef": 2.0,
            "eps": 1e-6,
            "maximize": True,
        },
    ),
    ("dadapt_adam", {}),
    (
        "dadapt_adam",
        {"decouple": True, "weight_decay": 0.1, "use_bias_correction": True, "growth_rate": 1.1},
    ),
    (
        "dadapt_adam",
        {
            "lr": 0.5,
            "betas": [0.8, 0.99],
            "weight_decay": 0.01,
            "layer_scale": 0.5,
            "d0": 1e-4,
            "maximize": True,
        },
    ),
    ("dadapt_sgd", {}),
    ("dadapt_sgd", {"momentum": 0.9, "weight_decay": 0.01, "growth_rate": 1.1, "maximize": True}),
    ("dadapt_adagrad", {}),
    (
        "dadapt_adagrad",
        {
            "momentum": 0.5,
            "weight_decay": 0.01,
            "eps": 1e-4,
            "d0": 1e-3,
            "growth_rate": 1.5,
            "maximize": True,
        },
    ),
    ("dog", {}),
    ("dog", {"init_eta": 1e-3, "weight_decay": 0.1, "maximize": True}),
    ("ldog", {}),
    ("ldog", {"reps_rel": 1e-4, "lr": 0.8, "eps": 1e-6, "weight_decay": 0.01, "init_eta": 0.01}),
]

D_ESTIMATORS = {"prodigy", "dadapt_adam", "dadapt_sgd", "dadapt_adagrad"}


def _case_id(case):
    kind, fields = case
    return kind + "".join(f"-{k}={v}" for k, v in fields.items())


def run_both(kind, fields, dtype, *, seed=7, steps=STEPS, groups=(), mask=None):
    """The reference and the core over the same noisy quadratic, each taking its gradients at
    its own θ; `mask(t, name)` True leaves the tensor out of step t (`grad is None`).
    Returns (reference, core, the step sizes the reference chose, the problem)."""
    problem = NoisyQuadratic(seed, dtype, steps)
    reference = ReferenceRun(kind, fields, problem.start, groups)
    config = {"optimizer": {"type": kind, **fields}}
    if groups:
        config["groups"] = [{"match": list(names), **overrides} for names, overrides in groups]
    core = CoreRun(config, problem.start)
    sign = -1.0 if fields.get("maximize") else 1.0  # maximize −f: the same path downhill
    chosen = []
    for t in range(steps):
        for run in (reference, core):
            theta = run.theta() if run is reference else run.theta
            grads = {n: sign * g for n, g in problem.gradients(theta, t).items()}
            if mask is not None:
                grads = {n: (None if mask(t, n) else g) for n, g in grads.items()}
            step_size = run.step(grads)
            if run is reference:
                chosen.append(step_size)
    return reference, core, chosen, problem


def assert_globals_match(reference, core, dtype):
    theirs = reference.globals()
    assert set(core.state.globals) == set(theirs)
    for name, value in theirs.items():
        ours = core.state.globals[name]
        assert ours.shape == value.shape, name
        if name.endswith(".k") or name == "k":
            assert int(ours) == int(value), name
        else:
            np.testing.assert_allclose(ours, value, rtol=quantity_tolerance(dtype), err_msg=name)


def test_every_type_has_cases_and_a_reference():
    assert set(REFERENCES) == set(LEARNING_RATE_FREE)
    assert {kind for kind, _ in CASES} == set(LEARNING_RATE_FREE)


@pytest.mark.parametrize("kind", sorted(LEARNING_RATE_FREE))
def test_fields_and_defaults_are_the_references(kind):
    import torch

    reference = REFERENCES[kind]
    parameters = inspect.signature(reference.__init__).parameters
    theirs = {
        name: p.default
        for name, p in parameters.items()
        if name not in ("self", "params") and name not in LEFT_OUT
    }
    built = reference([torch.zeros(1, requires_grad=True)])
    theirs.update({name: built.defaults[name] for name in GROUP_ONLY if name in built.defaults})
    ours = {k: v for k, v in optimizer_defaults(kind).items() if k not in CORE_ONLY}
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        expected = theirs[name]
        if name == "growth_rate":
            assert value is None and expected == math.inf
        elif isinstance(expected, tuple):
            assert value == list(expected), name
        else:
            assert value == expected, name


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_reference(case, dtype):
    kind, fields = case
    reference, core, chosen, problem = run_both(kind, fields, dtype)
    assert all((core.theta[n] != problem.start[n]).all() for n in problem.start), "all moved"
    assert_displacement_close(core.theta, reference.theta(), problem.start, dtype)
    if kind.startswith("schedule_free"):
        x = core.eval_theta()
        assert not any(np.array_equal(x[n], core.theta[n]) for n in x), "x is not y"
        assert_displacement_close(x, reference.eval_theta(), problem.start, dtype)
    reported = [result.lr for result in core.results]
    np.testing.assert_allclose(reported, chosen, rtol=quantity_tolerance(dtype))
    assert_globals_match(reference, core, dtype)
    if kind in D_ESTIMATORS:
        d0 = optimizer_defaults(kind)["d0"] if "d0" not in fields else fields["d0"]
        assert float(core.state.globals["d"]) > 100 * d0, "d did not adapt"


PARTIAL_KINDS = [
    ("schedule_free_adamw", {"lr": 0.02, "warmup_steps": 5}),
    ("schedule_free_sgd", {"lr": 0.1}),
    ("prodigy", {"use_bias_correction": True}),
    ("dadapt_adam", {"use_bias_correction": True}),
    ("dadapt_sgd", {"momentum": 0.5}),
    ("dadapt_adagrad", {}),
]


def _random_mask(seed):
    rng = np.random.default_rng(seed)
    left_out = rng.random((STEPS, 3)) < 0.4
    left_out[:3, 2] = True  # the cube's first update comes later
    left_out[left_out.all(axis=1), 1] = False  # every step carries a tensor
    names = {"scalar": 0, "vector": 1, "cube": 2}

    def mask(t, name):
        return bool(left_out[t, names[name]])

    return mask


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("case", PARTIAL_KINDS, ids=[c[0] for c in PARTIAL_KINDS])
def test_partial_steps_are_the_references_grad_none(case, dtype):
    """A tensor left out is skipped in the sums and the update, as the references skip a
    `grad is None`; their group counters (schedule-free's k and weight sum, Prodigy's k) still
    advance, and a tensor first stepped late starts its state then."""
    kind, fields = case
    reference, core, chosen, problem = run_both(kind, fields, dtype, mask=_random_mask(3))
    assert_displacement_close(core.theta, reference.theta(), problem.start, dtype)
    assert_globals_match(reference, core, dtype)
    reported = [result.lr for result in core.results]
    np.testing.assert_allclose(reported, chosen, rtol=quantity_tolerance(dtype))


@pytest.mark.parametrize("kind", ["dog", "ldog"])
def test_dog_refuses_a_partial_step_and_changes_nothing(kind):
    problem = NoisyQuadratic(1, np.float64, 2)
    core = CoreRun({"optimizer": {"type": kind}}, problem.start)
    core.step(problem.gradients(core.theta, 0))
    before = {k: v.copy() for k, v in core.state.to_arrays().items()}
    theta = {k: v.copy() for k, v in core.theta.items()}
    grads = problem.gradients(core.theta, 1)
    del grads["vector"]
    with pytest.raises(GradientMismatch) as raised:
        core.optimizer.step(core.theta, core.state, grads, partial=True)
    assert raised.value.tensor == "vector"
    assert raised.value.got_shape is None
    assert "partial" in raised.value.detail
    assert core.state.step == 1
    after = core.state.to_arrays()
    assert set(after) == set(before)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    for name, value in theta.items():
        np.testing.assert_array_equal(core.theta[name], value)


GROUP_CASES = [
    (
        "schedule_free_adamw",
        {"lr": 0.01},
        [
            (["cube"], {"lr": 0.05, "betas": [0.8, 0.99], "weight_decay": 0.1, "warmup_steps": 5}),
            (["vector"], {"lr": 0.02, "weight_lr_power": 1.0}),
        ],
    ),
    (
        "schedule_free_sgd",
        {"lr": 0.1},
        [(["cube"], {"lr": 0.05, "momentum": 0.8, "r": 1.0}), (["vector"], {"warmup_steps": 8})],
    ),
    (
        "prodigy",
        {},
        [
            (["cube"], {"eps": 1e-6, "weight_decay": 0.1, "safeguard_warmup": True, "slice_p": 2}),
            (["vector"], {"lr": 0.0}),
        ],
    ),
    (
        "dadapt_adam",
        {"decouple": True},
        [
            (["cube"], {"layer_scale": 0.5, "eps": 1e-6, "weight_decay": 0.05}),
            (["vector"], {"lr": 0.0}),
        ],
    ),
    ("dadapt_sgd", {"momentum": 0.5}, [(["vector"], {"lr": 0.0}), (["cube"], {"lr": 1.0})]),
    (
        "dadapt_adagrad",
        {"momentum": 0.5},
        [(["cube"], {"eps": 1e-4, "weight_decay": 0.1}), (["vector"], {"eps": 1e-5})],
    ),
    (
        "dog",
        {},
        [(["cube"], {"reps_rel": 1e-4, "weight_decay": 0.1, "lr": 0.5}), (["vector"], {"eps": 1})],
    ),
    (
        "ldog",
        {},
        [(["cube"], {"reps_rel": 1e-4, "weight_decay": 0.1, "lr": 0.5}), (["vector"], {"eps": 1})],
    ),
]


@pytest.mark.parametrize("dtype", PARITY_DTYPES)
@pytest.mark.parametrize("case", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_groups_are_the_references_param_groups(case, dtype):
    """Groups are param groups: the per-group fields apply to their tensors, the per-group
    quantities (schedule-free's weight sums, DoG's distances) are kept per group, and the
    session-wide d spans them all (a group with lr 0 sits out of its estimate)."""
    kind, fields, groups = case
    reference, core, chosen, problem = run_both(kind, fields, dtype, groups=groups)
    assert_displacement_close(core.theta, reference.theta(), problem.start, dtype)
    assert_globals_match(reference, core, dtype)
    reported = [result.lr for result in core.results]
    np.testing.assert_allclose(reported, chosen, rtol=quantity_tolerance(dtype))
    if kind.startswith("schedule_free"):
        assert_displacement_close(core.eval_theta(), reference.eval_theta(), problem.start, dtype)


def test_groups_that_hold_every_tensor_leave_the_base_out():
    """torch's `param_groups[0]` is the first group that holds tensors: with every tensor in a
    group, the base holds none, and the step reports the first group's step size."""
    groups = [(["scalar", "vector", "cube"], {"lr": 0.3})]
    reference, core, chosen, problem = run_both("dog", {}, np.float64, groups=groups, steps=20)
    assert_displacement_close(core.theta, reference.theta(), problem.start, np.float64)
    assert set(core.state.globals) == {"groups.0.rbar", "groups.0.G"}
    np.testing.assert_allclose([r.lr for r in core.results], chosen, rtol=1e-12)


RESTART_CASES = [
    ("schedule_free_adamw", {"warmup_steps": 80}, [{"match": ["cube"], "lr": 0.01}]),
    ("schedule_free_sgd", {"lr": 0.1}, None),
    ("prodigy", {"use_bias_correction": True, "slice_p": 2}, [{"match": ["v*"], "lr": 0.0}]),
    ("dadapt_adam", {}, None),
    ("dadapt_sgd", {"momentum": 0.9}, None),
    ("dadapt_adagrad", {}, None),
    ("dog", {}, [{"match": ["cube"], "reps_rel": 1e-3}]),
    ("ldog", {"init_eta": 1e-3}, [{"match": ["cube"], "reps_rel": 1e-3}]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", RESTART_CASES, ids=[c[0] for c in RESTART_CASES])
def test_a_restart_in_the_middle_changes_nothing(case, dtype):
    """State → stored arrays → a new Optimizer and state → continue: bit for bit the run that
    never stopped, globals included."""
    kind, fields, groups = case
    config = {"optimizer": {"type": kind, **fields}}
    if groups:
        config["groups"] = groups
    problem = NoisyQuadratic(5, dtype, STEPS)
    straight, restarted = CoreRun(config, problem.start), CoreRun(config, problem.start)
    for t in range(STEPS):
        if t == STEPS // 2:
            restarted.restart()
        for run in (straight, restarted):
            run.step(problem.gradients(run.theta, t))
    assert straight.state.globals, "the type keeps global quantities"
    for name in problem.start:
        np.testing.assert_array_equal(restarted.theta[name], straight.theta[name])
    ours, theirs = restarted.state.to_arrays(), straight.state.to_arrays()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    assert [r.lr for r in restarted.results] == [r.lr for r in straight.results]


def test_globals_are_stored_under_keys_no_slot_can_have():
    problem = NoisyQuadratic(2, np.float32, 3)
    config = {"optimizer": {"type": "dog"}, "groups": [{"match": ["cube"], "lr": 0.5}]}
    core = CoreRun(config, problem.start)
    for t in range(3):
        core.step(problem.gradients(core.theta, t))
    arrays = core.state.to_arrays()
    global_keys = {key for key in arrays if key.startswith("~global/")}
    assert global_keys == {
        "~global/optimizer.rbar",
        "~global/optimizer.G",
        "~global/groups.0.rbar",
        "~global/groups.0.G",
    }
    for key in set(arrays) - global_keys:
        slot, _, tensor = key.partition("/")
        assert slot in ("step", "init_buffer") and tensor in problem.start
        assert not key.startswith(("param/", "accum/", "~"))
    assert all(arrays[key].dtype == np.float32 for key in global_keys)
    back = OptimizerState.from_arrays(3, arrays, {})
    assert set(back.globals) == {key.removeprefix("~global/") for key in global_keys}
    assert set(back.slots) == set(problem.start)
    with pytest.raises(ValueError, match="~"):
        chain(GradientTransformation(lambda p: {"~x": p.copy()}, lambda u, s, c: u))


def test_scalar_globals_are_float64_and_counters_int64():
    problem = NoisyQuadratic(2, np.float32, 3)
    core = CoreRun({"optimizer": {"type": "prodigy"}}, problem.start)
    assert core.state.globals == {}, "globals start absent, as the references start them"
    for t in range(3):
        core.step(problem.gradients(core.theta, t))
    dtypes = {name: array.dtype for name, array in core.state.globals.items()}
    floats = {"d": np.float64, "d_max": np.float64, "d_numerator": np.float64}
    assert dtypes == {**floats, "k": np.int64}
    assert all(array.shape == () for array in core.state.globals.values())


def test_eval_params_is_theta_itself_where_no_block_defines_weights_to_evaluate():
    problem = NoisyQuadratic(2, np.float64, 3)
    for kind in ("adam", "prodigy", "dog"):
        core = CoreRun({"optimizer": {"type": kind}}, problem.start)
        core.step(problem.gradients(core.theta, 0))
        evaluated = core.eval_theta()
        assert all(evaluated[name] is core.theta[name] for name in problem.start)


def test_eval_params_leaves_the_state_alone():
    problem = NoisyQuadratic(2, np.float64, 5)
    core = CoreRun({"optimizer": {"type": "schedule_free_adamw", "lr": 0.05}}, problem.start)
    for t in range(5):
        core.step(problem.gradients(core.theta, t))
    before = {k: v.copy() for k, v in core.state.to_arrays().items()}
    theta = {k: v.copy() for k, v in core.theta.items()}
    x = core.eval_theta()
    assert all(not np.shares_memory(x[n], core.theta[n]) for n in x)
    for key, value in before.items():
        np.testing.assert_array_equal(core.state.to_arrays()[key], value)
    for name, value in theta.items():
        np.testing.assert_array_equal(core.theta[name], value)


def test_a_chain_evaluates_where_its_one_evaluating_block_says():
    def average(param, slots):
        return slots["exp_avg"].copy()

    evaluating = GradientTransformation(ema(0.9).init, ema(0.9).update, eval=average)
    assert chain(evaluating).eval is average
    assert chain(ema(0.5, slot="m")).eval is None
    with pytest.raises(ValueError, match="evaluate"):
        chain(evaluating, GradientTransformation(lambda p: {}, lambda u, s, c: u, eval=average))


@pytest.mark.parametrize("kind", ["prodigy", "dadapt_adam", "dadapt_adagrad"])
def test_steps_before_any_gradient_move_nothing_as_the_reference_returns_early(kind):
    """Zero gradients first: the references' sums are 0, they return before the update (and
    before counting the step); both then continue alike."""
    problem = NoisyQuadratic(4, np.float64, 40)
    reference = ReferenceRun(kind, {}, problem.start)
    core = CoreRun({"optimizer": {"type": kind}}, problem.start)
    zeros = {n: np.zeros_like(v) for n, v in problem.start.items()}
    for run in (reference, core):
        for _ in range(3):
            run.step(zeros)
    for name, value in problem.start.items():
        np.testing.assert_array_equal(core.theta[name], value)
    for t in range(40):
        reference.step(problem.gradients(reference.theta(), t))
        core.step(problem.gradients(core.theta, t))
    assert_displacement_close(core.theta, reference.theta(), problem.start, np.float64)
    assert_globals_match(reference, core, np.float64)


def test_dadapt_sgd_waits_for_a_nonzero_first_gradient():
    """The reference divides by ‖g₀‖ = 0 (ZeroDivisionError); the core moves nothing and takes
    the next gradient as the first, as the reference does when started there."""
    problem = NoisyQuadratic(4, np.float64, 40)
    zeros = {n: np.zeros_like(v) for n, v in problem.start.items()}
    crashing = ReferenceRun("dadapt_sgd", {}, problem.start)
    with pytest.raises(ZeroDivisionError):
        crashing.step(zeros)
    core = CoreRun({"optimizer": {"type": "dadapt_sgd"}}, problem.start)
    core.step(zeros)
    assert core.state.globals == {}
    for name, value in problem.start.items():
        np.testing.assert_array_equal(core.theta[name], value)
    reference = ReferenceRun("dadapt_sgd", {}, problem.start)
    for t in range(40):
        reference.step(problem.gradients(reference.theta(), t))
        core.step(problem.gradients(core.theta, t))
    assert_displacement_close(core.theta, reference.theta(), problem.start, np.float64)


def test_prodigy_restarts_s_and_p0_when_slice_p_changes():
    problem = NoisyQuadratic(4, np.float64, 6)
    core = CoreRun({"optimizer": {"type": "prodigy"}}, problem.start)
    for t in range(3):
        core.step(problem.gradients(core.theta, t))
    d = float(core.state.globals["d"])
    resliced = {"optimizer": {"type": "prodigy", "slice_p": 5}}
    core.optimizer = Optimizer(resliced, list(problem.start))
    theta = {name: value.copy() for name, value in core.theta.items()}
    core.step(problem.gradients(core.theta, 3))
    cube = core.state.slots["cube"]
    assert cube["s"].shape == (5,) and cube["p0"].shape == (5,)
    np.testing.assert_array_equal(cube["p0"], theta["cube"].reshape(-1)[::5])
    assert float(core.state.globals["d"]) >= d, "d carried over, and only grows"


INVALID = [
    ({"type": "schedule_free_adamw", "betas": [0.0, 0.999]}, "optimizer.betas"),
    ({"type": "schedule_free_adamw", "betas": [0.9, 1.0]}, "optimizer.betas"),
    ({"type": "schedule_free_adamw", "warmup_steps": -1}, "optimizer.warmup_steps"),
    ({"type": "schedule_free_adamw", "warmup_steps": 1.5}, "optimizer.warmup_steps"),
    ({"type": "schedule_free_adamw", "r": -1.0}, "optimizer.r"),
    ({"type": "schedule_free_adamw", "weight_lr_power": -2.0}, "optimizer.weight_lr_power"),
    ({"type": "schedule_free_adamw", "foreach": True}, "optimizer.foreach"),
    ({"type": "schedule_free_sgd", "momentum": 0.0}, "optimizer.momentum"),
    ({"type": "schedule_free_sgd", "momentum": 1.0}, "optimizer.momentum"),
    ({"type": "schedule_free_sgd", "lr": -1.0}, "optimizer.lr"),
    ({"type": "prodigy", "d0": 0.0}, "optimizer.d0"),
    ({"type": "prodigy", "eps": 0.0}, "optimizer.eps"),
    ({"type": "prodigy", "beta3": 1.5}, "optimizer.beta3"),
    ({"type": "prodigy", "growth_rate": 0.5}, "optimizer.growth_rate"),
    ({"type": "prodigy", "growth_rate": float("inf")}, "optimizer.growth_rate"),
    ({"type": "prodigy", "slice_p": 0}, "optimizer.slice_p"),
    ({"type": "prodigy", "decouple": "yes"}, "optimizer.decouple"),
    ({"type": "prodigy", "d_coef": -1.0}, "optimizer.d_coef"),
    ({"type": "prodigy", "fsdp_in_use": False}, "optimizer.fsdp_in_use"),
    ({"type": "dadapt_adam", "layer_scale": -1.0}, "optimizer.layer_scale"),
    ({"type": "dadapt_adam", "use_bias_correction": 1}, "optimizer.use_bias_correction"),
    ({"type": "dadapt_adam", "log_every": 10}, "optimizer.log_every"),
    ({"type": "dadapt_sgd", "momentum": 1.0}, "optimizer.momentum"),
    ({"type": "dadapt_adagrad", "eps": 0.0}, "optimizer.eps"),
    ({"type": "dadapt_adagrad", "momentum": -0.1}, "optimizer.momentum"),
    ({"type": "dog", "reps_rel": 0.0}, "optimizer.reps_rel"),
    ({"type": "dog", "lr": 0.0}, "optimizer.lr"),
    ({"type": "dog", "init_eta": 0.0}, "optimizer.init_eta"),
    ({"type": "ldog", "eps": 0.0}, "optimizer.eps"),
    ({"type": "ldog", "weight_decay": -1.0}, "optimizer.weight_decay"),
    ({"type": "ldog", "maximize": "no"}, "optimizer.maximize"),
]


@pytest.mark.parametrize(("spec", "field"), INVALID, ids=[f for _, f in INVALID])
def test_bad_fields_are_refused_by_name(spec, field):
    with pytest.raises(HyperParameterError) as raised:
        Optimizer({"optimizer": spec}, ["w"])
    assert raised.value.field == field


INVALID_GROUPS = [
    ("prodigy", {"betas": [0.8, 0.9]}, "groups.0.betas", "whole session"),
    ("prodigy", {"d0": 1e-3}, "groups.0.d0", "whole session"),
    ("prodigy", {"lr": 0.5}, "groups.0.lr", "or 0"),
    ("dadapt_adam", {"use_bias_correction": True}, "groups.0.use_bias_correction", "session"),
    ("dadapt_adam", {"lr": 2.0}, "groups.0.lr", "or 0"),
    ("dadapt_sgd", {"weight_decay": 0.1}, "groups.0.weight_decay", "whole session"),
    ("dadapt_sgd", {"momentum": 0.5}, "groups.0.momentum", "whole session"),
    ("dadapt_adagrad", {"lr": 0.0}, "groups.0.lr", "whole session"),
    ("dadapt_adagrad", {"eps": -1.0}, "groups.0.eps", "must be"),
    ("dog", {"lr": -1.0}, "groups.0.lr", "must be"),
]


@pytest.mark.parametrize(
    ("kind", "overrides", "field", "says"), INVALID_GROUPS, ids=[c[2] for c in INVALID_GROUPS]
)
def test_group_overrides_the_reference_ignores_or_refuses_are_refused(kind, overrides, field, says):
    config = {"optimizer": {"type": kind}, "groups": [{"match": ["w"], **overrides}]}
    with pytest.raises(HyperParameterError) as raised:
        Optimizer(config, ["w", "b"])
    assert raised.value.field == field
    assert says in raised.value.detail


def test_a_group_may_sit_out_with_lr_0_or_take_the_sessions_lr():
    for lr in (0, 0.0, 1.0):
        Optimizer({"optimizer": {"type": "prodigy"}, "groups": [{"match": ["w"], "lr": lr}]}, ["w"])


@pytest.mark.parametrize("kind", sorted(OPTIMIZER_TYPES))
def test_group_fields_are_what_the_engine_lets_a_group_override(kind):
    """`optimizer_group_fields` (what the wire's group models will offer) is exactly what the
    engine accepts in a group: every field but the family's session-wide ones."""
    defaults = optimizer_defaults(kind)
    allowed = optimizer_group_fields(kind)
    assert allowed <= optimizer_fields(kind)
    for name in optimizer_fields(kind) - {"lr"}:
        if name not in defaults or defaults[name] is None:
            continue
        config = {"optimizer": {"type": kind}, "groups": [{"match": ["w"], name: defaults[name]}]}
        if name in allowed:
            Optimizer(config, ["w"])
        else:
            with pytest.raises(HyperParameterError, match="whole session"):
                Optimizer(config, ["w"])
    assert (allowed == optimizer_fields(kind)) == (kind not in SESSION_FIELDS)
