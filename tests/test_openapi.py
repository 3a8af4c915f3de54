"""The OpenAPI document a live server publishes, and the docs pages."""

from __future__ import annotations

import re
from typing import Any

import pytest

SAFETENSORS = "application/vnd.safetensors"


@pytest.fixture(scope="module")
def document(module_app) -> dict[str, Any]:
    with module_app.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def references(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def test_every_reference_resolves(document):
    schemas = document["components"]["schemas"]
    prefix = "#/components/schemas/"
    for reference in set(references(document)):
        assert reference.startswith(prefix), reference
        assert reference.removeprefix(prefix) in schemas, reference


@pytest.mark.parametrize(
    ("method", "path", "model"),
    [
        ("post", "/v1/sessions", "CreateSession"),
        ("post", "/v1/sessions/{session_id}/step", "StepRequest"),
        ("patch", "/v1/sessions/{session_id}", "SessionPatch"),
        ("post", "/v1/sessions/{session_id}/fork", "SessionPatch"),
        ("post", "/v1/sessions/import", "StateExport"),
    ],
)
def test_hand_parsed_request_bodies_are_declared(document, method, path, model):
    body = document["paths"][path][method]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{model}"
    }
    schema = document["components"]["schemas"][model]
    assert schema["additionalProperties"] is False


def test_operation_ids_read_well(document):
    ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    assert {
        "sessions-create_session",
        "sessions-get_session",
        "sessions-delete_session",
        "sessions-step_session",
        "sessions-get_params",
        "sessions-patch_session",
        "sessions-fork_session",
        "sessions-get_state",
        "sessions-import_session",
        "health-healthz",
        "health-readyz",
        "history-get_history",
        "schedules-preview_schedule",
        "operations-get_metrics",
    } <= ids


def test_errors_are_documented_as_problems(document):
    step = document["paths"]["/v1/sessions/{session_id}/step"]["post"]["responses"]
    for status in ("400", "401", "404", "413", "415", "422"):
        assert "application/problem+json" in step[status]["content"], status
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_optimizer_defaults_are_in_the_schema(document):
    adam = document["components"]["schemas"]["Adam"]["properties"]
    assert adam["lr"]["default"] == 0.001
    assert adam["betas"]["default"] == [0.9, 0.999]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_are_served_with_local_assets_only(module_app, page):
    with module_app.client() as client:
        response = client.get(page)
        assert response.status_code == 200
        assert "/openapi.json" in response.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert assets, response.text
        for asset in assets:
            assert asset.startswith("/"), asset  # this server, never another host
            assert client.get(asset).status_code == 200, asset
        assert "fonts.googleapis" not in response.text


