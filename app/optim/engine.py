"""The engine: a session's whole update rule — per-group chains, the schedule, clipping and the
non-finite policy — applied to (θ, state, gradient) in place.

One step, in order (nothing is written until the checks have passed):

1. check names, shapes and dtypes of the gradients against θ (`partial` allows a subset: the
   other tensors and their state are left alone, torch's `grad is None`), cast them to θ's dtype;
2. non-finite gradients: `reject` raises `NonFiniteGradient` naming the first tensor, `skip`
   returns `StepResult(skipped=True)` with nothing changed (t included);
3. `grad_norm`, the global L2 norm of the gradient as received;
4. clip by value, then by global norm (torch's rules);
5. per tensor: its step count += 1, then its group's chain at η_t = schedule(t, group lr), and
   θ ← θ + u, i.e. θ ← θ − η_t/(σ_t + eps)·m_t (large tensors slice by slice, so that the
   chain's intermediates stay in cache, unless a block reads the whole tensor); a sparse row
   gradient runs the chain over the rows it touches only (gathered, stepped, put back);
6. t += 1, and the loss (if given) is fed to `reduce_on_plateau`.

Groups either override the base optimizer's hyper-parameters or hold an optimizer of their own
(optax's `multi_transform`): each tensor is stepped by the chain of the first group matching
it, and groups of different types may not match the same tensor.

The learning-rate-free family (`learning_rate_free.py`) replaces step 5 by one call of its
whole-step rule (a `GlobalTransformation`): its sums over all tensors decide the step size
before any tensor moves, so it cannot run tensor by tensor. Its global quantities live in
`OptimizerState.globals`. Such a rule steps every tensor of the session, so it shares a session
with no other optimizer type (a group of another type beside it is refused).

The per-tensor `step` slot is a 0-d int64 array: an exact count (torch's float32 `step` stops
counting at 2²⁴), kept per tensor because partial steps advance only the tensors they carry and
bias corrections must use each tensor's own count.
"""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from optaas_state import GLOBAL_PREFIX, array_key, split_key

from app.optim import checks, fused
from app.optim.base import (
    STEP_SLOT,
    Globals,
    GlobalTransformation,
    Gradient,
    GradientMismatch,
    GradientTransformation,
    GroupStep,
    HyperParameterError,
    NonFiniteGradient,
    Params,
    Scratch,
    Slots,
    SparseRows,
    StepReport,
    StepTensor,
    TensorStep,
    Transformation,
    UnsupportedTensor,
    slot_names,
    values_of,
)
from app.optim.gradients import (
    check_gradients,
    clip_by_global_norm,
    clip_by_value,
    first_nonfinite,
    global_norm,
    squared_norm,
    sum_of_squares,
)
from app.optim.learning_rate_free import LEARNING_RATE_FREE, check_group_overrides
from app.optim.optimizers import build_optimizer, optimizer_fields, sparse_rows_refusal
from app.optim.schedules import build_schedule

CONFIG_FIELDS = frozenset(
    {"optimizer", "schedule", "clip_grad_norm", "clip_grad_value", "nonfinite", "groups"}
)
NONFINITE_POLICIES = ("reject", "skip")
SESSION_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
CHUNK_ELEMENTS = 1 << 17
"""Tensors above twice this size are updated slice by slice (cache blocking)."""
PARALLEL_MIN_ELEMENTS = 1 << 22
"""Steps over fewer elements than this run in one thread: below it, handing slices to another
thread costs about what it saves (measured on 2 vCPUs: 10 % faster for Adam at 1e6, twice as
slow for SGD with momentum; 20–25 % faster for both at 1e7)."""

_threads = 1


def set_num_threads(threads: int) -> None:
    """The number of threads a step of an `Optimizer` made without `threads` uses from now on
    (for this process; torch's `torch.set_num_threads` plays the same part)."""
    global _threads
    _threads = _checked_threads(threads)


def get_num_threads() -> int:
    """The process's default number of threads per step (1 unless `set_num_threads` said)."""
    return _threads


def _checked_threads(threads: int) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number of at least 1, not {threads!r}")
    return threads


