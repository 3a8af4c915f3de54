"""Exports ↔ torch.optim: continue a session's run in torch, or a torch run in a session.

torch is imported by these functions only. They need nothing of the server, because an export
carries what they read (`optaas_state`): its `config` with every default filled in, each group's
η_t (`rates`), every tensor's slots under torch's names, and its `step`. What they apply:

- **Groups**: a tensor belongs to the first of `config.groups` one of whose `match` globs
  matches its name (`fnmatch.fnmatchcase`), else to the base optimizer — the service's rule. A
  group's settings are the base optimizer's with the group's overrides.
- **Rates**: a torch group's `lr` is the group's η_t from the export's `rates` (with
  `initial_lr`, the base rate, under a schedule); an export without `rates` (written before
  exports carried them) converts only under a constant schedule, where η_t is the group's lr.
- **Fresh tensors**: a tensor torch keeps no state for (it has had no update) is exported as
  `{"step": 0}`, and the import gives it the slots a new session's tensor starts with.
"""

from __future__ import annotations

import fnmatch
import glob
import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optaas_state import EXPORT_FORMAT, STEP_SLOT

from optaas_client.tensors import as_tensors

if TYPE_CHECKING:
    import torch

TORCH_OPTIMIZER_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
    "adadelta": "Adadelta",
}
"""optaas optimizer type → torch.optim class; the hyper-parameters have torch's names."""

NOT_IN_TORCH = {"adagrad": {"accumulator": "sum"}, "rmsprop": {"init": "zero"}}
"""Settings of the lecture's forms, which torch does not have: only torch's value converts."""

NOT_SETTINGS = frozenset(
    {"params", "param_names", "initial_lr", "foreach", "fused", "capturable", "differentiable"}
)
"""Keys of a torch param group that are not optimizer settings: the tensors, a scheduler's base
rate, and the choice of torch's implementation."""

IMPLIED_BY_TYPE = {"adamw": frozenset({"decoupled_weight_decay"})}
"""torch settings that optaas's type says by itself (AdamW is decoupled)."""

NamedParameters = Any
"""`model.named_parameters()` (pairs of name and tensor), a mapping name → tensor, or a module."""


def named_parameters(named: NamedParameters) -> list[tuple[str, torch.Tensor]]:
    if hasattr(named, "named_parameters"):
        named = named.named_parameters()
    if isinstance(named, Mapping):
        named = named.items()
    return [(str(name), tensor) for name, tensor in named]


