"""The vocabulary of the optimizer core.

Every optimizer here is an instance of the lecture's general form

    θ_{t+1} = θ_t − η_t / (σ_t + eps) · m_t

built from small blocks, in optax's spirit: a `GradientTransformation` is a pair of functions
`(init, update)` with explicit state. The blocks act **per tensor** on a *running update* `u`:

- `u` starts as the gradient `g_t` of one tensor;
- pre-processing blocks (`maximize`, coupled weight decay) rewrite it, and what leaves the last of
  them is the gradient `g_t` that the σ-blocks accumulate (torch applies both before any moment
  sees the gradient);
- momentum blocks trace the running update (`m_t`), σ-blocks accumulate from `g_t` and divide the
  running update by `σ_t + eps`, and the final block scales by `−η_t`;
- the engine adds the result to θ.

A tensor's state is a flat dict of named slots (`Slots`), named as torch names them
(`exp_avg`, `exp_avg_sq`, `momentum_buffer`, `sum`, `square_avg`, …) so an export maps onto
`torch.optim` state dicts. Per-tensor scalars are 0-d arrays. The slot `step` belongs to the
engine, not to any block (see `engine.py`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from optaas_state import STEP_SLOT

Params = dict[str, np.ndarray]
"""Tensor name → θ (one array per tensor)."""

Slots = dict[str, np.ndarray]
"""One tensor's state: slot name → array (0-d for per-tensor scalars)."""

Shape = tuple[int, ...]

# STEP_SLOT, the per-tensor step count, is kept by the engine (torch keeps one per parameter);
# its name is the storage keys' and the export format's (`optaas_state`, imported above).


@dataclass(frozen=True, slots=True)
class SparseRows:
    """A gradient that touches only some rows (the first axis) of its tensor — an embedding
    table's, as torch's `nn.Embedding(sparse=True)` makes it:

        g[rows[k]] += values[k]     for k < len(rows);   every other row of g is zero

    `values` has shape `(len(rows), *θ.shape[1:])`; repeated rows add up. The engine steps only
    the rows given (`SparseRows` coalesced by `gradients.coalesce_rows`: unique, sorted rows).
    """

    rows: np.ndarray
    values: np.ndarray


Gradient = np.ndarray | SparseRows
"""One tensor's gradient: dense (θ's shape) or sparse rows."""


def values_of(gradient: Gradient) -> np.ndarray:
    """The numbers a gradient holds: the array itself, or the values of its rows (the rows it
    leaves out are zeros, which add nothing to a norm and are finite)."""
    return gradient.values if isinstance(gradient, SparseRows) else gradient


# --------------------------------------------------------------------------------------------
# The error family
# --------------------------------------------------------------------------------------------


