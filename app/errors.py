"""The one error family: every failure the service reports is an `OptaasError`.

Each subclass fixes the HTTP status, a short slug (the problem type is `/problems/<slug>`) and a
title; an instance adds the `detail` sentence and optional `extras` (extension members of the RFC
9457 problem document, e.g. `tensor`, `expected_shape`). `app.api.errors` turns them into
`application/problem+json` responses; nothing else in the code builds error responses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OptaasError(Exception):
    """Base of every error the service reports; carries its HTTP status."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal Server Error"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str, **extras: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extras = extras


class MalformedBody(OptaasError):
    status = 400
    slug = "malformed-body"
    title = "Malformed request body"


class InvalidHeader(OptaasError):
    """A request header that cannot be read (`extras["header"]` names it)."""

    status = 400
    slug = "invalid-header"
    title = "Invalid request header"


class TokenMissing(OptaasError):
    status = 401
    slug = "token-missing"
    title = "Bearer token required"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class ApiKeyRequired(OptaasError):
    status = 401
    slug = "api-key-required"
    title = "A valid API key is required"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}


class SessionNotFound(OptaasError):
    """Unknown id and wrong token alike, so that nobody learns which ids exist."""

    status = 404
    slug = "session-not-found"
    title = "Session not found"

    def __init__(self) -> None:
        super().__init__("No session with this id is visible with the token given.")


class PreconditionFailed(OptaasError):
    """`If-Match` names no tag the session has; `extras["current_step"]` says where it is."""

    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class WaitTimedOut(OptaasError):
    """A wait (`GET …/params?wait_for_step=`) ended before the session reached the step;
    `extras` say where it is (`current_step`, and for accumulation `received`, `missing`)."""

    status = 408
    slug = "wait-timeout"
    title = "Timed out waiting for the step"


class RequestTimeout(OptaasError):
    """The body stopped arriving: no byte for the server's body timeout. The connection is
    closed, and what had arrived is dropped."""

    status = 408
    slug = "body-timeout"
    title = "Request body timed out"
    headers: ClassVar[dict[str, str]] = {"Connection": "close"}


class ClientClosedRequest(OptaasError):
    """The client went away before its body arrived whole: nobody is left to answer, so the
    status is nginx's 499 (client closed request), for the access log and the metrics."""

    status = 499
    slug = "client-closed-request"
    title = "Client closed the request"


class PayloadTooLarge(OptaasError):
    """The connection is closed after the answer: the rest of the body is never read."""

    status = 413
    slug = "payload-too-large"
    title = "Request body too large"
    headers: ClassVar[dict[str, str]] = {"Connection": "close"}


class UnsupportedMediaType(OptaasError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidContent(OptaasError):
    """Well-formed but unacceptable content (422)."""

    status = 422
    slug = "invalid-content"
    title = "Invalid content"


class OptimizerTypeChange(InvalidContent):
    """A PATCH that would change the optimizer's type: its state would not carry over."""

    slug = "optimizer-type-change"
    title = "The optimizer type cannot change mid-run"


class IdempotencyKeyReused(InvalidContent):
    """The key was used before for a different request (another body, path or media type)."""

    slug = "idempotency-key-reused"
    title = "Idempotency key reused for a different request"


class IdempotencyKeyExpired(InvalidContent):
    """The key's request was applied, but its response is no longer kept: nothing is applied."""

    slug = "idempotency-key-expired"
    title = "Idempotency key expired"


class RequestValidationFailed(InvalidContent):
    """The body, path or query does not fit the schema; `extras["errors"]` lists each problem."""

    slug = "validation-error"
    title = "Request validation failed"


class RateLimited(OptaasError):
    """Too many requests of this kind from one API key (or one address, without keys): send
    again after `Retry-After` seconds."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int, **extras: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extras)
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(OptaasError):
    """Temporary: the request changed nothing and may be sent again after `Retry-After` seconds."""

    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "2"}


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (down, restarting, connection lost)."""

    slug = "database-unavailable"
    title = "Database unavailable"


class LockTimeout(ServiceUnavailable):
    """The session stayed locked by other requests longer than the server waits."""

    slug = "lock-timeout"
    title = "Session busy"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}