@dataclass
class OptimizerState:
    """Everything that changes from step to step.

    `step` is t, the number of updates applied; `slots` maps tensor name → slot name → array
    (torch's names, `step` included, per-tensor scalars as 0-d arrays); `schedule` is
    `reduce_on_plateau`'s state ({} for the other schedules); `globals` the quantities of the
    learning-rate-free family that span tensors (`Globals`; {} for every other type).
    """

    step: int
    slots: dict[str, Slots]
    schedule: dict[str, float] = field(default_factory=dict)
    globals: Globals = field(default_factory=dict)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The slots flattened as `"<slot>/<tensor>"` → array (slot names hold no "/", tensor
        names may), and the globals as `"~global/<name>"`, for storage as raw bytes."""
        arrays = {
            array_key(slot, tensor): array
            for tensor, slots in self.slots.items()
            for slot, array in slots.items()
        }
        arrays.update({GLOBAL_PREFIX + name: array for name, array in self.globals.items()})
        return arrays

    @classmethod
    def from_arrays(
        cls, step: int, arrays: Mapping[str, np.ndarray], schedule_state: Mapping[str, float]
    ) -> OptimizerState:
        """The inverse of `to_arrays`. Read-only arrays (e.g. `np.frombuffer` over stored bytes)
        are copied, since steps update the slots in place."""
        slots: dict[str, Slots] = {}
        globals_: Globals = {}
        for key, array in arrays.items():
            writable = np.require(array, requirements=["C", "W"])
            if key.startswith(GLOBAL_PREFIX):
                globals_[key.removeprefix(GLOBAL_PREFIX)] = writable
                continue
            slot, tensor = split_key(key)  # a ValueError if it is not "<slot>/<tensor>"
            slots.setdefault(tensor, {})[slot] = writable
        return cls(int(step), slots, dict(schedule_state), globals_)


@dataclass(frozen=True)
class StepResult:
    """What a step reports.

    `lr` is η_t of the base group (the rate this step used); `grad_norm` the global L2 norm of
    the gradient as received, before clipping (None if it was not finite); `update_norm` is
    ‖θ_{t+1} − θ_t‖₂ over all tensors. `changed_rows` holds, for each tensor stepped by sparse
    rows, the rows it changed (sorted, unique); the other rows of those tensors are as they were.
    """

    skipped: bool
    lr: float
    grad_norm: float | None
    update_norm: float
    changed_rows: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Group:
    """A parameter group: its hyper-parameters (defaults filled in, `type` included) and its
    chain or whole-step rule (compared by identity). `spec_path` is where its optimizer spec is
    (`optimizer` for the base group and the groups that override it, `groups.<i>.optimizer` for
    a group with an optimizer of its own); `sparse_refusal` why it cannot step sparse rows
    (None: it can)."""

    hyperparameters: dict[str, Any]
    transform: Transformation
    spec_path: str = "optimizer"
    sparse_refusal: str | None = None
    kernel: fused.FusedStep | None = None
    """The fused kernel that runs this configuration in one pass, if one covers it."""

    @property
    def type(self) -> str:
        """The optimizer type, e.g. `adamw`, `muon`."""
        return str(self.hyperparameters["type"])

    @property
    def lr(self) -> float:
        """The group's base rate, which the schedule turns into η_t."""
        return float(self.hyperparameters["lr"])


