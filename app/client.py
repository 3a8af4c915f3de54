"""The Python client: optaas as if it were a local optimizer.

    from app.client import Client

    with Client("http://127.0.0.1:8000") as client:
        session = client.create_session({"w": w0, "b": b0}, optimizer={"type": "adam", "lr": 1e-3})
        for batch in batches:
            params = session.step(gradients(params, batch), loss=loss)

numpy in, numpy out: parameters and gradients are one array (the `single` form) or a mapping of
named arrays (the `named` form), and answers come back in the session's form as arrays of its
dtype. Above `binary_threshold` elements, tensors travel as safetensors files instead of JSON.

Every request has a timeout. Connection errors, timeouts, 429 and 5xx answers are retried with
exponential backoff (and `Retry-After` when the server sends one); every POST and PATCH carries an
`Idempotency-Key`, made once per call and sent with each retry of it, so a retried step is applied
once. Error answers (RFC 9457 problem+json) are raised as typed exceptions (`ShapeMismatch`,
`SessionNotFound`, `PreconditionFailed`, …), all of them `OptaasClientError`s.

torch is optional and imported only by the torch parts: `RemoteOptimizer` (a `torch.optim.Optimizer`
whose state lives in a session) and the converters between exports and torch optimizers
(`torch_state_dict`, `torch_param_groups`, `torch_optimizer`, `export_from_torch`). Importing this
module imports neither torch nor FastAPI nor SQLAlchemy.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from app.errors import MalformedBody
from app.tensors import (
    SAFETENSORS_MEDIA_TYPE,
    SINGLE_TENSOR_NAME,
    tensors_from_safetensors,
    tensors_to_safetensors,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "ApiError",
    "AuthenticationRequired",
    "BadRequest",
    "Client",
    "ConnectionFailed",
    "IdempotencyKeyExpired",
    "IdempotencyKeyReused",
    "InvalidContent",
    "InvalidHyperParameter",
    "NonFiniteGradient",
    "NotFound",
    "OptaasClientError",
    "PayloadTooLarge",
    "Pending",
    "PreconditionFailed",
    "ProtocolError",
    "RemoteOptimizer",  # noqa: F822 -- made on first use by the module's __getattr__
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "Session",
    "SessionNotFound",
    "ShapeMismatch",
    "StepInfo",
    "StepWaitTimeout",
    "UnsupportedMediaType",
    "ValidationFailed",
    "export_from_torch",
    "torch_optimizer",
    "torch_param_groups",
    "torch_state_dict",
]

Params = np.ndarray | dict[str, np.ndarray]
"""Parameters or gradients: one array (single form) or arrays by name (named form)."""

JSON_MEDIA_TYPE = "application/json"
EXPORT_FORMAT = "optaas-state/1"
DEFAULT_URL = "http://127.0.0.1:8000"

DEFAULT_BINARY_THRESHOLD = 65_536
"""Sessions with at least this many elements (over all tensors) send and receive tensors as
safetensors. Below it JSON is cheap (a 65 536-element body is ~1 MB of text) and its step answers
are sure to carry `grad_norm` and `update_norm`, which the contract's binary answer need not."""

HISTORY_PAGE_LIMIT = 1000
"""The largest page `GET …/history` serves."""

CORE_CONFIG_FIELDS = ("optimizer", "schedule", "clip_grad_norm", "clip_grad_value", "nonfinite")


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


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
        return _retry_after_seconds(self.headers)


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


# ------------------------------------------------------------------------------------------
# Retries
# ------------------------------------------------------------------------------------------

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers that say "not now" or "failed on the way"; 408 (a wait that timed out) is an answer."""

RETRIED_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
"""Connection refused, reset or lost, and timeouts. Errors of the request itself (a bad URL,
an unsupported scheme) are not retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Attempt n (n = 0, 1, …, `retries` − 1 after the first) waits
    `min(max_delay, max(retry_after, backoff · 2ⁿ · u))` seconds, u uniform in [0.5, 1)
    (jitter, so that clients that failed together do not retry together).
    """

    retries: int = 5
    backoff: float = 0.25
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        exponential = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
        return min(self.max_delay, max(retry_after or 0.0, exponential))


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`Retry-After` in seconds (the delay-seconds form; an HTTP date counts as absent)."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------
# Tensors on the wire
# ------------------------------------------------------------------------------------------


def _as_tensors(value: Any, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Parameters or gradients as arrays of `dtype` by name; one array is the tensor `params`."""
    with np.errstate(over="ignore"):  # beyond the dtype: ±Inf, which the server then judges
        if isinstance(value, Mapping):
            return {str(name): np.asarray(item).astype(dtype) for name, item in value.items()}
        return {SINGLE_TENSOR_NAME: np.asarray(value).astype(dtype)}


def _wire_form(tensors: Mapping[str, np.ndarray], single: bool) -> Any:
    """Tensors as JSON-ready nested lists, in the single or the named form."""
    if single:
        return tensors[SINGLE_TENSOR_NAME].tolist()
    return {name: array.tolist() for name, array in tensors.items()}


def _from_wire(value: Any, dtype: np.dtype) -> Params:
    """A JSON tensor value (nested lists, or an object of them) as arrays; null reads as NaN."""
    if isinstance(value, Mapping):
        return {name: np.array(item, dtype=dtype) for name, item in value.items()}
    return np.array(value, dtype=dtype)


def _in_form(tensors: Mapping[str, np.ndarray], layout: str) -> Params:
    return tensors[SINGLE_TENSOR_NAME] if layout == "single" else dict(tensors)


def _element_count(params: Any) -> int:
    if isinstance(params, Mapping):
        return sum(int(np.size(item)) for item in params.values())
    return int(np.size(params))


def _dtype_of(params: Any) -> str:
    """float64 when every tensor is a float64 array (numpy's default float, or torch's), else
    float32 — the service's default, also for plain lists."""
    arrays = params.values() if isinstance(params, Mapping) else [params]
    kinds = {str(getattr(array, "dtype", "")).removeprefix("torch.") for array in arrays}
    return "float64" if kinds == {"float64"} else "float32"


