"""The OpenAPI document: what FastAPI cannot see because bodies are parsed by hand.

Request bodies are read as bytes and parsed off the event loop (`app.api.bodies`), so FastAPI
does not know their models; endpoints declare them with `json_request(Model)`, and `build_openapi`
adds those models, the hand-written tensor schemas and the problem document to the components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api.bodies import JSON_MEDIA_TYPE
from app.api.errors import PROBLEM_MEDIA_TYPE
from app.api.examples import add_examples
from app.schemas import (
    COMPONENTS,
    EXTRA_COMPONENTS,
    CreateSession,
    Problem,
    SchedulePreviewRequest,
    StepRequest,
)

DOCUMENTED_MODELS: list[type[BaseModel]] = [
    CreateSession,
    StepRequest,
    SchedulePreviewRequest,
    Problem,
]

_PROBLEM_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    401: "No bearer token (or, for creation, no valid API key).",
    404: "No such session, or not with this token.",
    413: "The body is over the server's limit.",
    415: "The body is not JSON.",
    422: "The content is invalid; the problem says where (`errors`, `field`, `tensor`, …).",
    503: "The database does not answer.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem+json errors an endpoint can answer."""
    schema = {"$ref": f"{COMPONENTS}Problem"}
    return {
        status: {
            "description": _PROBLEM_DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }


def json_request(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body of `model`."""
    schema = {"$ref": f"{COMPONENTS}{model.__name__}"}
    return {"requestBody": {"required": True, "content": {JSON_MEDIA_TYPE: {"schema": schema}}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the hand-parsed request models and the shared components."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            separate_input_output_schemas=False,
        )
        _, definitions = models_json_schema(
            [(model, "validation") for model in DOCUMENTED_MODELS],
            ref_template=COMPONENTS + "{model}",
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in {**definitions.get("$defs", {}), **EXTRA_COMPONENTS}.items():
            schemas.setdefault(name, schema)
        _declare_validation_errors_as_problems(document)
        add_examples(document)
        app.openapi_schema = document
    return app.openapi_schema


def _declare_validation_errors_as_problems(document: dict[str, Any]) -> None:
    """FastAPI documents its 422 as `HTTPValidationError`; ours are problem+json documents."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response and JSON_MEDIA_TYPE in response.get("content", {}):
                operation["responses"]["422"] = problems(422)[422]
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)