class Optimizer:
    """A session's whole update rule: per-group chains, schedule, clipping, non-finite policy.

    `config` mirrors the wire: `{"optimizer": {...}, "schedule": {...} | None, "clip_grad_norm":
    float | None, "clip_grad_value": float | None, "nonfinite": "reject" | "skip", "groups":
    [{"match": [globs], <overrides>} | {"match": [globs], "optimizer": {...}}, ...] | None}`.
    Everything invalid raises `HyperParameterError` naming the field. `names` are the session's
    tensor names: each takes the first group one of whose globs matches it (fnmatch), or the
    base optimizer; two groups of different types matching one tensor is an error.

    An instance keeps scratch buffers between steps, so use one per session at a time. Steps
    over more than PARALLEL_MIN_ELEMENTS elements run their slices on `threads` threads (by
    default the process's `get_num_threads()`); the numbers do not depend on it.
    """

    def __init__(
        self, config: Mapping[str, Any], names: Sequence[str], *, threads: int | None = None
    ) -> None:
        self._fixed_threads = None if threads is None else _checked_threads(threads)
        config = checks.mapping("", config)
        checks.check_known_fields(config, CONFIG_FIELDS, "")
        if "optimizer" not in config:
            raise HyperParameterError("optimizer", "required field is missing")
        base_hyperparameters, base_transform = build_optimizer(config["optimizer"])
        self.base_group = _group(base_hyperparameters, base_transform)
        self.matched_groups = _build_groups(config.get("groups"), base_hyperparameters)
        self.schedule = build_schedule(config.get("schedule"))
        self.clip_grad_norm = _optional_positive(config, "clip_grad_norm")
        self.clip_grad_value = _optional_positive(config, "clip_grad_value")
        self.nonfinite = checks.choice(
            "nonfinite", config.get("nonfinite", "reject"), NONFINITE_POLICIES
        )
        self.names = tuple(names)
        _check_one_type_per_tensor(self.names, self.matched_groups)
        self.groups = (self.base_group, *(group for _, group in self.matched_groups))
        self.group_of = {name: self._match(name) for name in self.names}
        self._slot_names: dict[str, tuple[str, ...]] = {}
        self._scratch: dict[str, Scratch] = {}
        self._slice_scratch: dict[tuple[int, np.dtype], Scratch] = {}

    @property
    def threads(self) -> int:
        """Threads a large step runs on: as made, or the process's default."""
        return self._fixed_threads if self._fixed_threads is not None else _threads

    def _match(self, name: str) -> Group:
        """The first group with a glob matching `name`, else the base group."""
        for globs, group in self.matched_groups:
            if any(fnmatch.fnmatchcase(name, glob) for glob in globs):
                return group
        return self.base_group

    def init(self, params: Mapping[str, np.ndarray]) -> OptimizerState:
        """The state at t = 0: every tensor's slots as its group's chain starts them."""
        if set(params) != set(self.names):
            raise ValueError(f"params {sorted(params)} are not the tensors {sorted(self.names)}")
        for name, param in params.items():
            if param.dtype not in SESSION_DTYPES:
                raise ValueError(f"{name!r} is {param.dtype}, not float32 or float64")
        slots = {name: self.fresh_slots(name, param) for name, param in params.items()}
        return OptimizerState(0, slots, self.schedule.init())

    def fresh_slots(self, name: str, param: np.ndarray) -> Slots:
        """The slots tensor `name` starts with: its group's chain's, plus `step` = 0. Raises
        `UnsupportedTensor` (naming the tensor) if its optimizer cannot step a tensor of θ's
        shape (Muon: 2-D only)."""
        group = self.group_of[name]
        try:
            slots = group.transform.init(param)
        except UnsupportedTensor as error:
            raise error.named(name, f"{group.spec_path}.type") from None
        slots[STEP_SLOT] = np.zeros((), np.int64)
        return slots

    def fit_slots(self, state: OptimizerState, params: Mapping[str, np.ndarray]) -> None:
        """Give each tensor of `params` exactly the slots its chain keeps, in place.

        Slots it had stay as they are where they have the shape and dtype the chain keeps
        (Prodigy's `s` is not D-Adaptation's), missing ones start as `fresh_slots` starts them
        (as a step would start them), unused ones are dropped: after a change of configuration a
        session holds exactly the slots an import of the new configuration expects. (A step
        only adds what is missing: `_slots`.) The global quantities stay where the new
        configuration keeps them alike — name, shape, dtype — and go otherwise (a regrouped
        LDoG's per-tensor distances start again as at a first step).
        """
        for name, param in params.items():
            kept = state.slots.get(name, {})
            fresh = self.fresh_slots(name, param)
            state.slots[name] = {
                slot: kept[slot] if _alike(kept.get(slot), array) else array
                for slot, array in fresh.items()
            }
        if state.globals:  # kept where this configuration keeps them alike (`global_templates`)
            templates = self.global_templates(params)
            state.globals = {
                name: value
                for name, value in state.globals.items()
                if _alike(value, templates.get(name))
            }

    def hyperparameters_of(self, name: str) -> dict[str, Any]:
        """The type and hyper-parameters (defaults filled in) of tensor `name`'s group."""
        return self.group_of[name].hyperparameters

    def takes_sparse_rows(self, name: str) -> bool:
        """Whether tensor `name`'s group can step a sparse row gradient (sparse_adam; adagrad
        and sgd without momentum or weight decay). Whether the tensor has rows (2+ dims) is
        checked with the gradient."""
        return self.group_of[name].sparse_refusal is None

    @property
    def piecewise(self) -> bool:
        """Whether a dense step acts on each element of a tensor from that element's θ,
        gradient and slots and the tensor's 0-d slots alone, so that any part of a tensor can be
        stepped apart: `step` on a flat slice of θ, the gradient and the slots of θ's shape,
        with the 0-d slots as they were before the step, gives that slice of the whole step
        (as the engine's own slices do, `_work_units`), bit for bit.

        Not so with `clip_grad_norm` (one norm over every tensor), a whole-step rule (the
        learning-rate-free family's globals), or a block that reads the whole tensor (norms,
        factored moments, matrix products: `elementwise=False`). Sparse rows are a step's
        property, not the rule's: the caller judges them."""
        return (
            self.clip_grad_norm is None
            and not isinstance(self.base_group.transform, GlobalTransformation)
            and all(group.transform.elementwise for group in self.groups)
        )

    def eval_params(
        self, params: Mapping[str, np.ndarray], state: OptimizerState
    ) -> dict[str, np.ndarray]:
        """The weights to evaluate, per tensor: its chain's eval view (ASGD's average `ax`)
        where it defines one, else θ itself. The arrays are θ's or the slots', not copies; a
        tensor whose state lacks a slot its chain keeps evaluates at θ."""
        weights = {}
        for name, param in params.items():
            evaluate = self.group_of[name].transform.eval
            slots = state.slots.get(name, {})
            complete = all(slot in slots for slot in self._expected_slots(name, param))
            weights[name] = evaluate(param, slots) if evaluate and complete else param
        return weights

    def global_templates(self, params: Mapping[str, np.ndarray]) -> Globals:
        """The global quantities this configuration keeps once it has stepped, as arrays of
        their shapes and dtypes (values meaningless); {} for a chain of per-tensor blocks.

        Found by two probe steps on tensors of θ's ranks and dtype with one element each and
        a gradient of ones: the globals' shapes depend on the number of tensors in a group
        (LDoG's one entry per tensor), never on their sizes. An import or a changed
        configuration is checked against them (`service`)."""
        if not isinstance(self.base_group.transform, GlobalTransformation):
            return {}
        probe = {name: np.zeros((1,) * param.ndim, param.dtype) for name, param in params.items()}
        state = self.init(probe)
        for _ in range(2):
            grads = {name: np.ones_like(param) for name, param in probe.items()}
            self.step(probe, state, grads)
        return state.globals

    def lr(self, state: OptimizerState) -> float:
        """η_t the next step will use, for the base group."""
        return self.schedule.rate(state.step, self.base_group.lr, state.schedule)

    def step(
        self,
        params: dict[str, np.ndarray],
        state: OptimizerState,
        grads: Mapping[str, Gradient],
        *,
        loss: float | None = None,
        partial: bool = False,
    ) -> StepResult:
        """Apply one gradient: updates `params` and `state` in place and advances `state.step`.

        A tensor's gradient is dense or `SparseRows` (its group must take them). Raises
        `GradientMismatch` / `NonFiniteGradient` / `UnsupportedTensor` (and changes nothing) on
        a bad gradient. `grads` are consumed: arrays already in θ's dtype are used as scratch
        space.
        """
        checked = check_gradients(params, grads, partial=partial)
        self._check_complete(params, checked)
        read_only = [name for name in checked if not params[name].flags.writeable]
        if read_only:  # a programming error, caught before anything is written
            raise ValueError(f"parameters {read_only} are read-only; steps update θ in place")
        self.check_sparse_rows(checked)
        if loss is not None:
            loss = _loss_value(loss)
        t = state.step
        base_rate = self.lr(state)
        whole = self._step_fused(params, state, checked)
        if whole is not None and whole[1] is not None:
            squared, update_squared = whole
            return self._stepped(state, t, loss, base_rate, squared, update_squared, {})
        squared = (
            whole[0]  # a step whose gradient is not finite, or whose norm overflowed
            if whole is not None
            else fused.squared_norms(
                {name: values_of(grad) for name, grad in checked.items()}, self.threads
            )
        )
        bad_tensor = first_nonfinite(checked, squared)
        if bad_tensor is not None:
            if self.nonfinite == "reject":
                raise NonFiniteGradient(bad_tensor)
            return StepResult(skipped=True, lr=base_rate, grad_norm=None, update_norm=0.0)
        grad_norm = global_norm(squared.values())
        self._clip(checked, grad_norm)
        rates = {group: self.schedule.rate(t, group.lr, state.schedule) for group in self.groups}
        sparse: dict[str, SparseRows] = {}
        if isinstance(self.base_group.transform, GlobalTransformation):
            base_rate, update_squared = self._step_whole(params, state, checked, rates)
        else:
            tensor_slots = {name: self._slots(state, name, params[name]) for name in checked}
            units: list[_WorkUnit] = []
            kernel_tasks: list[fused.FusedTask] = []
            for name, grad in checked.items():
                group, slots = self.group_of[name], tensor_slots[name]
                slots[STEP_SLOT] += 1
                if isinstance(grad, SparseRows):
                    sparse[name] = grad
                    continue
                task = _fused_task(group, params[name], grad, slots, rates[group])
                if task is not None:
                    kernel_tasks.append(task)
                    continue
                units.extend(self._work_units(name, params[name], grad, slots, group, rates[group]))
            update_squared = sum(self._run(units))
            update_squared += fused.run(kernel_tasks, self.threads)
            for name, rows in sparse.items():
                group = self.group_of[name]
                update_squared += _step_rows(
                    group.transform, params[name], rows, tensor_slots[name], rates[group]
                )
        return self._stepped(state, t, loss, base_rate, squared, update_squared, sparse)

    def _stepped(
        self,
        state: OptimizerState,
        t: int,
        loss: float | None,
        rate: float,
        squared: Mapping[str, float],
        update_squared: float,
        sparse: Mapping[str, SparseRows],
    ) -> StepResult:
        """The step's end: t + 1, the loss to the schedule, and what it reports."""
        state.step = t + 1
        if loss is not None:
            state.schedule = self.schedule.observe(t, loss, state.schedule)
        return StepResult(
            skipped=False,
            lr=rate,
            grad_norm=global_norm(squared.values()),
            update_norm=math.sqrt(update_squared),
            changed_rows={name: rows.rows for name, rows in sparse.items()},
        )

    def _step_fused(
        self, params: Params, state: OptimizerState, grads: Mapping[str, Gradient]
    ) -> tuple[dict[str, float], float | None] | None:
        """Steps 2–5 as one run of kernels (`fused.run_checked`) where they can be: every
        gradient dense, every tensor's group fused in θ's dtype with all its slots there, no
        clipping (it needs ‖g‖ between the sums and the updates), no whole-step rule. Returns
        the gradients' Σ g² and Σ‖u‖², with θ and the state updated; or Σ g² and None when a
        sum was not finite: then nothing has changed (the step counts and 0-d slots the
        factors advanced are put back); or None when the step cannot run so."""
        if (
            self.clip_grad_norm is not None
            or self.clip_grad_value is not None
            or isinstance(self.base_group.transform, GlobalTransformation)
        ):
            return None
        for name, grad in grads.items():
            group, param = self.group_of[name], params[name]
            slots = state.slots.get(name, {})
            if (
                isinstance(grad, SparseRows)
                or group.kernel is None
                or param.dtype not in fused.FUSED_DTYPES
                or STEP_SLOT not in slots
                or any(slot not in slots for slot in self._expected_slots(name, param))
            ):
                return None
        t = state.step
        rates = {group: self.schedule.rate(t, group.lr, state.schedule) for group in self.groups}
        scalars = [
            (array, array.copy())
            for name in grads
            for array in state.slots[name].values()
            if not array.ndim
        ]
        tasks = []
        for name, grad in grads.items():
            group, slots = self.group_of[name], state.slots[name]
            slots[STEP_SLOT] += 1
            task = _fused_task(group, params[name], grad, slots, rates[group])
            assert task is not None  # fused dtypes checked above
            tasks.append(task)
        squared, update_squared = fused.run_checked(grads, tasks, self.threads)
        if update_squared is None:
            for array, before in scalars:
                array[...] = before
        return squared, update_squared

    def check_sparse_rows(self, grads: Mapping[str, Gradient]) -> None:
        """`UnsupportedTensor` for the first sparse row gradient its group cannot step (public:
        the service checks posts it accumulates before their step runs)."""
        for name, grad in grads.items():
            group = self.group_of[name]
            if isinstance(grad, SparseRows) and group.sparse_refusal is not None:
                raise UnsupportedTensor(
                    name,
                    f"the gradient of {name!r} is sparse rows: {group.sparse_refusal}",
                    field=f"{group.spec_path}.type",
                )

    def _check_complete(self, params: Mapping[str, np.ndarray], grads: Params) -> None:
        """Refuse a partial step where the rule needs every tensor's gradient (DoG's norms)."""
        rule = self.base_group.transform
        if not isinstance(rule, GlobalTransformation) or rule.partial_steps:
            return
        for name, param in params.items():
            if name not in grads:
                kind = self.base_group.hyperparameters["type"]
                raise GradientMismatch(
                    name,
                    param.shape,
                    None,
                    f"the gradient of {name!r} is missing: {kind} needs every tensor's "
                    "gradient in each step (its norms span all of them), so it takes no "
                    "partial steps",
                )

    def _step_whole(
        self,
        params: Params,
        state: OptimizerState,
        grads: Params,
        rates: Mapping[Group, float],
    ) -> StepReport:
        """Step 5 for a whole-step rule: every group holding tensors (base first, as torch's
        `param_groups`), each with those of its tensors that carry a gradient, in one call."""
        carried: dict[Group, list[StepTensor]] = {group: [] for group in self.groups}
        for name, grad in grads.items():
            group = self.group_of[name]
            slots = self._slots(state, name, params[name])
            slots[STEP_SLOT] += 1
            scratch = self._scratch_for(name, params[name])
            ctx = TensorStep(params[name], grad, int(slots[STEP_SLOT]), rates[group], scratch)
            carried[group].append(StepTensor(ctx, slots))
        holding = set(self.group_of.values())
        groups = [
            GroupStep(
                "optimizer" if i == 0 else f"groups.{i - 1}",
                group.hyperparameters,
                rates[group],
                tuple(carried[group]),
            )
            for i, group in enumerate(self.groups)
            if group in holding
        ]
        return self.base_group.transform.update(groups, state.globals)

    def _clip(self, grads: Mapping[str, Gradient], grad_norm: float) -> None:
        """Clip by value, then by the global norm of what the value clipping left."""
        if self.clip_grad_value is not None:
            clip_by_value(grads, self.clip_grad_value)
            grad_norm = global_norm(squared_norm(values_of(grad)) for grad in grads.values())
        if self.clip_grad_norm is not None:
            clip_by_global_norm(grads, grad_norm, self.clip_grad_norm)

    def _slots(self, state: OptimizerState, name: str, param: np.ndarray) -> Slots:
        """The tensor's slots, with any its chain keeps but the state lacks started fresh (a
        configuration changed mid-run, e.g. momentum switched on, starts that slot anew)."""
        slots = state.slots.setdefault(name, {})
        expected = self._expected_slots(name, param)
        if STEP_SLOT not in slots or any(slot not in slots for slot in expected):
            for slot, array in self.fresh_slots(name, param).items():
                slots.setdefault(slot, array)
        return slots

    def _expected_slots(self, name: str, param: np.ndarray) -> tuple[str, ...]:
        """The slot names tensor `name`'s chain keeps for a tensor of θ's dimensions (Adafactor
        keeps other slots for vectors than for matrices), found once per tensor."""
        names = self._slot_names.get(name)
        if names is None:
            try:
                names = slot_names(self.group_of[name].transform, param.ndim)
            except UnsupportedTensor as error:
                raise error.named(name, f"{self.group_of[name].spec_path}.type") from None
            self._slot_names[name] = names
        return names

    def _work_units(
        self,
        name: str,
        param: np.ndarray,
        grad: np.ndarray,
        slots: Slots,
        group: Group,
        rate: float,
    ) -> list[_WorkUnit]:
        """θ ← θ + chain(g) for one tensor as units of work: the whole tensor, or — above
        2·CHUNK_ELEMENTS — consecutive slices of CHUNK_ELEMENTS, so that the dozen or so passes
        a chain makes over its intermediates hit the cache instead of memory.

        The blocks are elementwise; a per-tensor scalar slot (0-d) is advanced by the first
        slice, the others start from a copy of its old value and compute the same new one.
        """
        count = int(slots[STEP_SLOT])
        transform = group.transform
        small = param.size <= 2 * CHUNK_ELEMENTS
        if small or not transform.elementwise or not _contiguous(param, slots):
            scratch = self._scratch_for(name, param)
            return [_WorkUnit(transform, param, grad, slots, count, rate, scratch)]
        flat = {key: array.reshape(-1) for key, array in slots.items() if array.ndim}
        scalars = {key: array for key, array in slots.items() if not array.ndim}
        old_scalars = {key: array.copy() for key, array in scalars.items()}
        flat_param, flat_grad = param.reshape(-1), grad.reshape(-1)
        units = []
        for start in range(0, param.size, CHUNK_ELEMENTS):
            stop = min(param.size, start + CHUNK_ELEMENTS)
            view = {key: array[start:stop] for key, array in flat.items()}
            view.update(scalars if start == 0 else {k: v.copy() for k, v in old_scalars.items()})
            units.append(
                _WorkUnit(
                    transform, flat_param[start:stop], flat_grad[start:stop], view, count, rate
                )
            )
        return units

    def _run(self, units: Sequence[_WorkUnit]) -> list[float]:
        """Every unit's ‖u‖², in unit order; with `threads` > 1 and enough elements, the units
        split into that many consecutive runs of about equal size, one per thread.

        numpy releases the GIL inside its loops, so the runs proceed in parallel. Units touch
        disjoint elements and each thread has its own scratch, so the numbers do not depend on
        the number of threads.
        """
        total = sum(unit.param.size for unit in units)
        if self.threads == 1 or len(units) <= 1 or total < PARALLEL_MIN_ELEMENTS:
            return self._run_in_order(units, 0)
        first, *others = _split_evenly(units, self.threads)
        pool = _thread_pool(len(others))
        futures = [pool.submit(self._run_in_order, run, lane) for lane, run in enumerate(others, 1)]
        results = self._run_in_order(first, 0)
        return results + [squared for future in futures for squared in future.result()]

    def _run_in_order(self, units: Sequence[_WorkUnit], lane: int) -> list[float]:
        """The units one after another, slices borrowing scratch of this lane (thread)."""
        results = []
        for unit in units:
            scratch = unit.scratch
            if scratch is None:
                scratch = self._lane_scratch(lane, unit.param.dtype).head(unit.param.size)
            results.append(
                _apply_chain(
                    unit.transform,
                    unit.param,
                    unit.grad,
                    unit.slots,
                    unit.count,
                    unit.rate,
                    scratch,
                )
            )
        return results

    def _lane_scratch(self, lane: int, dtype: np.dtype) -> Scratch:
        """Slice-sized scratch for one lane, made once per dtype."""
        scratch = self._slice_scratch.get((lane, dtype))
        if scratch is None:
            scratch = self._slice_scratch[(lane, dtype)] = Scratch((CHUNK_ELEMENTS,), dtype)
        return scratch

    def _scratch_for(self, name: str, param: np.ndarray) -> Scratch:
        """The tensor's scratch buffers, made once per shape and dtype."""
        scratch = self._scratch.get(name)
        if scratch is None or scratch.shape != param.shape or scratch.dtype != param.dtype:
            scratch = self._scratch[name] = Scratch(param.shape, param.dtype)
        return scratch


