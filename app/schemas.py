"""Wire models: the JSON bodies of the API, as pydantic models.

Optimizer and schedule specs are discriminated by `type`; each forbids unknown fields. The
optimizer models are derived from the core's factories (`app.optim.catalog`): their fields,
types and defaults are the factories' keyword parameters, written nowhere else. The schedules'
defaults are the core's (`schedule_defaults`; a test keeps them equal). Only types are checked
here; value rules (lr ≥ 0, betas in [0, 1), …) are the core's, which names the offending field.

Tensors (`params`, `gradients`) are typed `Any`: they are read straight into numpy by
`app.tensors` rather than validated element by element; their JSON schema is written by hand.
"""

from __future__ import annotations

import functools
import inspect
import operator
import types
import typing
import uuid
from collections import abc
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from optaas_state import EXPORT_FORMAT
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from app.optim.catalog import CATALOG, Entry
from app.tensors import MAX_TENSOR_NAME_LENGTH

Float = Annotated[float, Strict()]  # a JSON number (ints welcome), never a string or a bool
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Betas = tuple[Float, Float]

COMPONENTS = "#/components/schemas/"
TENSOR_SCHEMA: dict[str, Any] = {
    "title": "Tensor",
    "description": "A number, or a nested array of numbers whose nesting gives the shape.",
    "anyOf": [{"type": "number"}, {"type": "array", "items": {"$ref": f"{COMPONENTS}Tensor"}}],
}
TENSORS_SCHEMA: dict[str, Any] = {
    "title": "Tensors",
    "description": (
        "One tensor (named `params`), or an object of named tensors. "
        "A session answers in the form it was created with."
    ),
    "anyOf": [
        {"$ref": f"{COMPONENTS}Tensor"},
        {"type": "object", "additionalProperties": {"$ref": f"{COMPONENTS}Tensor"}},
    ],
}
SPARSE_ROWS_SCHEMA: dict[str, Any] = {
    "title": "SparseRows",
    "description": (
        "Some rows of a tensor's first axis (2+ dimensions): `values[k]` belongs to row "
        "`rows[k]`, `values` has shape `[len(rows), *shape[1:]]`. As a gradient (types that "
        "take sparse rows: `sparse_adam`, `adagrad`, `sgd` without momentum) the rows a batch "
        "touched, repeated rows summed; in an answer, the rows the step changed."
    ),
    "type": "object",
    "properties": {
        "rows": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "values": {"$ref": f"{COMPONENTS}Tensor"},
    },
    "required": ["rows", "values"],
    "additionalProperties": False,
}
GRADIENTS_SCHEMA: dict[str, Any] = {
    "title": "Gradients",
    "description": (
        "Tensors in the session's form (one tensor named `params`, or an object of named "
        "tensors), where a tensor may be given as sparse rows."
    ),
    "anyOf": [
        {"$ref": f"{COMPONENTS}Tensor"},
        {"$ref": f"{COMPONENTS}SparseRows"},
        {
            "type": "object",
            "additionalProperties": {
                "anyOf": [{"$ref": f"{COMPONENTS}Tensor"}, {"$ref": f"{COMPONENTS}SparseRows"}]
            },
        },
    ],
}
EXTRA_COMPONENTS = {"Tensor": TENSOR_SCHEMA, "SparseRows": SPARSE_ROWS_SCHEMA}
"""Components that the OpenAPI document adds beside the models' own (see `app.api.openapi`)."""

# Inline (not a bare $ref): pydantic resolves a field's top-level $ref against its own definitions.
Tensors = Annotated[Any, WithJsonSchema(TENSORS_SCHEMA)]
Gradients = Annotated[Any, WithJsonSchema(GRADIENTS_SCHEMA)]
"""Tensors where a tensor may be sparse rows: a step's gradients, and its answer's θ."""


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------
# Optimizers: derived from the core's catalog (`app.optim.catalog`), one model per type
# ------------------------------------------------------------------------------------------


