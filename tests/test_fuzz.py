"""Fuzzing over the OpenAPI document (schemathesis) against a live server, SQLite and PostgreSQL.

Requests are generated from the server's own `/openapi.json` — valid ones and, in negative
mode, ones that break the schema — with a real session's id and token put in, so that they
get past authorisation to the code behind it. The session is a 0-d SGD one (`params: 1.0`), so
that a generated number is a valid gradient and many generated steps succeed. Every answer must
be no server error and conform to the document: status, content type, headers, body schema.
DELETE is left out: it would end the session for every example after it (tests/test_api_*
cover it). A PATCH may leave the session in any valid configuration — accumulating, say — and
the operations after it must still answer as documented.

A second run (`st run`, schemathesis's own runner, on SQLite) goes through its coverage phase
with every check — unsupported methods and their `Allow`, missing credentials and
headers, schema-valid data accepted — and must find nothing but the by-design cases that
docs/choices.md lists ("Fuzzing"), each recognised here by what the server answered.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

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

pytestmark = pytest.mark.slow

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


COVERAGE_EXAMPLES = 5
SEED = 1


def test_schemathesis_run_with_every_check_finds_only_by_design_cases(target, tmp_path):
    server, session, _ = target
    if not server.database_url.startswith("sqlite"):
        pytest.skip("the HTTP conformance run does not depend on the database: SQLite's suffices")
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\nsession_id = "{session["id"]}"\n')
    report = tmp_path / "report.json"
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {session['token']}",
        "--checks",
        "all",
        "--phases",
        "coverage",
        "--max-examples",
        str(COVERAGE_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--exclude-method",
        "DELETE",
        "--workers",
        "1",
        "--report-json-path",
        str(report),
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    document = json.loads(report.read_text())
    assert document["complete"], run.stdout[-4000:]
    unexpected = [failure for failure in document["failures"] if not by_design(failure)]
    assert unexpected == [], run.stdout[-8000:]


BY_DESIGN = {
    # A wrong token gets the same 404 as an unknown id (the contract: nobody learns which
    # ids exist), where the check expects 401 or 403.
    "ST401": {"* /v1/sessions/{session_id}", "* /v1/sessions/{session_id}/*"},
    # Schema-valid values the core refuses with a 422 naming the field: relations the schema
    # cannot state (milestones against schedules, a gradient against the session's tensors,
    # an export's slots against its optimizer, …).
    "ST202": {
        "POST /v1/sessions",
        "POST /v1/sessions/import",
        "POST /v1/schedules/preview",
        "PATCH /v1/sessions/{session_id}",
        "POST /v1/sessions/{session_id}/fork",
        "POST /v1/sessions/{session_id}/step",
    },
    # /v1/sessions/import is also /v1/sessions/{session_id} with the id "import": GET, PATCH
    # and DELETE there are a 404 (no such session), not a 405, and its Allow lists them.
    "ST204": {"* /v1/sessions/import"},
    "ST205": {"* /v1/sessions/import"},
}


def by_design(failure: dict) -> bool:
    """Whether a failure is one of the by-design cases of docs/choices.md (`BY_DESIGN`); a server
    error never is."""
    allowed = BY_DESIGN.get(failure["code"], set())
    return all(
        any(fnmatch.fnmatchcase(operation, pattern) for pattern in allowed)
        for operation in failure["operations"]
    )
