"""The export format `optaas-state/1` on the server: a session's run as JSON or as a safetensors
file, and back.

The format itself — the keys (`param/<tensor>`, `<slot>/<tensor>`, `step/<tensor>` an int64),
the header's fields and how `__metadata__` writes them — is `optaas_state`'s, the module the
server shares with its Python client. This module adds what only the server does: the JSON
document through the wire models, and problems (422) that name the export's fields.

`SessionState` is an export's content in numpy. This module writes it and reads it back, judging
only the form (a field missing, a key that is not `<slot>/<tensor>`, a step that is not an
integer); whether the content makes a session — config, slot names, shapes, dtypes, finiteness,
step counts — the service judges against what the optimizer expects (`service.import_session`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from optaas_state import (
    EXPORT_FORMAT,
    GLOBAL_PREFIX,
    PARAM_SLOT,
    STEP_SLOT,
    FormatError,
    array_key,
    export_arrays,
    finite_or_none,
    header_from_metadata,
    header_to_metadata,
    safetensors_pieces,
    split_export_arrays,
    split_globals,
)

from app.errors import InvalidContent
from app.schemas import StateExport, StateHeader
from app.tensors import (
    Layout,
    layout_of,
    tensor_field,
    tensor_from_json,
    tensors_from_json,
    tensors_to_json,
)


@dataclass
class SessionState:
    """A session's run as an export carries it: what `GET …/state` writes and an import reads."""

    id: str | None
    name: str | None
    dtype: str
    layout: Layout
    tensors: list[str]
    config: dict[str, Any]
    step: int
    schedule_state: dict[str, float]
    last_loss: float | None
    params: dict[str, np.ndarray]
    slots: dict[str, dict[str, np.ndarray]]
    """Tensor name → slot name → array."""
    rates: list[float | None] | None = None
    """η_t of each group the next step will use (base optimizer first, then `config.groups`):
    written for conversions to other frameworks; an import ignores it."""
    binary: bool = False
    """Read from a safetensors file: problems name its keys rather than JSON fields."""
    globals: dict[str, np.ndarray] = field(default_factory=dict)
    """The learning-rate-free types' global quantities by name (`OptimizerState.globals`; {}
    for every other type). Read from JSON, in the dtype the numbers suggest: the service casts
    them to the ones the configuration keeps."""

    def param_field(self, tensor: str) -> str:
        """Where θ of `tensor` sits in the export (for error messages)."""
        if self.binary:
            return array_key(PARAM_SLOT, tensor)
        return tensor_field("params", self.layout, tensor)

    def slot_field(self, tensor: str, slot: str) -> str:
        """Where a slot of `tensor` sits in the export (for error messages)."""
        return array_key(slot, tensor) if self.binary else f"state.{tensor}.{slot}"

    def global_field(self, name: str) -> str:
        """Where a global quantity sits in the export (for error messages)."""
        return GLOBAL_PREFIX + name if self.binary else f"globals.{name}"

    def header(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON values (a non-finite loss as null)."""
        return {
            "format": EXPORT_FORMAT,
            "id": self.id,
            "name": self.name,
            "dtype": self.dtype,
            "layout": self.layout.value,
            "tensors": self.tensors,
            "config": self.config,
            "step": self.step,
            "schedule_state": self.schedule_state,
            "last_loss": finite_or_none(self.last_loss),
            "rates": None if self.rates is None else [finite_or_none(r) for r in self.rates],
        }


# -- writing ----------------------------------------------------------------------------------


def to_json(state: SessionState) -> bytes:
    """The JSON export: the header, θ in the session's form and the slots by tensor."""
    document = {
        **state.header(),
        "params": tensors_to_json(state.layout, state.params),
        "state": {name: tensors_to_json(Layout.NAMED, state.slots[name]) for name in state.tensors},
        "globals": tensors_to_json(Layout.NAMED, state.globals),
    }
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def safetensors_pieces_of(state: SessionState) -> list[bytes | memoryview]:
    """The safetensors export — arrays keyed as stored, the header as string metadata — as
    pieces to send in turn (views of the arrays, no copy)."""
    arrays = export_arrays(state.tensors, state.params, state.slots, state.globals)
    return safetensors_pieces(arrays, header_to_metadata(state.header()))


# -- reading ----------------------------------------------------------------------------------


def from_document(document: StateExport) -> SessionState:
    """A JSON export (already validated as `StateExport`) with its tensors as numpy arrays.

    Numbers are read into the export's dtype; `step` slots must be integers.
    """
    dtype = np.dtype(document.dtype)
    layout = Layout(document.layout)
    if layout_of(document.params) is not layout:
        form = "one (nested) array" if layout is Layout.SINGLE else "an object of named arrays"
        raise InvalidContent(
            f"params must be {form}, as the export's layout {layout.value!r} says",
            field="params",
        )
    params = tensors_from_json(document.params, dtype, field="params")
    slots = {
        name: {
            slot: _slot_from_json(value, dtype, name, slot) for slot, value in slot_values.items()
        }
        for name, slot_values in document.state.items()
    }
    globals_ = {name: _global_from_json(value, name) for name, value in document.globals.items()}
    return _state(document, params, slots, binary=False, globals_=globals_)


def _global_from_json(value: Any, name: str) -> np.ndarray:
    """A global quantity as JSON gives it: integers as int64, other numbers as float64 (the
    service casts them to the dtype the configuration keeps)."""
    where = f"globals.{name}"
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    if array.dtype.kind not in "iuf" or array.ndim > 1:
        raise InvalidContent(
            f"{where} must be a number or an array of numbers (a global quantity is 0-d or 1-d)",
            field=where,
        )
    try:
        return array.astype(np.int64 if array.dtype.kind in "iu" else np.float64)
    except OverflowError:
        raise InvalidContent(f"{where} holds an integer beyond int64", field=where) from None


def _slot_from_json(value: Any, dtype: np.dtype, tensor: str, slot: str) -> np.ndarray:
    where = f"state.{tensor}.{slot}"
    if slot != STEP_SLOT:
        return tensor_from_json(value, dtype, field=where, tensor=tensor)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidContent(
            f"{where} must be an integer (the number of updates the tensor has had)",
            field=where,
            tensor=tensor,
        )
    if not 0 <= value < 2**63:
        raise InvalidContent(f"{where} must be from 0 to 2**63 − 1", field=where, tensor=tensor)
    return np.array(value, dtype=np.int64)


def header_document(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The header of a safetensors export from its `__metadata__`, as a document for
    `StateHeader` (422 naming the field that is missing or not readable)."""
    try:
        return header_from_metadata(metadata)
    except FormatError as error:
        raise InvalidContent(error.detail, field=error.field) from None


def from_safetensors(header: StateHeader, arrays: Mapping[str, np.ndarray]) -> SessionState:
    """A safetensors export: θ from `param/<tensor>`, slots from `<slot>/<tensor>` (arrays keep
    the file's dtypes; the service checks them)."""
    arrays, globals_ = split_globals(arrays)
    try:
        params, slots = split_export_arrays(arrays, header.tensors)
    except FormatError as error:
        extras = {} if error.tensor is None else {"tensor": error.tensor}
        raise InvalidContent(error.detail, field=error.field, **extras) from None
    return _state(header, params, slots, binary=True, globals_=globals_)


def _state(
    header: StateHeader,
    params: dict[str, np.ndarray],
    slots: dict[str, dict[str, np.ndarray]],
    *,
    binary: bool,
    globals_: dict[str, np.ndarray],
) -> SessionState:
    return SessionState(
        id=header.id,
        name=header.name,
        dtype=header.dtype,
        layout=Layout(header.layout),
        tensors=list(header.tensors),
        config=header.config.model_dump(mode="json"),
        step=header.step,
        schedule_state=dict(header.schedule_state),
        last_loss=header.last_loss,
        rates=header.rates,
        params=params,
        slots=slots,
        binary=binary,
        globals=globals_,
    )