def _wire_annotation(hint: Any, nested: Mapping[str, type[BaseModel]], name: str) -> Any:
    """A factory parameter's type hint as the wire's: numbers, integers and booleans strict
    (no strings, no bools for numbers), tuples as fixed-length arrays, `Literal` choices and
    `X | None` options as they are, a mapping as the nested spec's model."""
    origin = typing.get_origin(hint)
    if hint is float:
        return Float
    if hint is int:
        return Int
    if hint is bool:
        return Bool
    if hint is type(None) or origin is Literal:
        return hint
    if origin in (typing.Union, types.UnionType):
        return _union(_wire_annotation(a, nested, name) for a in typing.get_args(hint))
    if origin is tuple:
        return tuple[tuple(_wire_annotation(a, nested, name) for a in typing.get_args(hint))]
    if origin is abc.Mapping and name in nested:
        return nested[name]
    raise TypeError(f"no wire type for {name}: {hint!r}")


def _union(members: Iterable[Any]) -> Any:
    """`A | B | …` of types made at run time."""
    return functools.reduce(operator.or_, members)


def _spec_model(
    title: str,
    factory: Callable[..., Any],
    *,
    kind: str | None = None,
    reference: str | None = None,
    nested: Mapping[str, type[BaseModel]] | None = None,
) -> type[Spec]:
    """A model whose fields are `factory`'s keyword parameters (hints and defaults), with
    `type: Literal[kind]` first where it is a member of a discriminated union."""
    hints = typing.get_type_hints(factory)
    fields: dict[str, Any] = {}
    if kind is not None:
        fields["type"] = (Literal[kind], ...)
    for name, parameter in inspect.signature(factory).parameters.items():
        annotation = _wire_annotation(hints[name], nested or {}, name)
        required = parameter.default is inspect.Parameter.empty
        fields[name] = (annotation, ... if required else parameter.default)
    doc = inspect.getdoc(factory) or title
    if reference is not None:
        doc = f"{doc}\n\nReference: {reference}."
    return create_model(title, __base__=Spec, __doc__=doc, __module__=__name__, **fields)


def _optimizer_model(entry: Entry) -> type[Spec]:
    nested = {name: _spec_model(title, factory) for name, (title, factory) in entry.nested.items()}
    return _spec_model(
        entry.title, entry.factory, kind=entry.type, reference=entry.reference, nested=nested
    )


OPTIMIZER_MODELS: dict[str, type[Spec]] = {entry.type: _optimizer_model(entry) for entry in CATALOG}
"""type → its spec's model, in the catalog's order."""

OptimizerSpec = Annotated[
    _union(OPTIMIZER_MODELS.values()),
    Field(discriminator="type"),
]


# ------------------------------------------------------------------------------------------
# Schedules: schedule(t) multiplies lr unless said to be absolute
# ------------------------------------------------------------------------------------------


class Constant(Spec):
    type: Literal["constant"]


class StepDecay(Spec):
    """`gamma^floor(t / step_size)`."""

    type: Literal["step"]
    step_size: Int = Field(examples=[100])
    gamma: Float = 0.1


class MultiStep(Spec):
    """`gamma^(number of milestones ≤ t)`."""

    type: Literal["multistep"]
    milestones: list[Int] = Field(examples=[[300, 600, 900]])
    gamma: Float = 0.1


class Exponential(Spec):
    """`gamma^t`."""

    type: Literal["exponential"]
    gamma: Float = Field(examples=[0.99])


class InverseSqrt(Spec):
    """`1/sqrt(t+1)`."""

    type: Literal["inverse_sqrt"]


class Linear(Spec):
    """torch LinearLR."""

    type: Literal["linear"]
    start_factor: Float = 1 / 3
    end_factor: Float = 1.0
    total_steps: Int = 5


class Polynomial(Spec):
    """torch PolynomialLR."""

    type: Literal["polynomial"]
    total_steps: Int = Field(examples=[1000])
    power: Float = 1.0


class Cosine(Spec):
    """torch CosineAnnealingLR, with the absolute floor `min_lr`."""

    type: Literal["cosine"]
    total_steps: Int = Field(examples=[1000])
    min_lr: Float = 0.0


class CosineRestarts(Spec):
    """torch CosineAnnealingWarmRestarts."""

    type: Literal["cosine_restarts"]
    t_0: Int = Field(examples=[100])
    t_mult: Int = 1
    min_lr: Float = 0.0


