"""The export format `optaas-state/1`: a session's whole run as JSON or as a safetensors file.

An export holds the config (every default filled in), t, θ and every state slot, so that an
import continues the run exactly where the export left it (README, "Export and import"):

- JSON: the `StateExport` document — `params` in the session's form, `state` as
  tensor → slot → value (`step`, the tensor's own update count, an integer);
- safetensors: the arrays keyed as the store keys them — `param/<tensor>` for θ,
  `<slot>/<tensor>` for state (`step/<tensor>` a 0-d int64) — and everything else in
  `__metadata__`, whose values are strings: `format`, `id`, `dtype`, `layout` as they are;
  `name`, `tensors`, `config`, `schedule_state`, `last_loss` as JSON; `step` in decimal.

`SessionState` is an export's content in numpy. This module writes it and reads it back, judging
only the form (a field missing, a key that is not `<slot>/<tensor>`, a step that is not an
integer); whether the content makes a session — config, slot names, shapes, dtypes, finiteness,
step counts — the service judges against what the optimizer expects (`service.import_session`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.errors import InvalidContent
from app.schemas import EXPORT_FORMAT, StateExport, StateHeader
from app.store.models import PARAM_SLOT
from app.tensors import (
    Layout,
    layout_of,
    tensor_field,
    tensor_from_json,
    tensors_from_json,
    tensors_to_json,
    tensors_to_safetensors,
)

STEP_SLOT = "step"
"""The per-tensor update count: an int64, where every other slot is in the session's dtype."""

JSON_METADATA = ("name", "tensors", "config", "schedule_state", "last_loss")
"""Metadata fields whose string is JSON; `format`, `id`, `dtype`, `layout` are plain strings and
`step` is decimal."""

REQUIRED_METADATA = ("format", "dtype", "layout", "tensors", "config", "step")


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
    binary: bool = False
    """Read from a safetensors file: problems name its keys rather than JSON fields."""

    def param_field(self, tensor: str) -> str:
        """Where θ of `tensor` sits in the export (for error messages)."""
        if self.binary:
            return f"{PARAM_SLOT}/{tensor}"
        return tensor_field("params", self.layout, tensor)

    def slot_field(self, tensor: str, slot: str) -> str:
        """Where a slot of `tensor` sits in the export (for error messages)."""
        return f"{slot}/{tensor}" if self.binary else f"state.{tensor}.{slot}"

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
            "last_loss": _finite_or_none(self.last_loss),
        }


# -- writing ----------------------------------------------------------------------------------


def to_json(state: SessionState) -> bytes:
    """The JSON export: the header, θ in the session's form and the slots by tensor."""
    document = {
        **state.header(),
        "params": tensors_to_json(state.layout, state.params),
        "state": {name: tensors_to_json(Layout.NAMED, state.slots[name]) for name in state.tensors},
    }
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def to_safetensors(state: SessionState) -> bytes:
    """The safetensors export: arrays keyed as stored, the header as string metadata."""
    arrays = {f"{PARAM_SLOT}/{name}": state.params[name] for name in state.tensors}
    for name in state.tensors:
        arrays.update({f"{slot}/{name}": array for slot, array in state.slots[name].items()})
    header = state.header()
    metadata = {
        key: json.dumps(value, separators=(",", ":"), allow_nan=False)
        if key in JSON_METADATA
        else str(value)
        for key, value in header.items()
        if value is not None or key in JSON_METADATA
    }
    return tensors_to_safetensors(arrays, metadata)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
    return _state(document, params, slots, binary=False)


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
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise InvalidContent(
            f"the file's __metadata__ lacks {', '.join(map(repr, missing))}: it is not an "
            f"{EXPORT_FORMAT} export",
            field=f"metadata.{missing[0]}",
        )
    unknown = sorted(set(metadata) - set(StateHeader.model_fields))
    if unknown:
        raise InvalidContent(
            f"the file's __metadata__ has unknown fields {unknown}", field=f"metadata.{unknown[0]}"
        )
    document: dict[str, Any] = {}
    for key, text in metadata.items():
        if key in JSON_METADATA:
            document[key] = _json_metadata(key, text)
        elif key == "step":
            if not text.isascii() or not text.isdigit():
                raise InvalidContent(
                    f"metadata.step must be a decimal integer, not {text[:40]!r}",
                    field="metadata.step",
                )
            document[key] = int(text)
        else:
            document[key] = text
    return document


def _json_metadata(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidContent(f"metadata.{key} is not JSON", field=f"metadata.{key}") from None


def from_safetensors(header: StateHeader, arrays: Mapping[str, np.ndarray]) -> SessionState:
    """A safetensors export: θ from `param/<tensor>`, slots from `<slot>/<tensor>` (arrays keep
    the file's dtypes; the service checks them)."""
    params: dict[str, np.ndarray] = {}
    slots: dict[str, dict[str, np.ndarray]] = {}
    known = set(header.tensors)
    for key, array in arrays.items():
        slot, separator, tensor = key.partition("/")
        if not separator or not slot:
            raise InvalidContent(
                f"the file's tensor {key[:80]!r} is not keyed '{PARAM_SLOT}/<tensor>' or "
                "'<slot>/<tensor>'",
                field=key,
            )
        if tensor not in known:
            raise InvalidContent(
                f"the file's tensor {key[:80]!r} belongs to {tensor[:80]!r}, which is not one of "
                "the export's tensors (metadata.tensors)",
                field=key,
                tensor=tensor,
            )
        if slot == PARAM_SLOT:
            params[tensor] = array
        else:
            slots.setdefault(tensor, {})[slot] = array
    return _state(header, params, slots, binary=True)


def _state(
    header: StateHeader,
    params: dict[str, np.ndarray],
    slots: dict[str, dict[str, np.ndarray]],
    *,
    binary: bool,
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
        params=params,
        slots=slots,
        binary=binary,
    )
