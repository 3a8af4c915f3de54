"""Large JSON bodies: tensors straight to numpy (simdjson) give exactly what the lists give.

The fast path (`app.api.bodies._load_with_numpy_tensors`) may decline any document — then the
standard path (orjson, lists) parses it — but what it does take must be what the lists would
be: same shapes, same float64 values (signs of zeros included), same other fields. Regular
tensors must take it (or it would never pay); everything irregular must be declined.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.bodies import NUMPY_TENSORS_MIN_BYTES, _load_with_numpy_tensors, load_json

PAD = np.linspace(-1, 1, NUMPY_TENSORS_MIN_BYTES // 8).round(6).tolist()
"""A regular tensor that makes every document large enough for the fast path."""
FIELDS = ("gradients",)


def body_of(tensor_text: bytes, extra: bytes = b"") -> bytes:
    """{"gradients": {"t": <tensor_text>, "pad": PAD}<extra>} as raw bytes."""
    return (
        b'{"gradients": {"t": '
        + tensor_text
        + b', "pad": '
        + orjson.dumps(PAD)
        + b"}"
        + extra
        + b"}"
    )


def assert_same_as_lists(fast: dict, body: bytes) -> None:
    slow = orjson.loads(body)
    assert set(fast) == set(slow)
    for key, value in slow.items():
        if key not in FIELDS:
            assert fast[key] == value
            continue
        for name, tensor in value.items():
            expected = np.asarray(tensor, dtype=np.float64)
            got = fast[key][name]
            got = got if isinstance(got, np.ndarray) else np.asarray(got, dtype=np.float64)
            assert got.shape == expected.shape, name
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


REGULAR = {
    "1-d": b"[1.5, -2.25, 3e-8, 0]",
    "2-d": b"[[1, 2, 3], [4, 5, 6]]",
    "3-d": b"[[[1], [2]], [[3], [4]], [[5], [6]]]",
    "a number": b"0.125",
    "empty": b"[]",
    "empty rows": b"[[], []]",
    "integers beyond 2**53": b"[9007199254740993, -1]",
    "signed zeros and extremes": b"[-0.0, 0.0, 5e-324, 1.7976931348623157e308, -1e-310]",
    "whitespace": b"[ [ 1 ,2 ] ,\n [3 , 4 ] ]",
}

IRREGULAR = {
    "ragged": b"[[1, 2], [3]]",
    "ragged with the right count": b"[[1, 2], [3], [4, 5, 6]]",
    "array where a number is": b"[1, [2]]",
    "deeper array where a number is": b"[[1, [2]], [3, 4]]",
    "number where an array is": b"[[1, 2], 3]",
    "booleans among numbers": b"[1, true, 0]",
    "booleans alone": b"[true, false]",
    "null": b"[1, null]",
    "a string": b'[1, "2"]',
    "an object": b'[1, {"a": 2}]',
    "NaN": b"[1, NaN]",
    "Infinity": b"[-Infinity, 1]",
    "beyond float64": b"[1e400]",
    "an integer beyond 64 bits": b"[1180591620717411303424]",
    "deeper than the fast path goes": b"[" * 40 + b"1" + b"]" * 40,
}


@pytest.mark.parametrize("text", REGULAR.values(), ids=REGULAR.keys())
def test_regular_tensors_go_straight_to_numpy_with_the_values_lists_give(text):
    body = body_of(text, b', "loss": 0.5, "partial": false')
    fast = _load_with_numpy_tensors(body, FIELDS)
    assert fast is not None
    assert isinstance(fast["gradients"]["pad"], np.ndarray)
    assert_same_as_lists(fast, body)


@pytest.mark.parametrize("text", IRREGULAR.values(), ids=IRREGULAR.keys())
def test_anything_irregular_is_left_to_the_standard_path(text):
    assert _load_with_numpy_tensors(body_of(text), FIELDS) is None


@pytest.mark.parametrize(
    "extra",
    [
        b', "note": "a [bracket] in a string"',  # a "[" the count cannot place
        b', "gradients": {"t": [1]}',  # a key twice: orjson keeps the last
        b', "loss": "\\ud800"',  # a lone surrogate: orjson refuses it
    ],
    ids=["bracket-in-a-string", "duplicate-key", "lone-surrogate"],
)
def test_documents_the_count_or_the_keys_cannot_vouch_for_are_left_alone(extra):
    assert _load_with_numpy_tensors(body_of(b"[1, 2]", extra), FIELDS) is None


def test_duplicate_tensor_names_are_left_to_the_standard_path():
    body = b'{"gradients": {"t": [1], "t": [2], "pad": ' + orjson.dumps(PAD) + b"}}"
    assert _load_with_numpy_tensors(body, FIELDS) is None
    assert load_json(body, tensors=FIELDS)["gradients"]["t"] == [2]


def test_other_fields_with_arrays_are_counted_and_kept_as_lists():
    body = body_of(b"[[1, 2]]", b', "betas": [0.9, 0.999], "groups": [{"match": ["w*"]}]')
    fast = _load_with_numpy_tensors(body, FIELDS)
    assert fast is not None
    assert fast["betas"] == [0.9, 0.999] and fast["groups"] == [{"match": ["w*"]}]
    assert_same_as_lists(fast, body)


def test_small_bodies_and_bodies_without_tensor_fields_take_the_standard_path():
    assert load_json(b'{"gradients": [1, 2]}', tensors=FIELDS) == {"gradients": [1, 2]}
    big = body_of(b"[1, 2]")
    assert isinstance(load_json(big)["gradients"]["pad"], list)
    assert isinstance(load_json(big, tensors=FIELDS)["gradients"]["pad"], np.ndarray)


numbers = st.one_of(
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
nested = st.recursive(numbers, lambda inner: st.lists(inner, max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(nested)
def test_whatever_the_fast_path_takes_equals_the_lists(value):
    body = body_of(orjson.dumps(value))
    fast = _load_with_numpy_tensors(body, FIELDS)
    try:
        expected = np.asarray(value)
        regular = expected.dtype.kind in "iuf" and expected.dtype != bool
    except ValueError:
        regular = False
    if fast is None:
        return
    assert regular, value  # it took something the lists path refuses or reads otherwise
    assert_same_as_lists(fast, body)
