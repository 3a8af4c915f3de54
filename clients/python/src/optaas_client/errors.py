"""The client's errors: one small hierarchy, each error answer typed by its problem.

`OptaasClientError` is the base of everything the client raises. An error answer (RFC 9457
problem+json) becomes the most specific `ApiError` for its problem `type` (its last part, the
slug: `gradient-mismatch` → `ShapeMismatch`), else for its status (`error_for`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class OptaasClientError(Exception):
    """Base of everything this client raises."""


class ConnectionFailed(OptaasClientError):
    """The server could not be reached (or stopped answering) on any attempt."""


class ProtocolError(OptaasClientError):
    """The server answered something this client cannot read."""


class ApiError(OptaasClientError):
    """An error answer: the RFC 9457 problem document and the HTTP status.

    `slug` is the last part of the problem `type` (`/problems/gradient-mismatch` →
    `gradient-mismatch`); `problem` holds every member, extensions included.
    """

    def __init__(self, status: int, problem: Mapping[str, Any], headers: httpx.Headers) -> None:
        self.status = status
        self.problem = dict(problem)
        self.headers = headers
        self.type: str = str(problem.get("type", "about:blank"))
        self.slug = self.type.rsplit("/", 1)[-1]
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.title}: {self.detail}".strip())


class BadRequest(ApiError):
    """400: a malformed body or an unreadable header."""


class AuthenticationRequired(ApiError):
    """401: no bearer token, or (creating and importing) no valid `X-API-Key`."""


class NotFound(ApiError):
    """404 for anything but a session: a path this server does not serve (an older version)."""


class SessionNotFound(NotFound):
    """404: no session with this id, or not with this token (the service does not say which)."""


class StepWaitTimeout(ApiError):
    """408: `params(wait_for_step=…)` gave up before the session reached that step."""

    @property
    def current_step(self) -> int | None:
        return self.problem.get("current_step")


class PreconditionFailed(ApiError):
    """412: the session was no longer at the step `if_match` named."""

    @property
    def current_step(self) -> int | None:
        return self.problem.get("current_step")


class PayloadTooLarge(ApiError):
    """413: the body is over the server's `OPTAAS_MAX_BODY_BYTES`."""


class UnsupportedMediaType(ApiError):
    """415: the endpoint does not take this content type."""


class InvalidContent(ApiError):
    """422: well-formed but unacceptable content; nothing was changed."""

    @property
    def field(self) -> str | None:
        return self.problem.get("field")


class ShapeMismatch(InvalidContent):
    """422 `gradient-mismatch`: a gradient's name, shape or count differs from the parameters'."""

    @property
    def tensor(self) -> str | None:
        return self.problem.get("tensor")

    @property
    def expected_shape(self) -> list[int] | None:
        return self.problem.get("expected_shape")

    @property
    def got_shape(self) -> list[int] | None:
        return self.problem.get("got_shape")


class NonFiniteGradient(InvalidContent):
    """422 `non-finite-gradient`: NaN or ±Inf in a gradient of a `nonfinite: reject` session."""

    @property
    def tensor(self) -> str | None:
        return self.problem.get("tensor")


class InvalidHyperParameter(InvalidContent):
    """422 `invalid-hyper-parameter`: `field` names the offending setting."""


class ValidationFailed(InvalidContent):
    """422 `validation-error`: `errors` lists each problem (`loc`, `msg`, `type`)."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.problem.get("errors", []))


class IdempotencyKeyReused(InvalidContent):
    """422: the `Idempotency-Key` was used before for a different request."""


class IdempotencyKeyExpired(InvalidContent):
    """422: the key's request was applied, but its answer is no longer kept."""


class ServiceUnavailable(ApiError):
    """503 on every attempt: the session stayed busy, or the database unreachable."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers)


class ServerError(ApiError):
    """Any other 5xx on every attempt (a 500 is a bug in the server)."""


_ERRORS_BY_SLUG: dict[str, type[ApiError]] = {
    "session-not-found": SessionNotFound,
    "gradient-mismatch": ShapeMismatch,
    "non-finite-gradient": NonFiniteGradient,
    "invalid-hyper-parameter": InvalidHyperParameter,
    "validation-error": ValidationFailed,
    "idempotency-key-reused": IdempotencyKeyReused,
    "idempotency-key-expired": IdempotencyKeyExpired,
}

_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthenticationRequired,
    404: NotFound,
    408: StepWaitTimeout,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidContent,
    503: ServiceUnavailable,
}


def error_for(response: httpx.Response) -> ApiError:
    """The typed exception for an error answer: by problem slug, else by status."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"title": response.reason_phrase, "detail": response.text[:500]}
    problem.setdefault("status", response.status_code)
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    kind = _ERRORS_BY_SLUG.get(slug) or _ERRORS_BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else ApiError
    return kind(response.status_code, problem, response.headers)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`Retry-After` in seconds (the delay-seconds form; an HTTP date counts as absent)."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
