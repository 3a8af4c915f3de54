"""The safetensors form of tensors: round trips, metadata, and files that are not files."""

import numpy as np
import orjson
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from app.errors import InvalidContent, MalformedBody
from app.tensors import tensors_from_safetensors, tensors_to_safetensors


def test_round_trip_keeps_names_dtypes_shapes_values_and_metadata():
    arrays = {
        "step/w": np.array(7, dtype=np.int64),
        "w": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],  # not contiguous
        "b": np.array([0.5, -1e300], dtype=np.float64),
    }
    body = tensors_to_safetensors(arrays, {"step": "3"})
    tensors, metadata = tensors_from_safetensors(body)
    assert metadata == {"step": "3"}
    assert set(tensors) == set(arrays)
    for name, array in arrays.items():
        assert tensors[name].dtype == array.dtype
        assert tensors[name].shape == array.shape
        np.testing.assert_array_equal(tensors[name], array)


def test_a_file_without_metadata_has_empty_metadata():
    _, metadata = tensors_from_safetensors(tensors_to_safetensors({"x": np.zeros(2)}))
    assert metadata == {}


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\xff" * 8 + b"{}", tensors_to_safetensors({"x": np.zeros(4)})[:-3]],
    ids=["empty", "text", "huge-header-length", "truncated"],
)
def test_a_body_that_is_no_safetensors_file_is_malformed(body):
    with pytest.raises(MalformedBody, match="not a valid safetensors file"):
        tensors_from_safetensors(body)


# -- the reader against the safetensors library ------------------------------------------------


def library_file() -> bytes:
    return safetensors.numpy.save(
        {
            "w": np.arange(12, dtype=np.float32).reshape(3, 4),
            "count": np.array(5, dtype=np.int64),
            "mask": np.array([1, 0, 1], dtype=np.uint8),
            "half": np.array([0.5, -2.0], dtype=np.float16),
            "nothing": np.zeros((0, 3), dtype=np.float64),
        },
        metadata={"loss": "0.5"},
    )


def test_files_the_library_writes_read_the_same_as_the_library_reads_them():
    body = library_file()
    tensors, metadata = tensors_from_safetensors(body)
    expected = safetensors.numpy.load(body)
    assert metadata == {"loss": "0.5"}
    assert set(tensors) == set(expected)
    for name, array in expected.items():
        assert tensors[name].dtype == array.dtype and tensors[name].shape == array.shape
        np.testing.assert_array_equal(tensors[name], array)


def test_files_it_writes_are_files_the_library_reads():
    arrays = {"a": np.float32(3.5) * np.ones((2, 2), np.float32), "t": np.array(1.5)}
    loaded = safetensors.numpy.load(tensors_to_safetensors(arrays, {"step": "2"}))
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)


def test_tensors_are_views_of_the_body_writable_only_when_the_body_is():
    body = bytearray(library_file())
    tensors, _ = tensors_from_safetensors(body)
    assert tensors["w"].flags.writeable
    tensors["w"][0, 0] = 42.0  # the body's own bytes: no copy was made
    assert tensors_from_safetensors(body)[0]["w"][0, 0] == 42.0
    assert not tensors_from_safetensors(bytes(body))[0]["w"].flags.writeable


def test_bfloat16_is_read_as_float32_exactly():
    values = torch.tensor([1.0, -2.5, 3.140625, 1e-3, -0.0]).to(torch.bfloat16)
    tensors, _ = tensors_from_safetensors(safetensors.torch.save({"g": values}))
    assert tensors["g"].dtype == np.float32
    np.testing.assert_array_equal(tensors["g"], values.float().numpy())
    assert np.signbit(tensors["g"][-1])


def header_file(header: object, data: bytes = b"") -> bytes:
    encoded = orjson.dumps(header)
    return len(encoded).to_bytes(8, "little") + encoded + data


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "body",
    [
        header_file([ENTRY], b"\0" * 8),
        header_file({"x": ENTRY}, b"\0" * 12),
        header_file({"x": {**ENTRY, "shape": [3]}}, b"\0" * 8),
        header_file({"x": ENTRY, "y": {**ENTRY, "data_offsets": [4, 12]}}, b"\0" * 12),
        header_file({"x": {**ENTRY, "data_offsets": [8, 0]}}, b"\0" * 8),
        header_file({"x": {**ENTRY, "dtype": 32}}, b"\0" * 8),
        header_file({"x": {**ENTRY, "dtype": "F128"}}, b"\0" * 8),
        header_file({"x": {**ENTRY, "shape": [2.0]}}, b"\0" * 8),
        header_file({"x": {**ENTRY, "shape": [True, 2]}}, b"\0" * 8),
        header_file({"__metadata__": {"a": 1}, "x": ENTRY}, b"\0" * 8),
        b"\x04\x00\x00\x00\x00\x00\x00\x00\xff\xfe{}",
    ],
    ids=[
        "header-not-an-object",
        "bytes-left-over",
        "shape-against-offsets",
        "overlap",
        "offsets-backwards",
        "dtype-not-text",
        "unknown-dtype",
        "shape-not-integers",
        "shape-with-a-boolean",
        "metadata-not-text",
        "header-not-utf8",
    ],
)
def test_what_the_format_forbids_is_malformed(body):
    with pytest.raises(MalformedBody, match="not a valid safetensors file"):
        tensors_from_safetensors(body)
    with pytest.raises(Exception):  # noqa: B017 (and the library agrees)
        safetensors.numpy.load(body)


def test_a_dtype_numpy_cannot_hold_is_invalid_content_naming_the_tensor():
    body = header_file({"g": {"dtype": "F8_E5M2", "shape": [2], "data_offsets": [0, 2]}}, b"\0\0")
    with pytest.raises(InvalidContent) as caught:
        tensors_from_safetensors(body)
    assert caught.value.extras == {"tensor": "g", "dtype": "F8_E5M2"}