class OptimError(ValueError):
    """Base of every error the core raises on bad input.

    `detail` is a sentence for a human; `extras` holds the fields that locate the problem
    (`field`, `tensor`, `expected_shape`, `got_shape`), JSON-ready, for a problem+json answer.
    """

    def __init__(self, detail: str, **extras: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extras = extras


class HyperParameterError(OptimError):
    """An invalid configuration value; `field` is its dotted path, e.g. `optimizer.betas`,
    `schedule.then.total_steps`, `groups.0.lr`."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}" if field else detail, field=field)
        self.field = field
        self.reason = detail

    def within(self, prefix: str) -> HyperParameterError:
        """The same error, its field seen from one level up (`betas` → `optimizer.betas`)."""
        return HyperParameterError(join_path(prefix, self.field), self.reason)


class GradientMismatch(OptimError):  # noqa: N818 -- the facade's name (docs/design.md)
    """A gradient that does not match its parameter: missing, unknown, wrong shape or not a
    real-valued array. `expected_shape` is None for an unknown tensor, `got_shape` None for a
    missing one."""

    def __init__(
        self,
        tensor: str,
        expected_shape: Shape | None,
        got_shape: Shape | None,
        detail: str,
    ) -> None:
        super().__init__(
            detail,
            tensor=tensor,
            expected_shape=None if expected_shape is None else list(expected_shape),
            got_shape=None if got_shape is None else list(got_shape),
        )
        self.tensor = tensor
        self.expected_shape = expected_shape
        self.got_shape = got_shape


class NonFiniteGradient(OptimError):  # noqa: N818 -- the facade's name
    """A gradient holding NaN or ±Inf under `nonfinite="reject"`; `tensor` is the first such."""

    def __init__(self, tensor: str) -> None:
        super().__init__(f"the gradient of {tensor!r} holds NaN or Inf", tensor=tensor)
        self.tensor = tensor


class UnsupportedTensor(OptimError):  # noqa: N818 -- the facade's name
    """A tensor, or a form of gradient, that its group's optimizer cannot step: Muon on a tensor
    that is not 2-D, sparse rows for a type that takes none. `tensor` names it; `field` is the
    optimizer spec's path (`optimizer`, `groups.1.optimizer`) where one is known.

    A block's `init` raises it without a tensor name (`UnsupportedTensor("", detail)`); the
    engine names the tensor (`named`)."""

    def __init__(self, tensor: str, detail: str, *, field: str | None = None) -> None:
        extras: dict[str, Any] = {"tensor": tensor}
        if field is not None:
            extras["field"] = field
        super().__init__(detail, **extras)
        self.tensor = tensor
        self.field = field

    def named(self, tensor: str, field: str | None = None) -> UnsupportedTensor:
        """The same error about `tensor` (and the spec at `field`)."""
        return UnsupportedTensor(tensor, f"{tensor!r}: {self.detail}", field=field)


def join_path(prefix: str, field: str) -> str:
    """`join_path("optimizer", "betas") == "optimizer.betas"`; empty parts are dropped."""
    return ".".join(part for part in (prefix, field) if part)


# --------------------------------------------------------------------------------------------
# Blocks and their composition
# --------------------------------------------------------------------------------------------


class Scratch:
    """Work buffers of one shape and dtype, made on first use and kept between steps.

    At 1e6+ elements a fresh temporary costs as much as the arithmetic (allocation and page
    faults), so the blocks write into these instead. `head(n)` lends the first n elements of
    these buffers to a slice of a tensor.
    """

    def __init__(self, shape: Shape, dtype: np.dtype, source: Scratch | None = None) -> None:
        self.shape = shape
        self.dtype = dtype
        self._source = source

    @functools.cached_property
    def work(self) -> np.ndarray:
        """Where blocks write the running update once it is no longer the gradient or a slot."""
        return self._buffer("work")

    @functools.cached_property
    def temp(self) -> np.ndarray:
        """A second buffer for a block's intermediate (a denominator, a difference)."""
        return self._buffer("temp")

    def head(self, size: int) -> Scratch:
        """Scratch of shape (size,) backed by the first `size` elements of this one's buffers."""
        return Scratch((size,), self.dtype, source=self)

    def _buffer(self, name: str) -> np.ndarray:
        if self._source is None:
            return np.empty(self.shape, self.dtype)
        return getattr(self._source, name).reshape(-1)[: math.prod(self.shape)]


@dataclass(frozen=True, slots=True)
class TensorStep:
    """What a block sees of one tensor's update.

    `count` is the tensor's step count including this update (torch's `state["step"]` after its
    `+= 1`), so bias corrections use `1 − β^count`. `lr` is η_t of the tensor's group.
    """

    param: np.ndarray
    grad: np.ndarray
    count: int
    lr: float
    scratch: Scratch


InitFn = Callable[[np.ndarray], Slots]
"""θ of one tensor → its fresh slots. A block that cannot step a tensor of θ's shape (Muon's
orthogonalisation: 2-D only) raises `UnsupportedTensor` here, so that a session is refused when
it is made rather than half-way through a step."""

UpdateFn = Callable[[np.ndarray, Slots, TensorStep], np.ndarray]
"""(running update, the tensor's slots, the step context) → the new running update.

A block may update its own slots in place. It must not write into θ, into `ctx.grad` or into
another block's slot; the running update it receives may be a slot of the block before it, so a
block that changes it writes into `ctx.scratch.work` (in place when it already is that buffer).

Blocks act elementwise, so the engine may run a chain over slices of a large tensor (to keep the
intermediates in cache): a per-tensor scalar slot (0-d) must evolve from the step count and the
hyper-parameters only, never from the tensor's values, so that every slice computes the same.
A block that reads the whole tensor (a norm, a matrix product, factors along an axis) says so
with `elementwise=False`, and the engine never slices a chain that holds one.
"""

EvalFn = Callable[[np.ndarray, Slots], np.ndarray]
"""(θ of one tensor, its slots) → the weights to evaluate (ASGD's average `ax`, schedule-free's
x): a new array or a slot itself (`ax`), never changed by the caller; θ and the slots are left
as they are. Where no block of a chain defines one, the weights to evaluate are θ itself."""


class GradientTransformation(NamedTuple):
    """A block: a pair of functions with explicit state.

    `preprocess=True` marks a block that rewrites the gradient itself (maximize, coupled weight
    decay): its output becomes `ctx.grad` for the blocks after it. `eval` (optional) gives the
    weights to evaluate from θ and the slots (see `EvalFn`). `elementwise=False` marks a block
    that reads the whole tensor at once (see `UpdateFn`).
    """

    init: InitFn
    update: UpdateFn
    preprocess: bool = False
    eval: EvalFn | None = None
    elementwise: bool = True


def slot_names(transform: GradientTransformation, ndim: int = 2) -> tuple[str, ...]:
    """The slot names a block keeps for a tensor of `ndim` dimensions, found by initialising it
    for a probe tensor of that many (Adafactor keeps row and column factors for 2+ dimensions,
    one variance below; a 2-D probe suits every block, Muon's included)."""
    return tuple(transform.init(np.zeros((1,) * ndim, np.float64)))


def chain(*transforms: GradientTransformation | None) -> GradientTransformation:
    """Apply the blocks in order, each to the running update the previous one produced.

    `None` entries (options switched off) are skipped. Pre-processing blocks must come first.
    The chain's state is the union of the blocks' slots; two blocks keeping a slot of the same
    name (or one named `step`, the engine's) is a construction error. Its `eval` is that of the
    one block defining one (two is a construction error); it is elementwise when every block is.
    """
    blocks = tuple(transform for transform in transforms if transform is not None)
    check_slot_names(blocks)
    check_preprocessing_first(blocks)
    evals = [block.eval for block in blocks if block.eval is not None]
    if len(evals) > 1:
        raise ValueError("two blocks of one chain define the weights to evaluate")

    def init(param: np.ndarray) -> Slots:
        slots: Slots = {}
        for block in blocks:
            slots.update(block.init(param))
        return slots

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        for block in blocks:
            updates = block.update(updates, slots, ctx)
            if block.preprocess:
                ctx = replace(ctx, grad=updates)
        return updates

    return GradientTransformation(
        init,
        update,
        eval=evals[0] if evals else None,
        elementwise=all(block.elementwise for block in blocks),
    )


def check_slot_names(blocks: Sequence[GradientTransformation]) -> None:
    """Raise `ValueError` if two blocks would share a slot (a bug in a chain, not bad input)."""
    seen: set[str] = {STEP_SLOT}
    for block in blocks:
        for name in slot_names(block):
            if name in seen:
                raise ValueError(f"slot {name!r} is kept by two blocks of one chain")
            if "/" in name:
                raise ValueError(f"slot {name!r}: slot names may not contain '/'")
            if name.startswith("~"):
                raise ValueError(f"slot {name!r}: '~' starts the stored keys that are not slots")
            seen.add(name)


def check_preprocessing_first(blocks: Sequence[GradientTransformation]) -> None:
    """Raise `ValueError` if a pre-processing block follows another kind: it may rewrite the
    running update in place, which is only safe while that is still the engine's gradient."""
    kinds = [block.preprocess for block in blocks]
    if kinds != sorted(kinds, reverse=True):
        raise ValueError("pre-processing blocks must come first in a chain")


Spec = Mapping[str, Any]
"""A JSON-like configuration mapping (`{"type": "adam", "lr": 1e-3, …}`)."""


# --------------------------------------------------------------------------------------------
# Whole-step rules: the learning-rate-free family
# --------------------------------------------------------------------------------------------

Globals = dict[str, np.ndarray]
"""A session's global quantities: name → 0-d or 1-d array (D-Adaptation's d, DoG's distances,
schedule-free's weight sums). Names hold no "/"; a group's own quantities are named
`<group>.<quantity>`, the group being `optimizer` (the base) or `groups.<i>`."""


class StepTensor(NamedTuple):
    """One tensor's part in a whole step: its context (θ, g, count, η_t, scratch) and slots."""

    ctx: TensorStep
    slots: Slots


@dataclass(frozen=True, slots=True)
class GroupStep:
    """One parameter group's part in a whole step.

    `name` keys the group's own global quantities (`optimizer`, `groups.0`, …),
    `hyperparameters` are its fields with the defaults filled in, `lr` is its η_t, `tensors`
    those of its tensors that carry a gradient in this step, in parameter order.
    """

    name: str
    hyperparameters: Mapping[str, Any]
    lr: float
    tensors: tuple[StepTensor, ...]


class StepReport(NamedTuple):
    """What a whole-step rule did: the step size it chose (the step's reported `lr`) and
    ‖θ_{t+1} − θ_t‖² over all tensors."""

    lr: float
    update_squared: float


GlobalUpdateFn = Callable[[Sequence[GroupStep], Globals], StepReport]
"""(every group holding tensors, in order, base first; the session's globals) → the report.

Updates θ, the slots and the globals in place. Torch's `param_groups[0]` is `groups[0]`."""


class GlobalTransformation(NamedTuple):
    """A rule whose step needs every tensor at once: a reduction over all of them (Prodigy's
    and D-Adaptation's d, DoG's distance) decides the step size before any tensor moves.

    `init` and `eval` act per tensor, as a block's do; `update` takes the whole step. Global
    quantities start absent and are set by the first step, as the references start theirs.
    `partial_steps=False` refuses a step that leaves a tensor out (the rule's norms need all).
    """

    init: InitFn
    update: GlobalUpdateFn
    eval: EvalFn | None = None
    partial_steps: bool = True


Transformation = GradientTransformation | GlobalTransformation
"""What a group steps with: a chain of per-tensor blocks, or a whole-step rule."""
