"""Hostile clients against a live server: each reproducer of issue 12, and what it gets now.

Requests that need no valid credential must cost little: a body declared huge reserves no
memory, junk posted with a made-up token is never read, a body that stalls is dropped with 408;
the server's memory (VmRSS from /proc) stays flat and `/healthz` keeps answering meanwhile.
Malformed files and clients that vanish mid-body get 4xx (or nothing: the client is gone),
never a 5xx, and change nothing (any number of tensors: tests/test_store.py, with SQLite's
variable limit lowered to what stock builds allow, since a live reproduction here would need
63 000 tensors). Creations and previews are rate limited; the
conformance points (Allow, HEAD, the pages' headers, uvicorn's own 400s, per-configuration
OpenAPI security, per-caller creation idempotency) are checked on the wire. Timings are
measured by benchmarks/hostile.py, not asserted here: a test only requires that an answer
comes, within generous time-outs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from app.api.app import create_app
from app.api.bodies import load_json
from app.config import Settings
from app.errors import PayloadTooLarge
from app.store.database import Database
from tests.live_server import REPO_ROOT, LiveServer, free_port
from tests.support import bearer, create_session, database_snapshot, json_bytes, post_json

pytestmark = pytest.mark.slow

MiB = 1024**2
BODY_TIMEOUT_SECONDS = 2.0


# -- the server and what it costs -----------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("hostile")
    env = {"OPTAAS_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS)}
    url = f"sqlite:///{directory / 'optaas.sqlite3'}"
    with LiveServer(url, directory / "server.log", env=env) as live:
        yield live


@pytest.fixture(scope="module")
def database(server) -> Iterator[Database]:
    database = Database(server.database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def session(server) -> dict:
    with server.client() as client:
        return create_session(
            client, {"params": {"w": [1.0, 2.0], "b": 0.5}, "optimizer": {"type": "sgd"}}
        )


def rss_bytes(server: LiveServer) -> int:
    """The server process's resident memory, from /proc."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def healthz_answers(server: LiveServer) -> None:
    with server.client() as client:
        assert client.get("/healthz", timeout=10.0).status_code == 200


def read_answer(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer from `connection`: status, headers (lower-case names), body."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"the connection closed before an answer: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "the connection closed within the answer"
        body += chunk
    return int(status_line.split()[1]), headers, body


def request_head(path: str, length: int, token: str | None = "x") -> bytes:
    """The head of a JSON POST declaring `length` bytes (with a bearer `token` unless None)."""
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextmanager
def connections(server: LiveServer, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=30))
            for _ in range(count)
        ]


def step_path(session_id: str | None = None) -> str:
    return f"/v1/sessions/{session_id or uuid.uuid4()}/step"


# -- nothing expensive before the credential ------------------------------------------------


def test_declared_huge_bodies_with_a_made_up_token_reserve_nothing_and_get_404(server):
    """Issue 12's first reproducer: 10 sockets declare 512 MiB to a random session with a
    made-up token and send nothing more. Each is answered 404 at once, from the headers."""
    healthz_answers(server)
    before = rss_bytes(server)
    with connections(server, 10) as sockets:
        for connection in sockets:
            connection.sendall(request_head(step_path(), 512 * MiB))
        answers = [read_answer(connection) for connection in sockets]
        healthz_answers(server)
        grown = rss_bytes(server) - before
    assert [status for status, _, _ in answers] == [404] * 10
    assert all(h["content-type"] == "application/problem+json" for _, h, _ in answers)
    assert grown < 64 * MiB, grown


def test_stalled_bodies_reserve_nothing_and_are_dropped_with_408(server):
    """8 creations (open to all: no API keys) declare 30 MiB and send 1 KiB: nothing is
    reserved for the rest, /healthz answers meanwhile, and each gets 408 (connection closed)
    once no byte came for the body timeout."""
    healthz_answers(server)
    before = rss_bytes(server)
    with connections(server, 8) as sockets:
        for connection in sockets:
            connection.sendall(request_head("/v1/sessions", 30 * MiB, token=None) + b"[" * 1024)
        time.sleep(BODY_TIMEOUT_SECONDS / 2)
        healthz_answers(server)
        grown = rss_bytes(server) - before
        answers = [read_answer(connection) for connection in sockets]
        assert all(connection.recv(1) == b"" for connection in sockets)  # closed
    assert grown < 64 * MiB, grown
    assert {status for status, _, _ in answers} == {408}
    problems = [orjson.loads(body) for _, _, body in answers]
    assert {problem["type"] for problem in problems} == {"/problems/body-timeout"}
    assert {problem["received_bytes"] for problem in problems} == {1024}


