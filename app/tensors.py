"""Tensors on the wire: JSON (nested lists) and safetensors files ↔ numpy arrays.

A session's parameters are either one array — the `single` layout, whose tensor is named
`params` — or an object of named arrays — the `named` layout. A tensor is a number (0-d) or a
nested array of numbers whose nesting gives the shape. Numbers are read straight into the
session's dtype; anything else (strings, null, objects, ragged nesting) is refused.

A gradient may instead be *sparse rows* (an embedding table's): `{"rows": [i, …], "values":
[[…], …]}` in JSON, where the tensor's array would be, and in a safetensors file the integer
vector `rows/<tensor>` beside `<tensor>` holding the values. Answers show the rows a step
changed the same way (`SparseRows`, written by `tensors_to_json` and `tensors_by_name`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
from optaas_state import NUMPY_DTYPES as _NUMPY_OF_SAFETENSORS
from optaas_state import SAFETENSORS_MEDIA_TYPE as SAFETENSORS_MEDIA_TYPE
from optaas_state import SINGLE_TENSOR_NAME
from optaas_state import tensors_to_safetensors as tensors_to_safetensors

from app.errors import InvalidContent, MalformedBody, PayloadTooLarge
from app.optim import SparseRows

# The single layout's tensor name, the safetensors media type, dtypes and writer are
# `optaas_state`'s (shared with the Python client); the reader below is the server's own, built
# for bodies from anyone: it reads in place and names what is wrong as a 400 or 422.

MAX_TENSOR_NAME_LENGTH = 512
"""Long enough for any module path; short enough for a database index key (PostgreSQL's
b-tree entries end near 2.7 kB, and a name may take 4 bytes a character)."""


GENERAL_JSON_MAX_VALUES = 2**22
"""The most values a JSON document is read with when it has to be read the standard way (as
Python objects, some 60 bytes each: at most about 256 MiB)."""


def require_few_values(document: bytes | bytearray, what: str, advice: str) -> None:
    """413 unless `document` (JSON text: `what`) holds at most `GENERAL_JSON_MAX_VALUES`
    values; `advice` says what to do instead.

    Counted before parsing, in three passes over the bytes: every value but the first of an
    array or object follows a comma, so values ≤ commas + arrays + objects + 1 (commas inside
    strings count too: an over-estimate).
    """
    values = document.count(b",") + document.count(b"[") + document.count(b"{") + 1
    if values > GENERAL_JSON_MAX_VALUES:
        raise PayloadTooLarge(
            f"{what} holds up to {values} values, more than the {GENERAL_JSON_MAX_VALUES} "
            f"this server reads it with; {advice}",
            max_values=GENERAL_JSON_MAX_VALUES,
        )


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


def initial_tensors(value: Any, dtype: np.dtype) -> tuple[Layout, dict[str, np.ndarray]]:
    """A creation's θ₀ by name, and the form of the session it makes.

    JSON gives the form (`layout_of`). A safetensors file's tensors (`NamedTensors`) make the
    named form, unless its one tensor is `params` (the single form); they are used where they
    are when already of `dtype` (a 1e8-parameter file is not copied again).
    """
    if not isinstance(value, NamedTensors):
        return layout_of(value), tensors_from_json(value, dtype, field="params")
    for name in value:
        _check_tensor_name(name, "params")
    layout = Layout.SINGLE if list(value) == [SINGLE_TENSOR_NAME] else Layout.NAMED
    return layout, tensors_in_dtype(value, dtype, field="params")


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


def tensors_to_json(layout: Layout, arrays: Mapping[str, np.ndarray | SparseRows]) -> Any:
    """The form the session was created with, ready for orjson (`OPT_SERIALIZE_NUMPY`). A
    tensor given as `SparseRows` (the rows a step changed) stays one: written as `{"rows",
    "values"}` when serialised, and told apart from named tensors by `tensors_by_name`."""
    if layout is Layout.SINGLE:
        return _jsonable(arrays[SINGLE_TENSOR_NAME])
    return {name: _jsonable(array) for name, array in arrays.items()}


def tensors_by_name(value: Any) -> dict[str, np.ndarray]:
    """`tensors_to_json`'s result back by tensor name (the single form's tensor is `params`),
    0-d tensors as 0-d arrays again: what a safetensors file of them holds. A tensor of sparse
    rows is two arrays: its values under its name and its rows under `rows/<name>`."""
    by_name = value if isinstance(value, dict) else {SINGLE_TENSOR_NAME: value}
    arrays: dict[str, np.ndarray] = {}
    for name, item in by_name.items():
        if isinstance(item, SparseRows):
            arrays[rows_key(name)] = np.asarray(item.rows, np.int64)
            arrays[name] = np.asarray(item.values)
        else:
            arrays[name] = np.asarray(item)
    return arrays


def _jsonable(array: np.ndarray | SparseRows) -> Any:
    # orjson serialises numpy arrays of one or more dimensions and numpy scalars, not 0-d arrays.
    if isinstance(array, SparseRows):
        return array
    return array[()] if array.ndim == 0 else array


# -- sparse rows ------------------------------------------------------------------------------

ROWS_FIELDS = frozenset({"rows", "values"})
"""The members of a sparse row gradient in JSON: `{"rows": [i, …], "values": [[…], …]}`."""
ROWS_PREFIX = "rows/"
"""A safetensors file's `rows/<tensor>`: the rows whose values `<tensor>` holds."""