def _alike(kept: np.ndarray | None, fresh: np.ndarray | None) -> bool:
    """Whether a kept array has the shape and dtype of the one a configuration would start."""
    return (
        kept is not None
        and fresh is not None
        and kept.shape == fresh.shape
        and kept.dtype == fresh.dtype
    )


@dataclass(frozen=True, slots=True)
class _WorkUnit:
    """A chain to run over (a slice of) one tensor; `scratch` None borrows the lane's."""

    transform: GradientTransformation
    param: np.ndarray
    grad: np.ndarray
    slots: Slots
    count: int
    rate: float
    scratch: Scratch | None = None


def _split_evenly(units: Sequence[_WorkUnit], parts: int) -> list[list[_WorkUnit]]:
    """Consecutive runs of `units` with about equal element counts (at most `parts`)."""
    total = sum(unit.param.size for unit in units)
    runs: list[list[_WorkUnit]] = [[]]
    done = 0
    for unit in units:
        if runs[-1] and done >= total * len(runs) / parts and len(runs) < parts:
            runs.append([])
        runs[-1].append(unit)
        done += unit.param.size
    return runs


@functools.cache
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size, shared by every optimizer in the process (threads are cheap to keep,
    expensive to start per step)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="optaas-optim")


def _step_rows(
    transform: GradientTransformation,
    param: np.ndarray,
    grad: SparseRows,
    slots: Slots,
    rate: float,
) -> float:
    """θ ← θ + chain(g) over the rows a sparse gradient touches: θ's rows and the slots of θ's
    shape are gathered, stepped as a dense tensor of those rows (the chains that take rows are
    elementwise, and their scalar slots evolve from the step count alone), and put back.
    Returns ‖u‖² over those rows (the others do not move)."""
    rows = grad.rows
    gathered = {
        key: array[rows] if array.shape == param.shape else array for key, array in slots.items()
    }
    block = param[rows]
    scratch = Scratch(block.shape, block.dtype)
    squared = _apply_chain(
        transform, block, grad.values, gathered, int(slots[STEP_SLOT]), rate, scratch
    )
    param[rows] = block
    for key, array in slots.items():
        if array.shape == param.shape:
            array[rows] = gathered[key]
    return squared


