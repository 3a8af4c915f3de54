"""The OpenAPI document: what FastAPI cannot see because bodies are parsed by hand.

Request bodies are read as bytes and parsed off the event loop (`app.api.bodies`), so FastAPI
does not know their models; endpoints declare them with `json_request(Model)`, and `build_openapi`
adds those models, the hand-written tensor schemas and the problem document to the components.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api.bodies import JSON_MEDIA_TYPE
from app.api.errors import PROBLEM_MEDIA_TYPE
from app.api.examples import add_examples
from app.api.protocol import MALFORMED_REQUEST
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

_PROBLEM_DESCRIPTIONS = {
    400: "The body is not valid JSON (or not a valid safetensors file).",
    401: "No bearer token (or, for creation, no valid API key).",
    404: "No such session, or not with this token.",
    408: (
        "The session did not reach `wait_for_step` within `timeout`; the problem says where it "
        "is (`current_step`, and while accumulating `received` and `missing`). Or the body "
        "stopped arriving for the server's body timeout (`body-timeout`)."
    ),
    412: "`If-Match` lists no tag the session has: nothing applied (`current_step` says where).",
    413: (
        "The body is over its limit: the server's, JSON's (send safetensors), or what this "
        "session's step needs; the problem says which."
    ),
    415: "The body is not of a media type this operation takes.",
    422: "The content is invalid; the problem says where (`errors`, `field`, `tensor`, …).",
    429: (
        "Too many requests of this kind from this API key (or address, on a server without "
        "keys): send it again after `Retry-After` seconds."
    ),
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


BINARY_SCHEMA: dict[str, Any] = {"type": "string", "format": "binary"}

STEP_FILE = (
    "the gradients by tensor name (the single form's tensor is `params`), in any number type "
    "(F32, F64, F16, BF16 or an integer type; cast to the session's dtype); `__metadata__` may "
    'give `loss` and `partial` as JSON text (`"loss": "0.42"`, `"partial": "true"`); other '
    "metadata keys are ignored."
)
CREATE_FILE = (
    "θ₀ by tensor name (a file whose only tensor is `params` makes the single form), in any "
    "number type (cast to the session's dtype); `__metadata__` holds everything else of the "
    'JSON body as JSON text under the key `optaas` (`"optaas": "{\\"optimizer\\": '
    '{\\"type\\": \\"adam\\"}}"`; absent: every default).'
)
STEP_ANSWER_FILE = (
    "With `Accept: application/vnd.safetensors`: θ after the step as a safetensors file, by "
    "tensor name (the single form's tensor is `params`), in the session's dtype; its "
    "`__metadata__` holds `step`, `lr`, `grad_norm`, `update_norm` and `skipped` as JSON text "
    '(`"step": "12"`, `"lr": "0.001"`, `"skipped": "false"`, `null` for a number that is not '
    "finite). With `?return=none` the file holds no tensors."
)
STATE_ANSWER_FILE = (
    "With `Accept: application/vnd.safetensors`: the export as a safetensors file: θ as "
    "`param/<tensor>`, every state slot as `<slot>/<tensor>` (`step/<tensor>` a 0-d int64), "
    "and in its `__metadata__` the format, config, step, schedule state, name, dtype, layout, "
    "tensor order and last loss (JSON text)."
)
IMPORT_FILE = (
    "an export as `GET …/state` answers it with `Accept: application/vnd.safetensors` "
    "(`param/<tensor>` and `<slot>/<tensor>` arrays, the rest in `__metadata__`)."
)
PARAMS_ANSWER_FILE = (
    "With `Accept: application/vnd.safetensors`: θ as a safetensors file, by tensor name (the "
    "single form's tensor is `params`), in the session's dtype, with `step` in its "
    "`__metadata__`."
)


def session_headers(
    status: int, *, location: bool = False, binary: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses` entry documenting the headers of an answer that shows a session, and its
    safetensors form (described by `binary`) if it has one beside JSON."""
    names = ["ETag", *(["Location"] if location else []), "Idempotent-Replayed"]
    entry: dict[str, Any] = {"headers": {name: _HEADERS[name] for name in names}}
    if binary is not None:
        entry["content"] = {
            SAFETENSORS_MEDIA_TYPE: {"schema": {**BINARY_SCHEMA, "description": binary}}
        }
    return {status: entry}


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
    for status in (429, 503):
        if status in responses:
            responses[status]["headers"] = {"Retry-After": _HEADERS["Retry-After"]}
    return responses


