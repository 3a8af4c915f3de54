"""Tensors on the wire: numpy ↔ the contract's JSON forms and safetensors files.

Parameters and gradients are one array (the `single` form, a tensor named `params`) or a
mapping of named arrays (the `named` form). JSON carries them as nested lists; safetensors
files (`optaas_state`'s codec) carry the arrays themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
from optaas_state import SINGLE_TENSOR_NAME, FormatError, safetensors_arrays

from optaas_client.errors import ProtocolError

Params = np.ndarray | dict[str, np.ndarray]
"""Parameters or gradients: one array (single form) or arrays by name (named form)."""


def as_tensors(value: Any, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Parameters or gradients as arrays of `dtype` by name; one array is the tensor `params`."""
    with np.errstate(over="ignore"):  # beyond the dtype: ±Inf, which the server then judges
        if isinstance(value, Mapping):
            return {str(name): np.asarray(item).astype(dtype) for name, item in value.items()}
        return {SINGLE_TENSOR_NAME: np.asarray(value).astype(dtype)}


def wire_form(tensors: Mapping[str, np.ndarray], single: bool) -> Any:
    """Tensors as JSON-ready nested lists, in the single or the named form."""
    if single:
        return tensors[SINGLE_TENSOR_NAME].tolist()
    return {name: np.asarray(array).tolist() for name, array in tensors.items()}


def from_wire(value: Any, dtype: np.dtype) -> Params:
    """A JSON tensor value (nested lists, or an object of them) as arrays; null reads as NaN."""
    if isinstance(value, Mapping):
        return {name: np.array(item, dtype=dtype) for name, item in value.items()}
    return np.array(value, dtype=dtype)


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
