"""The OpenAPI document a live server publishes, and the docs pages."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def document(module_server) -> dict[str, Any]:
    with module_server.client() as client:
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
        "health-healthz",
        "health-readyz",
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
def test_docs_pages_are_served(module_server, page):
    with module_server.client() as client:
        response = client.get(page)
    assert response.status_code == 200
    assert "/openapi.json" in response.text