def _fused_task(
    group: Group, param: np.ndarray, grad: np.ndarray, slots: Slots, rate: float
) -> fused.FusedTask | None:
    """The dispatch point: when a fused kernel covers the group's configuration (and takes
    θ's dtype), the tensor's update as one kernel pass; None runs the group's chain."""
    return None if group.kernel is None else group.kernel.task(param, grad, slots, rate)


def _apply_chain(
    transform: GradientTransformation,
    param: np.ndarray,
    grad: np.ndarray,
    slots: Slots,
    count: int,
    rate: float,
    scratch: Scratch,
) -> float:
    """θ ← θ + u with u = chain(g) = −η_t/(σ_t + eps)·m_t, in place; returns ‖u‖²."""
    update = transform.update(grad, slots, TensorStep(param, grad, count, rate, scratch))
    np.add(param, update, out=param)
    return sum_of_squares(update)


def _contiguous(param: np.ndarray, slots: Slots) -> bool:
    """Whether θ and its full-size slots can be sliced flat as views."""
    return param.flags.c_contiguous and all(
        array.flags.c_contiguous for array in slots.values() if array.ndim
    )


def _group(
    hyperparameters: dict[str, Any],
    transform: Transformation,
    spec_path: str = "optimizer",
) -> Group:
    return Group(
        hyperparameters,
        transform,
        spec_path,
        sparse_rows_refusal(hyperparameters),
        fused.fused_step_for(hyperparameters),
    )


