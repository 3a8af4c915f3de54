"""Arrays ↔ bytes: raw little-endian, with dtype and shape kept beside the bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STORED_DTYPES = frozenset({"float32", "float64", "int64"})
"""θ and state are float32 or float64; per-tensor step counts are int64."""


@dataclass(frozen=True)
class EncodedArray:
    dtype: str
    shape: list[int]
    data: bytes


def encode(array: np.ndarray) -> EncodedArray:
    """The array's elements in C order as little-endian bytes."""
    if array.dtype.name not in STORED_DTYPES:
        raise ValueError(f"cannot store dtype {array.dtype.name}")
    little_endian = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
    return EncodedArray(array.dtype.name, list(array.shape), little_endian.tobytes())


def decode(dtype: str, shape: list[int], data: bytes, *, writable: bool = False) -> np.ndarray:
    """The array back: a read-only view of `data`, or with `writable` a native-order copy."""
    if dtype not in STORED_DTYPES:
        raise ValueError(f"unknown stored dtype {dtype!r}")
    native = np.dtype(dtype)
    array = np.frombuffer(data, dtype=native.newbyteorder("<")).reshape(shape)
    if writable or array.dtype != native:
        return array.astype(native)
    return array
