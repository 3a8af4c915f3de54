"""Content negotiation for tensors: which answers go out as safetensors files."""

import pytest

from app.api.bodies import media_type_of, prefers_safetensors

ST = "application/vnd.safetensors"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        (ST, True),
        (f"{ST}, application/json", False),  # a tie goes to JSON
        (f"{ST}, application/json;q=0.5", True),
        (f"application/json;q=0.9, {ST}", True),
        (f"{ST};q=0", False),
        (f"{ST};q=0, */*", False),
        (f"application/*;q=0.2, {ST};q=0.5", True),
        ("application/*", False),
        (f"{ST.upper()}", True),
        (f"{ST};q=abc", False),
        ("text/html", False),
    ],
)
def test_prefers_safetensors(accept, expected):
    assert prefers_safetensors(accept) is expected


def test_media_type_of_drops_parameters_and_case():
    assert media_type_of("Application/JSON; charset=utf-8") == "application/json"
    assert media_type_of(None) == ""