def _build_groups(groups: Any, base: dict[str, Any]) -> list[tuple[list[str], Group]]:
    """`[{"match": [globs], <overrides>} | {"match": [globs], "optimizer": {...}}, ...]` →
    (globs, group) pairs. An override must be a field of the base optimizer's type, and the
    group's chain is built from base + overrides; a group with an `optimizer` of its own (any
    type, its own defaults) takes nothing else beside `match`."""
    if groups is None:
        return []
    allowed = optimizer_fields(base["type"])
    built = []
    for i, spec in enumerate(checks.sequence("groups", groups)):
        path = f"groups.{i}"
        overrides = dict(checks.mapping(path, spec))
        if "match" not in overrides:
            raise HyperParameterError(f"{path}.match", "required field is missing")
        globs = [
            _glob(f"{path}.match.{j}", glob)
            for j, glob in enumerate(checks.sequence(f"{path}.match", overrides.pop("match")))
        ]
        if "optimizer" in overrides:
            group = _own_optimizer_group(overrides, path)
            _refuse_beside_whole_step_rule(base["type"], group, path)
            built.append((globs, group))
            continue
        checks.check_known_fields(overrides, allowed | {"match", "optimizer"}, path)
        hyperparameters, transform = build_optimizer({**base, **overrides}, path)
        check_group_overrides(base, overrides, path)
        built.append((globs, _group(hyperparameters, transform)))
    return built