def _json_content(document: Any) -> bytes:
    # Python's json writes NaN/Infinity, which the service reads, so a non-finite gradient
    # meets the session's `nonfinite` rule instead of failing here.
    return json.dumps(document, separators=(",", ":")).encode()


def _read_safetensors(body: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        return tensors_from_safetensors(body)
    except MalformedBody as error:
        raise ProtocolError(f"the server sent an unreadable safetensors file: {error}") from None


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ------------------------------------------------------------------------------------------
# Results of a step
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepInfo:
    """What the latest step reported. A binary (safetensors) answer is sure to carry `step`
    and `lr` only (in its `__metadata__`); what it leaves out is None."""

    step: int
    lr: float | None
    grad_norm: float | None = None
    update_norm: float | None = None
    skipped: bool | None = None


@dataclass(frozen=True)
class Pending:
    """A gradient an `accumulate: K` session received without completing its step (202).

    The session is at step `step` (t, the updates applied so far); `received` of K gradients
    are in, `missing` still to come. The step they make is t + 1: `wait()` waits for it.
    """

    session: Session
    step: int
    received: int
    missing: int

    @property
    def wait_for_step(self) -> int:
        return self.step + 1

    def wait(self, timeout: float | None = None) -> Params:
        """The parameters once the session reaches step t + 1 (`StepWaitTimeout` if not)."""
        return self.session.params(wait_for_step=self.wait_for_step, timeout=timeout)


# ------------------------------------------------------------------------------------------
# The client
# ------------------------------------------------------------------------------------------


class Client:
    """One optaas server: create, import and attach sessions; preview schedules.

    `timeout` bounds every request (connecting: at most 5 s); `retries`, `backoff` and
    `max_delay` are the `RetryPolicy`. `binary_threshold`: sessions with at least this many
    elements use safetensors (`None`: never). `api_key` is sent as `X-API-Key` when creating
    or importing sessions. `transport` (an httpx transport) is for tests and special networks.
    The client is thread-safe and keeps connections open: `close()` it, or use `with`.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_delay: float = 30.0,
        binary_threshold: int | None = DEFAULT_BINARY_THRESHOLD,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        trust_env: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = RetryPolicy(retries, backoff, max_delay)
        self.binary_threshold = binary_threshold
        self.api_key = api_key
        self.binary_supported = True
        """Cleared when the server refuses safetensors (415): then JSON is used throughout."""
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            transport=transport,
            trust_env=trust_env,
            headers={"User-Agent": "optaas-client/0.1", "Accept": JSON_MEDIA_TYPE},
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- sessions ------------------------------------------------------------------------

    def create_session(
        self,
        params: Any,
        *,
        optimizer: Mapping[str, Any] | str,
        schedule: Mapping[str, Any] | None = None,
        dtype: str | None = None,
        name: str | None = None,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        nonfinite: str | None = None,
        groups: Sequence[Mapping[str, Any]] | None = None,
        accumulate: int | None = None,
    ) -> Session:
        """A new session at t = 0 with θ₀ = `params` (an array, or a mapping of named arrays).

        `optimizer` is a spec (`{"type": "adam", "lr": 1e-3}`) or just a type (`"adam"`);
        settings left as None take the service's defaults. `dtype` defaults to float64 when
        every array is float64, float32 otherwise.
        """
        spec = {"type": optimizer} if isinstance(optimizer, str) else dict(optimizer)
        dtype = dtype or _dtype_of(params)
        tensors = _as_tensors(params, np.dtype(dtype))
        body: dict[str, Any] = {
            "params": _wire_form(tensors, not isinstance(params, Mapping)),
            "dtype": dtype,
            "optimizer": spec,
        }
        optional = {
            "name": name,
            "schedule": schedule,
            "clip_grad_norm": clip_grad_norm,
            "clip_grad_value": clip_grad_value,
            "nonfinite": nonfinite,
            "groups": groups,
            "accumulate": accumulate,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        response = self.request(
            "POST", "/v1/sessions", content=_json_content(body), headers=self._api_key_header()
        )
        return Session._from_created(self, response.json())

    def session(self, session_id: str, token: str) -> Session:
        """A handle on an existing session (reads it once: a wrong id or token fails here)."""
        handle = Session(self, str(session_id), token)
        handle.info()
        return handle

    def import_session(self, export: Mapping[str, Any], *, binary: bool | None = None) -> Session:
        """A new session (new id and token) from an export (`Session.export()` or
        `export_from_torch(...)`), as a safetensors file when `binary` (default: by size)."""
        if self._use_binary(_element_count(export["params"]), binary):
            content, content_type = export_to_safetensors(export), SAFETENSORS_MEDIA_TYPE
        else:
            content, content_type = _json_content(export_to_json(export)), JSON_MEDIA_TYPE
        response = self.request(
            "POST",
            "/v1/sessions/import",
            content=content,
            headers={"Content-Type": content_type, **self._api_key_header()},
        )
        return Session._from_created(self, response.json())

    def preview_schedule(
        self, schedule: Mapping[str, Any], *, steps: int, lr: float = 1.0
    ) -> np.ndarray:
        """η_0 … η_{steps−1} of `schedule` at base rate `lr` (NaN where not finite)."""
        body = {"schedule": dict(schedule), "lr": lr, "steps": steps}
        response = self.request("POST", "/v1/schedules/preview", content=_json_content(body))
        return np.array(response.json()["lr"], dtype=np.float64)

    def ready(self) -> bool:
        """Whether the server answers and its database too (`GET /readyz`), without retrying."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    # -- HTTP ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retried_404_is_gone: bool = False,
    ) -> httpx.Response:
        """Send a request, retrying by the policy; the 2xx answer, or the typed error raised.

        A POST or PATCH carries one `Idempotency-Key` for all its attempts. With
        `retried_404_is_gone` (DELETE), a 404 after a lost answer means the first attempt
        did it, and is returned as the answer.
        """
        all_headers = {"Content-Type": JSON_MEDIA_TYPE} if content is not None else {}
        all_headers.update(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if method in ("POST", "PATCH"):
            all_headers.setdefault("Idempotency-Key", str(uuid.uuid4()))
        request_timeout = (
            httpx.Timeout(timeout, connect=min(5.0, timeout)) if timeout is not None else None
        )
        lost_answer = False
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = self._http.request(
                    method,
                    path,
                    content=content,
                    headers=all_headers,
                    params=params,
                    timeout=request_timeout or self._http.timeout,
                )
            except RETRIED_ERRORS as error:
                if last:
                    raise ConnectionFailed(
                        f"{method} {path}: no answer after {attempt + 1} attempts: {error!r}"
                    ) from error
                lost_answer = True
                time.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRIED_STATUSES and not last:
                time.sleep(self.retry.delay(attempt, _retry_after_seconds(response.headers)))
                continue
            if response.is_success:
                return response
            if response.status_code == 404 and retried_404_is_gone and lost_answer:
                return response
            raise error_for(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _api_key_header(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def _use_binary(self, elements: int, binary: bool | None) -> bool:
        if binary is not None:
            return binary
        return (
            self.binary_supported
            and self.binary_threshold is not None
            and elements >= self.binary_threshold
        )


# ------------------------------------------------------------------------------------------
# A session
# ------------------------------------------------------------------------------------------


class Session:
    """A handle on one session: step it, read it, change it, fork, export or delete it.

    `step_count` is t as last seen; `last_step` what the latest `step()` reported.
    Handles are cheap and hold no state the server does not have.
    """

    def __init__(self, client: Client, session_id: str, token: str) -> None:
        self.client = client
        self.id = session_id
        self.token = token
        self.view: dict[str, Any] = {}
        self.step_count: int | None = None
        self.last_step: StepInfo | None = None

    @classmethod
    def _from_created(cls, client: Client, created: Mapping[str, Any]) -> Session:
        handle = cls(client, str(created["id"]), str(created["token"]))
        handle._remember(created)
        return handle

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, step={self.step_count})"

    # -- what it is ----------------------------------------------------------------------

    @property
    def layout(self) -> str:
        return str(self._view()["layout"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._view()["dtype"])

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(shape) for name, shape in self._view()["shapes"].items()}

    @property
    def size(self) -> int:
        """Elements over all tensors."""
        return sum(math.prod(shape) for shape in self.shapes.values())

    def info(self) -> dict[str, Any]:
        """The session as the service shows it: config with every default, step, shapes, …"""
        view = self._get(f"/v1/sessions/{self.id}").json()
        self._remember(view)
        return view

    # -- stepping ------------------------------------------------------------------------

    def step(
        self,
        gradients: Any,
        loss: float | None = None,
        *,
        partial: bool = False,
        if_match: int | None = None,
        return_params: bool = True,
        wait: bool = False,
        wait_timeout: float | None = None,
        binary: bool | None = None,
    ) -> Params | Pending | None:
        """Post one gradient; the new parameters, in the session's form.

        `partial`: the gradient holds a subset of the tensors. `if_match=t`: apply only if the
        session is at step t (else `PreconditionFailed`). `return_params=False`: the answer
        leaves θ out and this returns None. On an `accumulate: K` session a gradient that does
        not complete the step returns a `Pending` — or, with `wait`, the parameters once the
        step is made (waiting up to `wait_timeout` seconds). `binary` forces safetensors on or
        off (default: by the session's size).
        """
        tensors = _as_tensors(gradients, self.dtype)
        # Partial steps travel as JSON, whose body has a `partial` member for it.
        binary = not partial and self.client._use_binary(self.size, binary)
        response = self._post_step(
            tensors, isinstance(gradients, Mapping), loss, partial, if_match, return_params, binary
        )
        if response.status_code == 202:
            pending = self._pending(response.json())
            return pending.wait(wait_timeout) if wait else pending
        if _media_type(response) == SAFETENSORS_MEDIA_TYPE:
            arrays, metadata = _read_safetensors(response.content)
            self._remember_step(_step_info_from_metadata(metadata))
            return self._params_in_order(arrays)
        answer = response.json()
        self._remember_step(
            StepInfo(
                step=answer["step"],
                lr=answer["lr"],
                grad_norm=answer.get("grad_norm"),
                update_norm=answer.get("update_norm"),
                skipped=answer.get("skipped"),
            )
        )
        if not return_params:
            return None
        return _from_wire(answer["params"], self.dtype)

    def _post_step(
        self,
        tensors: dict[str, np.ndarray],
        named: bool,
        loss: float | None,
        partial: bool,
        if_match: int | None,
        return_params: bool,
        binary: bool,
    ) -> httpx.Response:
        """POST …/step: a safetensors file (`loss` in its metadata) when `binary`, answered in
        safetensors unless θ is left out; JSON otherwise, or when the server refuses the file."""
        path = f"/v1/sessions/{self.id}/step"
        headers = {} if if_match is None else {"If-Match": f'"{int(if_match)}"'}
        query = {} if return_params else {"return": "none"}
        if binary:
            # Metadata values are JSON text: "0.42", and NaN as Python's json writes it.
            metadata = {} if loss is None else {"loss": json.dumps(float(loss))}
            binary_headers = {**headers, "Content-Type": SAFETENSORS_MEDIA_TYPE}
            if return_params:
                binary_headers["Accept"] = SAFETENSORS_MEDIA_TYPE
            try:
                return self._post(
                    path,
                    tensors_to_safetensors(tensors, metadata),
                    headers=binary_headers,
                    params=query,
                )
            except UnsupportedMediaType:
                self.client.binary_supported = False  # an older server: JSON from now on
        body: dict[str, Any] = {"gradients": _wire_form(tensors, not named)}
        if loss is not None:
            body["loss"] = float(loss)
        if partial:
            body["partial"] = True
        return self._post(path, _json_content(body), headers=headers, params=query)

    def _pending(self, answer: Mapping[str, Any]) -> Pending:
        self.step_count = int(answer["step"])
        return Pending(self, int(answer["step"]), int(answer["received"]), int(answer["missing"]))

    # -- reading -------------------------------------------------------------------------

    def params(
        self,
        *,
        wait_for_step: int | None = None,
        timeout: float | None = None,
        binary: bool | None = None,
    ) -> Params:
        """θ_t in the session's form. With `wait_for_step=t`, waits (up to `timeout` seconds,
        the server's default if None) until the session has reached step t; a wait that runs
        out raises `StepWaitTimeout`."""
        query: dict[str, Any] = {}
        if wait_for_step is not None:
            query["wait_for_step"] = int(wait_for_step)
        if timeout is not None:
            query["timeout"] = timeout
        # The read timeout must outlast the server's wait.
        request_timeout = None if wait_for_step is None else self.client.timeout + (timeout or 0)
        accept = SAFETENSORS_MEDIA_TYPE if self.client._use_binary(self.size, binary) else None
        response = self._get(
            f"/v1/sessions/{self.id}/params", params=query, accept=accept, timeout=request_timeout
        )
        if _media_type(response) == SAFETENSORS_MEDIA_TYPE:
            arrays, metadata = _read_safetensors(response.content)
            if "step" in metadata:
                self.step_count = int(metadata["step"])
            return self._params_in_order(arrays)
        answer = response.json()
        self.step_count = int(answer["step"])
        return _from_wire(answer["params"], self.dtype)

    def history(self, *, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The history records with `seq > after`, oldest first (every one, or `limit`): steps
        `{seq, kind: "step", step, lr, loss, grad_norm, update_norm, skipped, at, duration_ms}`
        and changes `{seq, kind: "change", step, at, changes}`. Reads page after page."""
        records: list[dict[str, Any]] = []
        cursor: int | None = after
        while cursor is not None and (limit is None or len(records) < limit):
            wanted = HISTORY_PAGE_LIMIT if limit is None else limit - len(records)
            page = self._get(
                f"/v1/sessions/{self.id}/history",
                params={"after": cursor, "limit": min(wanted, HISTORY_PAGE_LIMIT)},
            ).json()
            records.extend(page["records"])
            cursor = page["next"]
        return records

    def export(self, *, binary: bool | None = None) -> dict[str, Any]:
        """The full state (`GET …/state`): config, t, θ and every optimizer slot, as numpy.

        The dict is the `optaas-state/1` export format with arrays in place of nested lists;
        `Client.import_session` and `torch_state_dict` take it.
        """
        accept = SAFETENSORS_MEDIA_TYPE if self.client._use_binary(self.size, binary) else None
        response = self._get(f"/v1/sessions/{self.id}/state", accept=accept)
        if _media_type(response) == SAFETENSORS_MEDIA_TYPE:
            return export_from_safetensors(response.content)
        return export_from_json(response.json())

    # -- changing ------------------------------------------------------------------------

    def patch(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Change hyper-parameters or the schedule mid-run; t and the state are kept.

        `session.patch(optimizer={"lr": 1e-4})`, `session.patch(schedule={"type": "cosine",
        "total_steps": 1000})`: the fields given (`changes` and keywords together) are sent as
        they are; the answer, the session's new view, is returned.
        """
        body = {**(changes or {}), **fields}
        response = self.client.request(
            "PATCH", f"/v1/sessions/{self.id}", token=self.token, content=_json_content(body)
        )
        view = response.json()
        self._remember(view)
        return view

    def fork(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> Session:
        """A new session (new id and token) with this one's θ, state and t; optional overrides
        as in `patch`."""
        body = {**(changes or {}), **fields}
        response = self._post(f"/v1/sessions/{self.id}/fork", _json_content(body))
        return Session._from_created(self.client, response.json())

    def delete(self) -> None:
        """Delete the session and everything stored for it."""
        self.client.request(
            "DELETE", f"/v1/sessions/{self.id}", token=self.token, retried_404_is_gone=True
        )

    # -- internals -----------------------------------------------------------------------

    def _get(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        accept: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {"Accept": f"{accept}, {JSON_MEDIA_TYPE};q=0.5"} if accept else None
        return self.client.request(
            "GET", path, token=self.token, params=params, headers=headers, timeout=timeout
        )

    def _post(
        self,
        path: str,
        content: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        return self.client.request(
            "POST", path, token=self.token, content=content, headers=headers, params=params
        )

    def _view(self) -> dict[str, Any]:
        if not self.view:
            self.info()
        return self.view

    def _remember(self, view: Mapping[str, Any]) -> None:
        self.view = {key: value for key, value in view.items() if key != "token"}
        self.step_count = int(view["step"])

    def _remember_step(self, info: StepInfo) -> None:
        self.last_step = info
        self.step_count = info.step

    def _params_in_order(self, arrays: Mapping[str, np.ndarray]) -> Params:
        """A safetensors answer's tensors in the session's order and form and dtype."""
        ordered = {name: arrays[name].astype(self.dtype, copy=False) for name in self.shapes}
        return _in_form(ordered, self.layout)


def _step_info_from_metadata(metadata: Mapping[str, str]) -> StepInfo:
    """A binary step answer's numbers: `__metadata__` values are JSON text (`"1"`, `"0.001"`,
    `"null"`, `"true"`); non-finite numbers count as absent, as JSON answers write them."""

    def read(key: str) -> Any:
        value = json.loads(metadata[key]) if key in metadata else None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return StepInfo(
        step=int(read("step")),
        lr=read("lr"),
        grad_norm=read("grad_norm"),
        update_norm=read("update_norm"),
        skipped=read("skipped"),
    )


# ------------------------------------------------------------------------------------------
# Exports: JSON and safetensors ↔ numpy (the `optaas-state/1` format)
# ------------------------------------------------------------------------------------------

STEP_SLOT = "step"
PARAM_PREFIX = "param/"
_METADATA_JSON_FIELDS = ("name", "tensors", "config", "schedule_state", "last_loss")


def export_from_json(document: Mapping[str, Any]) -> dict[str, Any]:
    """An export as the service writes it in JSON, with its tensors as numpy arrays."""
    _check_format(document.get("format"))
    dtype = np.dtype(document["dtype"])
    export = dict(document)
    export["params"] = _from_wire(document["params"], dtype)
    export["state"] = {
        tensor: {
            slot: int(value) if slot == STEP_SLOT else np.array(value, dtype=dtype)
            for slot, value in slots.items()
        }
        for tensor, slots in document["state"].items()
    }
    return export


def export_to_json(export: Mapping[str, Any]) -> dict[str, Any]:
    """An export (numpy or plain lists) as the JSON document `POST /v1/sessions/import` takes."""
    document = dict(export)
    params = export["params"]
    if isinstance(params, Mapping):
        document["params"] = {name: np.asarray(value).tolist() for name, value in params.items()}
    else:
        document["params"] = np.asarray(params).tolist()
    document["state"] = {
        tensor: {
            slot: int(value) if slot == STEP_SLOT else np.asarray(value).tolist()
            for slot, value in slots.items()
        }
        for tensor, slots in export["state"].items()
    }
    return document


def export_from_safetensors(body: bytes) -> dict[str, Any]:
    """An export as the service writes it in safetensors (`param/<t>`, `<slot>/<t>`, metadata)."""
    arrays, metadata = _read_safetensors(body)
    _check_format(metadata.get("format"))
    export: dict[str, Any] = {
        "format": metadata["format"],
        "id": metadata.get("id"),
        "dtype": metadata["dtype"],
        "layout": metadata["layout"],
        "step": int(metadata["step"]),
    }
    for field in _METADATA_JSON_FIELDS:
        export[field] = json.loads(metadata[field]) if field in metadata else None
    dtype = np.dtype(export["dtype"])
    names = export["tensors"]
    params = {name: arrays[PARAM_PREFIX + name].astype(dtype, copy=False) for name in names}
    export["params"] = _in_form(params, export["layout"])
    state: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, array in arrays.items():
        slot, _, tensor = key.partition("/")
        if slot == "param":
            continue
        state.setdefault(tensor, {})[slot] = int(array) if slot == STEP_SLOT else array
    export["state"] = state
    return export


def export_to_safetensors(export: Mapping[str, Any]) -> bytes:
    """An export (numpy or plain lists) as the safetensors file `POST /v1/sessions/import` takes."""
    dtype = np.dtype(export["dtype"])
    params = export["params"]
    tensors = _as_tensors(params, dtype)
    arrays = {PARAM_PREFIX + name: array for name, array in tensors.items()}
    for tensor, slots in export["state"].items():
        for slot, value in slots.items():
            arrays[f"{slot}/{tensor}"] = (
                np.asarray(int(value), dtype=np.int64)
                if slot == STEP_SLOT
                else np.asarray(value).astype(dtype)
            )
    metadata = {
        "format": EXPORT_FORMAT,
        "dtype": dtype.name,
        "layout": export.get("layout") or ("named" if isinstance(params, Mapping) else "single"),
        "step": str(int(export["step"])),
        "name": json.dumps(export.get("name")),
        "tensors": json.dumps(export.get("tensors") or list(tensors)),
        "config": json.dumps(export["config"]),
        "schedule_state": json.dumps(export.get("schedule_state") or {}),
        "last_loss": json.dumps(export.get("last_loss")),
    }
    if export.get("id") is not None:
        metadata["id"] = str(export["id"])
    return tensors_to_safetensors(arrays, metadata)


def _check_format(value: object) -> None:
    if value != EXPORT_FORMAT:
        raise ProtocolError(f"not an {EXPORT_FORMAT} export (format: {value!r})")


# ------------------------------------------------------------------------------------------
# torch interop: exports ↔ torch.optim state dicts (torch imported here only)
# ------------------------------------------------------------------------------------------

TORCH_OPTIMIZER_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
    "adadelta": "Adadelta",
}
"""optaas optimizer type → torch.optim class; the hyper-parameters have torch's names."""

NOT_IN_TORCH = {"adagrad": {"accumulator": "sum"}, "rmsprop": {"init": "zero"}}
"""Settings of the lecture's forms, which torch does not have: only torch's value converts."""

NamedParameters = Any
"""`model.named_parameters()` (pairs of name and tensor), a mapping name → tensor, or a module."""


def _named_parameters(named: NamedParameters) -> list[tuple[str, torch.Tensor]]:
    if hasattr(named, "named_parameters"):
        named = named.named_parameters()
    if isinstance(named, Mapping):
        named = named.items()
    return [(str(name), tensor) for name, tensor in named]


def _core_optimizer(export: Mapping[str, Any], names: Sequence[str]) -> Any:
    """The optimizer core over the export's config: groups resolved, defaults filled in."""
    from app.optim import Optimizer  # numpy only; the same rules the service applies

    config = export["config"]
    core = {key: config[key] for key in (*CORE_CONFIG_FIELDS, "groups") if key in config}
    return Optimizer(core, list(names))


def _torch_class(optimizer_type: str) -> type[torch.optim.Optimizer]:
    import torch

    if optimizer_type not in TORCH_OPTIMIZER_NAMES:
        raise ValueError(f"torch.optim has no {optimizer_type!r} optimizer")
    return getattr(torch.optim, TORCH_OPTIMIZER_NAMES[optimizer_type])


def _torch_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """A group's optaas settings as torch's keyword arguments (the lecture's forms refused)."""
    kind = hyperparameters["type"]
    for field, torch_value in NOT_IN_TORCH.get(kind, {}).items():
        if hyperparameters.get(field, torch_value) != torch_value:
            raise ValueError(
                f"{kind} with {field}={hyperparameters[field]!r} is not a torch.optim optimizer "
                f"(torch's is {field}={torch_value!r})"
            )
    exempt = {"type", *NOT_IN_TORCH.get(kind, {})}
    converted = {key: value for key, value in hyperparameters.items() if key not in exempt}
    if "betas" in converted:
        converted["betas"] = tuple(converted["betas"])
    return converted


def _torch_groups(
    export: Mapping[str, Any], names: Sequence[str]
) -> list[tuple[list[str], dict[str, Any]]]:
    """torch param groups for the export: (tensor names, torch settings) per optaas group that
    holds tensors — the base group first, then `groups` in order — with `lr` = η_t of the
    group at the export's step (and `initial_lr`, the base rate, under a schedule)."""
    core = _core_optimizer(export, names)
    step, schedule_state = int(export["step"]), export.get("schedule_state") or {}
    scheduled = (export["config"].get("schedule") or {"type": "constant"})["type"] != "constant"
    groups = []
    for group in core.groups:
        members = [name for name in names if core.group_of[name] is group]
        if not members:
            continue
        settings = _torch_hyperparameters(group.hyperparameters)
        settings["lr"] = core.schedule.rate(step, group.lr, schedule_state)
        if scheduled:
            settings["initial_lr"] = group.lr
        groups.append((members, settings))
    return groups


def torch_param_groups(
    export: Mapping[str, Any], named_parameters: NamedParameters
) -> list[dict[str, Any]]:
    """Param groups for `torch.optim.<Type>(groups)` matching `torch_state_dict(export, …)`:
    one per optaas group that holds tensors (the base group first), with the export's settings."""
    tensors = dict(_named_parameters(named_parameters))
    names = _checked_names(export, list(tensors))
    return [
        {"params": [tensors[name] for name in members], "param_names": members, **settings}
        for members, settings in _torch_groups(export, names)
    ]


def torch_state_dict(
    export: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The export as the `state_dict()` of a torch optimizer of its type, for `load_state_dict`.

    `names` give the tensors' order in the torch optimizer (default: the
    export's order); the param groups are those of `torch_param_groups`, so an optimizer built
    from them loads this. State is indexed as torch indexes it: through the groups in order.
    Per tensor: every slot under torch's name and `step` as a 0-d float tensor; a tensor never
    stepped has no state (torch's fresh state), except under Adagrad, which torch initialises
    at once. Slots are torch tensors in the export's dtype.
    """
    import torch

    order = _checked_names(export, list(export["tensors"] if names is None else names))
    optimizer_type = export["config"]["optimizer"]["type"]
    _torch_class(optimizer_type)
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    state: dict[int, dict[str, Any]] = {}
    param_groups = []
    index = 0
    for members, settings in _torch_groups(export, order):
        indices = []
        for name in members:
            slots = export["state"][name]
            converted = _torch_slots(slots, optimizer_type, step_dtype)
            if converted and (int(slots[STEP_SLOT]) > 0 or optimizer_type == "adagrad"):
                state[index] = converted
            indices.append(index)
            index += 1
        param_groups.append({**settings, "params": indices, "param_names": members})
    return {"state": state, "param_groups": param_groups}


def _torch_slots(slots: Mapping[str, Any], optimizer_type: str, step_dtype: Any) -> dict:
    import torch

    converted = {
        slot: torch.from_numpy(np.array(value, copy=True))
        for slot, value in slots.items()
        if slot != STEP_SLOT
    }
    if optimizer_type != "sgd":  # torch's SGD keeps no step count
        converted[STEP_SLOT] = torch.tensor(float(slots[STEP_SLOT]), dtype=step_dtype)
    return converted


def torch_optimizer(
    export: Mapping[str, Any], named_parameters: NamedParameters, *, load_params: bool = True
) -> torch.optim.Optimizer:
    """A torch optimizer that continues the exported run: its type and settings, its state
    loaded, over the given parameters — into which θ is copied first (`load_params`)."""
    import torch

    tensors = dict(_named_parameters(named_parameters))
    names = _checked_names(export, list(tensors))
    if load_params:
        params = _as_tensors(export["params"], np.dtype(export["dtype"]))
        with torch.no_grad():
            for name in names:
                tensors[name].copy_(torch.from_numpy(np.array(params[name], copy=True)))
    optimizer_class = _torch_class(export["config"]["optimizer"]["type"])
    optimizer = optimizer_class(torch_param_groups(export, tensors))
    optimizer.load_state_dict(torch_state_dict(export, names))
    return optimizer


def _checked_names(export: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    expected = list(export["tensors"])
    if sorted(names) != sorted(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        raise ValueError(
            f"the parameters are not the export's tensors (missing {missing}, extra {extra})"
        )
    return list(names)


def export_from_torch(
    optimizer: torch.optim.Optimizer,
    named_parameters: NamedParameters,
    *,
    step: int | None = None,
    name: str | None = None,
    schedule: Mapping[str, Any] | None = None,
    clip_grad_norm: float | None = None,
) -> dict[str, Any]:
    """An `optaas-state/1` export (for `Client.import_session`) of a torch optimizer and the
    parameters it optimizes, named as in `named_parameters` and in that order.

    The settings are the first param group's; a later group that differs becomes an optaas
    group matching its tensors by exact name. The session's `lr` is each group's `lr` (with a
    `schedule`: its `initial_lr`, if a torch scheduler left one). t is the largest per-tensor
    `step` — torch's SGD counts none, so pass `step` for it (0 when SGD holds no state, as with
    momentum 0). A tensor without torch state starts as the service starts it.
    """
    named = _named_parameters(named_parameters)
    names = [tensor_name for tensor_name, _ in named]
    name_of = {id(tensor): tensor_name for tensor_name, tensor in named}
    optimizer_type = _optaas_type(optimizer)
    dtype = _common_dtype(tensor for _, tensor in named)
    params = {
        tensor_name: tensor.detach().cpu().numpy().astype(dtype, copy=True)
        for tensor_name, tensor in named
    }

    _check_same_tensors(optimizer, name_of)
    settings_per_group = []
    for group in optimizer.param_groups:
        members = [name_of[id(tensor)] for tensor in group["params"]]
        settings_per_group.append((members, _optaas_settings(optimizer_type, group, schedule)))
    base = settings_per_group[0][1]
    groups = []
    for members, settings in settings_per_group[1:]:
        overrides = {key: value for key, value in settings.items() if base.get(key) != value}
        if members and overrides:
            groups.append({"match": [glob.escape(member) for member in members], **overrides})

    torch_state = {
        name_of[id(tensor)]: state
        for tensor, state in optimizer.state.items()
        if id(tensor) in name_of and state
    }
    t = step if step is not None else _torch_step_count(optimizer_type, torch_state)
    config = {
        "optimizer": base,
        "schedule": dict(schedule) if schedule is not None else {"type": "constant"},
        "clip_grad_norm": clip_grad_norm,
        "clip_grad_value": None,
        "nonfinite": "reject",
        "groups": groups or None,
        "accumulate": 1,
    }
    export = {
        "format": EXPORT_FORMAT,
        "id": None,
        "name": name,
        "dtype": np.dtype(dtype).name,
        "layout": "named",
        "tensors": names,
        "config": config,
        "step": t,
        "schedule_state": {},
        "last_loss": None,
        "params": params,
    }
    export["state"] = _optaas_state(export, torch_state, t)
    return export


def _check_same_tensors(optimizer: torch.optim.Optimizer, name_of: Mapping[int, str]) -> None:
    """The named parameters must be exactly the tensors the optimizer optimizes."""
    optimized = {id(tensor) for group in optimizer.param_groups for tensor in group["params"]}
    unnamed = len(optimized - set(name_of))
    idle = sorted(name for key, name in name_of.items() if key not in optimized)
    if unnamed or idle:
        raise ValueError(
            f"the named parameters must be the optimizer's: {unnamed} of its tensors have no "
            f"name here, and it does not optimize {idle}"
        )


def _optaas_type(optimizer: torch.optim.Optimizer) -> str:
    by_class_name = {torch_name: kind for kind, torch_name in TORCH_OPTIMIZER_NAMES.items()}
    for cls in type(optimizer).__mro__:  # AdamW before Adam, should one derive from the other
        if cls.__module__.startswith("torch.optim") and cls.__name__ in by_class_name:
            return by_class_name[cls.__name__]
    raise ValueError(f"{type(optimizer).__name__} has no optaas counterpart")


def _common_dtype(tensors: Iterable[torch.Tensor]) -> np.dtype:
    kinds = {str(tensor.dtype).removeprefix("torch.") for tensor in tensors}
    if len(kinds) != 1 or not kinds <= {"float32", "float64"}:
        raise ValueError(f"the parameters must all be float32 or all float64, not {kinds}")
    return np.dtype(kinds.pop())


def _optaas_settings(
    optimizer_type: str, group: Mapping[str, Any], schedule: Mapping[str, Any] | None
) -> dict[str, Any]:
    from app.optim import optimizer_defaults

    settings: dict[str, Any] = {"type": optimizer_type}
    for field in optimizer_defaults(optimizer_type):
        if field in NOT_IN_TORCH.get(optimizer_type, {}) or field not in group:
            continue
        value = group[field]
        settings[field] = list(value) if isinstance(value, tuple) else _plain(value)
    if schedule is not None and "initial_lr" in group:
        settings["lr"] = _plain(group["initial_lr"])
    return settings


def _plain(value: Any) -> Any:
    """torch scalars (a tensor `lr`) as Python numbers."""
    return value.item() if hasattr(value, "item") else value


def _torch_step_count(optimizer_type: str, torch_state: Mapping[str, Mapping[str, Any]]) -> int:
    steps = [int(_plain(state["step"])) for state in torch_state.values() if "step" in state]
    if steps:
        return max(steps)
    if torch_state:
        raise ValueError(f"torch's {optimizer_type} keeps no step count: pass step=")
    return 0


def _optaas_state(
    export: Mapping[str, Any], torch_state: Mapping[str, Mapping[str, Any]], t: int
) -> dict[str, dict[str, Any]]:
    """Per tensor: the slots the service's chain uses, from torch's state where there is some,
    as the service starts them where there is none."""
    dtype = np.dtype(export["dtype"])
    fresh = _core_optimizer(export, export["tensors"]).init(export["params"]).slots
    state: dict[str, dict[str, Any]] = {}
    for name, slots in fresh.items():
        if name not in torch_state:
            state[name] = {slot: _fresh_value(slot, value) for slot, value in slots.items()}
            continue
        ours = torch_state[name]
        expected = set(slots) - {STEP_SLOT}
        if set(ours) - {STEP_SLOT} != expected:
            raise ValueError(
                f"torch's state of {name!r} has slots {sorted(ours)}; the service's "
                f"{export['config']['optimizer']['type']} has {sorted(expected)}"
            )
        state[name] = {
            slot: ours[slot].detach().cpu().numpy().astype(dtype, copy=True) for slot in expected
        }
        state[name][STEP_SLOT] = int(_plain(ours[STEP_SLOT])) if STEP_SLOT in ours else t
    return state


def _fresh_value(slot: str, value: np.ndarray) -> Any:
    return int(value) if slot == STEP_SLOT else value


# ------------------------------------------------------------------------------------------
# RemoteOptimizer: a torch.optim.Optimizer whose state lives in a session
# ------------------------------------------------------------------------------------------

REMOTE_STATE_FORMAT = "optaas-remote-optimizer/1"


def __getattr__(name: str) -> Any:
    # `RemoteOptimizer` subclasses torch.optim.Optimizer, so it is built on first use:
    # importing this module must not import torch.
    if name == "RemoteOptimizer":
        return _remote_optimizer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _remote_optimizer_class() -> type:
    import torch

    class RemoteOptimizer(torch.optim.Optimizer):
        """A torch optimizer whose θ, state and schedule live in an optaas session.

        `step()` posts the parameters' gradients (tensors whose `grad` is None are left out,
        as a partial step) and copies the parameters the service answers into them, in place.
        `zero_grad()` is torch's. Pass a module, `model.named_parameters()` or tensors (named
        "0", "1", …), and either the settings of a new session (`client`, `optimizer`, …) or
        an existing `session`, whose θ is then copied into the parameters.

        `param_groups[0]["lr"]` is the rate of the latest step (η_0 before any); set it (by
        hand or with a torch LR scheduler) on a session with a constant schedule and the next
        `step()` first changes the session's `lr` to it (PATCH). `state_dict()` is the
        session's export (tensors as torch tensors, so `torch.save`/`torch.load` keep it);
        `load_state_dict()` imports it as a new session — the old one is left as it is — and
        copies its θ into the parameters.
        """

        def __init__(
            self,
            params: NamedParameters,
            *,
            client: Client | None = None,
            session: Session | None = None,
            optimizer: Mapping[str, Any] | str | None = None,
            wait_timeout: float | None = None,
            **session_settings: Any,
        ) -> None:
            named = _named_or_numbered(params)
            self._accepting_groups = True
            super().__init__(named, {})
            self._accepting_groups = False
            self.names = [tensor_name for tensor_name, _ in named]
            self.wait_timeout = wait_timeout
            if session is None:
                if client is None or optimizer is None:
                    raise TypeError("give a session, or a client and an optimizer spec")
                session = client.create_session(
                    self._numpy_params(), optimizer=optimizer, **session_settings
                )
            elif session_settings or optimizer is not None:
                raise TypeError("an existing session keeps its settings: give them to patch()")
            self._attach(session)

        # -- torch's interface ---------------------------------------------------------

        def add_param_group(self, param_group: dict[str, Any]) -> None:
            if not getattr(self, "_accepting_groups", False):
                raise NotImplementedError("a session's tensors are fixed when it is created")
            super().add_param_group(param_group)

        @torch.no_grad()
        def step(
            self, closure: Callable[[], Any] | None = None, *, loss: float | None = None
        ) -> Any:
            """Post the gradients (with `loss`, or the closure's, for the history and
            `reduce_on_plateau`) and write the new parameters into the model."""
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            grads = {
                tensor_name: _numpy(tensor.grad)
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True)
                if tensor.grad is not None
            }
            if not grads:
                return loss
            self._apply_lr_change()
            new_params = self.session.step(
                grads,
                loss=None if loss is None else float(_plain(loss)),
                partial=len(grads) < len(self.names),
                wait=True,
                wait_timeout=self.wait_timeout,
            )
            self._write(new_params)
            if self.session.last_step is not None and self.session.last_step.lr is not None:
                self._show_lr(self.session.last_step.lr)
            return loss

        def state_dict(self) -> dict[str, Any]:
            export = self.session.export()
            return {"format": REMOTE_STATE_FORMAT, "export": _export_as_torch(export)}

        def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
            if state_dict.get("format") != REMOTE_STATE_FORMAT:
                raise ValueError(f"not a RemoteOptimizer state dict ({REMOTE_STATE_FORMAT})")
            export = _export_from_torch_tensors(state_dict["export"])
            _checked_names(export, self.names)
            self._attach(self.session.client.import_session(export))

        # -- internals -----------------------------------------------------------------

        def _tensors(self) -> list[torch.Tensor]:
            return list(self.param_groups[0]["params"])

        def _numpy_params(self) -> dict[str, np.ndarray]:
            return {
                tensor_name: _numpy(tensor)
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True)
            }

        def _attach(self, session: Session) -> None:
            shapes = {
                tensor_name: tuple(tensor.shape)
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True)
            }
            if session.layout != "named" or session.shapes != shapes:
                raise ValueError(
                    f"session {session.id} holds {session.shapes}, the parameters are {shapes}"
                )
            self.session = session
            self._write(session.params())
            self._show_lr(session.view.get("lr"))

        def _write(self, new_params: Params | None) -> None:
            if not isinstance(new_params, Mapping):
                raise ProtocolError("the session did not answer with named parameters")
            with torch.no_grad():
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True):
                    tensor.copy_(torch.from_numpy(np.array(new_params[tensor_name], copy=True)))

        def _show_lr(self, lr: float | None) -> None:
            self._shown_lr = lr
            self.param_groups[0]["lr"] = lr

        def _apply_lr_change(self) -> None:
            """A new `lr` in the param group (a torch LR scheduler's, say) becomes the
            session's: torch's schedulers set the rate outright, which is the session's base
            rate only under a constant schedule."""
            wanted = self.param_groups[0].get("lr")
            if wanted is None or wanted == self._shown_lr:
                return
            schedule = self.session.view.get("schedule") or {"type": "constant"}
            if schedule["type"] != "constant":
                raise ValueError(
                    "param_groups[0]['lr'] was changed, but this session's rate follows its "
                    f"{schedule['type']!r} schedule; change it with session.patch(...)"
                )
            self.session.patch(optimizer={"lr": float(wanted)})
            self._show_lr(float(wanted))

    RemoteOptimizer.__module__ = __name__
    RemoteOptimizer.__qualname__ = "RemoteOptimizer"
    return RemoteOptimizer


def _named_or_numbered(params: NamedParameters) -> list[tuple[str, torch.Tensor]]:
    """Named parameters as given, or plain tensors named by position ("0", "1", …)."""
    if hasattr(params, "named_parameters") or isinstance(params, Mapping):
        return _named_parameters(params)
    items = list(params)
    if items and isinstance(items[0], tuple):
        return [(str(name), tensor) for name, tensor in items]
    if items and isinstance(items[0], dict):
        raise TypeError("RemoteOptimizer takes no torch param groups: use the session's groups=")
    return [(str(index), tensor) for index, tensor in enumerate(items)]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.is_sparse:
        tensor = tensor.to_dense()
    return tensor.detach().cpu().numpy()


def _export_as_torch(export: Mapping[str, Any]) -> dict[str, Any]:
    """An export with torch tensors for arrays: `torch.load(weights_only=True)` reads it."""
    import torch

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.array(value, copy=True))
        if isinstance(value, Mapping):
            return {key: convert(item) for key, item in value.items()}
        return value

    return {key: convert(value) for key, value in export.items()}


def _export_from_torch_tensors(export: Mapping[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if hasattr(value, "numpy") and hasattr(value, "detach"):
            return value.detach().cpu().numpy()
        if isinstance(value, Mapping):
            return {key: convert(item) for key, item in value.items()}
        return value

    return {key: convert(value) for key, value in export.items()}
