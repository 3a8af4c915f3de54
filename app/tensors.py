"""Tensors on the wire (JSON): nested lists ↔ numpy arrays, in the two forms a session can take.

A session's parameters are either one array — the `single` layout, whose tensor is named
`params` — or an object of named arrays — the `named` layout. A tensor is a number (0-d) or a
nested array of numbers whose nesting gives the shape. Numbers are read straight into the
session's dtype; anything else (strings, null, objects, ragged nesting) is refused.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np

from app.errors import InvalidContent

SINGLE_TENSOR_NAME = "params"
"""The name of the one tensor of a `single` layout session."""

MAX_TENSOR_NAME_LENGTH = 512
"""Long enough for any module path; short enough for a database index key (PostgreSQL's
b-tree entries end near 2.7 kB, and a name may take 4 bytes a character)."""


class Layout(StrEnum):
    SINGLE = "single"
    NAMED = "named"


def layout_of(value: Any) -> Layout:
    """Named arrays come as a JSON object; anything else is the single form."""
    return Layout.NAMED if isinstance(value, dict) else Layout.SINGLE


def tensors_from_json(value: Any, dtype: np.dtype, *, field: str) -> dict[str, np.ndarray]:
    """The tensors of `value` (single or named form) as arrays of `dtype`, by name, in order."""
    if layout_of(value) is Layout.SINGLE:
        return {SINGLE_TENSOR_NAME: tensor_from_json(value, dtype, field=field)}
    if not value:
        raise InvalidContent(f"{field} is an empty object; give at least one tensor", field=field)
    tensors = {}
    for name, item in value.items():
        _check_tensor_name(name, field)
        where = tensor_field(field, Layout.NAMED, name)
        tensors[name] = tensor_from_json(item, dtype, field=where, tensor=name)
    return tensors


def _check_tensor_name(name: str, field: str) -> None:
    """Names are 1 to 512 characters, without U+0000 (which PostgreSQL text cannot hold)."""
    if not name:
        raise InvalidContent(f"{field} has a tensor with an empty name", field=field)
    if len(name) > MAX_TENSOR_NAME_LENGTH:
        raise InvalidContent(
            f"{field} has a tensor name of {len(name)} characters; "
            f"at most {MAX_TENSOR_NAME_LENGTH} are allowed",
            field=field,
        )
    if "\x00" in name:
        raise InvalidContent(f"{field} has a tensor name holding U+0000 (NUL)", field=field)


def tensor_from_json(
    value: Any, dtype: np.dtype, *, field: str, tensor: str = SINGLE_TENSOR_NAME
) -> np.ndarray:
    """One tensor as a new (writable) array of `dtype`.

    numpy's own rules decide what is an array of numbers; as in numpy and torch, `true`/`false`
    mixed into numbers count as 1/0. Values beyond the dtype's range become ±inf, which the caller's
    finiteness rules then judge.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nesting, or more than numpy's 64 dims
        raise InvalidContent(
            f"{field} is not a regular nested array of numbers: {error}", tensor=tensor
        ) from error
    if array.dtype.kind not in "iuf":
        raise InvalidContent(
            f"{field} must be a number or a nested array of numbers "
            "(no strings, null, booleans alone, objects or ragged nesting)",
            tensor=tensor,
        )
    with np.errstate(over="ignore"):
        return array.astype(dtype)


def tensor_field(field: str, layout: Layout, name: str) -> str:
    """Where a tensor sits in a body: `params` (single form) or `params.<name>` (named form)."""
    return field if layout is Layout.SINGLE else f"{field}.{name}"


def tensors_to_json(layout: Layout, arrays: dict[str, np.ndarray]) -> Any:
    """The form the session was created with, ready for orjson (`OPT_SERIALIZE_NUMPY`)."""
    if layout is Layout.SINGLE:
        return _jsonable(arrays[SINGLE_TENSOR_NAME])
    return {name: _jsonable(array) for name, array in arrays.items()}


def _jsonable(array: np.ndarray) -> Any:
    # orjson serialises numpy arrays of one or more dimensions and numpy scalars, not 0-d arrays.
    return array[()] if array.ndim == 0 else array