def json_request(model: type[BaseModel], *headers: str, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body of `model` and the request `headers` read.

    Headers are read by hand (`app.api.idempotency`, `app.api.conditions`) and declared here,
    where their schemas can say exactly what is accepted.
    """
    content = {JSON_MEDIA_TYPE: {"schema": {"$ref": f"{COMPONENTS}{model.__name__}"}}}
    return _request(content, headers, required=required)


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


def tensor_request(model: type[BaseModel], file_description: str, *headers: str) -> dict[str, Any]:
    """As `json_request`, with the body's binary form too: a safetensors file, described."""
    extra = json_request(model, *headers)
    body = extra["requestBody"]
    body["content"][SAFETENSORS_MEDIA_TYPE] = {"schema": BINARY_SCHEMA}
    body["description"] = (
        f"JSON (`{JSON_MEDIA_TYPE}`) or, for large models, a safetensors file "
        f"(`{SAFETENSORS_MEDIA_TYPE}`): {file_description}"
    )
    return extra


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
        _declare_malformed_requests(document)
        _declare_the_servers_limits(document, app.state.settings)
        _declare_security(document, app.state.settings)
        _declare_session_ids(document)
        add_examples(document)
        app.openapi_schema = document
    return app.openapi_schema


MALFORMED_REQUEST_DESCRIPTION = (
    "The request is not valid HTTP/1.1 (request line, headers or body framing): the server's "
    "protocol layer answers it before any route (`/problems/malformed-request`)."
)


def _declare_malformed_requests(document: dict[str, Any]) -> None:
    """Every operation can be answered 400 for a request that is not valid HTTP (an empty
    `Content-Length`, say): `app.api.protocol` refuses it whatever its route. Operations that
    document a 400 of their own (a body that is no JSON) name both causes."""
    malformed = problems(400)[400]
    for operations in document["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "400" in responses:
                described = responses["400"]["description"]
                responses["400"]["description"] = f"{described} Or: {MALFORMED_REQUEST_DESCRIPTION}"
            else:
                content = {PROBLEM_MEDIA_TYPE: {**malformed["content"][PROBLEM_MEDIA_TYPE]}}
                content[PROBLEM_MEDIA_TYPE]["example"] = orjson.loads(MALFORMED_REQUEST)
                responses["400"] = {
                    "description": MALFORMED_REQUEST_DESCRIPTION,
                    "content": content,
                }


def _declare_the_servers_limits(document: dict[str, Any], settings: Settings) -> None:
    """Limits that the configuration sets, written into the parameters they bound."""
    operation = document["paths"]["/v1/sessions/{session_id}/params"]["get"]
    for parameter in operation.get("parameters", []):
        if parameter["name"] == "timeout":
            for schema in parameter["schema"].get("anyOf", [parameter["schema"]]):
                if schema.get("type") == "number":
                    schema["maximum"] = settings.max_wait_seconds


def _declare_session_ids(document: dict[str, Any]) -> None:
    """Session ids are UUIDs. The endpoints take any string (a malformed id gets the same 404
    as an unknown one), so the format is declared here, for clients and generated tests."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "session_id":
                    parameter["schema"] = {**parameter["schema"], "format": "uuid"}
                    parameter["description"] = "The session's id (a UUID), from its creation."


API_KEY_SCHEME = "APIKeyHeader"


def _declare_security(document: dict[str, Any], settings: Settings) -> None:
    """The credentials each operation needs on this server, all at once (OpenAPI lists
    alternatives, and FastAPI lists each dependency's scheme as one): `X-API-Key` beside the
    bearer token where the server has API keys (fork needs both), and nowhere without keys."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            schemes = {name for option in operation.get("security", []) for name in option}
            if API_KEY_SCHEME in schemes and not settings.api_keys:
                schemes.discard(API_KEY_SCHEME)
            if schemes:
                operation["security"] = [{name: [] for name in sorted(schemes)}]
            else:
                operation.pop("security", None)
    if not settings.api_keys:
        document.get("components", {}).get("securitySchemes", {}).pop(API_KEY_SCHEME, None)


def _declare_validation_errors_as_problems(document: dict[str, Any]) -> None:
    """FastAPI documents its 422 as `HTTPValidationError`; ours are problem+json documents."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response and JSON_MEDIA_TYPE in response.get("content", {}):
                operation["responses"]["422"] = problems(422)[422]
    for name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(name, None)
