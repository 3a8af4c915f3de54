"""How optaas lays out a session's arrays: storage keys, safetensors files, the export format.

One module for the server and its Python client alike (the `optaas-client` distribution ships
it and the server depends on that distribution). It imports the standard library and numpy
only, so the server's numpy-only core can take its keys from here.

**Keys.** Every array of a session is keyed `"<slot>/<tensor>"` (slot names hold no "/",
tensor names may):

- `param/<tensor>`: θ itself (`PARAM_SLOT`);
- `<slot>/<tensor>`: an optimizer slot, torch's names (`exp_avg`, `exp_avg_sq`,
  `momentum_buffer`, `sum`, …), and `step/<tensor>` (`STEP_SLOT`), the tensor's own update count,
  a 0-d int64 where every other slot is in the session's dtype;
- `~global/<name>` (`GLOBAL_PREFIX`): a global quantity of the learning-rate-free types, one
  that spans tensors (Prodigy's and D-Adaptation's `d`, schedule-free's `optimizer.weight_sum`,
  DoG's `optimizer.rbar`, …): 0-d or 1-d, float64 or int64 for the references' Python numbers,
  the session's dtype for their tensors. Exported and forked with the state;
- `accum/<tensor>` (`ACCUMULATION_SLOT`): the running sum of the gradients posted toward the
  next step of an `accumulate: K` session; where every post so far gave the tensor sparse rows,
  the sum is sparse too: its values there, its rows (int64) in `accum_rows/<tensor>`
  (`ACCUMULATION_ROWS_SLOT`). Not optimizer state: neither exported nor forked.

**The export, `optaas-state/1`** (`EXPORT_FORMAT`): a session's whole run, so that an import
continues it exactly. Its header holds `format`, `id`, `name`, `dtype`, `layout`, `tensors`
(names, in order), `config` (every default filled in), `step` (t), `schedule_state`,
`last_loss` and `rates` (η_t of each parameter group — the base optimizer first, then
`config.groups` in order — which the next step will use; an import ignores it, as it ignores
`id`). Two forms:

- JSON: the header's fields, `params` (θ in the session's form), `state` (tensor → slot →
  value; `step` an integer) and `globals` (name → number or array; {} where the type keeps none);
- a safetensors file: the arrays keyed as above (`export_arrays`, globals as `~global/<name>`),
  the header in `__metadata__`, whose values are strings: `format`, `id`, `dtype`, `layout` as
  they are, `step` in decimal, the others as JSON text (`header_to_metadata`,
  `header_from_metadata`).

A tensor that has had no update may be exported as `{"step": 0}` alone (torch keeps no state for
such a tensor): the import gives it the slots a new session's tensor starts with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

EXPORT_FORMAT = "optaas-state/1"

PARAM_SLOT = "param"
"""`param/<tensor>`: the parameters θ."""

STEP_SLOT = "step"
"""`step/<tensor>`: the tensor's own update count (torch keeps one per parameter), an int64."""

ACCUMULATION_SLOT = "accum"
"""`accum/<tensor>`: the pending sum of an accumulating session's posted gradients."""

ACCUMULATION_ROWS_SLOT = "accum_rows"
"""`accum_rows/<tensor>`: the rows of a pending sum of sparse row gradients."""

GLOBAL_PREFIX = "~global/"
"""`~global/<name>`: a global quantity (a slot name never starts with "~")."""

KEY_SEPARATOR = "/"

SINGLE_TENSOR_NAME = "params"
"""The one tensor of a session of the `single` layout (θ given as one array, not by name)."""

HEADER_FIELDS = (
    "format",
    "id",
    "name",
    "dtype",
    "layout",
    "tensors",
    "config",
    "step",
    "schedule_state",
    "last_loss",
    "rates",
)
"""Everything of an export but its arrays, in the order an export writes them."""

JSON_METADATA = ("name", "tensors", "config", "schedule_state", "last_loss", "rates")
"""Header fields written as JSON text in a safetensors file's `__metadata__`; `format`, `id`,
`dtype` and `layout` are plain strings and `step` is decimal."""

REQUIRED_METADATA = ("format", "dtype", "layout", "tensors", "config", "step")

SAFETENSORS_MEDIA_TYPE = "application/vnd.safetensors"