def rows_key(tensor: str) -> str:
    """Where a safetensors file keeps the rows of `tensor`'s sparse gradient."""
    return ROWS_PREFIX + tensor


def is_rows_form(value: Any) -> bool:
    """Whether a JSON value is a sparse row gradient: an object of exactly `rows` and
    `values` (a tensor's gradient is otherwise a number or an array, never an object)."""
    return isinstance(value, dict) and value.keys() == ROWS_FIELDS


def gradients_from_json(
    value: Any, layout: Layout, dtype: np.dtype, *, field: str
) -> dict[str, np.ndarray | SparseRows]:
    """The gradients of a JSON step body by tensor name: arrays of `dtype`, or `SparseRows`
    for tensors given as `{"rows", "values"}`.

    The session's layout decides what an object is: in the single form an object can only be
    sparse rows of `params`; in the named form the top-level object names the tensors, and
    each of its values is an array or sparse rows. A body of the other form is a 422.
    """
    if layout is Layout.SINGLE and is_rows_form(value):
        return {SINGLE_TENSOR_NAME: rows_from_json(value, dtype, field=field)}
    if layout_of(value) is not layout:
        form = "one (nested) array" if layout is Layout.SINGLE else "an object of named arrays"
        raise InvalidContent(
            f"{field} must have the form of this session's params: {form}", field=field
        )
    if layout is Layout.SINGLE:
        return {SINGLE_TENSOR_NAME: tensor_from_json(value, dtype, field=field)}
    if not value:
        raise InvalidContent(f"{field} is an empty object; give at least one tensor", field=field)
    gradients: dict[str, np.ndarray | SparseRows] = {}
    for name, item in value.items():
        _check_tensor_name(name, field)
        where = tensor_field(field, Layout.NAMED, name)
        if isinstance(item, dict):
            gradients[name] = rows_from_json(item, dtype, field=where, tensor=name)
        else:
            gradients[name] = tensor_from_json(item, dtype, field=where, tensor=name)
    return gradients


def rows_from_json(
    value: Any, dtype: np.dtype, *, field: str, tensor: str = SINGLE_TENSOR_NAME
) -> SparseRows:
    """`{"rows": [i, …], "values": [[…], …]}` as `SparseRows`: rows an int64 vector of JSON
    integers (no booleans, no fractions), values an array of `dtype`. Whether they fit the
    tensor (rows in range, values of shape `(len(rows), *shape[1:])`) the core checks."""
    if not is_rows_form(value):
        raise InvalidContent(
            f"{field} must be an array of numbers, or sparse rows: an object of exactly "
            '"rows" and "values"',
            field=field,
            tensor=tensor,
        )
    rows = value["rows"]
    if not isinstance(rows, list) or not all(type(row) is int for row in rows):
        raise InvalidContent(
            f"{field}.rows must be an array of integers (row indices of the tensor's first axis)",
            field=f"{field}.rows",
            tensor=tensor,
        )
    try:
        row_array = np.array(rows, dtype=np.int64)
    except OverflowError:
        raise InvalidContent(
            f"{field}.rows holds an integer beyond int64: no tensor has such a row",
            field=f"{field}.rows",
            tensor=tensor,
        ) from None
    values = tensor_from_json(value["values"], dtype, field=f"{field}.values", tensor=tensor)
    return SparseRows(row_array, values)


