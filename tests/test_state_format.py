"""`optaas_state`, the module the server and the Python client share: keys, the export header in
a safetensors `__metadata__`, an export's arrays, and its safetensors reader against the
`safetensors` library. No server."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy
from optaas_state import (
    HEADER_FIELDS,
    FormatError,
    array_key,
    export_arrays,
    header_from_metadata,
    header_to_metadata,
    is_accumulation_key,
    safetensors_arrays,
    safetensors_pieces,
    split_export_arrays,
    split_key,
    tensors_to_safetensors,
)

from app.schemas import StateHeader

HEADER = {
    "format": "optaas-state/1",
    "id": None,
    "name": "naïve run",
    "dtype": "float32",
    "layout": "named",
    "tensors": ["encoder/w", "b"],
    "config": {"optimizer": {"type": "adam", "lr": 0.001}},
    "step": 12,
    "schedule_state": {},
    "last_loss": None,
    "rates": [0.001, None],
}


def test_keys_split_at_the_first_slash_so_tensor_names_may_hold_slashes():
    assert array_key("exp_avg", "encoder/w") == "exp_avg/encoder/w"
    assert split_key("exp_avg/encoder/w") == ("exp_avg", "encoder/w")
    assert is_accumulation_key("accum/w") and not is_accumulation_key("accumulate/w")
    for bad in ("w", "/w"):
        with pytest.raises(FormatError) as error:
            split_key(bad)
        assert error.value.field == bad


def test_the_header_round_trips_through_metadata_strings():
    metadata = header_to_metadata(HEADER)
    assert metadata["step"] == "12" and metadata["name"] == '"naïve run"'
    assert metadata["rates"] == "[0.001,null]" and metadata["last_loss"] == "null"
    assert "id" not in metadata  # a plain field that is absent is left out
    assert header_from_metadata(metadata) == {key: v for key, v in HEADER.items() if key != "id"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"step": None}, "metadata.step"),  # missing
        ({"step": "1e3"}, "metadata.step"),
        ({"config": "{"}, "metadata.config"),
        ({"colour": "blue"}, "metadata.colour"),
    ],
)
def test_a_header_that_is_not_the_format_names_its_field(change, field):
    metadata = {**header_to_metadata(HEADER), **change}
    metadata = {key: value for key, value in metadata.items() if value is not None}
    with pytest.raises(FormatError) as error:
        header_from_metadata(metadata)
    assert error.value.field == field


def test_the_servers_wire_model_has_the_formats_header_fields():
    assert list(StateHeader.model_fields) == list(HEADER_FIELDS)


def test_an_exports_arrays_are_keyed_and_split_back():
    params = {"encoder/w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    slots = {name: {"step": np.array(3, np.int64), "exp_avg": p * 2} for name, p in params.items()}
    arrays = export_arrays(["encoder/w", "b"], params, slots)
    assert list(arrays) == [
        "param/encoder/w", "param/b", "step/encoder/w", "exp_avg/encoder/w", "step/b", "exp_avg/b",
    ]  # fmt: skip
    back_params, back_slots = split_export_arrays(arrays, params)
    assert back_params.keys() == params.keys() and back_slots.keys() == slots.keys()
    with pytest.raises(FormatError) as error:
        split_export_arrays({"exp_avg/c": np.zeros(1)}, params)
    assert (error.value.field, error.value.tensor) == ("exp_avg/c", "c")


def test_the_safetensors_codec_agrees_with_the_safetensors_library():
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "step/w": np.array(7, np.int64),
        "big": rng.standard_normal(1000),
    }
    ours = tensors_to_safetensors(arrays, {"format": "x"})
    for name, array in safetensors.numpy.load(ours).items():
        np.testing.assert_array_equal(array, arrays[name])
    theirs = safetensors.numpy.save(arrays, metadata={"format": "x"})
    read, metadata = safetensors_arrays(theirs)
    assert metadata == {"format": "x"} and read.keys() == arrays.keys()
    for name, array in read.items():
        assert array.dtype == arrays[name].dtype
        np.testing.assert_array_equal(array, arrays[name])


def test_the_safetensors_pieces_are_views_of_the_arrays_that_make_the_file():
    """A streamed file (`GET …/state` as safetensors) is sent from the arrays themselves: each
    array's piece is a view of its memory, no copy, and the pieces make the file exactly."""
    rng = np.random.default_rng(1)
    arrays = {
        "param/w": rng.standard_normal((300, 7)).astype(np.float32),
        "step/w": np.array(4, np.int64),
        "exp_avg/w": rng.standard_normal(2100),
    }
    pieces = safetensors_pieces(arrays, {"format": "x"})
    assert b"".join(pieces) == tensors_to_safetensors(arrays, {"format": "x"})
    for piece, array in zip(pieces[2:], arrays.values(), strict=True):
        assert np.shares_memory(np.frombuffer(piece, np.uint8), array)
    strided = np.arange(10.0)[::2]  # not C-contiguous: copied, and still exact
    (_, _, piece) = safetensors_pieces({"s": strided})
    assert not np.shares_memory(np.frombuffer(piece, np.uint8), strided)
    np.testing.assert_array_equal(
        safetensors_arrays(tensors_to_safetensors({"s": strided}))[0]["s"], strided
    )


@pytest.mark.parametrize("cut", [4, 20, -1])
def test_a_cut_safetensors_file_is_a_format_error(cut):
    body = tensors_to_safetensors({"w": np.zeros(4)})
    with pytest.raises(FormatError):
        safetensors_arrays(body[:cut])