class OneCycle(Spec):
    """torch OneCycleLR (absolute)."""

    type: Literal["one_cycle"]
    max_lr: Float = Field(examples=[0.1])
    total_steps: Int = Field(examples=[1000])
    pct_start: Float = 0.3
    div_factor: Float = 25.0
    final_div_factor: Float = 1e4
    anneal: Literal["cos", "linear"] = "cos"


class Noam(Spec):
    """`factor · d_model^−0.5 · min((t+1)^−0.5, (t+1)·warmup_steps^−1.5)` (absolute)."""

    type: Literal["noam"]
    d_model: Int = Field(examples=[512])
    warmup_steps: Int = Field(examples=[100])
    factor: Float = 1.0


class PiecewiseConstant(Spec):
    """The value of the interval that holds t (absolute)."""

    type: Literal["piecewise_constant"]
    boundaries: list[Int] = Field(examples=[[300, 600]])
    values: list[Float] = Field(examples=[[0.1, 0.01, 0.001]])


MAX_SCHEDULE_DEPTH = 8
"""Schedules nest (`warmup.then`, `sequential.schedules`) at most this deep: each level costs
every η_t, and a preview computes up to `PREVIEW_MAX_STEPS` of them."""


def schedule_depth(schedule: Spec) -> int:
    """1 for a plain schedule, 1 + the deepest part for one made of others."""
    if isinstance(schedule, Warmup):
        return 1 + schedule_depth(schedule.then)
    if isinstance(schedule, Sequential):
        return 1 + max((schedule_depth(part) for part in schedule.schedules), default=0)
    return 1


class NestingSpec(Spec):
    """A schedule made of schedules: refused nested deeper than `MAX_SCHEDULE_DEPTH`."""

    @model_validator(mode="after")
    def shallow_enough(self) -> NestingSpec:
        if schedule_depth(self) > MAX_SCHEDULE_DEPTH:
            raise ValueError(f"schedules may be nested at most {MAX_SCHEDULE_DEPTH} deep")
        return self


class Warmup(NestingSpec):
    """`(t+1)/warmup_steps` for t < warmup_steps, then `then(t − warmup_steps)`."""

    type: Literal["warmup"]
    warmup_steps: Int = Field(examples=[100])
    then: ScheduleSpec = Field(default_factory=lambda: Constant(type="constant"))


class Sequential(NestingSpec):
    """Schedule k runs on its own clock from milestone k−1 (torch SequentialLR's intent)."""

    type: Literal["sequential"]
    schedules: list[ScheduleSpec] = Field(
        examples=[
            [
                {"type": "linear", "start_factor": 0.1, "total_steps": 100},
                {"type": "cosine", "total_steps": 900},
            ]
        ]
    )
    milestones: list[Int] = Field(examples=[[100]])


class ReduceOnPlateau(Spec):
    """torch ReduceLROnPlateau, fed by the `loss` of each step."""

    type: Literal["reduce_on_plateau"]
    mode: Literal["min", "max"] = "min"
    factor: Float = 0.1
    patience: Int = 10
    threshold: Float = 1e-4
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: Int = 0
    min_lr: Float = 0.0


ScheduleSpec = Annotated[
    Constant
    | StepDecay
    | MultiStep
    | Exponential
    | InverseSqrt
    | Linear
    | Polynomial
    | Cosine
    | CosineRestarts
    | OneCycle
    | Noam
    | PiecewiseConstant
    | Warmup
    | Sequential
    | ReduceOnPlateau,
    Field(discriminator="type"),
]
Warmup.model_rebuild()
Sequential.model_rebuild()


