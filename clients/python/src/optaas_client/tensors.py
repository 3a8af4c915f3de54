"""Tensors on the wire: numpy ↔ the contract's JSON forms and safetensors files.

Parameters and gradients are one array (the `single` form, a tensor named `params`) or a
mapping of named arrays (the `named` form). JSON carries them as nested lists; safetensors
files (`optaas_state`'s codec) carry the arrays themselves.

A gradient of an embedding table may be `SparseRows` (the rows a batch touched and a value per
row): JSON `{"rows": [...], "values": [[...]]}`, safetensors `rows/<tensor>` beside `<tensor>`.
A step's answer shows such a tensor the same way: only the rows the step changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from optaas_state import SINGLE_TENSOR_NAME, FormatError, safetensors_arrays

from optaas_client.errors import ProtocolError

ROWS_PREFIX = "rows/"
"""A safetensors file's `rows/<tensor>`: the rows whose values `<tensor>` holds."""


@dataclass(frozen=True)
class SparseRows:
    """Some rows of a tensor's first axis and a value for each:

        tensor[rows[k]] ↔ values[k]        (values: shape (len(rows), *shape[1:]))

    As a gradient, the rows a batch touched (repeated rows add up, as torch coalesces); in a
    step's answer, the rows the step changed and their new values (`apply_to` writes them)."""

    rows: np.ndarray
    values: np.ndarray

    def apply_to(self, array: np.ndarray) -> np.ndarray:
        """`array` with these rows set to their values, in place; returns it."""
        array[self.rows] = self.values
        return array


Tensor = np.ndarray | SparseRows
Params = np.ndarray | SparseRows | dict[str, Tensor]
"""Parameters or gradients: one array (single form) or arrays by name (named form); a tensor
may be `SparseRows`."""


def as_tensors(value: Any, dtype: np.dtype) -> dict[str, Tensor]:
    """Parameters or gradients as arrays of `dtype` by name; one array is the tensor `params`.
    `SparseRows` keep their rows (as int64) and take `dtype` for their values."""
    items = value.items() if isinstance(value, Mapping) else [(SINGLE_TENSOR_NAME, value)]
    with np.errstate(over="ignore"):  # beyond the dtype: ±Inf, which the server then judges
        return {str(name): _as_tensor(item, dtype) for name, item in items}


def _as_tensor(value: Any, dtype: np.dtype) -> Tensor:
    if isinstance(value, SparseRows):
        return SparseRows(np.asarray(value.rows, np.int64), np.asarray(value.values).astype(dtype))
    return np.asarray(value).astype(dtype)


def wire_form(tensors: Mapping[str, Tensor], single: bool) -> Any:
    """Tensors as JSON-ready nested lists, in the single or the named form; `SparseRows` as
    `{"rows": [...], "values": [...]}`."""
    if single:
        return _wire_tensor(tensors[SINGLE_TENSOR_NAME])
    return {name: _wire_tensor(array) for name, array in tensors.items()}


def _wire_tensor(value: Tensor) -> Any:
    if isinstance(value, SparseRows):
        return {"rows": np.asarray(value.rows).tolist(), "values": value.values.tolist()}
    return np.asarray(value).tolist()


def from_wire(value: Any, dtype: np.dtype, layout: str) -> Params:
    """A JSON tensor value in a session's form (`layout`: nested lists, or an object of them)
    as arrays; null reads as NaN. An object `{"rows", "values"}` where a tensor is (the rows a
    step changed) is `SparseRows`."""
    if layout == "single":
        return _tensor_from_wire(value, dtype)
    return {name: _tensor_from_wire(item, dtype) for name, item in value.items()}


def _is_rows(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"rows", "values"}


def _tensor_from_wire(value: Any, dtype: np.dtype) -> Tensor:
    if isinstance(value, Mapping):
        return _rows_from_wire(value, dtype)
    return np.array(value, dtype=dtype)


def _rows_from_wire(value: Mapping[str, Any], dtype: np.dtype) -> SparseRows:
    return SparseRows(np.array(value["rows"], dtype=np.int64), np.array(value["values"], dtype))


def safetensors_tensors(tensors: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Tensors as a safetensors file keeps them: `SparseRows` as `rows/<tensor>` (int64)
    beside `<tensor>` (their values)."""
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if isinstance(value, SparseRows):
            arrays[ROWS_PREFIX + name] = np.asarray(value.rows, np.int64)
            arrays[name] = value.values
        else:
            arrays[name] = value
    return arrays


def tensors_from_safetensors(
    arrays: Mapping[str, np.ndarray], names: Any, dtype: np.dtype
) -> dict[str, Tensor]:
    """A safetensors answer's tensors, those of `names` in order, in `dtype`: a tensor with
    `rows/<tensor>` beside it is `SparseRows` (the rows a step changed)."""
    tensors: dict[str, Tensor] = {}
    for name in names:
        values = arrays[name].astype(dtype, copy=False)
        rows = arrays.get(ROWS_PREFIX + name)
        tensors[name] = values if rows is None else SparseRows(rows.astype(np.int64), values)
    return tensors


def in_form(tensors: Mapping[str, np.ndarray], layout: str) -> Params:
    """Arrays by name in a session's form: the one array for `single`, the mapping otherwise."""
    return tensors[SINGLE_TENSOR_NAME] if layout == "single" else dict(tensors)


def element_count(params: Any) -> int:
    if isinstance(params, Mapping):
        return sum(int(np.size(item)) for item in params.values())
    return int(np.size(params))


def dtype_of(params: Any) -> str:
    """float64 when every tensor is a float64 array (numpy's default float, or torch's), else
    float32 — the service's default, also for plain lists."""
    arrays = params.values() if isinstance(params, Mapping) else [params]
    kinds = {str(getattr(array, "dtype", "")).removeprefix("torch.") for array in arrays}
    return "float64" if kinds == {"float64"} else "float32"


def json_content(document: Any) -> bytes:
    """A JSON body. Python's json writes NaN/Infinity, which the service reads, so a non-finite
    gradient meets the session's `nonfinite` rule instead of failing here."""
    return json.dumps(document, separators=(",", ":")).encode()


def read_safetensors(body: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors answer's arrays and `__metadata__` (`ProtocolError` if unreadable)."""
    try:
        return safetensors_arrays(body)
    except FormatError as error:
        raise ProtocolError(f"the server sent an unreadable safetensors file: {error}") from None


def media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
