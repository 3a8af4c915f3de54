"""Exports ↔ torch.optim: continue a session's run in torch, or a torch run in a session.

torch is imported by these functions only. They need nothing of the server, because an export
carries what they read (`optaas_state`): its `config` with every default filled in, each group's
η_t (`rates`), every tensor's slots under torch's names, and its `step`. What they apply:

- **Groups**: a tensor belongs to the first of `config.groups` one of whose `match` globs
  matches its name (`fnmatch.fnmatchcase`), else to the base optimizer — the service's rule. A
  group's settings are the base optimizer's with the group's overrides, or the whole spec of a
  group with its own `optimizer`. A torch optimizer has one type, so an export whose groups
  step with several (Muon for the matrices, AdamW for the rest) converts to one torch optimizer
  per type (`torch_optimizers`), and such a set of torch optimizers converts back to one export.
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
    "adafactor": "Adafactor",
    "muon": "Muon",
    "rprop": "Rprop",
    "asgd": "ASGD",
    "sparse_adam": "SparseAdam",
}
"""optaas optimizer type → torch.optim class; the hyper-parameters have torch's names, and the
state slots torch's `state_dict` keys (Adafactor's `row_var`/`col_var` factors for tensors of
2+ dims, its `variance` for the others; ASGD's `eta`, `mu`, `ax`; Rprop's `prev`, `step_size`)."""

NOT_IN_TORCH = {
    "adagrad": {"accumulator": "sum"},
    "rmsprop": {"init": "zero"},
    "muon": {"maximize": False},
}
"""Settings torch does not have — the lecture's forms, Muon's `maximize` (the contract's, for
every type) — so only the value torch's behaviour has converts."""

STEP_KEPT_AS = {"sgd": None, "muon": None, "sparse_adam": int}
"""How torch keeps a tensor's step count where not as a 0-d float tensor: not at all (SGD,
Muon), or as a Python int (SparseAdam)."""

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
    export: Mapping[str, Any],
    named_parameters_: NamedParameters,
    *,
    optimizer_type: str | None = None,
) -> list[dict[str, Any]]:
    """Param groups for `torch.optim.<Type>(groups)` matching `torch_state_dict(export, …)`:
    one per optaas group of `optimizer_type` that holds tensors (the base group first), with
    the export's settings. `optimizer_type` may be left out where every group has one type."""
    tensors = dict(named_parameters(named_parameters_))
    names = checked_names(export, list(tensors))
    return [
        {"params": [tensors[name] for name in members], "param_names": members, **settings}
        for members, settings in _torch_groups(export, names, optimizer_type)
    ]


def torch_state_dict(
    export: Mapping[str, Any],
    names: Sequence[str] | None = None,
    *,
    optimizer_type: str | None = None,
) -> dict[str, Any]:
    """The export as the `state_dict()` of a torch optimizer of its type, for `load_state_dict`.

    `names` give the tensors' order in the torch optimizer (default: the export's order); the
    param groups are those of `torch_param_groups`, so an optimizer built from them loads this.
    State is indexed as torch indexes it: through the groups in order. Per tensor: every slot
    under torch's name and `step` as torch keeps it (a 0-d float tensor; a Python int for
    SparseAdam; none for SGD and Muon); a tensor never stepped has no state (torch's fresh
    state), except under Adagrad, which torch initialises at once. Slots are torch tensors in
    the export's dtype. An export whose groups step with several types gives the state dict of
    the torch optimizer of `optimizer_type` (over that type's tensors only).
    """
    import torch

    order = checked_names(export, list(export["tensors"] if names is None else names))
    kind = _one_type(export, order, optimizer_type)
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    state: dict[int, dict[str, Any]] = {}
    param_groups = []
    index = 0
    for members, settings in _torch_groups(export, order, kind):
        indices = []
        for name in members:
            slots = export["state"][name]
            converted = _torch_slots(slots, kind, step_dtype)
            if converted and (int(slots[STEP_SLOT]) > 0 or kind == "adagrad"):
                state[index] = converted
            indices.append(index)
            index += 1
        param_groups.append({**settings, "params": indices, "param_names": members})
    return {"state": state, "param_groups": param_groups}