def gradients_from_safetensors(
    tensors: Mapping[str, np.ndarray], names: Collection[str], dtype: np.dtype, *, field: str
) -> dict[str, np.ndarray | SparseRows]:
    """A safetensors step body's gradients by tensor name: each tensor cast to `dtype`, and a
    tensor with an integer vector `rows/<tensor>` beside it taken as sparse rows (its values).

    `names` are the session's tensors: a key `rows/<x>` that is itself one of them is a
    gradient like any other. Rows that are not integers, or that have no values beside them,
    are a 422 naming the tensor.
    """
    rows: dict[str, np.ndarray] = {}
    dense: dict[str, np.ndarray] = {}
    for key, array in tensors.items():
        if key.startswith(ROWS_PREFIX) and key not in names:
            rows[key.removeprefix(ROWS_PREFIX)] = array
        else:
            dense[key] = array
    gradients: dict[str, np.ndarray | SparseRows] = dict(
        tensors_in_dtype(dense, dtype, field=field)
    )
    for tensor, indices in rows.items():
        if tensor not in gradients:
            raise InvalidContent(
                f"{field} has {rows_key(tensor)!r} but no tensor {tensor!r} holding its values",
                field=rows_key(tensor),
                tensor=tensor,
            )
        if indices.dtype.kind not in "iu" or indices.ndim != 1:
            raise InvalidContent(
                f"{rows_key(tensor)!r} must be a vector of integers (got {indices.dtype.name}, "
                f"{indices.ndim}-d): the rows of {tensor!r} its values belong to",
                field=rows_key(tensor),
                tensor=tensor,
            )
        if indices.dtype == np.uint64 and indices.size and int(indices.max()) >= 2**63:
            raise InvalidContent(
                f"{rows_key(tensor)!r} holds a row beyond int64: no tensor has such a row",
                field=rows_key(tensor),
                tensor=tensor,
            )
        gradients[tensor] = SparseRows(indices.astype(np.int64), gradients[tensor])
    return gradients


class NamedTensors(dict[str, np.ndarray]):
    """Tensors by name whatever the session's form — what a safetensors file holds (the single
    form's one tensor is named `params`). Tells the service that `gradients` came as a file."""


def tensors_in_dtype(
    tensors: Mapping[str, np.ndarray], dtype: np.dtype, *, field: str
) -> dict[str, np.ndarray]:
    """Each tensor as `dtype` (the same array when it is already: no copy). At least one, and
    numbers only: a boolean tensor is a 422, as an array of only `true`/`false` is in JSON.
    Values beyond the dtype's range become ±inf, which the caller's finiteness rules judge."""
    if not tensors:
        raise InvalidContent(f"{field} holds no tensor; give at least one", field=field)
    converted = {}
    for name, array in tensors.items():
        if array.dtype.kind not in "iuf":
            raise InvalidContent(
                f"{field} {name!r} has dtype {array.dtype.name}; tensors must hold numbers "
                "(floating-point or integer)",
                tensor=name,
            )
        with np.errstate(over="ignore"):
            converted[name] = array.astype(dtype, copy=False)
    return converted


# ------------------------------------------------------------------------------------------
# The binary form: safetensors files (https://github.com/huggingface/safetensors)
# ------------------------------------------------------------------------------------------

_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100_000_000
"""The `safetensors` library's own limit on the JSON header."""
_METADATA_KEY = "__metadata__"

_BFLOAT16 = "BF16"
_WITHOUT_NUMPY_DTYPE = frozenset({"F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"})
"""Defined by the format, but numpy has no such type: refused with a 422."""


