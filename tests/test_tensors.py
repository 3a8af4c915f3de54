"""JSON tensors ↔ numpy, in both forms."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.errors import InvalidContent
from app.tensors import Layout, layout_of, tensors_from_json, tensors_to_json

F32 = np.dtype("float32")


def test_single_form_is_one_tensor_named_params():
    tensors = tensors_from_json([[1, 2.5], [3, 4]], F32, field="params")
    assert list(tensors) == ["params"]
    assert tensors["params"].dtype == F32
    np.testing.assert_array_equal(tensors["params"], [[1, 2.5], [3, 4]])


def test_named_form_keeps_names_and_order():
    tensors = tensors_from_json({"z": [1.0], "a": 2.0, "m": [[]]}, np.dtype("float64"), field="p")
    assert list(tensors) == ["z", "a", "m"]
    assert tensors["a"].shape == ()
    assert tensors["m"].shape == (1, 0)


def test_arrays_are_new_and_writable():
    source = [1.0, 2.0]
    array = tensors_from_json(source, F32, field="p")["params"]
    assert array.flags.writeable
    array[0] = 5.0
    assert source == [1.0, 2.0]


@pytest.mark.parametrize(
    "value",
    [
        ["1.0"],
        [1.0, None],
        [True, False],
        [[1.0], [1.0, 2.0]],
        [{"a": 1}],
        None,
        "text",
        [[[1.0]], [2.0]],
    ],
)
def test_anything_but_a_regular_array_of_numbers_is_refused(value):
    with pytest.raises(InvalidContent) as raised:
        tensors_from_json({"w": value}, F32, field="params")
    assert raised.value.extras["tensor"] == "w"
    assert "params.w" in raised.value.detail


def test_deeper_than_numpy_allows_is_refused():
    value = 1.0
    for _ in range(70):
        value = [value]
    with pytest.raises(InvalidContent):
        tensors_from_json(value, F32, field="params")


def test_empty_object_and_empty_names_are_refused():
    with pytest.raises(InvalidContent, match="empty object"):
        tensors_from_json({}, F32, field="params")
    with pytest.raises(InvalidContent, match="empty name"):
        tensors_from_json({"": [1.0]}, F32, field="params")


def test_values_beyond_float32_become_infinite_for_the_caller_to_judge():
    array = tensors_from_json([1e39, -1e39], F32, field="g")["params"]
    assert np.isinf(array).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_json_round_trip_is_exact(dtype):
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((3, 5)).astype(dtype), "s": np.array(0.1, dtype)}
    text = orjson.dumps(tensors_to_json(Layout.NAMED, arrays), option=orjson.OPT_SERIALIZE_NUMPY)
    back = tensors_from_json(orjson.loads(text), np.dtype(dtype), field="p")
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name])


def test_float32_is_written_as_its_shortest_text():
    text = orjson.dumps(
        tensors_to_json(Layout.SINGLE, {"params": np.array([0.1, 1 / 3], "float32")}),
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    assert text == b"[0.1,0.33333334]"


def test_layout_of():
    assert layout_of({"a": [1]}) is Layout.NAMED
    assert layout_of([1]) is Layout.SINGLE
    assert layout_of(1.0) is Layout.SINGLE