def torch_optimizer(
    export: Mapping[str, Any], named_parameters_: NamedParameters, *, load_params: bool = True
) -> torch.optim.Optimizer:
    """A torch optimizer that continues the exported run: its type and settings, its state
    loaded, over the given parameters — into which θ is copied first (`load_params`). An
    export whose groups step with several types needs several: `torch_optimizers`."""
    optimizers = torch_optimizers(export, named_parameters_, load_params=load_params)
    if len(optimizers) > 1:
        raise ValueError(
            f"this export steps its tensors with {sorted(optimizers)}: a torch optimizer has "
            "one type, so use torch_optimizers (one per type)"
        )
    return next(iter(optimizers.values()))


def torch_optimizers(
    export: Mapping[str, Any], named_parameters_: NamedParameters, *, load_params: bool = True
) -> dict[str, torch.optim.Optimizer]:
    """One torch optimizer per optimizer type of the export's groups (the base type first),
    each over the tensors its groups hold, with its settings and state: together they continue
    the exported run — e.g. `{"adamw": AdamW(…), "muon": Muon(…)}` for torch's Muon recipe,
    where each step is `for optimizer in optimizers.values(): optimizer.step()`. θ is copied
    into the parameters first (`load_params`)."""
    import torch

    tensors = dict(named_parameters(named_parameters_))
    names = checked_names(export, list(tensors))
    if load_params:
        params = as_tensors(export["params"], np.dtype(export["dtype"]))
        with torch.no_grad():
            for name in names:
                tensors[name].copy_(torch.from_numpy(np.array(params[name], copy=True)))
    optimizers = {}
    for kind in _types_holding(export, names):
        optimizer = torch_class(kind)(torch_param_groups(export, tensors, optimizer_type=kind))
        optimizer.load_state_dict(torch_state_dict(export, names, optimizer_type=kind))
        optimizers[kind] = optimizer
    return optimizers


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


