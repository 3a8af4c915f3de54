"""The safetensors form of tensors: round trips, metadata, and files that are not files."""

import numpy as np
import pytest

from app.errors import MalformedBody
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
