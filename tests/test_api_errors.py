"""Every error these endpoints can answer, through HTTP, each leaving every session as it was.

Each case is sent to the app in this process (`tests.in_process`; SQLite, then PostgreSQL)
configured with API keys and a small body limit; the answer must be the contract's status as
`application/problem+json`, and every stored byte of every session (rows and arrays) must be
unchanged afterwards. The two bodies that only a socket can send (one declared too long, one
streamed past the limit) go to a live server process over the same database. The fast loop
sends every case on SQLite; their PostgreSQL repeat (a few hundred round trips to the server)
runs with the slow tests.
"""

from __future__ import annotations

import copy
import json
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest

from app.tensors import SAFETENSORS_MEDIA_TYPE, tensors_to_safetensors
from tests.in_process import InProcessServer
from tests.live_server import LiveServer
from tests.support import bearer, create_session, database_snapshot, json_bytes

API_KEY = "the-right-key"
BODY_LIMIT = 64 * 1024

W = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
B = [0.1, 0.2, 0.3]
GOOD_STEP = {"gradients": {"w": W, "b": B}}
GOOD_CREATE = {"params": {"w": W, "b": B}, "optimizer": {"type": "adam"}}
FIRST_STEP_KEY = "the-first-step"


SERVER_ENV = {"OPTAAS_API_KEYS": f"another-key,{API_KEY}", "OPTAAS_MAX_BODY_BYTES": str(BODY_LIMIT)}


@pytest.fixture(scope="module")
def server(module_migrated_database_url):
    with InProcessServer(module_migrated_database_url, env=SERVER_ENV) as app:
        yield app


