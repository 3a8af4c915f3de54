"""The fused kernels against the chains they stand in for (the chains are the definition).

Every named type but `custom` has a kernel that reads exactly the type's fields; a kernel and
its chain agree within 1e-12 (float64) or 1e-6 (float32) of each array's scale after a few
steps over random configurations, shapes (0-d, odd lengths, several blocks) and layouts; the
numbers do not depend on the threads; the compiled loops are vectorized.
"""

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.optim import OPTIMIZER_TYPES, Optimizer, engine, fused, kernels, optimizer_fields
from app.optim.base import NonFiniteGradient
from app.optim.optimizers import build_optimizer
from tests.optim.reference import (
    TORCH_OPTIMIZERS,
    assert_close,
    chains_only,
    random_problem,
    run_torch,
)
from tests.optim.test_parity import CASES

TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}


def assert_agree(kernel, chain, dtype, what, *, also_scale=None):
    """Within the tolerance of the array's scale (its largest finite magnitude, or that of
    `also_scale` where larger), NaN where NaN."""
    rtol = TOLERANCE[np.dtype(dtype)]
    scale = max(_finite_scale(chain), _finite_scale(also_scale))
    np.testing.assert_allclose(
        kernel, chain, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what
    )


def _finite_scale(array) -> float:
    finite = np.abs(np.asarray(array)[np.isfinite(array)]) if array is not None else np.empty(0)
    return float(finite.max()) if finite.size else 0.0


# -- coverage ----------------------------------------------------------------------------------


KERNEL_TYPES = {
    "sgd",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "adamax",
    "nadam",
    "radam",
    "adadelta",
}


def test_every_torch_type_and_lion_have_a_kernel_reading_exactly_their_fields():
    """(Types added later run their chain until a kernel covers them; `custom` always does.)"""
    assert KERNEL_TYPES | {"lion"} <= set(fused.FUSED_TYPES) <= OPTIMIZER_TYPES - {"custom"}
    for kind, coverage in fused.FUSED_TYPES.items():
        assert coverage.fields == optimizer_fields(kind), kind


@pytest.mark.parametrize("kind", sorted(KERNEL_TYPES | {"lion", "custom"}))
def test_a_group_runs_its_kernel_exactly_when_one_covers_it(kind):
    optimizer = Optimizer(
        {"optimizer": {"type": kind}, "groups": [{"match": ["b*"], "lr": 0.5}]}, ["a", "b"]
    )
    for group in optimizer.groups:
        assert (group.kernel is not None) == (kind in fused.FUSED_TYPES)


def test_a_field_no_kernel_reads_leaves_the_group_on_its_chain():
    hyperparameters = Optimizer({"optimizer": {"type": "adam"}}, ["w"]).base_group.hyperparameters
    assert fused.fused_step_for(hyperparameters) is not None
    assert fused.fused_step_for({**hyperparameters, "foreach": True}) is None
    assert fused.fused_step_for({**hyperparameters, "type": "custom"}) is None


def test_other_dtypes_run_the_chain():
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 0.5}}, ["w"])
    params = {"w": np.ones(3, np.float16)}
    state = engine.OptimizerState(0, {"w": {"step": np.zeros((), np.int64)}})
    optimizer.step(params, state, {"w": np.ones(3, np.float16)})
    np.testing.assert_array_equal(params["w"], np.full(3, 0.5, np.float16))


# -- kernel ≡ chain ----------------------------------------------------------------------------

rates = st.floats(1e-4, 1.0)
decays = st.one_of(st.just(0.0), st.floats(1e-4, 0.2))
fractions = st.floats(0.0, 0.999)
epsilons = st.floats(1e-10, 1e-2)
flags = st.booleans()