class Group(BaseModel):
    """Tensors whose names match one of the globs, and how they are stepped: with overrides of
    the session's optimizer's hyper-parameters (any of its fields beside `match`, e.g.
    `"lr": 1e-4`), or with an optimizer of their own (`optimizer`, a whole spec, and nothing
    else beside `match`: optax's `multi_transform`). A tensor takes one optimizer type: groups
    of two types matching it are refused."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    match: list[str] = Field(min_length=1, description="Name globs, e.g. `encoder.*`.")
    optimizer: OptimizerSpec | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description=(
            "An optimizer of the group's own, any type, its fields' defaults its own (e.g. "
            '`{"type": "muon", "lr": 0.02}` for `*.weight`). PATCH may change its '
            "hyper-parameters but not its type (fork the session instead)."
        ),
    )


# ------------------------------------------------------------------------------------------
# Requests and responses
# ------------------------------------------------------------------------------------------

Dtype = Literal["float32", "float64"]
MAX_ACCUMULATE = 1_000_000
MAX_STEP = 2**63 - 1
"""Step counts are BIGINTs."""


class SessionConfig(Spec):
    """How a session optimises: everything of the create body but the tensors, name and dtype."""

    optimizer: OptimizerSpec
    schedule: ScheduleSpec = Field(default_factory=lambda: Constant(type="constant"))
    clip_grad_norm: Float | None = Field(
        default=None, description="Scale g by min(1, max_norm / (‖g‖₂ + 1e-6)), torch's rule."
    )
    clip_grad_value: Float | None = Field(default=None, description="Clamp g to ±value.")
    nonfinite: Literal["reject", "skip"] = Field(
        default="reject",
        description="A gradient with NaN/±Inf: `reject` (422) or `skip` (200, nothing changes).",
    )
    groups: list[Group] | None = Field(
        default=None, description="Per-tensor overrides; the first group that matches wins."
    )
    accumulate: Int = Field(
        default=1,
        ge=1,
        le=MAX_ACCUMULATE,
        description=(
            "K: gradients averaged per step. With K > 1 the first K−1 posts of a step answer "
            "202 (how many are still missing) and the K-th applies their mean."
        ),
    )


# U+0000 is refused: PostgreSQL text cannot hold it.
SessionName = Annotated[str, Field(max_length=255, pattern=r"^[^\x00]*$")]


class CreateSession(SessionConfig):
    name: SessionName | None = None
    params: Tensors = Field(description="The initial parameters θ₀.")
    dtype: Dtype = "float32"


class StepRequest(Spec):
    gradients: Gradients = Field(
        description=(
            "∂loss/∂θ, in the form of the session's params; a tensor's may be sparse rows "
            '(`{"rows": [...], "values": [...]}`).'
        )
    )
    loss: Float | None = Field(default=None, description="Recorded with the step.")
    partial: Bool = Field(
        default=False,
        description="Gradients for a subset of the tensors; the others (and their state) stay.",
    )


class SessionIdentity(BaseModel):
    id: uuid.UUID
    name: str | None
    dtype: Dtype
    layout: Literal["single", "named"] = Field(
        description="`single`: params is one array; `named`: an object of named arrays."
    )
    shapes: dict[str, list[int]] = Field(description="Tensor name → shape, in order.")


class SessionProgress(BaseModel):
    step: int = Field(description="t: updates applied so far.")
    accumulated: int = Field(
        default=0,
        description="Gradients received toward the next step (`accumulate` > 1); 0 otherwise.",
    )
    lr: float | None = Field(
        description="η_t: the learning rate the next step will use (null if not finite)."
    )
    last_loss: float | None
    created_at: datetime
    updated_at: datetime


class SessionView(SessionProgress, SessionConfig, SessionIdentity):
    """A session as `GET /v1/sessions/{id}` shows it: its config with every default filled in."""


class CreatedSession(SessionView):
    token: str = Field(description="Bearer token for this session. Shown once; keep it.")


class StepResponse(BaseModel):
    """JSON has no Inf or NaN: a number that is not finite is written as null."""

    step: int = Field(description="t after this step.")
    lr: float | None = Field(description="η of this step.")
    params: Gradients | None = Field(
        default=None,
        description=(
            "θ after this step; a tensor stepped by sparse rows shows only the rows it changed "
            "(`?return=full`: whole)."
        ),
    )
    grad_norm: float | None = Field(
        description="‖g‖₂ over all tensors, before clipping; null if g was not finite."
    )
    update_norm: float | None = Field(description="‖θ_{t+1} − θ_t‖₂.")
    skipped: bool = Field(description="A non-finite gradient under `nonfinite: skip`.")


class StepAccepted(BaseModel):
    """A gradient counted toward the next step (`accumulate` > 1), which awaits more of them."""

    step: int = Field(description="t: the session's step, unchanged until the K-th gradient.")
    received: int = Field(description="Gradients received toward step t + 1, this one included.")
    missing: int = Field(description="How many more the step waits for (K − received).")
    wait_for_step: int = Field(
        description="t + 1: pass it to `GET …/params?wait_for_step=` to wait for the step."
    )


class ParamsResponse(BaseModel):
    step: int
    params: Tensors


class SessionPatch(Spec):
    """A JSON merge patch (RFC 7396) of the session's configuration: the fields to change.

    Objects are merged field by field (`{"optimizer": {"lr": 0.005}}` changes lr alone), other
    values replace the old ones (`betas`, `groups`), and `null` restores a field's default. An
    object whose `type` differs from the current one replaces it whole (a new schedule). θ, the
    state, t, `dtype` and the tensors cannot be patched.
    """

    name: SessionName | None = None
    optimizer: dict[str, Any] | None = Field(
        default=None,
        description=(
            'Hyper-parameters to change, e.g. `{"lr": 0.005}`. Its `type` cannot change by '
            "PATCH (fork the session instead); a fork may change it."
        ),
    )
    schedule: dict[str, Any] | None = Field(
        default=None,
        description="Schedule fields to change, or a whole new schedule (with another `type`).",
    )
    clip_grad_norm: Float | None = None
    clip_grad_value: Float | None = None
    nonfinite: Literal["reject", "skip"] | None = None
    groups: list[Group] | None = None
    accumulate: Int | None = Field(default=None, ge=1, le=MAX_ACCUMULATE)


# ------------------------------------------------------------------------------------------
# Exports: the format "optaas-state/1"
# ------------------------------------------------------------------------------------------

TensorName = Annotated[
    str, Field(min_length=1, max_length=MAX_TENSOR_NAME_LENGTH, pattern=r"^[^\x00]*$")
]
STATE_SCHEMA: dict[str, Any] = {
    "title": "State",
    "description": (
        "Tensor name → slot name → value: the optimizer's state slots (torch's names: "
        "`exp_avg`, `exp_avg_sq`, `momentum_buffer`, `sum`, …) and `step`, the number of "
        "updates that tensor has had (an integer). 0-d slots are plain numbers."
    ),
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "additionalProperties": {"$ref": f"{COMPONENTS}Tensor"},
    },
}


GLOBALS_SCHEMA: dict[str, Any] = {
    "title": "Globals",
    "type": "object",
    "additionalProperties": {"$ref": f"{COMPONENTS}Tensor"},
}


class StateHeader(Spec):
    """Everything of an export but its arrays (a safetensors export keeps it in `__metadata__`)."""

    format: Literal[EXPORT_FORMAT] = Field(description="The format and its version.")
    id: str | None = Field(
        default=None, max_length=64, description="The exported session's id (import ignores it)."
    )
    name: SessionName | None = None
    dtype: Dtype
    layout: Literal["single", "named"]
    tensors: list[TensorName] = Field(min_length=1, description="Tensor names, in order.")
    config: SessionConfig
    step: Int = Field(ge=0, le=MAX_STEP, description="t: updates applied so far.")
    schedule_state: dict[str, Float] = Field(
        default_factory=dict, description="`reduce_on_plateau`'s state ({} otherwise)."
    )
    last_loss: Float | None = None
    rates: list[float | None] | None = Field(
        default=None,
        description=(
            "η_t of each parameter group, which the next step will use: the base optimizer's, "
            "then `config.groups`' in order (null where not finite). Written for conversions "
            "to frameworks without optaas's schedules (the Python client's torch converters); "
            "an import ignores it."
        ),
    )

    @field_validator("tensors")
    @classmethod
    def names_are_unique(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"tensor names must be unique; repeated: {repeated}")
        return names


class StateExport(StateHeader):
    """A session's whole run: config, t, θ and every state slot (`GET …/state`, import)."""

    params: Tensors = Field(description="θ_t, in the session's form.")
    state: Annotated[dict[str, dict[str, Any]], WithJsonSchema(STATE_SCHEMA)] = Field(
        description="Tensor name → slot name → value."
    )
    globals: Annotated[dict[str, Any], WithJsonSchema(GLOBALS_SCHEMA)] = Field(
        default_factory=dict,
        description=(
            "The learning-rate-free types' global quantities (Prodigy's `d`, schedule-free's "
            "`optimizer.weight_sum`, DoG's `optimizer.rbar`, …): name → number or array; {} "
            "for the other types."
        ),
    )


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members (e.g. `tensor`) may follow."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str
    title: str
    status: int
    detail: str


