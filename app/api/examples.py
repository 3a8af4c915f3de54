"""Example requests and answers for the OpenAPI document, by operation id.

`add_examples` puts them into the document `build_openapi` makes: request bodies get `examples`,
successful answers an `example`, and every problem+json answer an example problem of its status.
A test validates each example against the model it illustrates, so they cannot drift from the
API.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from app.errors import (
    MalformedBody,
    OptaasError,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    SessionNotFound,
    TokenMissing,
    UnsupportedMediaType,
    WaitTimedOut,
)
from app.tensors import SAFETENSORS_MEDIA_TYPE

SESSION_ID = "262f9dfc-5a37-4d26-9a35-c1b7a0c3f1de"
TIMESTAMP = "2026-11-25T09:30:00.123456Z"

_ADAM = {
    "type": "adam",
    "lr": 0.01,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "weight_decay": 0.0,
    "amsgrad": False,
    "decoupled_weight_decay": False,
    "maximize": False,
}
_SCHEDULE = {
    "type": "warmup",
    "warmup_steps": 100,
    "then": {"type": "cosine", "total_steps": 10000, "min_lr": 0.0},
}
_SESSION_VIEW = {
    "id": SESSION_ID,
    "name": "mnist-mlp",
    "dtype": "float32",
    "layout": "named",
    "shapes": {"w": [2, 2], "b": [2]},
    "optimizer": _ADAM,
    "schedule": _SCHEDULE,
    "clip_grad_norm": 1.0,
    "clip_grad_value": None,
    "nonfinite": "reject",
    "groups": None,
    "accumulate": 1,
    "step": 0,
    "accumulated": 0,
    "lr": 0.0001,
    "last_loss": None,
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}
_PARAMS_AFTER_ONE_STEP = {"w": [[0.0999, -0.1999], [0.2999, 0.0001]], "b": [-0.0001, 0.0001]}
_EXPORT = {
    "format": "optaas-state/1",
    "id": SESSION_ID,
    "name": "mnist-mlp",
    "dtype": "float32",
    "layout": "named",
    "tensors": ["w", "b"],
    "config": {
        key: _SESSION_VIEW[key]
        for key in (
            "optimizer",
            "schedule",
            "clip_grad_norm",
            "clip_grad_value",
            "nonfinite",
            "groups",
            "accumulate",
        )
    },
    "step": 1,
    "schedule_state": {},
    "last_loss": 0.42,
    "params": _PARAMS_AFTER_ONE_STEP,
    "state": {
        "w": {
            "exp_avg": [[0.05, -0.1], [0.025, 0.2]],
            "exp_avg_sq": [[0.00025, 0.001], [6.25e-5, 0.004]],
            "step": 1,
        },
        "b": {"exp_avg": [0.01, -0.01], "exp_avg_sq": [1e-5, 1e-5], "step": 1},
    },
}
_STEP_RECORD = {
    "seq": 1,
    "kind": "step",
    "step": 1,
    "lr": 0.0001,
    "loss": 0.42,
    "grad_norm": 2.3092206480576105,
    "update_norm": 0.00014142135,
    "skipped": False,
    "at": TIMESTAMP,
    "duration_ms": 1.31,
}

REQUESTS: dict[str, dict[str, dict[str, Any]]] = {
    "sessions-create_session": {
        "named": {
            "summary": "Named tensors, Adam, warm-up then cosine",
            "value": {
                "name": "mnist-mlp",
                "params": {"w": [[0.1, -0.2], [0.3, 0.0]], "b": [0.0, 0.0]},
                "dtype": "float32",
                "optimizer": {"type": "adam", "lr": 0.01},
                "schedule": _SCHEDULE,
                "clip_grad_norm": 1.0,
            },
        },
        "single": {
            "summary": "One array, plain SGD",
            "value": {"params": [1.0, 2.0, 3.0], "optimizer": {"type": "sgd", "lr": 0.1}},
        },
        "muon-adamw": {
            "summary": "Muon for the matrices, AdamW for the rest (a group's own optimizer)",
            "value": {
                "params": {"layer.weight": [[0.1, -0.2], [0.3, 0.0]], "layer.bias": [0.0, 0.0]},
                "optimizer": {"type": "adamw", "lr": 3e-4},
                "groups": [{"match": ["*.weight"], "optimizer": {"type": "muon", "lr": 0.02}}],
            },
        },
        "prodigy": {
            "summary": "No learning rate to tune: Prodigy estimates its step size",
            "value": {"params": [1.0, 2.0, 3.0], "optimizer": {"type": "prodigy"}},
        },
    },
    "sessions-step_session": {
        "named": {
            "summary": "A gradient for every tensor, with the loss",
            "value": {
                "gradients": {"w": [[0.5, -1.0], [0.25, 2.0]], "b": [0.1, -0.1]},
                "loss": 0.42,
            },
        },
        "partial": {
            "summary": "Only some tensors (the others keep θ and state)",
            "value": {"gradients": {"b": [0.1, -0.1]}, "partial": True},
        },
    },
    "sessions-patch_session": {
        "lr": {"summary": "A new learning rate", "value": {"optimizer": {"lr": 0.005}}},
        "schedule": {
            "summary": "A new schedule, and clipping off",
            "value": {
                "schedule": {"type": "cosine", "total_steps": 5000},
                "clip_grad_norm": None,
            },
        },
    },
    "sessions-fork_session": {
        "same": {"summary": "An identical copy", "value": {}},
        "sgd": {
            "summary": "Try SGD with momentum from here",
            "value": {
                "name": "mnist-mlp-sgd",
                "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
            },
        },
    },
    "sessions-import_session": {
        "export": {"summary": "A JSON export (GET …/state)", "value": _EXPORT},
    },
    "schedules-preview_schedule": {
        "warmup-cosine": {
            "summary": "Warm-up, then cosine decay",
            "value": {
                "schedule": {
                    "type": "warmup",
                    "warmup_steps": 2,
                    "then": {"type": "cosine", "total_steps": 4},
                },
                "lr": 0.1,
                "steps": 6,
            },
        },
        "optimizer": {
            "summary": "At an optimizer's lr (its type's default where it gives none)",
            "value": {
                "schedule": {"type": "cosine", "total_steps": 1000},
                "optimizer": {"type": "prodigy"},
                "steps": 3,
            },
        },
    },
}

RESPONSES: dict[str, dict[int, Any]] = {
    "sessions-create_session": {201: {**_SESSION_VIEW, "token": "UFWfQ0dJ3m0c…(43 characters)"}},
    "sessions-get_session": {200: {**_SESSION_VIEW, "step": 1, "last_loss": 0.42}},
    "sessions-step_session": {
        200: {
            "step": 1,
            "lr": 0.0001,
            "params": _PARAMS_AFTER_ONE_STEP,
            "grad_norm": 2.3092206480576105,
            "update_norm": 0.00014142135,
            "skipped": False,
        },
        202: {"step": 12, "received": 1, "missing": 3, "wait_for_step": 13},
    },
    "sessions-patch_session": {
        200: {**_SESSION_VIEW, "optimizer": {**_ADAM, "lr": 0.005}, "step": 1, "lr": 5e-5}
    },
    "sessions-fork_session": {
        201: {
            **_SESSION_VIEW,
            "id": "7d0c6f1e-2b8a-4c1e-9f3a-5e2d1c0b9a87",
            "step": 1,
            "last_loss": 0.42,
            "token": "x2Lw9Vq7…(43 characters)",
        }
    },
    "sessions-get_state": {200: _EXPORT},
    "sessions-import_session": {
        201: {
            **_SESSION_VIEW,
            "id": "0b6a1f57-93d4-4e0b-8c55-2f7e6a9d3c10",
            "step": 1,
            "last_loss": 0.42,
            "token": "Hk3pZr0m…(43 characters)",
        }
    },
    "sessions-get_params": {
        200: {"step": 1, "params": {"w": [[0.0999, -0.1999], [0.2999, 0.0001]], "b": [0.0, 0.0]}}
    },
    "history-get_history": {
        200: {
            "records": [
                _STEP_RECORD,
                {
                    "seq": 2,
                    "kind": "change",
                    "step": 1,
                    "at": TIMESTAMP,
                    "changes": {"optimizer.lr": {"old": 0.01, "new": 0.005}},
                },
                {
                    **_STEP_RECORD,
                    "seq": 3,
                    "step": 1,
                    "lr": 5e-5,
                    "skipped": True,
                    "grad_norm": None,
                    "update_norm": 0.0,
                    "loss": None,
                },
            ],
            "next": 3,
        }
    },
    "schedules-preview_schedule": {
        200: {
            "lr": [0.05, 0.1, 0.1, 0.08535533905932738, 0.05, 0.014644660940672627],
            "estimated": False,
        }
    },
    "health-healthz": {200: {"status": "ok"}},
    "health-readyz": {200: {"status": "ok"}},
    # A HEAD answer has GET's headers and no body; the document shows what GET's body is.
    "health-healthz_head": {200: {"status": "ok"}},
    "health-readyz_head": {200: {"status": "ok"}},
}


def problem_document(error: OptaasError) -> dict[str, Any]:
    """The problem document the server writes for `error`."""
    return {
        "type": f"/problems/{error.slug}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        **error.extras,
    }


_PROBLEMS: dict[int, OptaasError] = {
    400: MalformedBody("the body is not valid JSON: unexpected character: line 1 column 2"),
    401: TokenMissing("this endpoint needs the session's token: Authorization: Bearer <token>"),
    404: SessionNotFound(),
    412: PreconditionFailed("the session is at step 8, not 7", current_step=8),
    413: PayloadTooLarge(
        "the request body declares 40000512 bytes; JSON bodies may have up to 33554432 bytes "
        "(OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as "
        "safetensors (application/vnd.safetensors)",
        max_body_bytes=33554432,
    ),
    429: RateLimited(
        "more creation requests from this API key than its limit of 10 per 1 second; send it "
        "again after 1 s",
        retry_after=1,
        limit="10 per 1 second",
    ),
    415: UnsupportedMediaType(
        "this endpoint takes application/json, not text/plain", supported=["application/json"]
    ),
    408: RequestTimeout(
        "no byte of the request body came for 30 s (OPTAAS_BODY_TIMEOUT_SECONDS) after 65536 "
        "bytes; send the request again",
        received_bytes=65536,
    ),
    503: ServiceUnavailable("the database does not answer: OperationalError"),
}
_VALIDATION_ERROR = {
    "type": "/problems/validation-error",
    "title": "Request validation failed",
    "status": 422,
    "detail": "query.limit: Input should be less than or equal to 1000",
    "errors": [
        {
            "loc": ["query", "limit"],
            "msg": "Input should be less than or equal to 1000",
            "type": "less_than_equal",
        }
    ],
}
_INVALID_SCHEDULE = {
    "type": "/problems/invalid-hyper-parameter",
    "title": "Invalid hyper-parameter",
    "status": 422,
    "detail": "schedule.then.total_steps: must be >= 1, got 0",
    "field": "schedule.then.total_steps",
}
_WAIT_TIMED_OUT = WaitTimedOut(
    "waited 5 s for step 13; the session is at step 12, with 3 of 4 gradients received for "
    "step 13 (1 missing)",
    current_step=12,
    wait_for_step=13,
    timeout=5.0,
    received=3,
    missing=1,
)
PROBLEMS_BY_OPERATION: dict[str, dict[int, dict[str, Any]]] = {
    "sessions-get_params": {408: problem_document(_WAIT_TIMED_OUT)},
    "sessions-create_session": {
        401: {
            "type": "/problems/api-key-required",
            "title": "A valid API key is required",
            "status": 401,
            "detail": "creating a session on this server needs a valid X-API-Key header",
        },
        422: _INVALID_SCHEDULE,
    },
    "sessions-step_session": {
        422: {
            "type": "/problems/gradient-mismatch",
            "title": "Gradient does not match the parameters",
            "status": 422,
            "detail": "the gradient of 'w' has shape [1, 2], expected [2, 2]",
            "tensor": "w",
            "expected_shape": [2, 2],
            "got_shape": [1, 2],
        }
    },
    "sessions-patch_session": {
        422: {
            "type": "/problems/optimizer-type-change",
            "title": "The optimizer type cannot change mid-run",
            "status": 422,
            "detail": (
                "the optimizer type cannot change mid-run ('adam' → 'sgd'): its state does not "
                "carry over. Fork the session with the new optimizer instead: POST "
                '/v1/sessions/{id}/fork with {"optimizer": {"type": "sgd", …}}'
            ),
            "field": "optimizer.type",
        }
    },
    "sessions-import_session": {
        422: {
            "type": "/problems/invalid-content",
            "title": "Invalid content",
            "status": 422,
            "detail": "state.w.exp_avg has shape [2], expected [2, 2]",
            "field": "state.w.exp_avg",
            "tensor": "w",
            "expected_shape": [2, 2],
            "got_shape": [2],
        }
    },
    "schedules-preview_schedule": {422: _INVALID_SCHEDULE},
}


def problem_example(status: int, operation_id: str = "") -> dict[str, Any]:
    """A problem document of `status` as the server writes it (for this operation, if known)."""
    specific = PROBLEMS_BY_OPERATION.get(operation_id, {}).get(status)
    if specific is not None:
        return specific
    if status == 422:
        return _VALIDATION_ERROR
    error = _PROBLEMS.get(status)
    if error is None:
        phrase = HTTPStatus(status).phrase
        slug = phrase.lower().replace(" ", "-")
        return {"type": f"/problems/{slug}", "title": phrase, "status": status, "detail": "…"}
    return problem_document(error)


def add_examples(document: dict[str, Any]) -> None:
    """Put the examples into an OpenAPI document, in place."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation_id = operation.get("operationId", "")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and operation_id in REQUESTS:
                body["examples"] = REQUESTS[operation_id]
            for status, response in operation.get("responses", {}).items():
                for media_type, content in response.get("content", {}).items():
                    if media_type == "application/problem+json":
                        content.setdefault("example", problem_example(int(status), operation_id))
                    elif media_type == SAFETENSORS_MEDIA_TYPE:
                        continue  # bytes: the schema's description says what the file holds
                    elif media_type == "application/json" and int(status) in RESPONSES.get(
                        operation_id, {}
                    ):
                        content.setdefault("example", RESPONSES[operation_id][int(status)])