@st.composite
def configurations(draw, kind):
    """A valid configuration of `kind`, each option drawn."""
    common = {"lr": draw(rates), "maximize": draw(flags)}
    if kind == "sgd":
        momentum = draw(st.one_of(st.just(0.0), fractions))
        nesterov = momentum > 0 and draw(flags)
        dampening = 0.0 if nesterov else draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
        return {
            **common,
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": draw(decays),
        }
    if kind == "adagrad":
        return {
            **common,
            "lr_decay": draw(decays),
            "weight_decay": draw(decays),
            "initial_accumulator_value": draw(st.floats(0.0, 1.0)),
            "eps": draw(epsilons),
            "accumulator": draw(st.sampled_from(["sum", "mean"])),
        }
    if kind == "rmsprop":
        return {
            **common,
            "alpha": draw(st.floats(0.0, 1.0)),
            "eps": draw(epsilons),
            "weight_decay": draw(decays),
            "momentum": draw(st.one_of(st.just(0.0), fractions)),
            "centered": draw(flags),
            "init": draw(st.sampled_from(["zero", "first_grad"])),
        }
    betas = [draw(fractions), draw(fractions)]
    if kind in ("adam", "adamw"):
        extra = {"decoupled_weight_decay": draw(flags)} if kind == "adam" else {}
        return {
            **common,
            **extra,
            "betas": betas,
            "eps": draw(epsilons),
            "weight_decay": draw(decays),
            "amsgrad": draw(flags),
        }
    if kind == "adamax":
        return {**common, "betas": betas, "eps": draw(epsilons), "weight_decay": draw(decays)}
    if kind in ("nadam", "radam"):
        extra = {"momentum_decay": draw(st.floats(0.0, 0.05))} if kind == "nadam" else {}
        return {
            **common,
            **extra,
            "betas": betas,
            "eps": draw(epsilons),
            "weight_decay": draw(decays),
            "decoupled_weight_decay": draw(flags),
        }
    if kind == "adadelta":
        return {
            **common,
            "rho": draw(st.floats(0.0, 1.0)),
            "eps": draw(epsilons),
            "weight_decay": draw(decays),
        }
    assert kind == "lion", kind
    return {**common, "betas": betas, "weight_decay": draw(decays)}


# Magnitudes kept between 1e-6 and 10 (or exactly 0): far from float32's subnormals, where two
# correct orders of the same operations may round a value to zero or not.
magnitudes = st.one_of(st.just(0.0), st.floats(1e-6, 10.0))
values = st.tuples(magnitudes, flags).map(lambda pair: -pair[0] if pair[1] else pair[0])
shapes = st.sampled_from([(), (1,), (7,), (3, 5), (2, 3, 4), (kernels.BLOCK + 3,)])


def random_array(draw, rng, shape, dtype):
    """A few drawn values (0, tiny, large, negative) spread over a seeded random array."""
    array = np.asarray(rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 1, shape))
    flat = array.reshape(-1)
    for index in draw(st.lists(st.integers(0, max(0, flat.size - 1)), max_size=4)):
        flat[index] = draw(values)
    return array.astype(dtype)


def run_steps(config, params, grads, *, layout=None):
    """θ, the state and each step's result after the steps; `layout` turns every array the
    core keeps (θ and the slots) into a view of another layout first."""
    optimizer = Optimizer(config, list(params))
    theta = {name: value.copy() for name, value in params.items()}
    state = optimizer.init(theta)
    if layout is not None:
        theta = {name: layout(value) for name, value in theta.items()}
        state.slots = {
            name: {slot: layout(value) for slot, value in slots.items()}
            for name, slots in state.slots.items()
        }
    results = [
        optimizer.step(theta, state, {n: g.copy() for n, g in step.items()}) for step in grads
    ]
    return theta, state, results


@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from(sorted(fused.FUSED_TYPES)),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_each_kernel_agrees_with_its_chain(kind, dtype, data):
    config = {"optimizer": {"type": kind, **data.draw(configurations(kind))}}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    tensor_shapes = data.draw(st.lists(shapes, min_size=1, max_size=3))
    params = {
        f"t{i}": random_array(data.draw, rng, shape, dtype) for i, shape in enumerate(tensor_shapes)
    }
    grads = [
        {name: random_array(data.draw, rng, value.shape, dtype) for name, value in params.items()}
        for _ in range(data.draw(st.integers(1, 4)))
    ]
    kernel = run_steps(config, params, grads)
    with chains_only():
        chain = run_steps(config, params, grads)
    (theta_k, state_k, results_k), (theta_c, state_c, results_c) = kernel, chain
    rtol = TOLERANCE[np.dtype(dtype)]
    # Each θ_t = θ_{t−1} + u_t rounds at the scale of the θ's along the way, not only of the
    # last one: a θ that ends small after large steps (θ₀ = 0, u ≈ ±1, back to −0.0099) carries
    # their last bits, which the kernel (torch's order) and the chain round differently. Every
    # θ_t of a tensor is within |θ₀| + Σ‖u_t‖ (the steps' update norms bound each element's).
    travelled = sum(result.update_norm for result in results_c if np.isfinite(result.update_norm))
    for name, start in params.items():
        along_the_way = _finite_scale(start) + travelled
        assert_agree(theta_k[name], theta_c[name], dtype, f"θ of {name}", also_scale=along_the_way)
        assert state_k.slots[name].keys() == state_c.slots[name].keys()
        for slot, value in state_c.slots[name].items():
            assert state_k.slots[name][slot].dtype == value.dtype
            assert_agree(state_k.slots[name][slot], value, dtype, f"{slot} of {name}")
    for ours, theirs in zip(results_k, results_c, strict=True):
        assert ours.grad_norm == pytest.approx(theirs.grad_norm, rel=rtol, nan_ok=True)
        assert ours.update_norm == pytest.approx(
            theirs.update_norm, rel=rtol, abs=1e-300, nan_ok=True
        )