def each_operation(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def model_of(schema: dict[str, Any]):
    """The pydantic model a `$ref` names (wire models and the health answer)."""
    from app import schemas
    from app.api.health import Health

    name = schema["$ref"].rsplit("/", 1)[-1]
    return {"Health": Health}.get(name) or getattr(schemas, name)


def test_every_operation_has_a_summary_a_description_and_tags(document):
    for name, operation in each_operation(document):
        assert operation.get("summary"), name
        assert len(operation.get("description", "")) > 20, name
        assert operation.get("tags"), name


def test_every_request_body_has_examples_that_the_model_accepts(document):
    bodies = 0
    for name, operation in each_operation(document):
        if "requestBody" not in operation:
            continue
        bodies += 1
        content = operation["requestBody"]["content"]["application/json"]
        assert content.get("examples"), name
        model = model_of(content["schema"])
        for example in content["examples"].values():
            assert example["summary"], name
            model.model_validate(example["value"])
    assert bodies >= 3


def test_every_answer_has_an_example_and_every_error_is_a_problem(document):
    from app.schemas import Problem

    for name, operation in each_operation(document):
        for status, response in operation["responses"].items():
            code = int(status)
            if code == 204:
                assert "content" not in response, name
                continue
            assert response.get("description"), (name, status)
            if code >= 400:
                assert list(response["content"]) == ["application/problem+json"], (name, status)
                example = response["content"]["application/problem+json"]["example"]
                Problem.model_validate(example)
                assert example["status"] == code, (name, status)
                continue
            assert response["content"], (name, status)
            for media_type, content in response["content"].items():
                if media_type == SAFETENSORS:  # bytes: the schema says what the file holds
                    assert content["schema"]["format"] == "binary", (name, status)
                    assert content["schema"]["description"], (name, status)
                    continue
                assert "example" in content, (name, status)
                if media_type == "application/json":
                    model_of(content["schema"]).model_validate(content["example"])


@pytest.mark.parametrize(
    ("method", "path", "binary_answer", "binary_request"),
    [
        ("post", "/v1/sessions/{session_id}/step", True, True),
        ("get", "/v1/sessions/{session_id}/params", True, False),
        ("get", "/v1/sessions/{session_id}/state", True, False),
        ("post", "/v1/sessions/import", False, True),
    ],
)
def test_binary_forms_are_documented(document, method, path, binary_answer, binary_request):
    operation = document["paths"][path][method]
    if binary_answer:
        answer = operation["responses"]["200"]["content"]
        assert set(answer) == {"application/json", SAFETENSORS}
        description = answer[SAFETENSORS]["schema"]["description"]
        assert "Accept: application/vnd.safetensors" in description
    if binary_request:
        body = operation["requestBody"]
        assert body["content"][SAFETENSORS]["schema"] == {"type": "string", "format": "binary"}
        assert "__metadata__" in body["description"]
        assert "415" in operation["responses"]


def test_problem_examples_fit_each_operation(document):
    step = document["paths"]["/v1/sessions/{session_id}/step"]["post"]["responses"]
    assert step["422"]["content"]["application/problem+json"]["example"]["tensor"] == "w"
    history = document["paths"]["/v1/sessions/{session_id}/history"]["get"]["responses"]
    example = history["422"]["content"]["application/problem+json"]["example"]
    assert example["type"] == "/problems/validation-error"


def test_every_operation_documents_the_protocols_400_for_malformed_http(document):
    """Any route can be sent a request that is not valid HTTP (an empty `Content-Length`, say):
    the protocol layer answers it 400 before routing, so every operation documents that 400."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            answer = operation["responses"].get("400")
            assert answer is not None, f"{method.upper()} {path}"
            assert "/problems/malformed-request" in answer["description"], f"{method} {path}"
    params = document["paths"]["/v1/sessions/{session_id}/params"]["get"]["responses"]
    example = params["400"]["content"]["application/problem+json"]["example"]
    assert example["type"] == "/problems/malformed-request"


def test_tensor_bodies_and_answers_are_declared_in_both_forms(document):
    binary = {"type": "string", "format": "binary"}
    imported = document["paths"]["/v1/sessions/import"]["post"]["requestBody"]["content"]
    assert imported["application/vnd.safetensors"]["schema"] == binary
    state = document["paths"]["/v1/sessions/{session_id}/state"]["get"]["responses"]["200"]
    assert set(state["content"]) == {"application/json", "application/vnd.safetensors"}


def test_the_step_documents_its_202_and_the_wait_its_408_and_cap(module_app, document):
    accepted = document["paths"]["/v1/sessions/{session_id}/step"]["post"]["responses"]["202"]
    schema = accepted["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/StepAccepted"}
    assert "Location" in accepted["headers"]
    params = document["paths"]["/v1/sessions/{session_id}/params"]["get"]
    assert "408" in params["responses"]
    (timeout,) = [p for p in params["parameters"] if p["name"] == "timeout"]
    (number,) = [s for s in timeout["schema"]["anyOf"] if s.get("type") == "number"]
    assert number["maximum"] == 60.0  # the server's OPTAAS_MAX_WAIT_SECONDS (default)