# ------------------------------------------------------------------------------------------
# History and schedule previews
# ------------------------------------------------------------------------------------------


class StepRecord(BaseModel):
    """One step taken: applied, or skipped under `nonfinite: skip` (then `step` is unchanged)."""

    seq: int = Field(description="The record's number in this session's history (the cursor).")
    kind: Literal["step"]
    step: int = Field(description="t after this step.")
    lr: float | None = Field(description="η_t this step used (null if not finite).")
    loss: float | None = Field(description="The loss posted with the step, if any.")
    grad_norm: float | None = Field(description="‖g‖₂ before clipping; null if not finite.")
    update_norm: float | None = Field(description="‖θ_{t+1} − θ_t‖₂; null if not finite.")
    skipped: bool
    at: datetime = Field(description="When the step was stored (UTC).")
    duration_ms: float = Field(
        description="Server time from reading the session (lock wait included) to storing it."
    )


class FieldChange(BaseModel):
    old: Any
    new: Any


class ChangeRecord(BaseModel):
    """A change of the session's configuration (PATCH): each changed field, old and new."""

    seq: int = Field(description="The record's number in this session's history (the cursor).")
    kind: Literal["change"]
    step: int = Field(description="t when the change was made.")
    at: datetime
    changes: dict[str, FieldChange] = Field(
        description="Dotted field path (e.g. `optimizer.lr`) → its old and new value."
    )


