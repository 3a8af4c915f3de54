"""Tensors on the wire: JSON (nested lists) and safetensors files ↔ numpy arrays.

A session's parameters are either one array — the `single` layout, whose tensor is named
`params` — or an object of named arrays — the `named` layout. A tensor is a number (0-d) or a
nested array of numbers whose nesting gives the shape. Numbers are read straight into the
session's dtype; anything else (strings, null, objects, ragged nesting) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from app.errors import InvalidContent, MalformedBody

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


# ------------------------------------------------------------------------------------------
# The binary form: safetensors files (https://github.com/huggingface/safetensors)
# ------------------------------------------------------------------------------------------

SAFETENSORS_MEDIA_TYPE = "application/vnd.safetensors"

_HEADER_LENGTH_BYTES = 8


def tensors_from_safetensors(body: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a safetensors file by name, and its `__metadata__` ({} if it has none).

    The arrays keep the file's dtypes; the caller casts them to the session's. A body that is
    not a safetensors file is a 400 (`MalformedBody`), like malformed JSON.
    """
    try:
        tensors = safetensors.numpy.load(body)
    except (safetensors.SafetensorError, ValueError, TypeError) as error:
        raise MalformedBody(f"the body is not a valid safetensors file: {error}") from None
    return tensors, _safetensors_metadata(body)


def _safetensors_metadata(body: bytes) -> dict[str, str]:
    """`__metadata__` of a file that `safetensors` has already accepted (so the header is sound)."""
    length = int.from_bytes(body[:_HEADER_LENGTH_BYTES], "little")
    header = json.loads(body[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + length])
    return dict(header.get("__metadata__") or {})


def tensors_to_safetensors(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """A safetensors file of `arrays` (0-d arrays included) with string `metadata`."""
    # np.require, not np.ascontiguousarray, which turns 0-d arrays into 1-d ones.
    contiguous = {name: np.require(array, requirements="C") for name, array in arrays.items()}
    return safetensors.numpy.save(contiguous, metadata=dict(metadata) if metadata else None)
