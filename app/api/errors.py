"""Every error as RFC 9457 `application/problem+json`: ours, the core's, FastAPI's and Starlette's.

`{"type": "/problems/<slug>", "title", "status", "detail", …extras}`; request validation errors add
`errors: [{"loc", "msg", "type"}]` (never the offending input, which may be a huge array).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.errors import (
    DatabaseUnavailable,
    LockTimeout,
    OptaasError,
    RequestValidationFailed,
    ServiceUnavailable,
)
from app.optim import GradientMismatch, HyperParameterError, NonFiniteGradient, OptimError
from app.store.database import TransientFailure, transient_failure

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_OPTIM_SLUGS: list[tuple[type[OptimError], str, str]] = [
    (HyperParameterError, "invalid-hyper-parameter", "Invalid hyper-parameter"),
    (GradientMismatch, "gradient-mismatch", "Gradient does not match the parameters"),
    (NonFiniteGradient, "non-finite-gradient", "Non-finite gradient"),
    (OptimError, "invalid-content", "Invalid content"),
]


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    extras: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    document = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    document.update(extras or {})
    return Response(
        orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def optaas_problem(error: OptaasError) -> Response:
    return problem_response(
        error.status, error.slug, error.title, error.detail, error.extras, error.headers
    )


def validation_problem(errors: list[Any], prefix: tuple[str, ...] = ()) -> OptaasError:
    """A 422 listing each validation error by location, without echoing the input."""
    listed = [
        {
            "loc": [*prefix, *(part if isinstance(part, int) else str(part) for part in e["loc"])],
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in errors
    ]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in listed)
    return RequestValidationFailed(detail, errors=listed)


async def handle_optaas_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, OptaasError)
    return optaas_problem(error)


async def handle_optim_error(_request: Request, error: Exception) -> Response:
    """The core's errors are bad input: 422, with the fields that locate the problem."""
    assert isinstance(error, OptimError)
    slug, title = next((s, t) for cls, s, t in _OPTIM_SLUGS if isinstance(error, cls))
    return problem_response(422, slug, title, error.detail, dict(error.extras))


async def handle_http_exception(request: Request, error: Exception) -> Response:
    """Starlette's own errors (404 no route, 405 wrong method, …)."""
    assert isinstance(error, StarletteHTTPException)
    status = HTTPStatus(error.status_code)
    detail = error.detail if isinstance(error.detail, str) else status.description
    slug = status.phrase.lower().replace(" ", "-").replace("'", "")
    headers = dict(error.headers or {})
    # A route's 405 lists that route's methods only (the static files' mount lists its own).
    if status is HTTPStatus.METHOD_NOT_ALLOWED and request.scope.get("route") is not None:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(status.value, slug, status.phrase, detail, headers=headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette's 405 names only the first
    route's, and a path such as `/v1/sessions/{id}` has one route per method)."""
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


async def handle_request_validation(_request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError | ValidationError)
    return optaas_problem(validation_problem(list(error.errors())))


def unavailable_problem(error: BaseException) -> ServiceUnavailable | None:
    """The 503 for a lock timeout or a database outage; None for any other database error."""
    failure = transient_failure(error)
    if failure is TransientFailure.LOCK_TIMEOUT:
        return LockTimeout(
            "the session is busy: its lock was not free within this server's lock timeout; "
            "nothing was changed, send the request again after Retry-After seconds"
        )
    if failure is TransientFailure.UNAVAILABLE:
        return DatabaseUnavailable(
            "the database cannot be reached just now; send the request again after Retry-After "
            "seconds (with the same Idempotency-Key, a step that did go through is not applied "
            "twice)"
        )
    return None


async def handle_database_error(_request: Request, error: Exception) -> Response:
    """Lock timeouts and outages are 503 + Retry-After; every other database error is a bug."""
    problem = unavailable_problem(error)
    if problem is None:
        raise error  # to the 500 handler, and the server logs the traceback
    logger.warning("%s: %s", problem.title, str(error).splitlines()[0] if str(error) else error)
    return optaas_problem(problem)


async def handle_unexpected(_request: Request, _error: Exception) -> Response:
    # Starlette re-raises the error after this answer, so the server logs its traceback.
    return problem_response(
        500, "internal-error", "Internal Server Error", "The server failed; this is a bug."
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OptaasError, handle_optaas_error)
    app.add_exception_handler(OptimError, handle_optim_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, handle_request_validation)
    app.add_exception_handler(SQLAlchemyError, handle_database_error)
    app.add_exception_handler(Exception, handle_unexpected)