HistoryRecord = Annotated[StepRecord | ChangeRecord, Field(discriminator="kind")]


class HistoryPage(BaseModel):
    records: list[HistoryRecord] = Field(description="In the order they happened (by `seq`).")
    next: int | None = Field(
        description=(
            "Pass as `after` for the next page; null when this page reached the newest record "
            "(poll later with `after` = the last record's `seq`)."
        )
    )


PREVIEW_MAX_STEPS = 100_000


PREVIEW_MAX_WORK = 400_000
"""steps × nesting depth of a preview: what one preview may cost (about 0.1 s)."""


class SchedulePreviewRequest(Spec):
    schedule: ScheduleSpec = Field(description="Any schedule a session accepts.")
    lr: Float | None = Field(
        default=None,
        description=(
            "The base learning rate; left out: the `optimizer`'s lr (its type's default if it "
            "gives none), or 1 without one (the schedule's factor itself)."
        ),
    )
    optimizer: OptimizerSpec | None = Field(
        default=None,
        description=(
            "The optimizer the schedule is for (any type a session takes): its lr is the base "
            "rate when `lr` is left out."
        ),
    )
    steps: Int = Field(
        ge=1,
        le=PREVIEW_MAX_STEPS,
        description=(
            "How many rates: η_0 … η_{N−1}; steps × the schedule's nesting depth may be at "
            f"most {PREVIEW_MAX_WORK} (a warm-up into a cosine is 2 deep)."
        ),
    )

    @model_validator(mode="after")
    def bounded_work(self) -> SchedulePreviewRequest:
        depth = schedule_depth(self.schedule)
        if self.steps * depth > PREVIEW_MAX_WORK:
            raise ValueError(
                f"a schedule nested {depth} deep is previewed for at most "
                f"{PREVIEW_MAX_WORK // depth} steps (steps × depth ≤ {PREVIEW_MAX_WORK})"
            )
        return self


class SchedulePreview(BaseModel):
    lr: list[float | None] = Field(description="η_0 … η_{N−1} (null where not finite).")
    estimated: bool = Field(
        default=False,
        description=(
            "The optimizer chooses its own step size (the learning-rate-free types): during a "
            "run it scales these rates by what it finds (Prodigy's and D-Adaptation's d, DoG's "
            "distance over gradients, schedule-free's warm-up); the steps' `lr` reports the "
            "result."
        ),
    )
