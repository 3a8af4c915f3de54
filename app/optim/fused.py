"""Which group configurations a fused kernel covers, and how a step runs through one.

The chain of transforms (`optimizers.py`) is the definition; a kernel (`kernels.py`) is a fast
path held equal to it (tests/optim/test_kernels.py). A group is covered when its type is in
`FUSED_TYPES` and every field of its configuration is one the kernel reads (so a field added
to a type later leaves that type on its chain until its kernel learns the field); `custom`
and the types without a kernel always run their chain. The engine asks once per group
(`fused_step_for`) and once per tensor and step (`FusedStep.task`), and runs the tasks of a
step on its threads: with the gradient's sums of squares in one run (`run_checked`), or after
them (`squared_norms`, then `run`).

A task hands the kernel flat C-contiguous views of θ, the gradient and the slots: an array
that is not C-contiguous is copied in and written back afterwards, never read with the wrong
strides (the kernels take only C-contiguous 1-D arrays).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.optim import kernels
from app.optim.base import STEP_SLOT, Slots
from app.optim.optimizers import build_optimizer
from app.optim.transforms import (
    decayed_rate,
    decoupled_shrink,
    nadam_weights,
    radam_rectification,
)

FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PARALLEL_MIN_ELEMENTS = 1 << 18
"""A step's fused work below this many elements runs in one thread: handing blocks to another
thread costs about what it saves there (waking a helper takes 50–80 µs on a virtual machine;
one kernel pass over 2¹⁸ float32 elements of Adam takes about 200 µs)."""

FactorsFn = Callable[[Mapping[str, Any], int, float, type, Slots], Any]
"""(hyper-parameters, the tensor's count t, η_t, the dtype's scalar type, the tensor's slots)
→ the kernel's factors. It may advance a 0-d slot (NAdam's `mu_product`), once per step."""


@dataclass(frozen=True)
class FusedStep:
    """A group's configuration as one kernel runs it: the kernel, the full-size slots it takes
    (in its argument order; None where the configuration keeps none: an empty array is passed)
    and the function making its factors."""

    hyperparameters: Mapping[str, Any]
    kernel: Callable[..., None]
    slots: tuple[str | None, ...]
    factors: FactorsFn

    def task(
        self, param: np.ndarray, grad: np.ndarray, slots: Slots, rate: float
    ) -> FusedTask | None:
        """This tensor's update at η_t = `rate` as a task (its step count already advanced),
        or None when the kernel does not take its dtype."""
        if param.dtype not in FUSED_DTYPES:
            return None
        dtype = param.dtype.type
        factors = self.factors(self.hyperparameters, int(slots[STEP_SLOT]), rate, dtype, slots)
        arrays = [param, grad, *(_slot(slots, name, param.dtype) for name in self.slots)]
        return FusedTask(self.kernel, arrays, factors)


class FusedTask:
    """One tensor's fused update: its arrays as flat views (or copies), its factors, and ‖u‖²
    of each of its blocks of `kernels.BLOCK` elements."""

    def __init__(
        self, kernel: Callable[..., bool], arrays: Sequence[np.ndarray], factors: Any = None
    ) -> None:
        self.kernel = kernel
        flat = [_flat(array) for array in arrays]
        self.copied = [
            (array, view)
            for array, view in zip(arrays, flat, strict=True)
            if not array.flags.c_contiguous
        ]
        self.size = flat[0].size
        self.partials = np.zeros(-(-self.size // kernels.BLOCK))
        self.arguments = (*flat, *(() if factors is None else (factors,)), self.partials)

    @property
    def blocks(self) -> int:
        return self.partials.size

    def finish(self) -> float:
        """Write back what was copied in; return ‖u‖² (the blocks' sums added in order)."""
        for array, flat in self.copied:
            np.copyto(array, flat.reshape(array.shape))
        return float(self.partials.sum())


class Run:
    """One call of a step's tasks on its threads: every thread taking part calls `work`, which
    runs each task's kernel in order on the blocks no other thread has claimed yet (see
    `kernels`), and the thread finishing the run's last block releases `finished`. The first
    `gate` tasks may be sums of squares that the others wait for (`kernels.claims_for`)."""

    __slots__ = ("claims", "finished", "tasks")

    def __init__(self, tasks: Sequence[FusedTask], gate: int = 0) -> None:
        self.tasks = tasks
        self.claims = kernels.claims_for([task.blocks for task in tasks], gate)
        self.finished = threading.Lock()
        self.finished.acquire()

    def work(self, backward: bool = False) -> bool:
        """Compute blocks until none is left unclaimed, claiming each task's from its front or
        from its back (`backward`); True if this thread finished the run's last block."""
        last = False
        claims = self.claims
        for index, task in enumerate(self.tasks):
            if claims[kernels.DONE] == claims[kernels.BLOCKS]:
                break  # a helper that woke late: nothing left
            last = task.kernel(*task.arguments, claims, index, backward) or last
        return last

    def help(self) -> None:
        """A helper's part: work, and release the caller if this thread finished the run."""
        if self.work(backward=True):
            self.finished.release()


class Helpers:
    """Threads kept for the life of the process that help a step's thread with its runs. Each
    waits on a queue of its own (`SimpleQueue`: a lock in C, no Python-level condition) and
    works on each run put there. A helper that wakes late costs nothing but its help: the
    caller claims the blocks it has not, and waits only for blocks being computed.

    After a run a helper spins for up to SPIN_READS reads (some 70 µs) on its count of runs
    posted before it sleeps: a step's second run (the update, after the gradient's norm) comes
    tens of µs after its first, and a sleeping thread takes as long again to wake up."""

    def __init__(self) -> None:
        self._helpers: list[tuple[queue.SimpleQueue[Run], np.ndarray]] = []
        self._lock = threading.Lock()

    def run(self, tasks: Sequence[FusedTask], helpers: int, gate: int = 0) -> bool:
        """Run the tasks on this thread and up to `helpers` others, the first `gate` of them
        (sums of squares) before the others; False if a sum was not finite: then the others
        did not run (the sums are all done)."""
        work = Run(tasks, gate)
        claims = work.claims
        if claims[kernels.BLOCKS] == 0:
            return True
        if helpers:
            self._post(work, helpers)
        if work.work():
            return True
        if gate and claims[kernels.NOT_FINITE]:
            return False  # this thread passed the gate: every sum is done, no update ran
        # A helper is finishing the last blocks, within one block's time unless the machine is
        # busy: spin for them first, and sleep only when that is not enough.
        if not kernels.wait_above(claims, kernels.DONE, claims[kernels.BLOCKS] - 1, SPIN_READS):
            work.finished.acquire()
        return True

    def _post(self, work: Run, helpers: int) -> None:
        with self._lock:
            while len(self._helpers) < helpers:
                waiting: queue.SimpleQueue[Run] = queue.SimpleQueue()
                posted = np.zeros(1, np.int64)
                thread = threading.Thread(
                    target=_help, args=(waiting, posted), name="optaas-kernels", daemon=True
                )
                thread.start()
                self._helpers.append((waiting, posted))
            for waiting, posted in self._helpers[:helpers]:
                posted[0] += 1  # under the lock: each post counted once
                waiting.put(work)


SPIN_READS = 1 << 18
"""Reads of its posted count a helper makes before it sleeps (a read takes about a cycle)."""


def _help(waiting: queue.SimpleQueue[Run], posted: np.ndarray) -> None:
    """A helper's life: take a run, help with it, spin briefly for the next, else sleep."""
    taken = 0
    while True:
        waiting.get().help()
        taken += 1
        kernels.wait_above(posted, 0, taken, SPIN_READS)


HELPERS = Helpers()
"""The process's helper threads, started as steps first need them."""


def squared_norms(arrays: Mapping[str, np.ndarray], threads: int) -> dict[str, float]:
    """Σ x² of each array in float64, as `run` runs kernels: on the step's threads, block by
    block, the same sums whatever the threads (other dtypes than float32 and float64 are
    widened to float64 first)."""
    tasks = {
        name: FusedTask(kernels.sum_of_squares, [_kernel_dtype(array)])
        for name, array in arrays.items()
    }
    run(list(tasks.values()), threads)
    return {name: task.finish() for name, task in tasks.items()}


def run_checked(
    gradients: Mapping[str, np.ndarray], tasks: Sequence[FusedTask], threads: int
) -> tuple[dict[str, float], float | None]:
    """A whole step in one run: Σ g² of each gradient (as `squared_norms`), then — only if
    every sum is finite — the tasks, and Σ‖u‖² over them (as `run`); None instead when a sum
    is not finite, and then no task has written anything. One hand-off to the helpers per step
    instead of two, and no Python between the sums and the updates."""
    norms = {
        name: FusedTask(kernels.sum_of_squares, [_kernel_dtype(gradient)])
        for name, gradient in gradients.items()
    }
    everything = [*norms.values(), *tasks]
    helpers = _helpers_for(tasks, threads)
    finite = HELPERS.run(everything, helpers, gate=len(norms))
    squared = {name: task.finish() for name, task in norms.items()}
    if not finite:
        return squared, None
    return squared, math.fsum(task.finish() for task in tasks)


def _helpers_for(tasks: Sequence[FusedTask], threads: int) -> int:
    """Helpers a run of these tasks takes: `threads` − 1 from PARALLEL_MIN_ELEMENTS on."""
    return threads - 1 if sum(task.size for task in tasks) >= PARALLEL_MIN_ELEMENTS else 0


def run(tasks: Sequence[FusedTask], threads: int) -> float:
    """Run the tasks and return Σ‖u‖² over them: on `threads` threads when they hold
    PARALLEL_MIN_ELEMENTS elements or more (the calling thread and `threads` − 1 helpers
    claiming blocks as they go), else on the calling thread alone. Each block is computed
    alike whichever thread claims it, and the blocks' sums are added in order, so the numbers
    do not depend on the threads."""
    if not tasks:
        return 0.0
    HELPERS.run(tasks, _helpers_for(tasks, threads))
    return math.fsum(task.finish() for task in tasks)


def _flat(array: np.ndarray) -> np.ndarray:
    """A 1-D C-contiguous view of `array`, or a copy of it when it is not C-contiguous."""
    return (array if array.flags.c_contiguous else np.ascontiguousarray(array)).reshape(-1)


def _kernel_dtype(array: np.ndarray) -> np.ndarray:
    return array if array.dtype in FUSED_DTYPES else array.astype(np.float64)


def _slot(slots: Slots, name: str | None, dtype: np.dtype) -> np.ndarray:
    return np.empty(0, dtype) if name is None else slots[name]


# --------------------------------------------------------------------------------------------
# The configurations covered, type by type: the fields each kernel reads, its slots, its factors
# --------------------------------------------------------------------------------------------


def fused_step_for(hyperparameters: Mapping[str, Any]) -> FusedStep | None:
    """The kernel covering a group's configuration (every field filled in, `type` included),
    or None: the group runs its chain."""
    entry = FUSED_TYPES.get(hyperparameters["type"])
    if entry is None or set(hyperparameters) - {"type"} != entry.fields:
        return None
    return FusedStep(hyperparameters, entry.kernel, entry.slots(hyperparameters), entry.factors)


@dataclass(frozen=True)
class Coverage:
    """What a type's kernel covers: exactly these fields, any values the type accepts."""

    kernel: Callable[..., None]
    fields: frozenset[str]
    slots: Callable[[Mapping[str, Any]], tuple[str | None, ...]]
    factors: FactorsFn


def _lerp_weights(weight: float, dtype: type) -> tuple[Any, Any, bool]:
    """torch's lerp at `weight`: the weight and its complement in the dtype, and whether it
    interpolates from the start (weight < ½), as `transforms.lerp_`."""
    return dtype(weight), dtype(1.0 - weight), abs(weight) < 0.5


def _preprocessing(h: Mapping[str, Any], dtype: type, coupled: bool = True) -> dict[str, Any]:
    weight_decay = h["weight_decay"]
    return {
        "weight_decay": dtype(weight_decay),
        "maximize": h["maximize"],
        "coupled": coupled and weight_decay != 0,
    }


def _shrink_minus_one(dtype: type, rate: float, h: Mapping[str, Any]) -> Any:
    return decoupled_shrink(dtype, rate, h["weight_decay"]) - dtype(1.0)


def _adam_moments(h: Mapping[str, Any], count: int, dtype: type) -> dict[str, Any]:
    """The factors of Adam's two moments, as NAdam and RAdam share them: lerp(m, g, 1 − β1),
    β2·v + (1 − β2)·g², and eps; with the decay, decoupled or coupled."""
    beta1, beta2 = h["betas"]
    weight, complement, near = _lerp_weights(1.0 - beta1, dtype)
    decoupled = h["decoupled_weight_decay"]
    return {
        "beta1_weight": weight,
        "beta1_complement": complement,
        "near": near,
        "beta2": dtype(beta2),
        "one_minus_beta2": dtype(1.0 - beta2),
        "eps": dtype(h["eps"]),
        "decoupled": decoupled and h["weight_decay"] != 0,
        **_preprocessing(h, dtype, coupled=not decoupled),
    }


def _sgd(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    return kernels.SgdFactors(
        negative_lr=dtype(-rate),
        momentum=dtype(h["momentum"]),
        undamped=dtype(1.0 - h["dampening"]),
        has_momentum=h["momentum"] != 0,
        first=count == 1,
        dampened=h["dampening"] != 0,
        nesterov=h["nesterov"],
        **_preprocessing(h, dtype),
    )


def _adagrad(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    return kernels.AdagradFactors(
        negative_lr=dtype(-decayed_rate(rate, count, h["lr_decay"])),
        eps=dtype(h["eps"]),
        count=dtype(count),
        mean=h["accumulator"] == "mean",
        **_preprocessing(h, dtype),
    )


def _rmsprop(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    alpha = h["alpha"]
    weight, complement, near = _lerp_weights(1.0 - alpha, dtype)
    return kernels.RmspropFactors(
        negative_lr=dtype(-rate),
        alpha=dtype(alpha),
        one_minus_alpha=weight,
        alpha_again=complement,
        near=near,
        eps=dtype(h["eps"]),
        momentum=dtype(h["momentum"]),
        first_square=h["init"] == "first_grad" and count == 1,
        centered=h["centered"],
        has_momentum=h["momentum"] != 0,
        first=count == 1,
        **_preprocessing(h, dtype),
    )


def _adam(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    beta1, beta2 = h["betas"]
    decoupled = h["type"] == "adamw" or h["decoupled_weight_decay"]
    weight, complement, near = _lerp_weights(1.0 - beta1, dtype)
    return kernels.AdamFactors(
        negative_step=dtype(-(rate / (1.0 - beta1**count))),
        beta1_weight=weight,
        beta1_complement=complement,
        near=near,
        beta2=dtype(beta2),
        one_minus_beta2=dtype(1.0 - beta2),
        root_correction2=dtype(math.sqrt(1.0 - beta2**count)),
        eps=dtype(h["eps"]),
        shrink=decoupled_shrink(dtype, rate, h["weight_decay"]),
        shrink_minus_one=_shrink_minus_one(dtype, rate, h),
        decoupled=decoupled and h["weight_decay"] != 0,
        amsgrad=h["amsgrad"],
        **_preprocessing(h, dtype, coupled=not decoupled),
    )


def _adamax(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    beta1, beta2 = h["betas"]
    weight, complement, near = _lerp_weights(1.0 - beta1, dtype)
    return kernels.AdamaxFactors(
        negative_lr=dtype(-rate),
        beta1_weight=weight,
        beta1_complement=complement,
        near=near,
        correction1=dtype(1.0 - beta1**count),
        beta2=dtype(beta2),
        eps=dtype(h["eps"]),
        **_preprocessing(h, dtype),
    )


def _nadam(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    beta1, beta2 = h["betas"]
    gradient_weight, momentum_weight = nadam_weights(
        beta1, h["momentum_decay"], count, slots["mu_product"]
    )
    return kernels.NadamFactors(
        negative_lr=dtype(-rate),
        gradient_weight=dtype(gradient_weight),
        momentum_weight=dtype(momentum_weight),
        root_correction2=dtype(math.sqrt(1.0 - beta2**count)),
        shrink_minus_one=_shrink_minus_one(dtype, rate, h),
        **_adam_moments(h, count, dtype),
    )


def _radam(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    beta1, beta2 = h["betas"]
    rectification = radam_rectification(beta2, count)
    return kernels.RadamFactors(
        negative_lr=dtype(-rate),
        correction1=dtype(1.0 - beta1**count),
        rectified=rectification is not None,
        rectification=dtype(rectification or 0.0),
        shrink_minus_one=_shrink_minus_one(dtype, rate, h),
        **_adam_moments(h, count, dtype),
    )


def _adadelta(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    rho = h["rho"]
    return kernels.AdadeltaFactors(
        negative_lr=dtype(-rate),
        rho=dtype(rho),
        one_minus_rho=dtype(1.0 - rho),
        eps=dtype(h["eps"]),
        **_preprocessing(h, dtype),
    )


def _lion(h: Mapping[str, Any], count: int, rate: float, dtype: type, slots: Slots) -> Any:
    beta1, beta2 = h["betas"]
    weight1, complement1, near1 = _lerp_weights(1.0 - beta1, dtype)
    weight2, complement2, near2 = _lerp_weights(1.0 - beta2, dtype)
    return kernels.LionFactors(
        negative_lr=dtype(-rate),
        beta1_weight=weight1,
        beta1_complement=complement1,
        near1=near1,
        beta2_weight=weight2,
        beta2_complement=complement2,
        near2=near2,
        shrink_minus_one=_shrink_minus_one(dtype, rate, h),
        maximize=h["maximize"],
        decoupled=h["weight_decay"] != 0,
    )


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


ADAM_FIELDS = _fields("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")

FUSED_TYPES: dict[str, Coverage] = {
    "sgd": Coverage(
        kernels.sgd,
        _fields("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
        lambda h: ("momentum_buffer" if h["momentum"] else None,),
        _sgd,
    ),
    "adagrad": Coverage(
        kernels.adagrad,
        _fields(
            "lr",
            "lr_decay",
            "weight_decay",
            "initial_accumulator_value",
            "eps",
            "accumulator",
            "maximize",
        ),
        lambda h: ("sum",),
        _adagrad,
    ),
    "rmsprop": Coverage(
        kernels.rmsprop,
        _fields("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "init", "maximize"),
        lambda h: (
            "square_avg",
            "grad_avg" if h["centered"] else None,
            "momentum_buffer" if h["momentum"] else None,
        ),
        _rmsprop,
    ),
    "adam": Coverage(
        kernels.adam,
        ADAM_FIELDS | {"decoupled_weight_decay"},
        lambda h: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if h["amsgrad"] else None),
        _adam,
    ),
    "adamw": Coverage(
        kernels.adam,
        ADAM_FIELDS,
        lambda h: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if h["amsgrad"] else None),
        _adam,
    ),
    "adamax": Coverage(
        kernels.adamax,
        _fields("lr", "betas", "eps", "weight_decay", "maximize"),
        lambda h: ("exp_avg", "exp_inf"),
        _adamax,
    ),
    "nadam": Coverage(
        kernels.nadam,
        _fields(
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "momentum_decay",
            "decoupled_weight_decay",
            "maximize",
        ),
        lambda h: ("exp_avg", "exp_avg_sq"),
        _nadam,
    ),
    "radam": Coverage(
        kernels.radam,
        _fields("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "maximize"),
        lambda h: ("exp_avg", "exp_avg_sq"),
        _radam,
    ),
    "adadelta": Coverage(
        kernels.adadelta,
        _fields("lr", "rho", "eps", "weight_decay", "maximize"),
        lambda h: ("square_avg", "acc_delta"),
        _adadelta,
    ),
    "lion": Coverage(
        kernels.lion,
        _fields("lr", "betas", "weight_decay", "maximize"),
        lambda h: ("exp_avg",),
        _lion,
    ),
}
"""Every type with a kernel. `custom`, and any type not listed, runs its chain."""


def warm_up() -> None:
    """Compile every kernel for float32 and float64, or load it from numba's disk cache
    (`NUMBA_CACHE_DIR`; beside the sources by default), by one step of each covered type's
    default configuration on one element: a server calls this before it reports ready, so
    that no step waits for a compiler."""
    for kind in FUSED_TYPES:
        hyperparameters, transform = build_optimizer({"type": kind})
        step = fused_step_for(hyperparameters)
        assert step is not None, kind
        for dtype in FUSED_DTYPES:
            param = np.zeros(1, dtype)
            slots = {**transform.init(param), STEP_SLOT: np.ones((), np.int64)}
            task = step.task(param, np.zeros(1, dtype), slots, 0.0)
            assert task is not None
            run([task], 1)
            squared_norms({"w": param}, 1)
