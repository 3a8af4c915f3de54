"""Exports as numpy: the `optaas-state/1` format (`optaas_state`) as one dict, whichever way it
travelled.

An export here is a dict of the format's header fields (`format`, `id`, `name`, `dtype`,
`layout`, `tensors`, `config`, `step`, `schedule_state`, `last_loss`, `rates`), `params` (θ in
the session's form, numpy), `state` (tensor → slot → array, `step` an int) and `globals` (the
learning-rate-free types' global quantities, name → array; {} for the other types). What
`Session.export()` returns and `Client.import_session()` takes; the torch converters read and
write it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from optaas_state import (
    EXPORT_FORMAT,
    HEADER_FIELDS,
    STEP_SLOT,
    FormatError,
    export_arrays,
    header_from_metadata,
    header_to_metadata,
    split_export_arrays,
    split_globals,
    tensors_to_safetensors,
)

from optaas_client.errors import ProtocolError
from optaas_client.tensors import as_tensors, from_wire, in_form, read_safetensors, wire_form


def export_from_json(document: Mapping[str, Any]) -> dict[str, Any]:
    """An export as the service writes it in JSON, with its tensors as numpy arrays."""
    _check_format(document.get("format"))
    dtype = np.dtype(document["dtype"])
    export = dict(document)
    export["params"] = from_wire(document["params"], dtype, document["layout"])
    export["state"] = {
        tensor: {slot: _slot_array(slot, value, dtype) for slot, value in slots.items()}
        for tensor, slots in document["state"].items()
    }
    export["globals"] = {
        name: _global_array(value) for name, value in document.get("globals", {}).items()
    }
    return export


def export_to_json(export: Mapping[str, Any]) -> dict[str, Any]:
    """An export (numpy or plain lists) as the JSON document `POST /v1/sessions/import` takes."""
    document = dict(export)
    params = export["params"]
    if isinstance(params, Mapping):
        document["params"] = wire_form(params, single=False)
    else:
        document["params"] = np.asarray(params).tolist()
    document["state"] = {
        tensor: {
            slot: int(value) if slot == STEP_SLOT else np.asarray(value).tolist()
            for slot, value in slots.items()
        }
        for tensor, slots in export["state"].items()
    }
    document["globals"] = {
        name: np.asarray(value).tolist() for name, value in (export.get("globals") or {}).items()
    }
    return document


def export_from_safetensors(body: bytes) -> dict[str, Any]:
    """An export as the service writes it in safetensors (`param/<t>`, `<slot>/<t>`, metadata)."""
    arrays, metadata = read_safetensors(body)
    _check_format(metadata.get("format"))
    arrays, globals_ = split_globals(arrays)
    try:
        header = header_from_metadata(metadata)
        params, slots = split_export_arrays(arrays, header["tensors"])
    except FormatError as error:
        raise ProtocolError(f"the server sent an export this client cannot read: {error}") from None
    export: dict[str, Any] = {key: header.get(key) for key in HEADER_FIELDS}
    dtype = np.dtype(export["dtype"])
    names = export["tensors"]
    export["params"] = in_form(
        {name: params[name].astype(dtype, copy=False) for name in names}, export["layout"]
    )
    export["state"] = {
        name: {
            slot: int(value) if slot == STEP_SLOT else value.astype(dtype, copy=False)
            for slot, value in slots.get(name, {}).items()
        }
        for name in names
    }
    export["globals"] = dict(globals_)
    return export


def export_to_safetensors(export: Mapping[str, Any]) -> bytes:
    """An export (numpy or plain lists) as the safetensors file `POST /v1/sessions/import` takes."""
    dtype = np.dtype(export["dtype"])
    params = as_tensors(export["params"], dtype)
    slots = {
        tensor: {
            slot: np.asarray(int(value), dtype=np.int64)
            if slot == STEP_SLOT
            else np.asarray(value).astype(dtype)
            for slot, value in tensor_slots.items()
        }
        for tensor, tensor_slots in export["state"].items()
    }
    header = {
        **export,
        "format": EXPORT_FORMAT,
        "dtype": dtype.name,
        "layout": export.get("layout") or _layout_of(export["params"]),
        "tensors": export.get("tensors") or list(params),
        "schedule_state": export.get("schedule_state") or {},
    }
    globals_ = {name: _global_array(value) for name, value in (export.get("globals") or {}).items()}
    header.pop("globals", None)
    arrays = export_arrays(header["tensors"], params, slots, globals_)
    return tensors_to_safetensors(arrays, header_to_metadata(header))


def _layout_of(params: Any) -> str:
    return "named" if isinstance(params, Mapping) else "single"


def _slot_array(slot: str, value: Any, dtype: np.dtype) -> Any:
    """A slot's value as the client hands it out: `step` an int, the others arrays."""
    return int(value) if slot == STEP_SLOT else np.array(value, dtype=dtype)


def _global_array(value: Any) -> np.ndarray:
    """A global quantity as an array: integers (counts) as int64, other numbers as float64 (the
    server casts them to the dtype the session keeps)."""
    array = np.asarray(value)
    return array.astype(np.int64 if array.dtype.kind in "iu" else np.float64)


def _check_format(value: object) -> None:
    if value != EXPORT_FORMAT:
        raise ProtocolError(f"not an {EXPORT_FORMAT} export (format: {value!r})")