def checked_names(export: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """`names`, which must be the export's tensors (in any order)."""
    expected = list(export["tensors"])
    if sorted(names) != sorted(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        raise ValueError(
            f"the parameters are not the export's tensors (missing {missing}, extra {extra})"
        )
    return list(names)


# -- export → torch -----------------------------------------------------------------------------


def torch_param_groups(
    export: Mapping[str, Any], named_parameters_: NamedParameters
) -> list[dict[str, Any]]:
    """Param groups for `torch.optim.<Type>(groups)` matching `torch_state_dict(export, …)`:
    one per optaas group that holds tensors (the base group first), with the export's settings."""
    tensors = dict(named_parameters(named_parameters_))
    names = checked_names(export, list(tensors))
    return [
        {"params": [tensors[name] for name in members], "param_names": members, **settings}
        for members, settings in _torch_groups(export, names)
    ]


def torch_state_dict(
    export: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The export as the `state_dict()` of a torch optimizer of its type, for `load_state_dict`.

    `names` give the tensors' order in the torch optimizer (default: the export's order); the
    param groups are those of `torch_param_groups`, so an optimizer built from them loads this.
    State is indexed as torch indexes it: through the groups in order. Per tensor: every slot
    under torch's name and `step` as a 0-d float tensor; a tensor never stepped has no state
    (torch's fresh state), except under Adagrad, which torch initialises at once. Slots are
    torch tensors in the export's dtype.
    """
    import torch

    order = checked_names(export, list(export["tensors"] if names is None else names))
    optimizer_type = export["config"]["optimizer"]["type"]
    torch_class(optimizer_type)
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    state: dict[int, dict[str, Any]] = {}
    param_groups = []
    index = 0
    for members, settings in _torch_groups(export, order):
        indices = []
        for name in members:
            slots = export["state"][name]
            converted = _torch_slots(slots, optimizer_type, step_dtype)
            if converted and (int(slots[STEP_SLOT]) > 0 or optimizer_type == "adagrad"):
                state[index] = converted
            indices.append(index)
            index += 1
        param_groups.append({**settings, "params": indices, "param_names": members})
    return {"state": state, "param_groups": param_groups}


def torch_optimizer(
    export: Mapping[str, Any], named_parameters_: NamedParameters, *, load_params: bool = True
) -> torch.optim.Optimizer:
    """A torch optimizer that continues the exported run: its type and settings, its state
    loaded, over the given parameters — into which θ is copied first (`load_params`)."""
    import torch

    tensors = dict(named_parameters(named_parameters_))
    names = checked_names(export, list(tensors))
    if load_params:
        params = as_tensors(export["params"], np.dtype(export["dtype"]))
        with torch.no_grad():
            for name in names:
                tensors[name].copy_(torch.from_numpy(np.array(params[name], copy=True)))
    optimizer_class = torch_class(export["config"]["optimizer"]["type"])
    optimizer = optimizer_class(torch_param_groups(export, tensors))
    optimizer.load_state_dict(torch_state_dict(export, names))
    return optimizer


def torch_class(optimizer_type: str) -> type[torch.optim.Optimizer]:
    import torch

    if optimizer_type not in TORCH_OPTIMIZER_NAMES:
        raise ValueError(f"torch.optim has no {optimizer_type!r} optimizer")
    return getattr(torch.optim, TORCH_OPTIMIZER_NAMES[optimizer_type])


def optaas_groups(config: Mapping[str, Any]) -> list[tuple[list[str], dict[str, Any]]]:
    """(match globs, settings) of each group the config defines: the base optimizer first
    (no globs: it takes what no group matches), then `groups` in order, each the base's
    settings with its overrides — or, for a group that names its own `optimizer`, that spec."""
    base = dict(config["optimizer"])
    groups: list[tuple[list[str], dict[str, Any]]] = [([], base)]
    for spec in config.get("groups") or []:
        overrides = {key: value for key, value in spec.items() if key != "match"}
        own = overrides.pop("optimizer", None)
        settings = dict(own) if own is not None else {**base, **overrides}
        groups.append((list(spec["match"]), settings))
    return groups


def group_index(groups: Sequence[tuple[list[str], Any]], name: str) -> int:
    """The group of tensor `name`: the first whose globs match it (fnmatch), else 0 (the base)."""
    for index, (globs, _) in enumerate(groups):
        if index and any(fnmatch.fnmatchcase(name, pattern) for pattern in globs):
            return index
    return 0


def _torch_groups(
    export: Mapping[str, Any], names: Sequence[str]
) -> list[tuple[list[str], dict[str, Any]]]:
    """torch param groups for the export: (tensor names, torch settings) per optaas group that
    holds tensors — the base group first, then `groups` in order — with `lr` = η_t of the
    group at the export's step (and `initial_lr`, the base rate, under a schedule)."""
    config = export["config"]
    groups = optaas_groups(config)
    rates = _rates(export, groups)
    scheduled = (config.get("schedule") or {"type": "constant"})["type"] != "constant"
    base_type = groups[0][1]["type"]
    members_of: dict[int, list[str]] = {}
    for name in names:
        members_of.setdefault(group_index(groups, name), []).append(name)
    converted = []
    for index, (_, settings) in enumerate(groups):
        if index not in members_of:
            continue
        if settings["type"] != base_type:
            raise ValueError(
                f"group {index - 1} steps its tensors with {settings['type']!r}, the others with "
                f"{base_type!r}: a torch optimizer has one type"
            )
        torch_settings = _torch_hyperparameters(settings)
        torch_settings["lr"] = rates[index]
        if scheduled:
            torch_settings["initial_lr"] = settings["lr"]
        converted.append((members_of[index], torch_settings))
    return converted


def _rates(export: Mapping[str, Any], groups: Sequence[tuple[list[str], Any]]) -> list[float]:
    """η_t of each group, as the export states it (NaN where it is not finite)."""
    rates = export.get("rates")
    if rates is None:
        schedule = (export["config"].get("schedule") or {"type": "constant"})["type"]
        if schedule != "constant":
            raise ValueError(
                f"this export states no rates, and under its {schedule!r} schedule η_t is the "
                "service's to compute: export the session again"
            )
        rates = [settings["lr"] for _, settings in groups]
    return [math.nan if rate is None else float(rate) for rate in rates]


def _torch_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """A group's optaas settings as torch's keyword arguments (the lecture's forms refused)."""
    kind = hyperparameters["type"]
    for field, torch_value in NOT_IN_TORCH.get(kind, {}).items():
        if hyperparameters.get(field, torch_value) != torch_value:
            raise ValueError(
                f"{kind} with {field}={hyperparameters[field]!r} is not a torch.optim optimizer "
                f"(torch's is {field}={torch_value!r})"
            )
    exempt = {"type", *NOT_IN_TORCH.get(kind, {})}
    converted = {key: value for key, value in hyperparameters.items() if key not in exempt}
    if "betas" in converted:
        converted["betas"] = tuple(converted["betas"])
    return {**_torch_defaults(kind), **converted}


def _torch_defaults(optimizer_type: str) -> dict[str, Any]:
    """torch's own defaults of the type's settings (the same as optaas's: the contract takes
    torch's), for a group whose spec leaves some out."""
    parameters = inspect.signature(torch_class(optimizer_type)).parameters.values()
    skipped = NOT_SETTINGS | IMPLIED_BY_TYPE.get(optimizer_type, frozenset())
    return {
        parameter.name: parameter.default
        for parameter in parameters
        if parameter.default is not inspect.Parameter.empty and parameter.name not in skipped
    }


def _torch_slots(slots: Mapping[str, Any], optimizer_type: str, step_dtype: Any) -> dict:
    import torch

    converted = {
        slot: torch.from_numpy(np.array(value, copy=True))
        for slot, value in slots.items()
        if slot != STEP_SLOT
    }
    if optimizer_type != "sgd":  # torch's SGD keeps no step count
        converted[STEP_SLOT] = torch.tensor(float(slots[STEP_SLOT]), dtype=step_dtype)
    return converted


# -- torch → export -----------------------------------------------------------------------------


def export_from_torch(
    optimizer: torch.optim.Optimizer,
    named_parameters_: NamedParameters,
    *,
    step: int | None = None,
    name: str | None = None,
    schedule: Mapping[str, Any] | None = None,
    clip_grad_norm: float | None = None,
) -> dict[str, Any]:
    """An `optaas-state/1` export (for `Client.import_session`) of a torch optimizer and the
    parameters it optimizes, named as in `named_parameters_` and in that order.

    The settings are the first param group's; a later group that differs becomes an optaas
    group matching its tensors by exact name. The session's `lr` is each group's `lr` (with a
    `schedule`: its `initial_lr`, if a torch scheduler left one). t is the largest per-tensor
    `step` — torch's SGD counts none, so pass `step` for it (0 when SGD holds no state, as with
    momentum 0). A tensor without torch state is exported as `{"step": 0}`: the import starts
    its slots as a new session's. The service checks the rest on import (slot names and shapes
    against its optimizer's), as for any export.
    """
    named = named_parameters(named_parameters_)
    names = [tensor_name for tensor_name, _ in named]
    name_of = {id(tensor): tensor_name for tensor_name, tensor in named}
    optimizer_type = _optaas_type(optimizer)
    dtype = _common_dtype(tensor for _, tensor in named)
    params = {
        tensor_name: tensor.detach().cpu().numpy().astype(dtype, copy=True)
        for tensor_name, tensor in named
    }

    _check_same_tensors(optimizer, name_of)
    settings_per_group = []
    for group in optimizer.param_groups:
        members = [name_of[id(tensor)] for tensor in group["params"]]
        settings_per_group.append((members, _optaas_settings(optimizer_type, group, schedule)))
    base = settings_per_group[0][1]
    groups = []
    for members, settings in settings_per_group[1:]:
        overrides = {key: value for key, value in settings.items() if base.get(key) != value}
        if members and overrides:
            groups.append({"match": [glob.escape(member) for member in members], **overrides})

    torch_state = {
        name_of[id(tensor)]: state
        for tensor, state in optimizer.state.items()
        if id(tensor) in name_of and state
    }
    t = step if step is not None else _torch_step_count(optimizer_type, torch_state)
    config = {
        "optimizer": base,
        "schedule": dict(schedule) if schedule is not None else {"type": "constant"},
        "clip_grad_norm": clip_grad_norm,
        "clip_grad_value": None,
        "nonfinite": "reject",
        "groups": groups or None,
        "accumulate": 1,
    }
    return {
        "format": EXPORT_FORMAT,
        "id": None,
        "name": name,
        "dtype": np.dtype(dtype).name,
        "layout": "named",
        "tensors": names,
        "config": config,
        "step": t,
        "schedule_state": {},
        "last_loss": None,
        "rates": None,
        "params": params,
        "state": {
            tensor_name: _optaas_slots(torch_state.get(tensor_name, {}), dtype, t)
            for tensor_name in names
        },
    }


def _check_same_tensors(optimizer: torch.optim.Optimizer, name_of: Mapping[int, str]) -> None:
    """The named parameters must be exactly the tensors the optimizer optimizes."""
    optimized = {id(tensor) for group in optimizer.param_groups for tensor in group["params"]}
    unnamed = len(optimized - set(name_of))
    idle = sorted(name for key, name in name_of.items() if key not in optimized)
    if unnamed or idle:
        raise ValueError(
            f"the named parameters must be the optimizer's: {unnamed} of its tensors have no "
            f"name here, and it does not optimize {idle}"
        )


def _optaas_type(optimizer: torch.optim.Optimizer) -> str:
    by_class_name = {torch_name: kind for kind, torch_name in TORCH_OPTIMIZER_NAMES.items()}
    for cls in type(optimizer).__mro__:  # AdamW before Adam, should one derive from the other
        if cls.__module__.startswith("torch.optim") and cls.__name__ in by_class_name:
            return by_class_name[cls.__name__]
    raise ValueError(f"{type(optimizer).__name__} has no optaas counterpart")


def _common_dtype(tensors: Iterable[torch.Tensor]) -> np.dtype:
    kinds = {str(tensor.dtype).removeprefix("torch.") for tensor in tensors}
    if len(kinds) != 1 or not kinds <= {"float32", "float64"}:
        raise ValueError(f"the parameters must all be float32 or all float64, not {kinds}")
    return np.dtype(kinds.pop())


def _optaas_settings(
    optimizer_type: str, group: Mapping[str, Any], schedule: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A torch param group's settings as an optaas optimizer spec: every key but the tensors,
    torch's implementation switches and what the type implies, under torch's name."""
    skipped = NOT_SETTINGS | IMPLIED_BY_TYPE.get(optimizer_type, frozenset())
    settings: dict[str, Any] = {"type": optimizer_type}
    for field, value in group.items():
        if field not in skipped:
            settings[field] = list(value) if isinstance(value, tuple) else plain(value)
    if schedule is not None and "initial_lr" in group:
        settings["lr"] = plain(group["initial_lr"])
    return settings


def plain(value: Any) -> Any:
    """torch scalars (a tensor `lr`) as Python numbers."""
    return value.item() if hasattr(value, "item") else value


def _torch_step_count(optimizer_type: str, torch_state: Mapping[str, Mapping[str, Any]]) -> int:
    steps = [int(plain(state["step"])) for state in torch_state.values() if "step" in state]
    if steps:
        return max(steps)
    if torch_state:
        raise ValueError(f"torch's {optimizer_type} keeps no step count: pass step=")
    return 0


def _optaas_slots(ours: Mapping[str, Any], dtype: np.dtype, t: int) -> dict[str, Any]:
    """One tensor's torch state as optaas slots: each slot as an array of the export's dtype,
    `step` the tensor's own count (t where torch keeps none, as SGD); `{"step": 0}` alone for
    a tensor torch holds no state for."""
    if not ours:
        return {STEP_SLOT: 0}
    slots: dict[str, Any] = {
        slot: value.detach().cpu().numpy().astype(dtype, copy=True)
        for slot, value in ours.items()
        if slot != STEP_SLOT
    }
    slots[STEP_SLOT] = int(plain(ours[STEP_SLOT])) if STEP_SLOT in ours else t
    return slots
