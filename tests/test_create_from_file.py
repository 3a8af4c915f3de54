"""Creating a session from a safetensors file of θ₀, settings in its `__metadata__["optaas"]`,
and the body limits that scale with what a request needs — on a live server (SQLite, PostgreSQL).

A file makes the same session as the JSON body it stands for (view, θ, the steps after), bad
settings get the same problem as in JSON, and a bad file creates nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import func, select

from app.store.models import SessionRecord
from app.tensors import SAFETENSORS_MEDIA_TYPE, tensors_from_safetensors, tensors_to_safetensors
from tests.support import bearer, post_json, random_arrays, wire_tensors

BODY_LIMIT = 64 * 1024
SHAPES = {"w": (3, 4), "b": (4,)}
SETTINGS = {
    "name": "from-a-file",
    "optimizer": {"type": "adam", "lr": 0.01, "betas": [0.8, 0.99]},
    "schedule": {"type": "warmup", "warmup_steps": 3},
    "clip_grad_norm": 1.0,
    "groups": [{"match": ["b"], "lr": 0.1}],
}
FILE_HEADERS = {"Content-Type": SAFETENSORS_MEDIA_TYPE}


@pytest.fixture(scope="module")
def server(module_database_url, module_start_server):
    return module_start_server(module_database_url, env={"OPTAAS_MAX_BODY_BYTES": str(BODY_LIMIT)})


def creation_file(tensors: dict[str, np.ndarray], settings: Any | None, **metadata: str) -> bytes:
    """θ₀ as a safetensors file, `settings` as JSON text under `optaas` (None: no such key)."""
    if settings is not None:
        metadata["optaas"] = orjson.dumps(settings).decode()
    return tensors_to_safetensors(tensors, metadata)


def session_count(database) -> int:
    with database.transaction(write=False) as db:
        return db.scalar(select(func.count()).select_from(SessionRecord))


def step_both(client, sessions, gradients: dict[str, np.ndarray], layout: str) -> list[Any]:
    answers = []
    for session in sessions:
        response = post_json(
            client,
            f"/v1/sessions/{session['id']}/step",
            {"gradients": wire_tensors(gradients, layout), "loss": 0.5},
            headers=bearer(session["token"]),
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_file_makes_the_session_its_json_body_makes(server, dtype):
    rng = np.random.default_rng(3)
    params = random_arrays(rng, SHAPES, dtype)  # JSON carries each value exactly
    settings = {**SETTINGS, "dtype": dtype}
    with server.client() as client:
        from_json = post_json(
            client, "/v1/sessions", {**settings, "params": wire_tensors(params, "named")}
        )
        from_file = client.post(
            "/v1/sessions", content=creation_file(params, settings), headers=FILE_HEADERS
        )
        assert from_json.status_code == from_file.status_code == 201, from_file.text
        created = [from_json.json(), from_file.json()]
        drop = {"id", "token", "created_at", "updated_at"}
        views = [{k: v for k, v in view.items() if k not in drop} for view in created]
        assert views[0] == views[1]
        assert views[1]["layout"] == "named" and views[1]["dtype"] == dtype
        for _ in range(3):
            gradients = random_arrays(rng, SHAPES, dtype)
            first, second = step_both(client, created, gradients, "named")
            assert first == second


def test_a_file_whose_one_tensor_is_params_makes_the_single_form(server):
    theta = np.arange(6, dtype=np.float32).reshape(2, 3)
    with server.client() as client:
        response = client.post(
            "/v1/sessions",
            content=creation_file({"params": theta}, {"optimizer": {"type": "sgd", "lr": 0.5}}),
            headers=FILE_HEADERS,
        )
        assert response.status_code == 201, response.text
        session = response.json()
        assert (session["layout"], session["shapes"]) == ("single", {"params": [2, 3]})
        [answer] = step_both(client, [session], {"params": np.ones_like(theta)}, "single")
    np.testing.assert_array_equal(np.asarray(answer["params"], np.float32), theta - 0.5)


def test_any_number_type_is_cast_to_the_sessions_dtype(server):
    """F16 and integer θ₀ become the session's float64, exactly as their values read."""
    tensors = {"h": np.array([0.5, -1.25], np.float16), "i": np.array([3, -4], np.int32)}
    settings = {"optimizer": {"type": "sgd"}, "dtype": "float64"}
    with server.client() as client:
        response = client.post(
            "/v1/sessions", content=creation_file(tensors, settings), headers=FILE_HEADERS
        )
        assert response.status_code == 201, response.text
        session = response.json()
        answer = client.get(
            f"/v1/sessions/{session['id']}/params",
            headers={**bearer(session["token"]), "Accept": SAFETENSORS_MEDIA_TYPE},
        )
    got, _ = tensors_from_safetensors(answer.content)
    assert {name: array.dtype.name for name, array in got.items()} == {
        "h": "float64",
        "i": "float64",
    }
    np.testing.assert_array_equal(got["h"], [0.5, -1.25])
    np.testing.assert_array_equal(got["i"], [3.0, -4.0])


W = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
B = np.array([0.1, 0.2, 0.3], np.float32)
GOOD = {"w": W, "b": B}

BAD_SETTINGS = {
    "unknown-optimizer-type": {"optimizer": {"type": "adamz"}},
    "unknown-optimizer-field": {"optimizer": {"type": "adam", "beta": 0.9}},
    "missing-optimizer": {},
    "unknown-top-level-field": {"optimizer": {"type": "sgd"}, "paramz": 1},
    "negative-lr": {"optimizer": {"type": "adam", "lr": -0.001}},
    "dtype-float16": {"optimizer": {"type": "sgd"}, "dtype": "float16"},
    "group-negative-lr": {"optimizer": {"type": "sgd"}, "groups": [{"match": ["w"], "lr": -1}]},
    "muon-group-on-a-vector": {
        "optimizer": {"type": "adamw"},
        "groups": [{"match": ["b"], "optimizer": {"type": "muon"}}],
    },
    "two-group-types-on-one-tensor": {
        "optimizer": {"type": "adamw"},
        "groups": [
            {"match": ["w"], "optimizer": {"type": "muon"}},
            {"match": ["w*"], "optimizer": {"type": "sgd"}},
        ],
    },
}


@pytest.mark.parametrize("name", BAD_SETTINGS)
def test_bad_settings_get_the_problem_json_gets_and_create_nothing(server, module_database, name):
    settings = BAD_SETTINGS[name]
    before = session_count(module_database)
    with server.client() as client:
        as_json = post_json(
            client, "/v1/sessions", {**settings, "params": wire_tensors(GOOD, "named")}
        )
        as_file = client.post(
            "/v1/sessions", content=creation_file(GOOD, settings), headers=FILE_HEADERS
        )
    assert as_json.status_code == 422, as_json.text
    assert as_file.status_code == 422, as_file.text
    assert as_file.headers["content-type"] == "application/problem+json"
    json_problem, file_problem = as_json.json(), as_file.json()
    assert file_problem["type"] == json_problem["type"]
    json_errors = json_problem.pop("errors", [])
    file_errors = file_problem.pop("errors", [])
    # Validation errors are located in the file's metadata, where JSON's are in the body.
    assert [e["loc"][:3] for e in file_errors] == [["body", "__metadata__", "optaas"]] * len(
        json_errors
    )
    assert [e["loc"][3:] for e in file_errors] == [e["loc"][1:] for e in json_errors]
    if not json_errors:
        assert file_problem == json_problem
    assert session_count(module_database) == before


def handmade_file(header: Any, data: bytes = b"") -> bytes:
    encoded = orjson.dumps(header)
    return len(encoded).to_bytes(8, "little") + encoded + data


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