def _refuse_beside_whole_step_rule(base_type: str, group: Group, path: str) -> None:
    """`HyperParameterError` at `<path>.optimizer.type` for a group with an optimizer of its own
    where the base or the group is a whole-step rule (the learning-rate-free family): such a
    rule steps every tensor of the session at once, from sums over all of them, so it shares a
    session with no other chain. Its groups override hyper-parameters instead."""
    if base_type in LEARNING_RATE_FREE or group.type in LEARNING_RATE_FREE:
        raise HyperParameterError(
            f"{path}.optimizer.type",
            f"a group with an optimizer of its own ({group.type}) cannot share a session with "
            f"{base_type}: the learning-rate-free types step every tensor together; give the "
            "group hyper-parameter overrides instead",
        )


def _own_optimizer_group(spec: Mapping[str, Any], path: str) -> Group:
    """A group holding a whole optimizer spec (optax's `multi_transform`)."""
    beside = [name for name in spec if name != "optimizer"]
    if beside:
        raise HyperParameterError(
            f"{path}.{beside[0]}",
            "a group with an optimizer of its own takes no overrides beside it "
            "(set them in its optimizer)",
        )
    hyperparameters, transform = build_optimizer(spec["optimizer"], f"{path}.optimizer")
    return _group(hyperparameters, transform, f"{path}.optimizer")