@pytest.fixture(scope="module")
def live_server(server, module_migrated_database_url, tmp_path_factory):
    """A server process over the same database, for what only a socket can send."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with LiveServer(module_migrated_database_url, log, env=SERVER_ENV) as live:
        yield live


@pytest.fixture(scope="module")
def sessions(server):
    """A named-form float32 Adam session and a single-form float64 SGD session, one step in."""
    with server.client() as client:
        key = {"X-API-Key": API_KEY}
        named = create_session(client, GOOD_CREATE, key)
        single = create_session(
            client,
            {"params": [[1.0, 2.0], [3.0, 4.0]], "dtype": "float64", "optimizer": {"type": "sgd"}},
            key,
        )
        for session, gradients in [(named, GOOD_STEP["gradients"]), (single, [[1, 1], [1, 1]])]:
            response = client.post(
                f"/v1/sessions/{session['id']}/step",
                content=json_bytes({"gradients": gradients}),
                headers={
                    **bearer(session["token"]),
                    "Content-Type": "application/json",
                    "Idempotency-Key": FIRST_STEP_KEY,
                },
            )
            assert response.status_code == 200, response.text
    return {"named": named, "single": single}


def snapshot_all(module_migrated_database, sessions):
    return [
        database_snapshot(module_migrated_database, session["id"]) for session in sessions.values()
    ]


@dataclass(frozen=True)
class Bad:
    """One bad request and the problem it must get."""

    status: int
    slug: str
    body: Any = None
    raw: bytes | None = None
    method: str = "POST"
    path: str = "/v1/sessions/{named}/step"
    content_type: str | None = "application/json"
    auth: str = "named"  # whose token: named | single | wrong | none | basic | empty
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    error_locs: list[list[Any]] = field(default_factory=list)


def step(gradients: Any, **more: Any) -> dict[str, Any]:
    return {"gradients": gradients, **more}


def create(**changes: Any) -> dict[str, Any]:
    body = {**GOOD_CREATE, **changes}
    return {key: value for key, value in body.items() if value is not None}


CREATE = {"path": "/v1/sessions", "auth": "none", "api_key": API_KEY}

W32, B32 = np.array(W, np.float32), np.array(B, np.float32)
BINARY = {"content_type": SAFETENSORS_MEDIA_TYPE}
BINARY_IN_AND_OUT = {**BINARY, "headers": {"Accept": SAFETENSORS_MEDIA_TYPE}}


def file_of(tensors: dict[str, np.ndarray], **metadata: str) -> bytes:
    """A valid safetensors file (written by the server's own writer)."""
    return tensors_to_safetensors(tensors, metadata)


def handmade_file(header: Any, data: bytes = b"", *, header_bytes: bytes | None = None) -> bytes:
    """A safetensors file with any header at all: the 8-byte length, the header, the data."""
    encoded = orjson.dumps(header) if header_bytes is None else header_bytes
    return len(encoded).to_bytes(8, "little") + encoded + data


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


B_BYTES = B32.tobytes()  # 12 bytes: the gradient of b, for handmade files
GOOD_FILE_TENSORS = {"w": W32, "b": B32}

CASES = {
    # -- 400: not JSON at all --------------------------------------------------------------
    "step-malformed-json": Bad(400, "malformed-body", raw=b'{"gradients": [1,'),
    "step-empty-body": Bad(400, "malformed-body", raw=b""),
    "step-absurdly-deep-nesting": Bad(
        400, "malformed-body", raw=b'{"gradients": {"w": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    ),
    "create-malformed-json": Bad(400, "malformed-body", raw=b"{params: 1}", **CREATE),
    "step-lone-surrogate": Bad(
        400, "malformed-body", raw=b'{"gradients": {"w": ' + json_bytes(W) + b', "b": "\\ud800"}}'
    ),
    # -- 400: bodies that are no safetensors file --------------------------------------------
    "step-safetensors-garbage": Bad(400, "malformed-body", raw=b"not a safetensors file", **BINARY),
    "step-safetensors-empty": Bad(400, "malformed-body", raw=b"", **BINARY),
    "step-safetensors-truncated": Bad(
        400, "malformed-body", raw=file_of(GOOD_FILE_TENSORS)[:-5], **BINARY
    ),
    "step-safetensors-header-past-the-end": Bad(
        400, "malformed-body", raw=(10**6).to_bytes(8, "little") + b"{}", **BINARY
    ),
    "step-safetensors-header-not-utf8": Bad(
        400, "malformed-body", raw=handmade_file(None, header_bytes=b'{"\xff": 1}'), **BINARY
    ),
    "step-safetensors-header-not-utf8-bytes": Bad(
        400,
        "malformed-body",
        raw=handmade_file(None, header_bytes=b'{"__metadata__": {"loss": "\xff\xfe"}}'),
        **BINARY,
    ),
    "step-safetensors-header-lone-surrogate": Bad(
        400,
        "malformed-body",
        raw=handmade_file(
            None,
            B_BYTES,
            header_bytes=b'{"\\ud800": ' + orjson.dumps(entry("F32", [3], 0, 12)) + b"}",
        ),
        **BINARY,
    ),
    "step-safetensors-header-an-array": Bad(
        400, "malformed-body", raw=handmade_file([1, 2, 3]), **BINARY
    ),
    "step-safetensors-metadata-numbers": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"__metadata__": {"loss": 0.5}, "b": entry("F32", [3], 0, 12)}, B_BYTES),
        **BINARY,
    ),
    "step-safetensors-metadata-a-list": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"__metadata__": ["loss"], "b": entry("F32", [3], 0, 12)}, B_BYTES),
        **BINARY,
    ),
    "step-safetensors-overlapping-tensors": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"b": entry("F32", [3], 0, 12), "c": entry("F32", [1], 8, 12)}, B_BYTES),
        **BINARY,
    ),
    "step-safetensors-bytes-left-over": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"b": entry("F32", [3], 0, 12)}, B_BYTES + b"\0" * 4),
        **BINARY,
    ),
    "step-safetensors-shape-against-offsets": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"b": entry("F32", [4], 0, 12)}, B_BYTES),
        **BINARY,
    ),
    "step-safetensors-unknown-dtype": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"b": entry("F33", [3], 0, 12)}, B_BYTES),
        **BINARY,
    ),
    "step-safetensors-negative-shape": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"b": entry("F32", [-3], 0, 12)}, B_BYTES),
        **BINARY,
    ),
    "step-safetensors-entry-with-more-keys": Bad(
        400,
        "malformed-body",
        raw=handmade_file({"b": {**entry("F32", [3], 0, 12), "scale": 2}}, B_BYTES),
        **BINARY,
    ),
    "step-safetensors-json-sent-as-safetensors": Bad(
        400, "malformed-body", body=GOOD_STEP, **BINARY_IN_AND_OUT
    ),
    # -- 400: headers that cannot be read --------------------------------------------------
    "step-idempotency-key-too-long": Bad(
        400,
        "invalid-header",
        body=GOOD_STEP,
        headers={"Idempotency-Key": "k" * 256},
        extras={"header": "Idempotency-Key"},
    ),
    "step-idempotency-key-empty": Bad(
        400,
        "invalid-header",
        body=GOOD_STEP,
        headers={"Idempotency-Key": ""},
        extras={"header": "Idempotency-Key"},
    ),
    "create-idempotency-key-too-long": Bad(
        400,
        "invalid-header",
        body=GOOD_CREATE,
        headers={"Idempotency-Key": "k" * 256},
        extras={"header": "Idempotency-Key"},
        **CREATE,
    ),
    "step-if-match-unquoted": Bad(
        400,
        "invalid-header",
        body=GOOD_STEP,
        headers={"If-Match": "1"},
        extras={"header": "If-Match"},
    ),
    "step-if-match-empty": Bad(
        400,
        "invalid-header",
        body=GOOD_STEP,
        headers={"If-Match": ""},
        extras={"header": "If-Match"},
    ),
    # -- 401: no credentials ---------------------------------------------------------------
    "step-no-token": Bad(401, "token-missing", body=GOOD_STEP, auth="none"),
    "step-basic-auth": Bad(401, "token-missing", body=GOOD_STEP, auth="basic"),
    "step-empty-bearer": Bad(401, "token-missing", body=GOOD_STEP, auth="empty"),
    "get-no-token": Bad(
        401, "token-missing", method="GET", path="/v1/sessions/{named}", auth="none"
    ),
    "params-no-token": Bad(
        401, "token-missing", method="GET", path="/v1/sessions/{named}/params", auth="none"
    ),
    "delete-no-token": Bad(
        401, "token-missing", method="DELETE", path="/v1/sessions/{named}", auth="none"
    ),
    "create-no-api-key": Bad(
        401, "api-key-required", body=GOOD_CREATE, **{**CREATE, "api_key": None}
    ),
    "create-wrong-api-key": Bad(
        401, "api-key-required", body=GOOD_CREATE, **{**CREATE, "api_key": "the-wrong-key"}
    ),
    # -- 404: unknown session, wrong token, unknown route -----------------------------------
    "step-wrong-token": Bad(404, "session-not-found", body=GOOD_STEP, auth="wrong"),
    "step-another-sessions-token": Bad(404, "session-not-found", body=GOOD_STEP, auth="single"),
    "step-unknown-id": Bad(
        404, "session-not-found", body=GOOD_STEP, path=f"/v1/sessions/{uuid.uuid4()}/step"
    ),
    "step-malformed-id": Bad(
        404, "session-not-found", body=GOOD_STEP, path="/v1/sessions/not-a-uuid/step"
    ),
    "get-wrong-token": Bad(
        404, "session-not-found", method="GET", path="/v1/sessions/{named}", auth="wrong"
    ),
    "params-another-sessions-token": Bad(
        404, "session-not-found", method="GET", path="/v1/sessions/{named}/params", auth="single"
    ),
    "delete-wrong-token": Bad(
        404, "session-not-found", method="DELETE", path="/v1/sessions/{named}", auth="wrong"
    ),
    "unknown-route": Bad(404, "not-found", method="GET", path="/v1/nothing-here"),
    "step-wrong-token-and-stale-if-match": Bad(
        404, "session-not-found", body=GOOD_STEP, auth="wrong", headers={"If-Match": '"0"'}
    ),
    "step-wrong-token-and-its-idempotency-key": Bad(
        404,
        "session-not-found",
        body=GOOD_STEP,
        auth="wrong",
        headers={"Idempotency-Key": FIRST_STEP_KEY},
    ),
    # -- 405 ---------------------------------------------------------------------------------
    "put-on-a-session": Bad(405, "method-not-allowed", method="PUT", path="/v1/sessions/{named}"),
    # -- 412 ---------------------------------------------------------------------------------
    "step-if-match-stale": Bad(
        412,
        "precondition-failed",
        body=GOOD_STEP,
        headers={"If-Match": '"0"'},
        extras={"current_step": 1},
    ),
    "step-if-match-weak-tag": Bad(
        412,
        "precondition-failed",
        body=GOOD_STEP,
        headers={"If-Match": 'W/"1"'},
        extras={"current_step": 1},
    ),
    "step-if-match-list-without-the-tag": Bad(
        412,
        "precondition-failed",
        body=GOOD_STEP,
        headers={"If-Match": '"0", "2", "a,1"'},
        extras={"current_step": 1},
    ),
    # -- 413 ---------------------------------------------------------------------------------
    "step-body-over-the-limit": Bad(
        413, "payload-too-large", raw=b'{"gradients": [' + b"0," * BODY_LIMIT + b"0]}"
    ),
    "create-body-over-the-limit": Bad(
        413, "payload-too-large", raw=b'{"params": [' + b"0," * BODY_LIMIT + b"0]}", **CREATE
    ),
    "step-safetensors-over-what-its-session-needs": Bad(
        413,
        "payload-too-large",
        raw=file_of({"w": np.zeros(BODY_LIMIT // 2, np.float32)}),
        **BINARY,
    ),
    # -- 415 ---------------------------------------------------------------------------------
    "step-octet-stream": Bad(
        415,
        "unsupported-media-type",
        raw=file_of(GOOD_FILE_TENSORS),
        content_type="application/octet-stream",
        extras={"supported": ["application/json", SAFETENSORS_MEDIA_TYPE]},
    ),
    "create-octet-stream": Bad(
        415,
        "unsupported-media-type",
        raw=file_of({"params": B32}, optaas='{"optimizer": {"type": "sgd"}}'),
        content_type="application/octet-stream",
        **CREATE,
    ),
    "step-text-plain": Bad(
        415, "unsupported-media-type", body=GOOD_STEP, content_type="text/plain"
    ),
    "step-form-urlencoded": Bad(
        415,
        "unsupported-media-type",
        body=GOOD_STEP,
        content_type="application/x-www-form-urlencoded",
    ),
    "create-text-plain": Bad(
        415, "unsupported-media-type", body=GOOD_CREATE, content_type="text/plain", **CREATE
    ),
    # -- 422: gradients that do not fit the parameters ---------------------------------------
    "step-wrong-shape": Bad(
        422,
        "gradient-mismatch",
        body=step({"w": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], "b": B}),
        extras={"tensor": "w", "expected_shape": [2, 3], "got_shape": [3, 2]},
    ),
    "step-missing-tensor": Bad(
        422,
        "gradient-mismatch",
        body=step({"w": W}),
        extras={"tensor": "b", "expected_shape": [3], "got_shape": None},
    ),
    "step-unknown-tensor": Bad(
        422,
        "gradient-mismatch",
        body=step({"w": W, "b": B, "c": [1.0]}),
        extras={"tensor": "c", "expected_shape": None, "got_shape": [1]},
    ),
    "step-single-form-for-named-session": Bad(
        422, "invalid-content", body=step(W), extras={"field": "gradients"}
    ),
    "step-named-form-for-single-session": Bad(
        422,
        "invalid-content",
        body=step({"params": [[1, 1], [1, 1]]}),
        path="/v1/sessions/{single}/step",
        auth="single",
        extras={"field": "gradients"},
    ),
    "step-single-wrong-shape": Bad(
        422,
        "gradient-mismatch",
        body=step([1.0, 2.0, 3.0, 4.0]),
        path="/v1/sessions/{single}/step",
        auth="single",
        extras={"tensor": "params", "expected_shape": [2, 2], "got_shape": [4]},
    ),
    "step-string-in-gradient": Bad(
        422,
        "invalid-content",
        body=step({"w": [["a", 0, 0], [0, 0, 0]], "b": B}),
        extras={"tensor": "w"},
    ),
    "step-null-in-gradient": Bad(
        422, "invalid-content", body=step({"w": W, "b": [0.1, None, 0.3]}), extras={"tensor": "b"}
    ),
    "step-ragged-gradient": Bad(
        422,
        "invalid-content",
        body=step({"w": [[0.1, 0.2, 0.3], [0.4]], "b": B}),
        extras={"tensor": "w"},
    ),
    "step-object-in-gradient": Bad(
        422, "invalid-content", body=step({"w": W, "b": {"x": 1}}), extras={"tensor": "b"}
    ),
    "step-deeper-than-numpy-allows": Bad(
        422,
        "invalid-content",
        raw=b'{"gradients": {"b": [0, 0, 0], "w": ' + b"[" * 100 + b"]" * 100 + b"}}",
        extras={"tensor": "w"},
    ),
    "step-non-finite-gradient": Bad(
        422,
        "non-finite-gradient",
        body=step({"w": W, "b": [0.1, 1e39, 0.3]}),
        extras={"tensor": "b"},
    ),
    "step-nan-gradient": Bad(
        422,
        "non-finite-gradient",
        raw=b'{"gradients": {"w": [[0.1, NaN, 0.3], [0, 0, 0]], "b": [0, 0, 0]}}',
        extras={"tensor": "w"},
    ),
    "step-infinity-gradient": Bad(
        422,
        "non-finite-gradient",
        raw=b'{"gradients": {"w": [[0, 0, 0], [0, 0, 0]], "b": [0, Infinity, 0]}}',
        extras={"tensor": "b"},
    ),
    "step-minus-infinity-gradient-float64": Bad(
        422,
        "non-finite-gradient",
        raw=b'{"gradients": [[1, -Infinity], [1, 1]]}',
        path="/v1/sessions/{single}/step",
        auth="single",
        extras={"tensor": "params"},
    ),
    "step-number-beyond-float64": Bad(
        422,
        "non-finite-gradient",
        raw=b'{"gradients": [[1, 1], [-1e999, 1]]}',
        path="/v1/sessions/{single}/step",
        auth="single",
        extras={"tensor": "params"},
    ),
    "step-idempotency-key-reused-for-another-body": Bad(
        422,
        "idempotency-key-reused",
        body={**GOOD_STEP, "loss": 0.5},
        headers={"Idempotency-Key": FIRST_STEP_KEY},
    ),
    "step-idempotency-key-reused-on-another-path": Bad(
        422,
        "idempotency-key-reused",
        body=GOOD_STEP,
        path="/v1/sessions/{named}/step?return=none",
        headers={"Idempotency-Key": FIRST_STEP_KEY},
    ),
    # -- 422: safetensors gradients that do not fit ---------------------------------------
    "step-safetensors-wrong-shape": Bad(
        422,
        "gradient-mismatch",
        raw=file_of({"w": W32.T.copy(), "b": B32}),
        extras={"tensor": "w", "expected_shape": [2, 3], "got_shape": [3, 2]},
        **BINARY_IN_AND_OUT,
    ),
    "step-safetensors-missing-tensor": Bad(
        422,
        "gradient-mismatch",
        raw=file_of({"w": W32}),
        extras={"tensor": "b", "expected_shape": [3], "got_shape": None},
        **BINARY,
    ),
    "step-safetensors-unknown-tensor": Bad(
        422,
        "gradient-mismatch",
        raw=file_of({**GOOD_FILE_TENSORS, "c": np.ones(1, np.float32)}),
        extras={"tensor": "c", "expected_shape": None, "got_shape": [1]},
        **BINARY,
    ),
    "step-safetensors-single-session-tensor-not-named-params": Bad(
        422,
        "gradient-mismatch",
        raw=file_of({"w": np.ones((2, 2))}),
        path="/v1/sessions/{single}/step",
        auth="single",
        extras={"tensor": "w", "expected_shape": None, "got_shape": [2, 2]},
        **BINARY,
    ),
    "step-safetensors-no-tensors": Bad(
        422, "invalid-content", raw=file_of({}, loss="0.5"), extras={"field": "gradients"}, **BINARY
    ),
    "step-safetensors-bool-gradient": Bad(
        422,
        "invalid-content",
        raw=file_of({"w": W32, "b": np.array([True, False, True])}),
        extras={"tensor": "b"},
        **BINARY,
    ),
    "step-safetensors-fp8-gradient": Bad(
        422,
        "invalid-content",
        raw=handmade_file({"b": entry("F8_E4M3", [3], 0, 3)}, b"\x01\x02\x03"),
        extras={"tensor": "b", "dtype": "F8_E4M3"},
        **BINARY,
    ),
    "step-safetensors-nan-gradient": Bad(
        422,
        "non-finite-gradient",
        raw=file_of({"w": W32, "b": np.array([0.1, np.nan, 0.3], np.float32)}),
        extras={"tensor": "b"},
        **BINARY_IN_AND_OUT,
    ),
    "step-safetensors-float64-beyond-float32": Bad(
        422,
        "non-finite-gradient",
        raw=file_of({"w": W32, "b": np.array([0.1, 1e39, 0.3])}),
        extras={"tensor": "b"},
        **BINARY,
    ),
    "step-safetensors-loss-not-json": Bad(
        422,
        "invalid-content",
        raw=file_of(GOOD_FILE_TENSORS, loss="zero point five"),
        extras={"field": "__metadata__.loss"},
        **BINARY,
    ),
    "step-safetensors-loss-a-json-string": Bad(
        422,
        "validation-error",
        raw=file_of(GOOD_FILE_TENSORS, loss='"0.5"'),
        error_locs=[["body", "__metadata__", "loss"]],
        **BINARY,
    ),
    "step-safetensors-partial-not-a-bool": Bad(
        422,
        "validation-error",
        raw=file_of({"w": W32}, partial="1"),
        error_locs=[["body", "__metadata__", "partial"]],
        **BINARY,
    ),
    "step-safetensors-idempotency-key-of-a-json-step": Bad(
        422,
        "idempotency-key-reused",
        raw=file_of(GOOD_FILE_TENSORS),
        headers={"Idempotency-Key": FIRST_STEP_KEY},
        **BINARY,
    ),
    "step-safetensors-wrong-token": Bad(
        404, "session-not-found", raw=file_of(GOOD_FILE_TENSORS), auth="wrong", **BINARY_IN_AND_OUT
    ),
    "params-safetensors-no-token": Bad(
        401,
        "token-missing",
        method="GET",
        path="/v1/sessions/{named}/params",
        auth="none",
        headers={"Accept": SAFETENSORS_MEDIA_TYPE},
    ),
    # -- 422: the envelope ------------------------------------------------------------------
    "step-body-is-an-array": Bad(422, "validation-error", body=[1, 2], error_locs=[["body"]]),
    "step-missing-gradients": Bad(
        422, "validation-error", body={"loss": 1.0}, error_locs=[["body", "gradients"]]
    ),
    "step-unknown-field": Bad(
        422,
        "validation-error",
        body={**GOOD_STEP, "gradient": B},
        error_locs=[["body", "gradient"]],
    ),
    "step-loss-as-string": Bad(
        422, "validation-error", body={**GOOD_STEP, "loss": "0.5"}, error_locs=[["body", "loss"]]
    ),
    "step-partial-not-a-bool": Bad(
        422,
        "validation-error",
        body={**GOOD_STEP, "partial": "yes"},
        error_locs=[["body", "partial"]],
    ),
    "step-unknown-return": Bad(
        422,
        "validation-error",
        body=GOOD_STEP,
        path="/v1/sessions/{named}/step?return=everything",
        error_locs=[["query", "return"]],
    ),
    # -- 422: create bodies ----------------------------------------------------------------
    "create-unknown-optimizer-type": Bad(
        422,
        "validation-error",
        body=create(optimizer={"type": "adamz"}),
        error_locs=[["body", "optimizer"]],
        **CREATE,
    ),
    "create-unknown-optimizer-field": Bad(
        422,
        "validation-error",
        body=create(optimizer={"type": "adam", "beta": 0.9}),
        error_locs=[["body", "optimizer", "adam", "beta"]],
        **CREATE,
    ),
    "create-unknown-schedule-type": Bad(
        422,
        "validation-error",
        body=create(schedule={"type": "cosine_forever"}),
        error_locs=[["body", "schedule"]],
        **CREATE,
    ),
    "create-unknown-top-level-field": Bad(
        422,
        "validation-error",
        body=create(paramz=[1.0]),
        error_locs=[["body", "paramz"]],
        **CREATE,
    ),
    "create-missing-params": Bad(
        422, "validation-error", body=create(params=None), error_locs=[["body", "params"]], **CREATE
    ),
    "create-missing-optimizer": Bad(
        422,
        "validation-error",
        body=create(optimizer=None),
        error_locs=[["body", "optimizer"]],
        **CREATE,
    ),
    "create-lr-as-string": Bad(
        422,
        "validation-error",
        body=create(optimizer={"type": "sgd", "lr": "0.1"}),
        error_locs=[["body", "optimizer", "sgd", "lr"]],
        **CREATE,
    ),
    "create-dtype-float16": Bad(
        422,
        "validation-error",
        body=create(dtype="float16"),
        error_locs=[["body", "dtype"]],
        **CREATE,
    ),
    "create-unknown-nonfinite-policy": Bad(
        422,
        "validation-error",
        body=create(nonfinite="ignore"),
        error_locs=[["body", "nonfinite"]],
        **CREATE,
    ),
    "create-group-without-match": Bad(
        422,
        "validation-error",
        body=create(groups=[{"lr": 0.1}]),
        error_locs=[["body", "groups", 0, "match"]],
        **CREATE,
    ),
    "create-name-too-long": Bad(
        422,
        "validation-error",
        body=create(name="n" * 256),
        error_locs=[["body", "name"]],
        **CREATE,
    ),
    "create-negative-lr": Bad(
        422,
        "invalid-hyper-parameter",
        body=create(optimizer={"type": "adam", "lr": -0.001}),
        extras={"field": "optimizer.lr"},
        **CREATE,
    ),
    "create-betas-above-one": Bad(
        422,
        "invalid-hyper-parameter",
        body=create(optimizer={"type": "adam", "betas": [1.5, 0.999]}),
        extras={"field": "optimizer.betas"},
        **CREATE,
    ),
    "create-nan-lr": Bad(
        422,
        "invalid-hyper-parameter",
        raw=b'{"params": [1.0], "optimizer": {"type": "sgd", "lr": NaN}}',
        extras={"field": "optimizer.lr"},
        **CREATE,
    ),
    "create-nan-in-params": Bad(
        422,
        "invalid-content",
        raw=b'{"params": {"w": [1.0, NaN]}, "optimizer": {"type": "sgd"}}',
        extras={"tensor": "w"},
        **CREATE,
    ),
    "create-betas-at-one": Bad(
        422,
        "invalid-hyper-parameter",
        body=create(optimizer={"type": "adam", "betas": [0.9, 1.0]}),
        extras={"field": "optimizer.betas"},
        **CREATE,
    ),
    "create-total-steps-zero": Bad(
        422,
        "invalid-hyper-parameter",
        body=create(schedule={"type": "cosine", "total_steps": 0}),
        extras={"field": "schedule.total_steps"},
        **CREATE,
    ),
    "create-nested-total-steps-zero": Bad(
        422,
        "invalid-hyper-parameter",
        body=create(
            schedule={
                "type": "warmup",
                "warmup_steps": 5,
                "then": {"type": "cosine", "total_steps": 0},
            }
        ),
        extras={"field": "schedule.then.total_steps"},
        **CREATE,
    ),
    "create-group-negative-lr": Bad(
        422,
        "invalid-hyper-parameter",
        body=create(groups=[{"match": ["w"], "lr": -1.0}]),
        extras={"field": "groups.0.lr"},
        **CREATE,
    ),
    "create-accumulate-zero": Bad(
        422,
        "validation-error",
        body=create(accumulate=0),
        error_locs=[["body", "accumulate"]],
        **CREATE,
    ),
    "create-accumulate-beyond-the-limit": Bad(
        422,
        "validation-error",
        body=create(accumulate=10**7),
        error_locs=[["body", "accumulate"]],
        **CREATE,
    ),
    "create-string-in-params": Bad(
        422, "invalid-content", body=create(params={"w": ["1.0"]}), extras={"tensor": "w"}, **CREATE
    ),
    "create-null-in-params": Bad(
        422,
        "invalid-content",
        body=create(params=[1.0, None]),
        extras={"tensor": "params"},
        **CREATE,
    ),
    "create-ragged-params": Bad(
        422,
        "invalid-content",
        body=create(params=[[1.0], [1.0, 2.0]]),
        extras={"tensor": "params"},
        **CREATE,
    ),
    "create-params-beyond-float32": Bad(
        422, "invalid-content", body=create(params={"w": [1e39]}), extras={"tensor": "w"}, **CREATE
    ),
    "create-name-with-nul": Bad(
        422,
        "validation-error",
        body=create(name="a\x00b"),
        error_locs=[["body", "name"]],
        **CREATE,
    ),
    "create-tensor-name-with-nul": Bad(
        422,
        "invalid-content",
        body=create(params={"w\x00": [1.0]}),
        extras={"field": "params"},
        **CREATE,
    ),
    "create-tensor-name-too-long": Bad(
        422,
        "invalid-content",
        body=create(params={"w" * 513: [1.0]}),
        extras={"field": "params"},
        **CREATE,
    ),
    "create-no-tensors": Bad(
        422, "invalid-content", body=create(params={}), extras={"field": "params"}, **CREATE
    ),
}


# -- run management: PATCH, fork, export, import, waiting -------------------------------------

PATCH = {"method": "PATCH", "path": "/v1/sessions/{named}"}
FORK = {"path": "/v1/sessions/{named}/fork", "api_key": API_KEY}
IMPORT = {"path": "/v1/sessions/import", "auth": "none", "api_key": API_KEY}
SAFETENSORS = "application/vnd.safetensors"

EXPORT: dict[str, Any] = {
    "format": "optaas-state/1",
    "dtype": "float32",
    "layout": "named",
    "tensors": ["w", "b"],
    "config": {"optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9}},
    "step": 1,
    "params": {"w": W, "b": B},
    "state": {"w": {"momentum_buffer": W, "step": 1}, "b": {"momentum_buffer": B, "step": 1}},
}
"""A valid export (`test_the_baseline_exports_import`); each case below breaks one thing."""


def export_with(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(EXPORT)
    document.update(changes)
    return {key: value for key, value in document.items() if value is not None}


def export_with_slot(tensor: str, slot: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(EXPORT)
    if value is None:
        del document["state"][tensor][slot]
    else:
        document["state"][tensor][slot] = value
    return document


def safetensors_export(
    arrays: dict[str, np.ndarray] | None = None, **metadata: str | None
) -> bytes:
    """EXPORT as a safetensors file, with arrays and metadata fields replaced (None: removed)."""
    w, b = np.asarray(W, np.float32), np.asarray(B, np.float32)
    base_arrays = {
        "param/w": w,
        "param/b": b,
        "momentum_buffer/w": w,
        "momentum_buffer/b": b,
        "step/w": np.array(1, np.int64),
        "step/b": np.array(1, np.int64),
    }
    base_metadata = {
        "format": "optaas-state/1",
        "name": "null",
        "dtype": "float32",
        "layout": "named",
        "tensors": '["w","b"]',
        "config": json.dumps(EXPORT["config"]),
        "step": "1",
        "schedule_state": "{}",
        "last_loss": "null",
    }
    merged_arrays = {**base_arrays, **(arrays or {})}
    merged_metadata = {**base_metadata, **metadata}
    return tensors_to_safetensors(
        {k: v for k, v in merged_arrays.items() if v is not None},
        {k: v for k, v in merged_metadata.items() if v is not None},
    )


ST_IMPORT = {**IMPORT, "content_type": SAFETENSORS}
RUN_CASES = {
    # -- PATCH ----------------------------------------------------------------------------
    "patch-malformed-json": Bad(400, "malformed-body", raw=b'{"optimizer": ', **PATCH),
    "patch-no-token": Bad(401, "token-missing", body={}, auth="none", **PATCH),
    "patch-wrong-token": Bad(404, "session-not-found", body={}, auth="wrong", **PATCH),
    "patch-if-match-stale": Bad(
        412,
        "precondition-failed",
        body={"optimizer": {"lr": 0.5}},
        headers={"If-Match": '"0"'},
        extras={"current_step": 1},
        **PATCH,
    ),
    "patch-body-over-the-limit": Bad(
        413, "payload-too-large", raw=b'{"name": "' + b"n" * BODY_LIMIT + b'"}', **PATCH
    ),
    "patch-text-plain": Bad(
        415, "unsupported-media-type", body={}, content_type="text/plain", **PATCH
    ),
    "patch-optimizer-type-change": Bad(
        422,
        "optimizer-type-change",
        body={"optimizer": {"type": "sgd"}},
        extras={"field": "optimizer.type"},
        **PATCH,
    ),
    "patch-optimizer-removed": Bad(
        422, "invalid-content", body={"optimizer": None}, extras={"field": "optimizer"}, **PATCH
    ),
    "patch-params": Bad(
        422,
        "validation-error",
        body={"params": {"w": W, "b": B}},
        error_locs=[["body", "params"]],
        **PATCH,
    ),
    "patch-unknown-optimizer-field": Bad(
        422,
        "validation-error",
        body={"optimizer": {"beta": 0.9}},
        error_locs=[["body", "optimizer", "adam", "beta"]],
        **PATCH,
    ),
    "patch-lr-as-string": Bad(
        422,
        "validation-error",
        body={"optimizer": {"lr": "0.1"}},
        error_locs=[["body", "optimizer", "adam", "lr"]],
        **PATCH,
    ),
    "patch-negative-lr": Bad(
        422,
        "invalid-hyper-parameter",
        body={"optimizer": {"lr": -1.0}},
        extras={"field": "optimizer.lr"},
        **PATCH,
    ),
    "patch-unknown-schedule-type": Bad(
        422,
        "validation-error",
        body={"schedule": {"type": "cosine_forever"}},
        error_locs=[["body", "schedule"]],
        **PATCH,
    ),
    "patch-schedule-total-steps-zero": Bad(
        422,
        "invalid-hyper-parameter",
        body={"schedule": {"type": "cosine", "total_steps": 0}},
        extras={"field": "schedule.total_steps"},
        **PATCH,
    ),
    "patch-accumulate-zero": Bad(
        422,
        "validation-error",
        body={"accumulate": 0},
        error_locs=[["body", "accumulate"]],
        **PATCH,
    ),
    "patch-group-unknown-field": Bad(
        422,
        "invalid-hyper-parameter",
        body={"groups": [{"match": ["w"], "momentum": 0.9}]},
        extras={"field": "groups.0.momentum"},
        **PATCH,
    ),
    "patch-name-with-nul": Bad(
        422,
        "validation-error",
        body={"name": "a\x00b"},
        error_locs=[["body", "name"]],
        **PATCH,
    ),
    # -- fork ---------------------------------------------------------------------------------
    "fork-no-api-key": Bad(401, "api-key-required", body={}, **{**FORK, "api_key": None}),
    "fork-no-token": Bad(401, "token-missing", body={}, auth="none", **FORK),
    "fork-wrong-token": Bad(404, "session-not-found", body={}, auth="wrong", **FORK),
    "fork-malformed-json": Bad(400, "malformed-body", raw=b"{", **FORK),
    "fork-text-plain": Bad(
        415, "unsupported-media-type", body={}, content_type="text/plain", **FORK
    ),
    "fork-if-match-stale": Bad(
        412,
        "precondition-failed",
        body={},
        headers={"If-Match": '"7"'},
        extras={"current_step": 1},
        **FORK,
    ),
    "fork-unknown-optimizer-type": Bad(
        422,
        "validation-error",
        body={"optimizer": {"type": "adamz"}},
        error_locs=[["body", "optimizer"]],
        **FORK,
    ),
    "fork-negative-lr": Bad(
        422,
        "invalid-hyper-parameter",
        body={"optimizer": {"type": "sgd", "lr": -0.1}},
        extras={"field": "optimizer.lr"},
        **FORK,
    ),
    "fork-idempotency-key-reused-from-a-step": Bad(
        422,
        "idempotency-key-reused",
        body={},
        headers={"Idempotency-Key": FIRST_STEP_KEY},
        **FORK,
    ),
    # -- export -------------------------------------------------------------------------------
    "state-no-token": Bad(
        401, "token-missing", method="GET", path="/v1/sessions/{named}/state", auth="none"
    ),
    "state-wrong-token": Bad(
        404, "session-not-found", method="GET", path="/v1/sessions/{named}/state", auth="wrong"
    ),
    # -- waiting for a step ---------------------------------------------------------------
    "params-wait-times-out": Bad(
        408,
        "wait-timeout",
        method="GET",
        path="/v1/sessions/{named}/params?wait_for_step=5&timeout=0.2",
        extras={"current_step": 1, "wait_for_step": 5},
    ),
    "params-timeout-over-the-cap": Bad(
        422,
        "validation-error",
        method="GET",
        path="/v1/sessions/{named}/params?wait_for_step=5&timeout=3601",
        error_locs=[["query", "timeout"]],
    ),
    "params-timeout-without-wait-for-step": Bad(
        422,
        "validation-error",
        method="GET",
        path="/v1/sessions/{named}/params?timeout=1",
        error_locs=[["query", "timeout"]],
    ),
    "params-timeout-not-a-number": Bad(
        422,
        "validation-error",
        method="GET",
        path="/v1/sessions/{named}/params?wait_for_step=5&timeout=nan",
        error_locs=[["query", "timeout"]],
    ),
    "params-wait-for-a-negative-step": Bad(
        422,
        "validation-error",
        method="GET",
        path="/v1/sessions/{named}/params?wait_for_step=-1",
        error_locs=[["query", "wait_for_step"]],
    ),
    "params-wait-wrong-token": Bad(
        404,
        "session-not-found",
        method="GET",
        path="/v1/sessions/{named}/params?wait_for_step=5&timeout=5",
        auth="wrong",
    ),
    # -- import: the body -----------------------------------------------------------------
    "import-no-api-key": Bad(401, "api-key-required", body=EXPORT, **{**IMPORT, "api_key": None}),
    "import-malformed-json": Bad(400, "malformed-body", raw=b'{"format": "optaas-', **IMPORT),
    "import-text-plain": Bad(
        415, "unsupported-media-type", body=EXPORT, content_type="text/plain", **IMPORT
    ),
    "import-truncated-safetensors": Bad(
        400, "malformed-body", raw=safetensors_export()[:-5], **ST_IMPORT
    ),
    "import-garbage-safetensors": Bad(400, "malformed-body", raw=b"\x10" * 64, **ST_IMPORT),
    "import-json-sent-as-safetensors": Bad(
        400, "malformed-body", raw=json_bytes(EXPORT), **ST_IMPORT
    ),
    "import-idempotency-key-too-long": Bad(
        400,
        "invalid-header",
        body=EXPORT,
        headers={"Idempotency-Key": "k" * 256},
        extras={"header": "Idempotency-Key"},
        **IMPORT,
    ),
    # -- import: the document -------------------------------------------------------------
    "import-another-format": Bad(
        422,
        "validation-error",
        body=export_with(format="optaas-state/2"),
        error_locs=[["body", "format"]],
        **IMPORT,
    ),
    "import-without-state": Bad(
        422,
        "validation-error",
        body=export_with(state=None),
        error_locs=[["body", "state"]],
        **IMPORT,
    ),
    "import-unknown-field": Bad(
        422,
        "validation-error",
        body=export_with(stats={}),
        error_locs=[["body", "stats"]],
        **IMPORT,
    ),
    "import-negative-step": Bad(
        422,
        "validation-error",
        body=export_with(step=-1),
        error_locs=[["body", "step"]],
        **IMPORT,
    ),
    "import-tensor-named-twice": Bad(
        422,
        "validation-error",
        body=export_with(tensors=["w", "b", "w"]),
        error_locs=[["body", "tensors"]],
        **IMPORT,
    ),
    "import-dtype-float16": Bad(
        422,
        "validation-error",
        body=export_with(dtype="float16"),
        error_locs=[["body", "dtype"]],
        **IMPORT,
    ),
    "import-config-unknown-optimizer-field": Bad(
        422,
        "validation-error",
        body=export_with(config={"optimizer": {"type": "sgd", "bogus": 1}}),
        error_locs=[["body", "config", "optimizer", "sgd", "bogus"]],
        **IMPORT,
    ),
    "import-config-negative-lr": Bad(
        422,
        "invalid-hyper-parameter",
        body=export_with(config={"optimizer": {"type": "sgd", "lr": -1, "momentum": 0.9}}),
        extras={"field": "config.optimizer.lr"},
        **IMPORT,
    ),
    "import-layout-that-does-not-fit-params": Bad(
        422,
        "invalid-content",
        body=export_with(layout="single"),
        extras={"field": "params"},
        **IMPORT,
    ),
    "import-single-layout-with-another-name": Bad(
        422,
        "invalid-content",
        body=export_with(
            layout="single",
            tensors=["w"],
            params=W,
            state={"w": {"momentum_buffer": W, "step": 1}},
        ),
        extras={"field": "tensors"},
        **IMPORT,
    ),
    # -- import: the tensors and the state ------------------------------------------------
    "import-params-missing-a-tensor": Bad(
        422,
        "invalid-content",
        body=export_with(params={"w": W}),
        extras={"field": "params", "tensor": "b"},
        **IMPORT,
    ),
    "import-params-with-an-unknown-tensor": Bad(
        422,
        "invalid-content",
        body=export_with(params={"w": W, "b": B, "c": B}),
        extras={"field": "params", "tensor": "c"},
        **IMPORT,
    ),
    "import-nan-in-params": Bad(
        422,
        "invalid-content",
        raw=json_bytes(export_with(params={"w": W, "b": "NAN"})).replace(b'"NAN"', b"[0, NaN, 0]"),
        extras={"field": "params.b", "tensor": "b"},
        **IMPORT,
    ),
    "import-param-and-its-slot-of-different-shapes": Bad(
        422,
        "invalid-content",
        body=export_with(params={"w": W, "b": [0.0, 0.0]}),
        extras={"field": "state.b.momentum_buffer", "expected_shape": [2], "got_shape": [3]},
        **IMPORT,
    ),
    "import-slot-of-another-shape": Bad(
        422,
        "invalid-content",
        body=export_with_slot("w", "momentum_buffer", B),
        extras={
            "field": "state.w.momentum_buffer",
            "tensor": "w",
            "expected_shape": [2, 3],
            "got_shape": [3],
        },
        **IMPORT,
    ),
    "import-missing-slot": Bad(
        422,
        "invalid-content",
        body=export_with_slot("b", "momentum_buffer", None),
        extras={"field": "state.b.momentum_buffer", "tensor": "b"},
        **IMPORT,
    ),
    "import-slot-this-optimizer-does-not-keep": Bad(
        422,
        "invalid-content",
        body=export_with_slot("w", "exp_avg", W),
        extras={"field": "state.w.exp_avg", "tensor": "w"},
        **IMPORT,
    ),
    "import-state-of-an-unknown-tensor": Bad(
        422,
        "invalid-content",
        body=export_with(state={**EXPORT["state"], "c": {"step": 0}}),
        extras={"field": "state", "tensor": "c"},
        **IMPORT,
    ),
    "import-infinity-in-a-slot": Bad(
        422,
        "invalid-content",
        raw=json_bytes(export_with_slot("b", "momentum_buffer", "INF")).replace(
            b'"INF"', b"[0, Infinity, 0]"
        ),
        extras={"field": "state.b.momentum_buffer", "tensor": "b"},
        **IMPORT,
    ),
    "import-step-slot-not-an-integer": Bad(
        422,
        "invalid-content",
        body=export_with_slot("w", "step", 1.5),
        extras={"field": "state.w.step", "tensor": "w"},
        **IMPORT,
    ),
    "import-step-slot-negative": Bad(
        422,
        "invalid-content",
        body=export_with_slot("w", "step", -1),
        extras={"field": "state.w.step", "tensor": "w"},
        **IMPORT,
    ),
    "import-step-slot-beyond-t": Bad(
        422,
        "invalid-content",
        body=export_with_slot("b", "step", 2),
        extras={"field": "state.b.step", "tensor": "b"},
        **IMPORT,
    ),
    "import-schedule-state-of-a-stateless-schedule": Bad(
        422,
        "invalid-content",
        body=export_with(schedule_state={"best": 0.5}),
        extras={"field": "schedule_state.best"},
        **IMPORT,
    ),
    "import-plateau-state-without-its-counters": Bad(
        422,
        "invalid-content",
        body=export_with(
            config={
                "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
                "schedule": {"type": "reduce_on_plateau"},
            },
            schedule_state={"best": 0.5},
        ),
        extras={"field": "schedule_state.cooldown_counter"},
        **IMPORT,
    ),
    "import-plateau-counter-not-whole": Bad(
        422,
        "invalid-content",
        body=export_with(
            config={
                "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
                "schedule": {"type": "reduce_on_plateau"},
            },
            schedule_state={"num_bad_epochs": 0.5, "cooldown_counter": 0, "num_reductions": 0},
        ),
        extras={"field": "schedule_state.num_bad_epochs"},
        **IMPORT,
    ),
    "import-infinite-last-loss": Bad(
        422,
        "invalid-content",
        raw=json_bytes(export_with(last_loss="INF")).replace(b'"INF"', b"Infinity"),
        extras={"field": "last_loss"},
        **IMPORT,
    ),
    # -- import: safetensors --------------------------------------------------------------
    "import-safetensors-without-config": Bad(
        422,
        "invalid-content",
        raw=safetensors_export(config=None),
        extras={"field": "metadata.config"},
        **ST_IMPORT,
    ),
    "import-safetensors-config-not-json": Bad(
        422,
        "invalid-content",
        raw=safetensors_export(config="{optimizer"),
        extras={"field": "metadata.config"},
        **ST_IMPORT,
    ),
    "import-safetensors-step-not-decimal": Bad(
        422,
        "invalid-content",
        raw=safetensors_export(step="1e3"),
        extras={"field": "metadata.step"},
        **ST_IMPORT,
    ),
    "import-safetensors-another-format": Bad(
        422,
        "validation-error",
        raw=safetensors_export(format="something-else"),
        error_locs=[["metadata", "format"]],
        **ST_IMPORT,
    ),
    "import-safetensors-unknown-metadata": Bad(
        422,
        "invalid-content",
        raw=safetensors_export(comment="hello"),
        extras={"field": "metadata.comment"},
        **ST_IMPORT,
    ),
    "import-safetensors-float64-in-a-float32-export": Bad(
        422,
        "invalid-content",
        raw=safetensors_export({"param/w": np.asarray(W, np.float64)}),
        extras={"field": "param/w", "tensor": "w"},
        **ST_IMPORT,
    ),
    "import-safetensors-step-as-int32": Bad(
        422,
        "invalid-content",
        raw=safetensors_export({"step/b": np.array(1, np.int32)}),
        extras={"field": "step/b", "tensor": "b"},
        **ST_IMPORT,
    ),
    "import-safetensors-key-without-slot": Bad(
        422,
        "invalid-content",
        raw=safetensors_export({"w": np.zeros(3, np.float32)}),
        extras={"field": "w"},
        **ST_IMPORT,
    ),
    "import-safetensors-slot-of-an-unknown-tensor": Bad(
        422,
        "invalid-content",
        raw=safetensors_export({"momentum_buffer/c": np.zeros(3, np.float32)}),
        extras={"field": "momentum_buffer/c", "tensor": "c"},
        **ST_IMPORT,
    ),
    "import-safetensors-missing-param": Bad(
        422,
        "invalid-content",
        raw=safetensors_export({"param/b": None}),
        extras={"tensor": "b"},
        **ST_IMPORT,
    ),
    "import-safetensors-nan-in-a-slot": Bad(
        422,
        "invalid-content",
        raw=safetensors_export({"momentum_buffer/b": np.array([0, np.nan, 0], np.float32)}),
        extras={"field": "momentum_buffer/b", "tensor": "b"},
        **ST_IMPORT,
    ),
}
CASES.update(RUN_CASES)


def send(server: InProcessServer, sessions: dict[str, Any], case: Bad):
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.api_key is not None:
        headers["X-API-Key"] = case.api_key
    tokens = {name: session["token"] for name, session in sessions.items()}
    authorization = {
        "named": f"Bearer {tokens['named']}",
        "single": f"Bearer {tokens['single']}",
        "wrong": f"Bearer {tokens['named'][:-4]}abcd",
        "basic": "Basic dXNlcjpwYXNz",
        "empty": "Bearer",
        "none": None,
    }[case.auth]
    if authorization is not None:
        headers["Authorization"] = authorization
    path = case.path.format(named=sessions["named"]["id"], single=sessions["single"]["id"])
    content = case.raw if case.raw is not None else None
    if content is None and case.body is not None:
        content = json_bytes(case.body)
    with server.client() as client:
        return client.request(case.method, path, content=content, headers=headers)


@pytest.mark.slow_on_postgres
@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_gets_its_problem_and_changes_nothing(
    server, sessions, module_migrated_database, name
):
    case = CASES[name]
    before = snapshot_all(module_migrated_database, sessions)

    response = send(server, sessions, case)

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == case.status
    assert problem["type"] == f"/problems/{case.slug}"
    assert problem["title"] and problem["detail"]
    for key, value in case.extras.items():
        assert problem.get(key, "absent") == value, (key, problem)
    locs = [error["loc"] for error in problem.get("errors", [])]
    for loc in case.error_locs:
        assert loc in locs, problem
    if case.status == 401 and case.slug == "token-missing":
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert snapshot_all(module_migrated_database, sessions) == before


def test_unknown_id_and_wrong_token_get_the_same_answer(server, sessions):
    wrong_token = send(server, sessions, CASES["step-wrong-token"])
    unknown_id = send(server, sessions, CASES["step-unknown-id"])
    assert wrong_token.status_code == unknown_id.status_code == 404
    assert wrong_token.content == unknown_id.content
    drop = {"date"}
    assert {k: v for k, v in wrong_token.headers.items() if k not in drop} == {
        k: v for k, v in unknown_id.headers.items() if k not in drop
    }


def test_validation_problems_never_echo_the_input(server, sessions):
    secret = "a-value-that-must-not-come-back"
    case = Bad(422, "validation-error", body={**GOOD_STEP, "loss": secret})
    response = send(server, sessions, case)
    assert response.status_code == 422
    assert secret not in response.text


@pytest.mark.parametrize("form", ["json", "safetensors"])
def test_the_baseline_exports_import(server, form):
    """The export the import cases break is valid: with the API key it makes a session."""
    content, content_type = (
        (json_bytes(EXPORT), "application/json")
        if form == "json"
        else (safetensors_export(), SAFETENSORS)
    )
    with server.client() as client:
        response = client.post(
            "/v1/sessions/import",
            content=content,
            headers={"Content-Type": content_type, "X-API-Key": API_KEY},
        )
    assert response.status_code == 201, response.text
    assert (response.json()["step"], response.json()["shapes"]) == (1, {"w": [2, 3], "b": [3]})


def test_a_fork_with_the_api_key_and_the_token_is_made(server, sessions):
    session = sessions["single"]
    with server.client() as client:
        response = client.post(
            f"/v1/sessions/{session['id']}/fork",
            headers={**bearer(session["token"]), "X-API-Key": API_KEY},
        )
    assert response.status_code == 201, response.text


def test_api_key_is_accepted_when_it_is_one_of_the_configured_keys(server):
    with server.client() as client:
        for key in ("another-key", API_KEY):
            response = client.post(
                "/v1/sessions", content=json_bytes(GOOD_CREATE), headers={"X-API-Key": key}
            )
            assert response.status_code == 201, response.text


def read_http_response_head(connection: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_declared_oversize_body_is_refused_before_any_of_it_is_sent(
    live_server, sessions, module_migrated_database
):
    """Content-Length over the limit: 413 at once, while the client has sent no body at all."""
    before = snapshot_all(module_migrated_database, sessions)
    session = sessions["named"]
    head = (
        f"POST /v1/sessions/{session['id']}/step HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {session['token']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10 * BODY_LIMIT}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as connection:
        connection.sendall(head.encode())
        answer = read_http_response_head(connection)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"application/problem+json" in answer
    assert snapshot_all(module_migrated_database, sessions) == before


def test_streamed_oversize_body_is_cut_off_once_it_passes_the_limit(
    live_server, sessions, module_migrated_database
):
    """A chunked body with no length: 413 as soon as the limit is passed, before the body ends."""
    before = snapshot_all(module_migrated_database, sessions)
    session = sessions["named"]
    head = (
        f"POST /v1/sessions/{session['id']}/step HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {session['token']}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"0," * 4096
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as connection:
        connection.sendall(head.encode() + b'f\r\n{"gradients": [\r\n')
        sent = 0
        while sent <= BODY_LIMIT + len(chunk):
            connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        # The body is not finished (no last chunk): only a server that stopped reading answers.
        answer = read_http_response_head(connection)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert snapshot_all(module_migrated_database, sessions) == before