def _types_holding(export: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The optimizer types that step the tensors `names`, in the order of their first group
    (the base first), each checked to be torch's."""
    groups = optaas_groups(export["config"])
    held = {group_index(groups, name) for name in names}
    kinds = list(dict.fromkeys(groups[index][1]["type"] for index in sorted(held)))
    for kind in kinds:
        torch_class(kind)
    return kinds


def _one_type(export: Mapping[str, Any], names: Sequence[str], optimizer_type: str | None) -> str:
    """`optimizer_type`, which must step some of the tensors, or the one type that steps them."""
    kinds = _types_holding(export, names)
    if optimizer_type is None:
        if len(kinds) > 1:
            raise ValueError(
                f"this export steps its tensors with {sorted(kinds)}: say which torch "
                "optimizer (optimizer_type=…), or use torch_optimizers"
            )
        return kinds[0]
    if optimizer_type not in kinds:
        raise ValueError(f"no tensor of this export is stepped with {optimizer_type!r}")
    return optimizer_type


def _torch_groups(
    export: Mapping[str, Any], names: Sequence[str], optimizer_type: str | None = None
) -> list[tuple[list[str], dict[str, Any]]]:
    """torch param groups for the export's optimizer of `optimizer_type` (by default its only
    type): (tensor names, torch settings) per optaas group of that type that holds tensors —
    the base group first, then `groups` in order — with `lr` = η_t of the group at the
    export's step (and `initial_lr`, the base rate, under a schedule)."""
    kind = _one_type(export, names, optimizer_type)
    config = export["config"]
    groups = optaas_groups(config)
    rates = _rates(export, groups)
    scheduled = (config.get("schedule") or {"type": "constant"})["type"] != "constant"
    members_of: dict[int, list[str]] = {}
    for name in names:
        members_of.setdefault(group_index(groups, name), []).append(name)
    converted = []
    for index, (_, settings) in enumerate(groups):
        if index not in members_of or settings["type"] != kind:
            continue
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
    converted = {  # torch's pairs and triples are tuples (betas, etas, eps, ns_coefficients)
        key: tuple(value) if isinstance(value, list) else value
        for key, value in hyperparameters.items()
        if key not in exempt
    }
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
    kept_as = STEP_KEPT_AS.get(optimizer_type, float)
    if kept_as is int:
        converted[STEP_SLOT] = int(slots[STEP_SLOT])
    elif kept_as is float:
        converted[STEP_SLOT] = torch.tensor(float(slots[STEP_SLOT]), dtype=step_dtype)
    return converted


# -- torch → export -----------------------------------------------------------------------------


def export_from_torch(
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    named_parameters_: NamedParameters,
    *,
    step: int | None = None,
    name: str | None = None,
    schedule: Mapping[str, Any] | None = None,
    clip_grad_norm: float | None = None,
) -> dict[str, Any]:
    """An `optaas-state/1` export (for `Client.import_session`) of a torch optimizer — or of
    several that share out the parameters, as Muon and AdamW do — and the parameters they
    optimize, named as in `named_parameters_` and in that order.

    The settings are the first optimizer's first param group's; a later group of the first
    optimizer that differs becomes an optaas group of overrides, and each group of a further
    optimizer an optaas group with its own `optimizer` spec, each matching its tensors by
    exact name. The session's `lr` is each group's `lr` (with a `schedule`: its `initial_lr`,
    if a torch scheduler left one). t is the largest per-tensor `step` — torch's SGD and Muon
    count none, so pass `step` where they are the only ones (0 when they hold no state, as SGD
    with momentum 0). A tensor without torch state is exported as `{"step": 0}`: the import
    starts its slots as a new session's. The service checks the rest on import (slot names and
    shapes against its optimizer's), as for any export.
    """
    optimizers = [optimizer] if hasattr(optimizer, "param_groups") else list(optimizer)
    named = named_parameters(named_parameters_)
    names = [tensor_name for tensor_name, _ in named]
    name_of = {id(tensor): tensor_name for tensor_name, tensor in named}
    dtype = _common_dtype(tensor for _, tensor in named)
    params = {
        tensor_name: tensor.detach().cpu().numpy().astype(dtype, copy=True)
        for tensor_name, tensor in named
    }

    _check_same_tensors(optimizers, name_of)
    base: dict[str, Any] = {}
    groups = []
    torch_state: dict[str, Mapping[str, Any]] = {}
    for position, each in enumerate(optimizers):
        optimizer_type = _optaas_type(each)
        for index, group in enumerate(each.param_groups):
            members = [name_of[id(tensor)] for tensor in group["params"]]
            settings = _optaas_settings(optimizer_type, group, schedule)
            match = [glob.escape(member) for member in members]
            if position == 0 and index == 0:
                base = settings
            elif position == 0:
                overrides = {
                    key: value for key, value in settings.items() if base.get(key) != value
                }
                if members and overrides:
                    groups.append({"match": match, **overrides})
            elif members:
                groups.append({"match": match, "optimizer": settings})
        torch_state.update(
            (name_of[id(tensor)], state)
            for tensor, state in each.state.items()
            if id(tensor) in name_of and state
        )
    t = step if step is not None else _torch_step_count(optimizers, torch_state)
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


def _check_same_tensors(
    optimizers: Sequence[torch.optim.Optimizer], name_of: Mapping[int, str]
) -> None:
    """The named parameters must be exactly the tensors the optimizers optimize, each tensor
    by one of them."""
    optimized = [
        id(tensor)
        for optimizer in optimizers
        for group in optimizer.param_groups
        for tensor in group["params"]
    ]
    unnamed = len(set(optimized) - set(name_of))
    idle = sorted(name for key, name in name_of.items() if key not in optimized)
    twice = sorted(
        {name_of.get(key) for key in set(optimized) if optimized.count(key) > 1} - {None}
    )
    faults = [f"{unnamed} of its tensors have no name here"] if unnamed else []
    faults += [f"it does not optimize {idle}"] if idle else []
    faults += [f"it optimizes {twice} more than once"] if twice else []
    if faults:
        raise ValueError(f"the named parameters must be the optimizer's: {'; '.join(faults)}")


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


def _torch_step_count(
    optimizers: Sequence[torch.optim.Optimizer], torch_state: Mapping[str, Mapping[str, Any]]
) -> int:
    """t: the largest step count torch keeps; none kept (SGD, Muon) is an error unless there
    is no state at all (t = 0)."""
    steps = [int(plain(state["step"])) for state in torch_state.values() if "step" in state]
    if steps:
        return max(steps)
    if torch_state:
        kinds = ", ".join(type(optimizer).__name__ for optimizer in optimizers)
        raise ValueError(f"torch's {kinds} keeps no step count: pass step=")
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