def _check_one_type_per_tensor(
    names: Sequence[str], matched_groups: Sequence[tuple[list[str], Group]]
) -> None:
    """`HyperParameterError` at `groups.<j>.match` if a tensor is matched by groups of two
    optimizer types: one tensor, one optimizer (the first match still wins among groups of the
    same type)."""
    for name in names:
        first: tuple[int, str] | None = None
        for j, (globs, group) in enumerate(matched_groups):
            if not any(fnmatch.fnmatchcase(name, glob) for glob in globs):
                continue
            if first is None:
                first = (j, group.type)
            elif group.type != first[1]:
                error = HyperParameterError(
                    f"groups.{j}.match",
                    f"tensor {name!r} is matched by groups.{first[0]} ({first[1]}) and "
                    f"groups.{j} ({group.type}): a tensor takes one optimizer type",
                )
                error.extras["tensor"] = name
                raise error


def _glob(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise HyperParameterError(field, f"expected a name pattern (a string), got {value!r}")
    return value


def _optional_positive(config: Mapping[str, Any], name: str) -> float | None:
    value = config.get(name)
    return None if value is None else checks.positive(name, value)


def _loss_value(loss: Any) -> float:
    """The loss as a float (NaN and ±Inf pass: `reduce_on_plateau` counts them as no
    improvement)."""
    if isinstance(loss, bool) or not isinstance(loss, (int, float, np.floating, np.integer)):
        raise HyperParameterError("loss", f"expected a number, got {loss!r}")
    return float(loss)