def test_junk_json_with_a_made_up_token_is_never_read(server):
    """Issue 12's second reproducer: `{"gradients":{"w":[[],[],…]}}` (64 MB) to a random id
    with a made-up token: answered 404 before the body is read, memory flat."""
    junk = b'{"gradients":{"w":[' + b"[]," * (64 * MiB // 3) + b"[]]}}"
    healthz_answers(server)
    before = rss_bytes(server)
    with connections(server, 1) as (connection,):
        sender = threading.Thread(
            target=lambda: _send_quietly(connection, request_head(step_path(), len(junk)) + junk)
        )
        sender.start()
        status, _, body = read_answer(connection)
        healthz_answers(server)
        grown = rss_bytes(server) - before
    sender.join(timeout=60)
    assert status == 404, body
    assert grown < 256 * MiB, grown


def _send_quietly(connection: socket.socket, data: bytes) -> None:
    """Send what the server takes; it may answer and stop reading first."""
    with suppress(OSError):
        connection.sendall(data)


def test_a_step_body_is_bounded_by_its_sessions_size(server, session, database):
    """With the right token, a body larger than the session's step could need is a 413 that
    says so — declared or sent — and changes nothing."""
    before = database_snapshot(database, session["id"])
    junk = b'{"gradients":{"w":[' + b"[]," * (MiB // 3) + b"[]]}}"
    headers = {**bearer(session["token"]), "Content-Type": "application/json"}
    with server.client() as client:
        answer = client.post(step_path(session["id"]), content=junk, headers=headers)
    assert answer.status_code == 413, answer.text
    problem = answer.json()
    assert "a step of this session (3 numbers in 2 tensors) needs at most" in problem["detail"]
    assert answer.headers["connection"] == "close"
    assert database_snapshot(database, session["id"]) == before


def test_json_that_would_be_read_as_lists_is_refused_past_its_budget(server):
    """A creation of 4.2 million empty arrays (12.6 MB, under the JSON limit) would be
    gigabytes of Python lists: 413 before parsing, pointing to safetensors, memory flat."""
    junk = b'{"params":[' + b"[]," * (2**22) + b"[]]}"
    healthz_answers(server)
    before = rss_bytes(server)
    with server.client() as client:
        answer = client.post("/v1/sessions", content=junk)
    grown = rss_bytes(server) - before
    assert answer.status_code == 413, answer.text
    assert "safetensors" in answer.json()["detail"]
    assert grown < 128 * MiB, grown


def test_json_over_the_json_limit_is_413_pointing_to_safetensors(server):
    with connections(server, 1) as (connection,):
        connection.sendall(request_head("/v1/sessions", 33 * MiB, token=None))
        status, _, body = read_answer(connection)
    assert status == 413
    detail = orjson.loads(body)["detail"]
    assert "OPTAAS_MAX_JSON_BODY_BYTES" in detail
    assert "safetensors" in detail


# -- 4xx, never 5xx -----------------------------------------------------------------------


def safetensors_with_shape(shape: list[int]) -> bytes:
    header = orjson.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header


@pytest.mark.parametrize("shape", [[0, 2**62], [1] * 100], ids=["beyond int64", "100 dims"])
def test_safetensors_shapes_numpy_cannot_hold_are_400(server, session, database, shape):
    before = database_snapshot(database, session["id"])
    with server.client() as client:
        answer = client.post(
            step_path(session["id"]),
            content=safetensors_with_shape(shape),
            headers={**bearer(session["token"]), "Content-Type": "application/vnd.safetensors"},
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"] == "/problems/malformed-body"
    assert database_snapshot(database, session["id"]) == before


def scrape_rejections(client: httpx.Client) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "optaas_rejections_total":
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0.0) + sample.value
    return counts


def test_a_client_that_disconnects_mid_body_is_no_server_error(server, session, database):
    """Half a body, then the connection closes: no 5xx counted, no traceback logged, nothing
    changed; the request counts as 499 (client closed request)."""
    before_rows = database_snapshot(database, session["id"])
    body = json_bytes({"gradients": {"w": [0.1, 0.2], "b": 0.3}})
    with server.client() as client:
        counted = scrape_rejections(client)
    for path, token in [(step_path(session["id"]), session["token"]), ("/v1/sessions", None)]:
        with connections(server, 1) as (connection,):
            connection.sendall(request_head(path, len(body), token=token) + body[:10])
            time.sleep(0.2)
    deadline = time.monotonic() + 10
    with server.client() as client:
        while scrape_rejections(client).get("499", 0) < counted.get("499", 0) + 2:
            assert time.monotonic() < deadline, "the disconnects were not counted"
            time.sleep(0.1)
        now = scrape_rejections(client)
    assert not any(status.startswith("5") for status in now), now
    assert "Traceback" not in server.log_path.read_text()
    assert database_snapshot(database, session["id"]) == before_rows


# -- unauthenticated CPU: previews and creations ----------------------------------------------


def nested_warmups(depth: int) -> dict:
    schedule: dict = {"type": "constant"}
    for _ in range(depth):
        schedule = {"type": "warmup", "warmup_steps": 1, "then": schedule}
    return schedule


def test_preview_bounds_nesting_and_work(server):
    def preview(depth: int, steps: int) -> httpx.Response:
        body = {"schedule": nested_warmups(depth), "steps": steps}
        with server.client() as client:  # json: orjson stops at 254 levels of nesting
            return client.post("/v1/schedules/preview", content=json.dumps(body))

    deep, costly, fine = preview(253, 100_000), preview(4, 100_000), preview(1, 100_000)
    assert deep.status_code == 422
    assert "nested at most 8 deep" in deep.json()["detail"]
    assert costly.status_code == 422
    assert "at most 80000 steps" in costly.json()["detail"]
    assert fine.status_code == 200
    assert len(fine.json()["lr"]) == 100_000


def test_creations_imports_forks_and_previews_are_rate_limited_per_caller(start_server, tmp_path):
    """Per address without API keys: the fourth creation of a minute is a 429 with
    Retry-After, as problem+json; another address has its own budget. Imports and forks
    draw on the same budget; previews have their own."""
    env = {"OPTAAS_CREATION_RATE_LIMIT": "3/minute", "OPTAAS_PREVIEW_RATE_LIMIT": "2/minute"}
    live = start_server(f"sqlite:///{tmp_path / 'db.sqlite3'}", env=env)
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with live.client() as client, live.client(transport=other) as elsewhere:
        first = create_session(client, {"params": [1.0], "optimizer": {"type": "sgd"}})
        exported = client.get(
            f"/v1/sessions/{first['id']}/state", headers=bearer(first["token"])
        ).content
        imported = client.post("/v1/sessions/import", content=exported)
        assert imported.status_code == 201, imported.text
        forked = client.post(f"/v1/sessions/{first['id']}/fork", headers=bearer(first["token"]))
        assert forked.status_code == 201, forked.text
        refused = post_json(client, "/v1/sessions", {"params": [1.0], "optimizer": {"type": "sgd"}})
        assert (
            post_json(
                elsewhere, "/v1/sessions", {"params": [1.0], "optimizer": {"type": "sgd"}}
            ).status_code
            == 201
        )
        previews = [
            post_json(
                client, "/v1/schedules/preview", {"schedule": {"type": "constant"}, "steps": 2}
            )
            for _ in range(3)
        ]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["type"] == "/problems/rate-limited"
    assert [answer.status_code for answer in previews] == [200, 200, 429]


def test_with_api_keys_each_key_has_its_own_budget(start_server, tmp_path):
    env = {"OPTAAS_CREATION_RATE_LIMIT": "2/minute", "OPTAAS_API_KEYS": "one,two"}
    live = start_server(f"sqlite:///{tmp_path / 'db.sqlite3'}", env=env)
    with live.client() as client:
        codes = {
            key: [
                post_json(
                    client,
                    "/v1/sessions",
                    {"params": [1.0], "optimizer": {"type": "sgd"}},
                    headers={"X-API-Key": key},
                ).status_code
                for _ in range(3)
            ]
            for key in ("one", "two")
        }
    assert codes == {"one": [201, 201, 429], "two": [201, 201, 429]}


# -- conformance ------------------------------------------------------------------------------


def test_405_lists_every_method_of_the_path(server, session):
    with server.client() as client:
        answer = client.put(f"/v1/sessions/{session['id']}")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, PATCH, DELETE"
    assert answer.headers["content-type"] == "application/problem+json"


def test_head_on_health_endpoints(server):
    with server.client() as client:
        for path in ("/healthz", "/readyz"):
            answer = client.head(path)
            assert answer.status_code == 200, path
            assert answer.content == b""


def test_requests_uvicorn_cannot_parse_get_problem_json(server):
    with connections(server, 1) as (connection,):
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = read_answer(connection)
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert orjson.loads(body)["type"] == "/problems/malformed-request"


def test_an_empty_content_length_on_a_get_is_the_documented_malformed_request(server):
    """What the fuzzer sent to `GET …/params`: a `Content-Length` header with no value."""
    with connections(server, 1) as (connection,):
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n")
        status, _, body = read_answer(connection)
    assert status == 400
    assert orjson.loads(body)["type"] == "/problems/malformed-request"


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/ui"])
def test_pages_send_security_headers(server, page):
    with server.client() as client:
        headers = client.get(page).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-eval" not in policy


def test_openapi_security_follows_the_configuration():
    def security(keys: list[str]) -> dict[str, object]:
        document = create_app(Settings(database_url="sqlite://", api_keys=keys)).openapi()
        paths = document["paths"]
        return {
            "create": paths["/v1/sessions"]["post"].get("security"),
            "import": paths["/v1/sessions/import"]["post"].get("security"),
            "fork": paths["/v1/sessions/{session_id}/fork"]["post"].get("security"),
            "schemes": set(document["components"]["securitySchemes"]),
        }

    assert security([]) == {
        "create": None,
        "import": None,
        "fork": [{"HTTPBearer": []}],
        "schemes": {"HTTPBearer"},
    }
    assert security(["k"]) == {
        "create": [{"APIKeyHeader": []}],
        "import": [{"APIKeyHeader": []}],
        "fork": [{"APIKeyHeader": [], "HTTPBearer": []}],
        "schemes": {"APIKeyHeader", "HTTPBearer"},
    }


def test_without_api_keys_a_creation_replay_never_hands_out_another_callers_token(server):
    """Two callers (two addresses) send the same Idempotency-Key and body: each gets a
    session of its own; each one's retry gets its own session back."""
    body = {"params": [1.0, 2.0], "optimizer": {"type": "sgd"}}
    key = {"Idempotency-Key": "same-key-for-both"}
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with server.client() as first, server.client(transport=other) as second:
        mine = post_json(first, "/v1/sessions", body, headers=key).json()
        theirs = post_json(second, "/v1/sessions", body, headers=key).json()
        my_retry = post_json(first, "/v1/sessions", body, headers=key)
    assert theirs["id"] != mine["id"]
    assert theirs["token"] != mine["token"]
    assert my_retry.headers["idempotent-replayed"] == "true"
    assert my_retry.json()["id"] == mine["id"]


# -- JSON arrays longer than simdjson counts ------------------------------------------------


def test_a_flat_json_array_over_2_24_elements_is_read_exactly():
    count = 2**24 + 3
    body = b'{"gradients":[' + b"0.5," * (count - 1) + b"-1]}"
    gradients = load_json(body, tensors=("gradients",))["gradients"]
    assert isinstance(gradients, np.ndarray)
    assert gradients.shape == (count,)
    assert gradients[0] == 0.5
    assert gradients[-1] == -1.0


def test_a_nested_json_array_with_an_axis_over_2_24_elements_is_413():
    row = b"[" + b"0," * (2**24) + b"0]"
    body = b'{"gradients":[' + row + b"," + row + b"]}"
    with pytest.raises(PayloadTooLarge, match="safetensors"):
        load_json(body, tensors=("gradients",))


# -- a clean stop -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "workers"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)],
    ids=["SIGTERM", "SIGINT", "SIGTERM, 2 workers"],
)
def test_serve_exits_0_on_a_stop_signal_and_leaves_nothing_in_tmpdir(tmp_path, signum, workers):
    """How Docker, systemd and Kubernetes (SIGTERM) and a person (Ctrl-C: SIGINT) stop it."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(TMPDIR=str(tmpdir), PYTHONPATH=str(REPO_ROOT))
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        f"--port={port}",
        f"--workers={workers}",
        f"--database-url=sqlite:///{tmp_path / 'db.sqlite3'}",
        "--log-level=warning",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        assert list(tmpdir.glob("optaas-metrics-*"))  # made while it runs
        process.send_signal(signum)
        code = process.wait(timeout=30)
    finally:
        process.kill()
    assert code == 0, process.stderr.read().decode()
    assert list(tmpdir.iterdir()) == []