def tensors_from_safetensors(
    body: bytes | bytearray | memoryview,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a safetensors file by name, in the file's order, and its `__metadata__`
    ({} if it has none).

    The arrays are views of `body`, not copies — writable when `body` is (a `bytearray`) —
    except that BF16 tensors are read as float32 (exactly) and misaligned ones are copied. The
    arrays keep the file's dtypes otherwise; the caller casts them to the session's. A body
    that is not a safetensors file is a 400 (`MalformedBody`), like malformed JSON: a header
    that is not UTF-8 JSON (lone surrogates included), entries without a dtype, shape and
    offsets that agree, data not covered exactly by the tensors, `__metadata__` that is not
    text by text. A dtype of the format that numpy cannot hold (FP8, …) is a 422.
    """
    view = memoryview(body).cast("B")
    header = _safetensors_header(view)
    raw_metadata = header.pop(_METADATA_KEY, None)
    metadata = _safetensors_metadata(raw_metadata)
    data_start = _HEADER_LENGTH_BYTES + _header_length(view)
    entries = {name: _tensor_entry(name, entry) for name, entry in header.items()}
    _check_coverage(entries, len(view) - data_start)
    tensors = {
        name: _tensor_view(view, data_start, name, *entry) for name, entry in entries.items()
    }
    return tensors, metadata


def _header_length(view: memoryview) -> int:
    return int.from_bytes(view[:_HEADER_LENGTH_BYTES], "little")


def _safetensors_header(view: memoryview) -> dict[str, Any]:
    if len(view) < _HEADER_LENGTH_BYTES:
        raise _not_safetensors("it is shorter than the 8-byte header length")
    length = _header_length(view)
    if length > _MAX_HEADER_BYTES or _HEADER_LENGTH_BYTES + length > len(view):
        raise _not_safetensors(f"its header length ({length} bytes) passes the end of the body")
    text = view[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + length]
    require_few_values(
        bytes(text), "the safetensors header", "a header lists a few values per tensor"
    )
    try:
        header = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise _not_safetensors(f"its header is not UTF-8 JSON: {error}") from None
    if not isinstance(header, dict):
        raise _not_safetensors("its header is not a JSON object")
    return header


def _safetensors_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
        isinstance(value, str) for value in metadata.values()
    ):
        raise _not_safetensors(f"its {_METADATA_KEY} is not an object of strings")
    return metadata


def _tensor_entry(name: str, entry: Any) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of a header entry whose parts agree."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _not_safetensors(
            f"the entry of tensor {name!r} is not {{dtype, shape, data_offsets}}"
        )
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or not _is_count_list(shape):
        raise _not_safetensors(f"tensor {name!r} has no valid dtype and shape")
    if not _is_count_list(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise _not_safetensors(f"tensor {name!r} has no valid data_offsets")
    if dtype in _WITHOUT_NUMPY_DTYPE:
        raise InvalidContent(
            f"tensor {name!r} has dtype {dtype}, which this server cannot read; send F32, F64, "
            "F16, BF16 or an integer type",
            tensor=name,
            dtype=dtype,
        )
    if dtype != _BFLOAT16 and dtype not in _NUMPY_OF_SAFETENSORS:
        raise _not_safetensors(f"tensor {name!r} has an unknown dtype {dtype!r}")
    itemsize = 2 if dtype == _BFLOAT16 else np.dtype(_NUMPY_OF_SAFETENSORS[dtype]).itemsize
    _check_shape(name, shape, itemsize)
    begin, end = offsets
    if math.prod(shape) * itemsize != end - begin:
        raise _not_safetensors(f"tensor {name!r}: its shape and dtype do not fit its data_offsets")
    return dtype, tuple(shape), begin, end


MAX_DIMENSIONS = 64
"""numpy's most dimensions (NPY_MAXDIMS)."""
_MAX_ARRAY_BYTES = 2**63 - 1


def _check_shape(name: str, shape: list[int], itemsize: int) -> None:
    """A shape numpy can hold: at most 64 dimensions, each fitting int64, and — as numpy counts
    an empty array's size too — the product of the non-zero ones times the item size (of the
    array as read: BF16 becomes float32) within int64."""
    if len(shape) > MAX_DIMENSIONS:
        raise _not_safetensors(
            f"tensor {name!r} has {len(shape)} dimensions; at most {MAX_DIMENSIONS} are allowed"
        )
    extent = max(itemsize, 4)
    for length in shape:
        extent *= max(length, 1)
        if extent > _MAX_ARRAY_BYTES:
            raise _not_safetensors(f"tensor {name!r} has a shape too large for any array")


def _is_count_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    )


def _check_coverage(
    entries: Mapping[str, tuple[str, tuple[int, ...], int, int]], size: int
) -> None:
    """The tensors' data must tile the data section exactly: no gaps, overlaps or leftovers."""
    position = 0
    for _, _, begin, end in sorted(entries.values(), key=lambda entry: (entry[2], entry[3])):
        if begin != position:
            raise _not_safetensors("its tensors' data overlap or leave gaps")
        position = end
    if position != size:
        raise _not_safetensors(f"its tensors' data cover {position} of {size} bytes")


def _tensor_view(
    view: memoryview,
    data_start: int,
    name: str,
    dtype: str,
    shape: tuple[int, ...],
    begin: int,
    end: int,
) -> np.ndarray:
    """The tensor as a view of the body (a copy only for BF16 and for misaligned data)."""
    buffer = view[data_start + begin : data_start + end]
    if dtype == _BFLOAT16:
        bits = np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    array = np.frombuffer(buffer, dtype=_NUMPY_OF_SAFETENSORS[dtype]).reshape(shape)
    if not array.flags.aligned:
        array = array.copy()
    return array


def _not_safetensors(reason: str) -> MalformedBody:
    return MalformedBody(f"the body is not a valid safetensors file: {reason}")
