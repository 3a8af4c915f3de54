"""Fuzzing over the OpenAPI document (schemathesis) against a live server, SQLite and PostgreSQL.

Requests are generated from the server's own `/openapi.json` — valid ones and, in negative
mode, ones that break the schema — with a real session's id and token put in, so that they
get past authorisation to the code behind it. The session is a 0-d SGD one (`params: 1.0`), so
that a generated number is a valid gradient and many generated steps succeed. Every answer must
be no server error and conform to the document: status, content type, headers, body schema.
DELETE is left out: it would end the session for every example after it (tests/test_api_*
cover it). A PATCH may leave the session in any valid configuration — accumulating, say — and
the operations after it must still answer as documented.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.api.app import create_app
from app.config import Settings
from tests.live_server import LiveServer
from tests.support import create_session

EXAMPLES = 60
"""Per operation and mode: about 600 requests per backend in all."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# The operations, from the app's document (built without a database: engines live in the
# lifespan); each test fuzzes one against the document the live server serves. Negative mode
# needs something to break: a parameter or a body.
DOCUMENT = create_app(Settings(database_url="sqlite://")).openapi()
CASES = [
    pytest.param(f"{method.upper()} {path}", mode, id=f"{method.upper()} {path} {mode.value}")
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if method != "delete"
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or operation.get("parameters") or "requestBody" in operation
]


@pytest.fixture(scope="module")
def target(module_database_url, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    # Generated waits (`GET …/params?wait_for_step=`) last at most this long; the document the
    # server publishes says so, and the generated timeouts keep to it.
    env = {"OPTAAS_MAX_WAIT_SECONDS": "0.2"}
    with LiveServer(module_database_url, log, env=env) as server, server.client() as client:
        session = create_session(client, {"params": 1.0, "optimizer": {"type": "sgd"}})
        yield server, session, schemathesis.openapi.from_url(f"{server.url}/openapi.json")


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_every_answer_is_no_server_error_and_conforms_to_the_schema(target, label, mode):
    server, session, schema = target
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    path_parameters = {"session_id": session["id"]} if "{session_id}" in label else None
    auth = {"Authorization": f"Bearer {session['token']}"}

    @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=server.url, headers=auth, checks=CHECKS)

    try:
        fuzz()
    except Exception:
        print(server.log_tail())
        raise
