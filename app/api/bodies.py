"""Request bodies: the size limit, the content type, and JSON parsed off the event loop.

Bodies are read as bytes and parsed by orjson in the thread pool, then validated by pydantic
with tensors left as plain lists (`app.tensors` turns them into numpy): no per-element validation
of big arrays, and no JSON parsing on the event loop.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import optaas_problem, validation_problem
from app.errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType
from app.tensors import SAFETENSORS_MEDIA_TYPE

Model = TypeVar("Model", bound=BaseModel)

JSON_MEDIA_TYPE = "application/json"

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BodyLimitMiddleware:
    """Refuse bodies over `max_body_bytes` with 413, without reading more than the limit.

    A declared Content-Length over the limit is answered at once, before any body is read; a
    body streamed without one is cut off as soon as it passes the limit. (Starlette's own
    `RequestBodyLimitMiddleware` answers in plain text where the app has not read the body;
    every error here is problem+json.)
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await optaas_problem(self._too_large())(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, receive_within_limit, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is larger than this server's limit of {self.max_body_bytes} bytes",
            max_body_bytes=self.max_body_bytes,
        )


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` and `application/<anything>+json`; an absent type is taken as JSON."""
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def media_type_of(content_type: str | None) -> str:
    """`type/subtype` of a Content-Type value, lower case, parameters dropped."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class TensorBody:
    """The raw body of a request that may carry tensors as JSON or as a safetensors file."""

    data: bytes
    binary: bool
    """True for `application/vnd.safetensors`, False for JSON."""


async def tensor_body(request: Request) -> TensorBody:
    """The raw body of a JSON or safetensors request (415 for any other content type)."""
    content_type = request.headers.get("content-type")
    binary = media_type_of(content_type) == SAFETENSORS_MEDIA_TYPE
    if not binary and not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"this endpoint takes {JSON_MEDIA_TYPE} or {SAFETENSORS_MEDIA_TYPE}, "
            f"not {content_type}",
            supported=[JSON_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE],
        )
    return TensorBody(await request.body(), binary)


def prefers_safetensors(accept: str | None) -> bool:
    """Whether `Accept` ranks `application/vnd.safetensors` above JSON (RFC 9110 §12.5.1).

    JSON is the default: without `Accept`, with `*/*`, or when both rank the same, the answer
    is JSON. A media range with `q=0` is refused, never chosen.
    """
    safetensors_q = _quality(accept, SAFETENSORS_MEDIA_TYPE)
    return safetensors_q > 0 and safetensors_q > _quality(accept, JSON_MEDIA_TYPE)


def _quality(accept: str | None, media_type: str) -> float:
    """The q-value `accept` gives `media_type`: its most specific matching range wins."""
    if not accept:
        return 1.0 if media_type == JSON_MEDIA_TYPE else 0.0
    kind = media_type.split("/", 1)[0]
    best_specificity, best_q = -1, 0.0
    for item in accept.split(","):
        range_, *parameters = (part.strip() for part in item.split(";"))
        range_ = range_.lower()
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(range_)
        if specificity is None or specificity <= best_specificity:
            continue
        best_specificity, best_q = specificity, _q_parameter(parameters)
    return best_q


def _q_parameter(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(1.0, max(0.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


async def json_body(request: Request) -> bytes:
    """The raw body of a JSON request (415 for any other content type)."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"this endpoint takes {JSON_MEDIA_TYPE}, not {content_type}",
            supported=[JSON_MEDIA_TYPE],
        )
    return await request.body()


def load_json(body: bytes) -> Any:
    """The JSON document in `body` (400 if there is none).

    Strict JSON (orjson) first. What orjson refuses is tried once more with the standard
    library, which also reads the non-finite literals that Python's `json.dumps` writes (`NaN`,
    `Infinity`, `-Infinity`) and numbers beyond float64's range (as ±Inf): so a NaN gradient or
    loss reaches the session's `nonfinite` policy instead of failing as malformed. Bodies with a
    surrogate escape (`\\ud800`) are left to orjson's verdict: the standard library would let a
    lone surrogate through, which no database can store.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        strict_error = error
    if _SURROGATE_ESCAPE.search(body) is None:
        try:
            return json.loads(body.decode("utf-8"), parse_int=_int_as_orjson_reads_it)
        except (ValueError, RecursionError):
            pass
    raise MalformedBody(f"the body is not valid JSON: {strict_error}") from None


def _int_as_orjson_reads_it(text: str) -> int | float:
    """Integers beyond 64 bits become floats, as orjson reads them."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)


def parse_json(body: bytes, model: type[Model]) -> Model:
    """Blocking: parse `body` with orjson and validate it as `model` (400 / 422 on failure)."""
    return validate(load_json(body), model, prefix=("body",))


def validate(document: Any, model: type[Model], *, prefix: tuple[str, ...]) -> Model:
    """`document` validated as `model`; a 422 listing every problem under `prefix` otherwise."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise validation_problem(list(error.errors()), prefix=prefix) from None
