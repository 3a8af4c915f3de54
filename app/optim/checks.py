"""Checks of configuration values, each raising `HyperParameterError` naming the field.

Factories (optimizers, schedules) call these with the field name relative to their own spec;
`call_with_spec` adds the path of the spec itself (`optimizer.`, `schedule.then.`, `groups.0.`).
"""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from app.optim.base import HyperParameterError, Spec, join_path

T = TypeVar("T")


def real(
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a finite float within [low, high] (or the open ends asked for)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HyperParameterError(field, f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise HyperParameterError(field, f"expected a finite number, got {value!r}")
    if low is not None and (number < low or (low_open and number == low)):
        raise HyperParameterError(field, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (number > high or (high_open and number == high)):
        raise HyperParameterError(
            field, f"must be {'<' if high_open else '<='} {high}, got {value}"
        )
    return number


def non_negative(field: str, value: Any) -> float:
    """A finite float ≥ 0 (rates, eps, decays)."""
    return real(field, value, low=0.0)


def positive(field: str, value: Any) -> float:
    """A finite float > 0."""
    return real(field, value, low=0.0, low_open=True)


def fraction(field: str, value: Any, *, closed: bool = False) -> float:
    """A float in [0, 1) (a decay that forgets), or [0, 1] when `closed`."""
    return real(field, value, low=0.0, high=1.0, high_open=not closed)


def integer(field: str, value: Any, *, low: int | None = None) -> int:
    """An int (not a bool, not a float) ≥ `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise HyperParameterError(field, f"expected an integer, got {value!r}")
    if low is not None and value < low:
        raise HyperParameterError(field, f"must be >= {low}, got {value}")
    return int(value)


def flag(field: str, value: Any) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise HyperParameterError(field, f"expected true or false, got {value!r}")
    return value


def choice(field: str, value: Any, options: Sequence[str]) -> str:
    """One of `options`."""
    if value not in options:
        allowed = ", ".join(repr(option) for option in options)
        raise HyperParameterError(field, f"must be one of {allowed}, got {value!r}")
    return str(value)


def sequence(field: str, value: Any) -> list[Any]:
    """A JSON array (list or tuple; a string is not one)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise HyperParameterError(field, f"expected a list, got {value!r}")
    return list(value)


def betas(field: str, value: Any) -> tuple[float, float]:
    """A pair (β1, β2), each in [0, 1)."""
    items = sequence(field, value)
    if len(items) != 2:
        raise HyperParameterError(field, f"expected two numbers [beta1, beta2], got {value!r}")
    beta1, beta2 = (fraction(field, item) for item in items)
    return beta1, beta2


def reals(field: str, value: Any, count: int) -> tuple[float, ...]:
    """A list of exactly `count` finite numbers (Muon's `ns_coefficients`, Rprop's `etas`)."""
    items = sequence(field, value)
    if len(items) != count:
        raise HyperParameterError(field, f"expected {count} numbers, got {value!r}")
    return tuple(real(field, item) for item in items)


def optional_flag(field: str, value: Any) -> bool | None:
    """A JSON boolean or null."""
    return None if value is None else flag(field, value)


def increasing_integers(field: str, value: Any, *, low: int = 0) -> list[int]:
    """A strictly increasing list of ints ≥ `low` (milestones, boundaries)."""
    items = [
        integer(f"{field}.{i}", item, low=low) for i, item in enumerate(sequence(field, value))
    ]
    if any(later <= earlier for earlier, later in itertools.pairwise(items)):
        raise HyperParameterError(field, f"must be strictly increasing, got {items}")
    return items


def mapping(field: str, value: Any) -> Mapping[str, Any]:
    """A JSON object."""
    if not isinstance(value, Mapping):
        raise HyperParameterError(field, f"expected an object, got {value!r}")
    return value


def fields_of(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a factory: the fields its spec may carry."""
    return dict(inspect.signature(factory).parameters)


def defaults_of(factory: Callable[..., Any]) -> dict[str, Any]:
    """Field → default for every field that has one (tuples become lists, as in JSON)."""
    return {
        name: list(parameter.default) if type(parameter.default) is tuple else parameter.default
        for name, parameter in fields_of(factory).items()
        if parameter.default is not inspect.Parameter.empty
    }


def check_known_fields(spec: Spec, known: Mapping[str, Any] | set[str], path: str) -> None:
    """Raise for the first field of `spec` that is not in `known`, naming it."""
    for name in spec:
        if name not in known:
            allowed = ", ".join(sorted(known))
            raise HyperParameterError(join_path(path, name), f"unknown field (allowed: {allowed})")


def call_with_spec(factory: Callable[..., T], spec: Spec, path: str) -> T:
    """Call `factory(**spec)` after checking the fields; errors name `path.field`."""
    parameters = fields_of(factory)
    check_known_fields(spec, parameters, path)
    for name, parameter in parameters.items():
        if parameter.default is inspect.Parameter.empty and name not in spec:
            raise HyperParameterError(join_path(path, name), "required field is missing")
    try:
        return factory(**spec)
    except HyperParameterError as error:
        raise error.within(path) from None


def spec_type(spec: Any, path: str, registry: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split `{"type": name, **fields}` into the name (checked against `registry`) and fields."""
    body = dict(mapping(path, spec))
    if "type" not in body:
        raise HyperParameterError(join_path(path, "type"), "required field is missing")
    kind = body.pop("type")
    if not isinstance(kind, str) or kind not in registry:
        allowed = ", ".join(sorted(registry))
        raise HyperParameterError(
            join_path(path, "type"), f"unknown type {kind!r} (allowed: {allowed})"
        )
    return kind, body
