"""Arrays ↔ bytes: raw little-endian, with dtype and shape kept beside the bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STORED_DTYPES = frozenset({"float32", "float64", "int64"})
"""θ and state are float32 or float64; per-tensor step counts are int64."""


@dataclass(frozen=True)
class EncodedArray:
    dtype: str
    shape: list[int]
    data: bytes | memoryview
    """The bytes; a view of the array itself when it is C-contiguous little-endian already, so
    a write sends the array's memory without copying it first (the driver copies it out when
    the statement runs: do not change the array before)."""


_NAMES = {np.dtype(name): name for name in STORED_DTYPES}
"""Stored dtypes' names by dtype (either byte order): numpy's `dtype.name` is computed in
Python on every access, a good part of encoding a step log's small arrays."""
_NAMES.update({dtype.newbyteorder(): name for dtype, name in list(_NAMES.items())})


def dtype_name(array: np.ndarray) -> str:
    """The name of `array`'s dtype, one of `STORED_DTYPES` (ValueError for any other)."""
    name = _NAMES.get(array.dtype)
    if name is None:
        raise ValueError(f"cannot store dtype {array.dtype.name}")
    return name


def encode(array: np.ndarray) -> EncodedArray:
    """The array's elements in C order as little-endian bytes (a view when no copy is needed)."""
    name = dtype_name(array)
    little_endian = np.require(array.astype(array.dtype.newbyteorder("<"), copy=False), None, "C")
    return EncodedArray(name, list(array.shape), little_endian.reshape(-1).view(np.uint8).data)


def nbytes(dtype: str, shape: list[int]) -> int:
    """The bytes of a stored array of `dtype` and `shape`."""
    return np.dtype(dtype).itemsize * math.prod(shape)


def decode(
    dtype: str, shape: list[int], data: bytes | memoryview | np.ndarray, *, writable: bool = False
) -> np.ndarray:
    """The array back: a read-only view of `data`, or with `writable` one the caller may change
    — a view of `data` itself when that is a writable buffer handed over with it (chunks joined
    for this read), else a native-order copy."""
    if dtype not in STORED_DTYPES:
        raise ValueError(f"unknown stored dtype {dtype!r}")
    native = np.dtype(dtype)
    array = np.frombuffer(data, dtype=native.newbyteorder("<")).reshape(shape)
    if array.dtype != native or (writable and not array.flags.writeable):
        return array.astype(native)
    array.flags.writeable = writable
    return array