class FormatError(ValueError):
    """Something is not laid out as this format says. `field` names where (`metadata.step`, a
    file's key, …), `tensor` the tensor concerned if one is."""

    def __init__(self, detail: str, *, field: str, tensor: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.tensor = tensor


# -- keys ---------------------------------------------------------------------------------------


def array_key(slot: str, tensor: str) -> str:
    """`"<slot>/<tensor>"`: where a tensor's array of that slot is kept."""
    return f"{slot}{KEY_SEPARATOR}{tensor}"


def split_key(key: str) -> tuple[str, str]:
    """(slot, tensor) of a key `"<slot>/<tensor>"` (the slot ends at the first "/")."""
    slot, separator, tensor = key.partition(KEY_SEPARATOR)
    if not separator or not slot:
        raise FormatError(
            f"the key {key[:80]!r} is not '{PARAM_SLOT}/<tensor>' or '<slot>/<tensor>'", field=key
        )
    return slot, tensor


def is_accumulation_key(key: str) -> bool:
    """Whether a stored array's key is part of a pending sum (`accum/<tensor>`, and
    `accum_rows/<tensor>` for a sum of sparse rows)."""
    return key.startswith(
        (ACCUMULATION_SLOT + KEY_SEPARATOR, ACCUMULATION_ROWS_SLOT + KEY_SEPARATOR)
    )


# -- an export's arrays -------------------------------------------------------------------------


def export_arrays(
    tensors: Iterable[str],
    params: Mapping[str, np.ndarray],
    slots: Mapping[str, Mapping[str, np.ndarray]],
    globals_: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """θ, the slots and the globals keyed as the format keys them: every `param/<tensor>`
    first, in the tensors' order, then each tensor's slots, then `~global/<name>`."""
    names = list(tensors)
    arrays = {array_key(PARAM_SLOT, name): params[name] for name in names}
    for name in names:
        arrays.update({array_key(slot, name): value for slot, value in slots[name].items()})
    arrays.update({GLOBAL_PREFIX + name: value for name, value in (globals_ or {}).items()})
    return arrays


def split_globals(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the arrays but the globals, the globals by name) of an export's arrays."""
    rest, globals_ = {}, {}
    for key, array in arrays.items():
        if key.startswith(GLOBAL_PREFIX):
            globals_[key.removeprefix(GLOBAL_PREFIX)] = array
        else:
            rest[key] = array
    return rest, globals_


def split_export_arrays(
    arrays: Mapping[str, np.ndarray], tensors: Iterable[str]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """(θ by tensor, slots by tensor) of an export's arrays; a key that is not
    `<slot>/<tensor>` of one of `tensors` is a `FormatError`."""
    known = set(tensors)
    params: dict[str, np.ndarray] = {}
    slots: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        slot, tensor = split_key(key)
        if tensor not in known:
            raise FormatError(
                f"the key {key[:80]!r} belongs to {tensor[:80]!r}, which is not one of the "
                "export's tensors (metadata.tensors)",
                field=key,
                tensor=tensor,
            )
        if slot == PARAM_SLOT:
            params[tensor] = array
        else:
            slots.setdefault(tensor, {})[slot] = array
    return params, slots


# -- an export's header in a safetensors file ---------------------------------------------------


def header_to_metadata(header: Mapping[str, Any]) -> dict[str, str]:
    """The `__metadata__` of a safetensors export: JSON fields as compact JSON text (absent ones
    as `null`), plain fields as they are (absent ones left out), `step` in decimal."""
    metadata = {}
    for key in HEADER_FIELDS:
        value = header.get(key)
        if key in JSON_METADATA:
            metadata[key] = json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        elif value is not None:
            metadata[key] = str(int(value)) if key == "step" else str(value)
    return metadata


def header_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The header of a safetensors export from its `__metadata__` (the inverse of
    `header_to_metadata`); a field missing, unknown or unreadable is a `FormatError`."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise FormatError(
            f"the file's __metadata__ lacks {', '.join(map(repr, missing))}: it is not an "
            f"{EXPORT_FORMAT} export",
            field=f"metadata.{missing[0]}",
        )
    unknown = sorted(set(metadata) - set(HEADER_FIELDS))
    if unknown:
        raise FormatError(
            f"the file's __metadata__ has unknown fields {unknown}", field=f"metadata.{unknown[0]}"
        )
    return {key: _metadata_value(key, text) for key, text in metadata.items()}


def _metadata_value(key: str, text: str) -> Any:
    if key in JSON_METADATA:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise FormatError(f"metadata.{key} is not JSON", field=f"metadata.{key}") from None
    if key == "step":
        if not text.isascii() or not text.isdigit():
            raise FormatError(
                f"metadata.step must be a decimal integer, not {text[:40]!r}",
                field="metadata.step",
            )
        return int(text)
    return text


def finite_or_none(value: float | None) -> float | None:
    """A number as JSON can hold it: NaN and ±Inf as None (null)."""
    return value if value is not None and math.isfinite(value) else None


# -- safetensors files --------------------------------------------------------------------------

_HEADER_LENGTH_BYTES = 8
_HEADER_ALIGNMENT = 8
_METADATA_KEY = "__metadata__"
NUMPY_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
"""safetensors dtype → numpy (little-endian, as the format stores every value); BF16 and the
8-bit floats have no numpy type."""
_SAFETENSORS_DTYPES = {np.dtype(numpy).name: name for name, numpy in NUMPY_DTYPES.items()}


def tensors_to_safetensors(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """A safetensors file of `arrays` (0-d arrays included) with string `metadata`.

    The data follows a header padded to 8 bytes (as the `safetensors` library writes it), in
    the arrays' order, with one copy of each array's bytes into the file.
    """
    return b"".join(safetensors_pieces(arrays, metadata))


def safetensors_pieces(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> list[bytes | memoryview]:
    """The safetensors file of `arrays` as pieces to send one after the other: the header's
    length and the header, then each array's bytes as a view of the array (a copy only where it
    is not little-endian and C-contiguous). Their concatenation is `tensors_to_safetensors`."""
    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA_KEY] = dict(metadata)
    chunks: list[memoryview] = []
    position = 0
    for name, array in arrays.items():
        dtype = _SAFETENSORS_DTYPES.get(array.dtype.name)
        if dtype is None:
            raise ValueError(f"no safetensors dtype for {array.dtype.name} (tensor {name!r})")
        little_endian = np.require(
            array.astype(array.dtype.newbyteorder("<"), copy=False), None, "C"
        )
        chunk = little_endian.reshape(-1).view(np.uint8).data
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [position, position + chunk.nbytes],
        }
        position += chunk.nbytes
        chunks.append(chunk)
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * (-len(encoded) % _HEADER_ALIGNMENT)
    return [len(encoded).to_bytes(_HEADER_LENGTH_BYTES, "little"), encoded, *chunks]


PIECE_BYTES = 1 << 20
"""The largest piece a body is sent in (`in_pieces`)."""


def in_pieces(content: bytes | memoryview) -> Iterator[memoryview]:
    """`content` as views of up to PIECE_BYTES, to send with its `Content-Length`.

    A sender that slices off what each socket send took copies the whole rest every time
    (httpx's synchronous transport, asyncio's transports on Python 3.11): a 400 MB body costs it
    tens of seconds. Views of the body keep the send linear (320 MB: 40 s as bytes, 1.2 s in
    views)."""
    view = memoryview(content).cast("B")
    for start in range(0, max(len(view), 1), PIECE_BYTES):
        yield view[start : start + PIECE_BYTES]


def safetensors_arrays(body: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of a safetensors file by name, in the file's order, and its `__metadata__`
    ({} if none). Arrays are read-only views of `body` (copies where misaligned). A file this
    reader cannot read (a bad header, data out of bounds, a dtype numpy has no exact type for)
    is a `FormatError`."""
    view = memoryview(body).cast("B")
    length = int.from_bytes(view[:_HEADER_LENGTH_BYTES], "little")
    start = _HEADER_LENGTH_BYTES + length
    if len(view) < _HEADER_LENGTH_BYTES or start > len(view):
        raise FormatError("not a safetensors file: its header passes the end", field="header")
    try:
        header = json.loads(bytes(view[_HEADER_LENGTH_BYTES:start]))
    except (ValueError, RecursionError):
        raise FormatError("not a safetensors file: its header is no JSON", field="header") from None
    if not isinstance(header, dict):
        raise FormatError("not a safetensors file: its header is not an object", field="header")
    metadata = header.pop(_METADATA_KEY, None) or {}
    arrays = {name: _array(view, start, name, entry) for name, entry in header.items()}
    return arrays, {str(key): str(value) for key, value in metadata.items()}


def _array(view: memoryview, start: int, name: str, entry: Any) -> np.ndarray:
    try:
        dtype = np.dtype(NUMPY_DTYPES[entry["dtype"]])
        shape = tuple(int(size) for size in entry["shape"])
        begin, end = (start + int(offset) for offset in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"tensor {name!r}: an entry this reader cannot use", field=name) from None
    if not start <= begin <= end <= len(view) or math.prod(shape) * dtype.itemsize != end - begin:
        raise FormatError(f"tensor {name!r}: its data_offsets do not fit", field=name)
    array = np.frombuffer(view[begin:end], dtype=dtype).reshape(shape)
    return array if array.flags.aligned else array.copy()
