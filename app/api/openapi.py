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
from app.config import Settings
from app.schemas import (
    COMPONENTS,
    EXTRA_COMPONENTS,
    CreateSession,
    Problem,
    SchedulePreviewRequest,
    SessionPatch,
    StateExport,
    StepAccepted,
    StepRequest,
)
from app.tensors import SAFETENSORS_MEDIA_TYPE

DOCUMENTED_MODELS: list[type[BaseModel]] = [
    CreateSession,
    StepRequest,
    SessionPatch,
    StateExport,
    StepAccepted,
    SchedulePreviewRequest,
    Problem,
]
_BINARY_SCHEMA = {"type": "string", "format": "binary"}

_PROBLEM_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    401: "No bearer token (or, for creation, no valid API key).",
    404: "No such session, or not with this token.",
    408: (
        "The session did not reach `wait_for_step` within `timeout`; the problem says where it "
        "is (`current_step`, and while accumulating `received` and `missing`)."
    ),
    412: "`If-Match` lists no tag the session has: nothing applied (`current_step` says where).",
    413: "The body is over the server's limit.",
    415: "The body is not JSON (or, where a safetensors file is taken, not that either).",
    422: "The content is invalid; the problem says where (`errors`, `field`, `tensor`, …).",
    503: (
        "The database cannot be reached, or the session stayed locked past the server's lock "
        "timeout: send the request again after `Retry-After` seconds."
    ),
}

_REQUEST_HEADERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": (
            "Any string of 1 to 255 characters (a UUID is best). The first request with this "
            "key is applied and its answer kept; a repeat gets the kept answer "
            "(`Idempotent-Replayed: true`) and applies nothing; the key with a different "
            "request is a 422."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    },
    "If-Match": {
        "description": (
            'Apply only if the session is at this step: its `ETag`, e.g. `"12"`, a list of '
            "them, or `*`. Otherwise 412 with `current_step`."
        ),
        "schema": {"type": "string"},
    },
}

_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": 'The session\'s step count as an entity tag, e.g. `"12"` (for `If-Match`).',
        "schema": {"type": "string"},
        "required": True,
    },
    "Location": {
        "description": "The new session's URL.",
        "schema": {"type": "string"},
        "required": True,
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the kept answer to an earlier request with the same "
        "`Idempotency-Key` (nothing was applied now).",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before sending the request again.",
        "schema": {"type": "integer", "minimum": 0},
        "required": True,
    },
}


def session_headers(status: int, *, location: bool = False) -> dict[int | str, dict[str, Any]]:
    """The `responses` entry documenting the headers of an answer that shows a session."""
    names = ["ETag", *(["Location"] if location else []), "Idempotent-Replayed"]
    return {status: {"headers": {name: _HEADERS[name] for name in names}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem+json errors an endpoint can answer."""
    schema = {"$ref": f"{COMPONENTS}Problem"}
    responses: dict[int | str, dict[str, Any]] = {
        status: {
            "description": _PROBLEM_DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }
    if 503 in responses:
        responses[503]["headers"] = {"Retry-After": _HEADERS["Retry-After"]}
    return responses


def json_request(model: type[BaseModel], *headers: str, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body of `model` and the request `headers` read.

    Headers are read by hand (`app.api.idempotency`, `app.api.conditions`) and declared here,
    where their schemas can say exactly what is accepted.
    """
    content = {JSON_MEDIA_TYPE: {"schema": {"$ref": f"{COMPONENTS}{model.__name__}"}}}
    return _request(content, headers, required=required)


def tensor_request(model: type[BaseModel], *headers: str) -> dict[str, Any]:
    """As `json_request`, for a body that may also be a safetensors file."""
    content = {
        JSON_MEDIA_TYPE: {"schema": {"$ref": f"{COMPONENTS}{model.__name__}"}},
        SAFETENSORS_MEDIA_TYPE: {"schema": _BINARY_SCHEMA},
    }
    return _request(content, headers, required=True)


def _request(
    content: dict[str, Any], headers: tuple[str, ...], *, required: bool
) -> dict[str, Any]:
    return {
        "requestBody": {"required": required, "content": content},
        "parameters": [
            {"name": name, "in": "header", "required": False, **_REQUEST_HEADERS[name]}
            for name in headers
        ],
    }


def tensor_response(status: int) -> dict[int | str, dict[str, Any]]:
    """An answer showing a session whose body is JSON, or a safetensors file on `Accept`."""
    entry = session_headers(status)
    entry[status]["content"] = {SAFETENSORS_MEDIA_TYPE: {"schema": _BINARY_SCHEMA}}
    entry[status]["headers"].pop("Idempotent-Replayed")
    return entry


def accepted_step_response() -> dict[int | str, dict[str, Any]]:
    """202 of a step that accumulates: the gradient is counted, the step awaits more."""
    return {
        202: {
            "description": (
                "With `accumulate` K > 1: the gradient is counted toward the next step, which "
                "awaits `missing` more; `Location` is where to wait for it."
            ),
            "content": {
                JSON_MEDIA_TYPE: {"schema": {"$ref": f"{COMPONENTS}{StepAccepted.__name__}"}}
            },
            "headers": {
                "ETag": _HEADERS["ETag"],
                "Location": {
                    "description": (
                        "Where to wait for the step: `GET …/params?wait_for_step=<t + 1>`."
                    ),
                    "schema": {"type": "string"},
                    "required": True,
                },
                "Idempotent-Replayed": _HEADERS["Idempotent-Replayed"],
            },
        }
    }


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
        _declare_the_servers_limits(document, app.state.settings)
        add_examples(document)
        app.openapi_schema = document
    return app.openapi_schema


def _declare_the_servers_limits(document: dict[str, Any], settings: Settings) -> None:
    """Limits that the configuration sets, written into the parameters they bound."""
    operation = document["paths"]["/v1/sessions/{session_id}/params"]["get"]
    for parameter in operation.get("parameters", []):
        if parameter["name"] == "timeout":
            for schema in parameter["schema"].get("anyOf", [parameter["schema"]]):
                if schema.get("type") == "number":
                    schema["maximum"] = settings.max_wait_seconds


def _declare_validation_errors_as_problems(document: dict[str, Any]) -> None:
    """FastAPI documents its 422 as `HTTPValidationError`; ours are problem+json documents."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response and JSON_MEDIA_TYPE in response.get("content", {}):
                operation["responses"]["422"] = problems(422)[422]
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)