SGD = {"optimizer": {"type": "sgd"}}
BAD_FILES = {
    # (status, problem type, extras, the file)
    "truncated": (400, "malformed-body", {}, creation_file(GOOD, SGD)[:-5]),
    "not-safetensors": (400, "malformed-body", {}, b"PK\x03\x04 a zip file, say"),
    "size-that-does-not-fit-its-shape": (
        400,
        "malformed-body",
        {},
        handmade_file({"w": entry("F32", [2, 3], 0, 20)}, bytes(20)),
    ),
    "data-left-over": (
        400,
        "malformed-body",
        {},
        handmade_file({"w": entry("F32", [2], 0, 8)}, bytes(12)),
    ),
    "fp8-tensor": (
        422,
        "invalid-content",
        {"tensor": "w"},
        handmade_file({"w": entry("F8_E4M3", [2], 0, 2)}, bytes(2)),
    ),
    "boolean-tensor": (
        422,
        "invalid-content",
        {"tensor": "w"},
        creation_file({"w": np.array([True, False])}, SGD),
    ),
    "nan-in-a-tensor": (
        422,
        "invalid-content",
        {"tensor": "b"},
        creation_file({"w": W, "b": np.array([0.0, np.nan], np.float32)}, SGD),
    ),
    "float64-beyond-float32": (
        422,
        "invalid-content",
        {"tensor": "w"},
        creation_file({"w": np.array([1e39])}, SGD),
    ),
    "no-tensors": (422, "invalid-content", {"field": "params"}, creation_file({}, SGD)),
    "tensor-name-too-long": (
        422,
        "invalid-content",
        {"field": "params"},
        creation_file({"w" * 513: B}, SGD),
    ),
    "settings-not-json": (
        422,
        "invalid-content",
        {"field": "__metadata__.optaas"},
        creation_file(GOOD, None, optaas="{optimizer: sgd}"),
    ),
    "settings-not-an-object": (
        422,
        "invalid-content",
        {"field": "__metadata__.optaas"},
        creation_file(GOOD, [SGD]),
    ),
    "settings-with-params": (
        422,
        "invalid-content",
        {"field": "__metadata__.optaas.params"},
        creation_file(GOOD, {**SGD, "params": [1.0]}),
    ),
    "over-the-limit": (
        413,
        "payload-too-large",
        {"max_body_bytes": BODY_LIMIT},
        creation_file({"w": np.zeros(BODY_LIMIT // 4, np.float32)}, SGD),
    ),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_gets_a_clear_problem_and_creates_nothing(server, module_database, name):
    status, slug, extras, content = BAD_FILES[name]
    before = session_count(module_database)
    with server.client() as client:
        response = client.post("/v1/sessions", content=content, headers=FILE_HEADERS)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"/problems/{slug}"
    for key, value in extras.items():
        assert problem.get(key) == value, problem
    assert session_count(module_database) == before


def test_the_413_of_a_creation_says_how_to_raise_the_limit(server):
    content = creation_file({"w": np.zeros(BODY_LIMIT // 4, np.float32)}, SGD)
    with server.client() as client:
        response = client.post("/v1/sessions", content=content, headers=FILE_HEADERS)
    assert response.status_code == 413
    assert "OPTAAS_MAX_BODY_BYTES" in response.json()["detail"]
    assert "raise" in response.json()["detail"]


def test_a_step_file_may_pass_the_server_limit_when_its_session_needs_it(server):
    """A float64 session made from a float32 file within the limit takes float64 gradient
    files twice that size: the session's size bounds them, not `OPTAAS_MAX_BODY_BYTES`."""
    count = 3 * BODY_LIMIT // 16  # 48 KiB of float32, 96 KiB of float64
    theta = np.zeros(count, np.float32)
    settings = {"optimizer": {"type": "sgd", "lr": 1.0}, "dtype": "float64"}
    with server.client() as client:
        created = client.post(
            "/v1/sessions", content=creation_file({"w": theta}, settings), headers=FILE_HEADERS
        )
        assert created.status_code == 201, created.text
        session = created.json()
        gradient = tensors_to_safetensors({"w": np.full(count, 0.25)}, {})
        assert len(gradient) > BODY_LIMIT
        url = f"/v1/sessions/{session['id']}/step?return=none"
        response = client.post(
            url, content=gradient, headers={**bearer(session["token"]), **FILE_HEADERS}
        )
        assert response.status_code == 200, response.text
        too_large = tensors_to_safetensors({"w": np.zeros(2 * count)}, {})
        refused = client.post(
            url, content=too_large, headers={**bearer(session["token"]), **FILE_HEADERS}
        )
        assert refused.status_code == 413
        assert "needs at most" in refused.json()["detail"]
        # JSON is still bounded by the server's limit, and the 413 points to files.
        as_json = post_json(
            client,
            url,
            {"gradients": {"w": np.full(count, 0.123456789)}},
            headers=bearer(session["token"]),
        )
        assert as_json.status_code == 413
        assert SAFETENSORS_MEDIA_TYPE in as_json.json()["detail"]


def test_an_export_larger_than_the_creation_limit_imports(server):
    """Adam's export of a session made at the limit is three times θ: it imports."""
    count = 3 * BODY_LIMIT // 16
    settings = {"optimizer": {"type": "adam"}}
    with server.client() as client:
        created = client.post(
            "/v1/sessions",
            content=creation_file({"w": np.ones(count, np.float32)}, settings),
            headers=FILE_HEADERS,
        )
        assert created.status_code == 201, created.text
        session = created.json()
        gradient = tensors_to_safetensors({"w": np.full(count, 0.5, np.float32)}, {})
        stepped = client.post(
            f"/v1/sessions/{session['id']}/step?return=none",
            content=gradient,
            headers={**bearer(session["token"]), **FILE_HEADERS},
        )
        assert stepped.status_code == 200, stepped.text
        export = client.get(
            f"/v1/sessions/{session['id']}/state",
            headers={**bearer(session["token"]), "Accept": SAFETENSORS_MEDIA_TYPE},
        )
        assert len(export.content) > BODY_LIMIT
        imported = client.post("/v1/sessions/import", content=export.content, headers=FILE_HEADERS)
        assert imported.status_code == 201, imported.text
        assert imported.json()["step"] == 1