LAYOUTS = {
    "transposed": lambda array: array.T.copy().T,
    "strided": lambda array: np.repeat(array.reshape(-1), 2)[::2].reshape(array.shape),
}
LAYOUT_CONFIGS = {
    "adam": {"type": "adam", "amsgrad": True, "weight_decay": 0.1},
    "sgd": {"type": "sgd", "momentum": 0.9, "nesterov": True},
    "rmsprop": {"type": "rmsprop", "centered": True, "momentum": 0.5},
    "nadam": {"type": "nadam", "decoupled_weight_decay": True, "weight_decay": 0.1},
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", LAYOUT_CONFIGS)
def test_arrays_of_any_layout_are_copied_in_and_written_back(kind, layout):
    """θ and slots that are not C-contiguous give the numbers contiguous ones give: a kernel
    reads only flat C-contiguous arrays, so the others are copied in and written back."""
    params, grads = random_problem(3, np.float32, 3, {"m": (6, 5), "v": (13,), "s": ()})
    config = {"optimizer": LAYOUT_CONFIGS[kind]}
    plain = run_steps(config, params, grads)
    other = run_steps(config, params, grads, layout=LAYOUTS[layout])
    assert not other[0]["m"].flags.c_contiguous
    for name in params:
        np.testing.assert_array_equal(other[0][name], plain[0][name])
        for slot, value in plain[1].slots[name].items():
            np.testing.assert_array_equal(other[1].slots[name][slot], value)


# -- threads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_threads_claim_each_block_of_a_run_exactly_once(threads):
    """Threads working on one run at once, from the front and from the back, update every
    element once (θ ← θ − 1·g with g = 1: an element updated twice would read −2), write every
    block's ‖u‖², and exactly one of them learns that it finished the run's last block."""
    sizes = [kernels.BLOCK * 3, 5, kernels.BLOCK * 2 + 1, 1, 0]
    factors = fused.fused_step_for(build_optimizer({"type": "sgd", "lr": 1.0})[0])
    assert factors is not None
    tasks = []
    for size in sizes:
        slots = {"step": np.ones((), np.int64)}
        task = factors.task(np.zeros(size), np.ones(size), slots, 1.0)
        assert task is not None
        tasks.append(task)
    work = fused.Run(tasks)
    start = threading.Barrier(threads)
    finished = []

    def claim(backward: bool) -> None:
        start.wait()
        finished.append(work.work(backward))

    others = [threading.Thread(target=claim, args=(i % 2 == 0,)) for i in range(threads - 1)]
    for thread in others:
        thread.start()
    claim(False)
    for thread in others:
        thread.join()
    assert sorted(finished) == [False] * (threads - 1) + [True]
    for task, size in zip(tasks, sizes, strict=True):
        np.testing.assert_array_equal(task.arguments[0], np.full(size, -1.0))
        lengths = [min(kernels.BLOCK, size - start) for start in range(0, size, kernels.BLOCK)]
        np.testing.assert_array_equal(task.partials, lengths)


@pytest.mark.parametrize("policy", ["reject", "skip"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_step_in_one_run_with_a_nonfinite_gradient_changes_nothing(policy, threads, monkeypatch):
    """The gradient's sums and the updates run as one (`fused.run_checked`): a NaN in the last
    block of the second tensor stops every update, on any thread, before it writes, and the
    step counts and NAdam's 0-d `mu_product`, advanced for the factors, are put back."""
    monkeypatch.setattr(fused, "PARALLEL_MIN_ELEMENTS", 0)
    config = {"optimizer": {"type": "nadam"}, "nonfinite": policy}
    optimizer = Optimizer(config, ["a", "b"], threads=threads)
    rng = np.random.default_rng(3)
    size = 5 * kernels.BLOCK + 7
    params = {name: rng.standard_normal(size).astype(np.float32) for name in ("a", "b")}
    state = optimizer.init(params)
    optimizer.step(params, state, {name: np.ones(size, np.float32) for name in params})
    theta = {name: value.copy() for name, value in params.items()}
    slots = {name: {k: v.copy() for k, v in state.slots[name].items()} for name in params}
    grads = {name: np.ones(size, np.float32) for name in params}
    grads["b"][-1] = np.nan
    if policy == "reject":
        with pytest.raises(NonFiniteGradient):
            optimizer.step(params, state, grads)
    else:
        assert optimizer.step(params, state, grads).skipped
    assert state.step == 1
    for name in params:
        np.testing.assert_array_equal(params[name], theta[name])
        for slot, value in slots[name].items():
            np.testing.assert_array_equal(state.slots[name][slot], value, err_msg=slot)


def test_a_finite_gradient_whose_norm_overflows_still_steps():
    """float64 values above 1e154 square to inf: the one run stops at its gate, and the step
    goes on the other way (the gradient is finite), with its norm reported as inf."""
    optimizer = Optimizer({"optimizer": {"type": "sgd", "lr": 1e-300}}, ["w"])
    params = {"w": np.zeros(3)}
    state = optimizer.init(params)
    result = optimizer.step(params, state, {"w": np.array([1e200, 0.0, -1e200])})
    assert not result.skipped and result.grad_norm == np.inf
    np.testing.assert_array_equal(params["w"], [-1e-100, 0.0, 1e-100])
    assert state.step == 1 and int(state.slots["w"]["step"]) == 1


# -- the chains still match torch --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_chains_match_torch_too(case, dtype):
    """The parity tests run the kernels now; the chains they stand in for match torch alike."""
    kind, fields = case
    params, grads = random_problem(7, dtype, 50)
    theirs = run_torch(kind, fields, params, grads)
    with chains_only():
        ours = run_steps({"optimizer": {"type": kind, **fields}}, params, grads)[0]
    assert_close(ours, theirs, dtype)
    assert kind in TORCH_OPTIMIZERS


# -- the compiled code ---------------------------------------------------------------------------

CPUINFO = Path("/proc/cpuinfo")
HAS_AVX2 = CPUINFO.exists() and "avx2" in CPUINFO.read_text()
VECTORIZED_CHECK = """
import re, sys
import numpy as np
from app.optim import Optimizer, kernels
for kind, config in [("adam", {"amsgrad": True}), ("sgd", {"momentum": 0.9}), ("rmsprop", {})]:
    for dtype in (np.float32, np.float64):
        optimizer = Optimizer({"optimizer": {"type": kind, **config}}, ["w"])
        params = {"w": np.ones(40, dtype)}
        state = optimizer.init(params)
        optimizer.step(params, state, {"w": np.ones(40, dtype)})
for name in ("adam", "sgd", "rmsprop", "sum_of_squares"):
    kernel = getattr(kernels, name)
    for signature in kernel.signatures:
        asm = kernel.inspect_asm(signature)
        packed = re.findall(r"\\bv(?:mul|add|div|sqrt)p[sd]\\s[^\\n]*%[yz]mm", asm)
        print(name, signature[0].dtype, len(packed))
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAS_AVX2, reason="the check reads x86 AVX2/AVX-512 assembly")
def test_the_kernels_compile_to_packed_simd(tmp_path):
    """The loops are vectorized: packed multiplies, adds, divisions or square roots on ymm/zmm
    registers (compiled afresh in a child process: cached code cannot be inspected)."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(VECTORIZED_CHECK)],
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    counts = [line.split() for line in completed.stdout.splitlines()]
    assert len(counts) == 8, completed.stdout + completed.stderr
    for name, dtype, packed in counts:
        assert int(packed) >= 4, f"{name} {dtype}: {packed} packed instructions"
