"""Request bodies: the size limits, the content type, and parsing off the event loop.

A body is read once into a `bytearray` (`read_body`: every dependency gets the same buffer, and
safetensors tensors can be used in place, as writable views of it). It grows as the bytes
arrive — a declared `Content-Length` reserves nothing —, each piece awaited at most
`OPTAAS_BODY_TIMEOUT_SECONDS` (408 after), within the limit the request was admitted with
(`BodyLimits`, set by `app.api.admission` once the credential is checked; 413 above). It is
parsed in the thread pool, then validated by pydantic with tensors left alone (`app.tensors`
casts them to the session's dtype): no per-element validation of big arrays, and no parsing on
the event loop.

JSON: large bodies with tensors are parsed by simdjson, whose arrays of numbers go straight to
numpy (`as_buffer`), without a Python float per element; anything that path does not take as
it is (non-finite literals, ragged or boolean arrays, strings among numbers, …) is parsed again
the standard way, so both paths accept and refuse the same documents — up to
`app.tensors.GENERAL_JSON_MAX_VALUES` values: the standard way builds a Python object per
value (some 60 bytes each), so a larger document it would have to take is refused (413,
pointing to safetensors) before it is parsed. Safetensors: the file's tensors fill the
model's tensor field, and its `__metadata__` the other fields, each value read as JSON text
(`"loss": "0.42"`, `"partial": "true"`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
import simdjson
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import optaas_problem, validation_problem
from app.errors import (
    ClientClosedRequest,
    InvalidContent,
    MalformedBody,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from app.tensors import (
    ROWS_FIELDS,
    SAFETENSORS_MEDIA_TYPE,
    NamedTensors,
    require_few_values,
    tensors_from_safetensors,
)

Model = TypeVar("Model", bound=BaseModel)

JSON_MEDIA_TYPE = "application/json"

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


_ADMITTED_BEYOND_DEFAULTS = re.compile(r"/v1/sessions/(import|[^/]+/step)")
"""Paths whose bodies may pass `OPTAAS_MAX_BODY_BYTES`: a step's is bounded by its session's
size, an import's by `app.api.admission.import_limits`, each enforced by `read_body`."""


class BodyLimitMiddleware:
    """Refuse bodies over `max_body_bytes` with 413, without reading more than the limit
    (except steps and imports: see `_ADMITTED_BEYOND_DEFAULTS`).

    A declared Content-Length over the limit is answered at once, before any body is read; a
    body streamed without one is cut off as soon as it passes the limit. (Starlette's own
    `RequestBodyLimitMiddleware` answers in plain text where the app has not read the body;
    every error here is problem+json.)
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _ADMITTED_BEYOND_DEFAULTS.fullmatch(scope["path"]):
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
            f"the request body is larger than this server's limit of {self.max_body_bytes} "
            "bytes (OPTAAS_MAX_BODY_BYTES, which its operator can raise)",
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


_BODY_STATE = "optaas_body"
_LIMITS_STATE = "optaas_body_limits"


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a body may have, and what the 413 says about it (why, how to get past)."""

    max_bytes: int
    advice: str

    def too_large(self, size: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body {size}; {self.advice}", max_body_bytes=self.max_bytes
        )


@dataclass(frozen=True)
class BodyLimits:
    """A request's body limits: one for JSON (and any type but safetensors), one for files."""

    json: BodyLimit
    binary: BodyLimit

    def of(self, content_type: str | None) -> BodyLimit:
        binary = media_type_of(content_type) == SAFETENSORS_MEDIA_TYPE
        return self.binary if binary else self.json


def admit_body(request: Request, limits: BodyLimits) -> None:
    """Let this request's body be read, within `limits` (`app.api.admission` calls it once the
    request has passed its checks); a body no one admitted is read within the defaults."""
    setattr(request.state, _LIMITS_STATE, limits)


def default_limits(request: Request) -> BodyLimits:
    settings = request.app.state.settings
    return BodyLimits(
        json=BodyLimit(
            settings.max_json_body_bytes,
            f"JSON bodies may have up to {settings.max_json_body_bytes} bytes "
            "(OPTAAS_MAX_JSON_BODY_BYTES): JSON is for small models, send large ones as "
            f"safetensors ({SAFETENSORS_MEDIA_TYPE})",
        ),
        binary=BodyLimit(
            settings.max_body_bytes,
            f"this server takes up to {settings.max_body_bytes} bytes (OPTAAS_MAX_BODY_BYTES, "
            "which its operator can raise)",
        ),
    )


async def read_body(request: Request) -> bytearray:
    """The request's whole body, read once (later calls get the same buffer).

    A `bytearray` that grows as the bytes arrive (nothing is reserved from `Content-Length`),
    whose tensors a safetensors file can lend as writable arrays (the core then uses them as
    scratch: anything that needs the body as sent must read it before the step runs). Within
    the limit the request was admitted with (413: a declared length over it is refused before
    a byte is read); 408 if no byte comes for `OPTAAS_BODY_TIMEOUT_SECONDS`; a client that
    goes away meanwhile ends the request (499, never a server error).
    """
    body = getattr(request.state, _BODY_STATE, None)
    if body is not None:
        return body
    limits = getattr(request.state, _LIMITS_STATE, None) or default_limits(request)
    limit = limits.of(request.headers.get("content-type"))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit.max_bytes:
        raise limit.too_large(f"declares {declared} bytes")
    timeout = request.app.state.settings.body_timeout_seconds
    body = await _receive_body(request, limit, timeout)
    setattr(request.state, _BODY_STATE, body)
    return body


async def _receive_body(request: Request, limit: BodyLimit, timeout: float) -> bytearray:
    body = bytearray()
    while True:
        try:
            async with asyncio.timeout(timeout):
                message = await request.receive()
        except TimeoutError:
            raise RequestTimeout(
                f"no byte of the request body came for {timeout:g} s (OPTAAS_BODY_TIMEOUT_"
                f"SECONDS) after {len(body)} bytes; send the request again",
                received_bytes=len(body),
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest(
                f"the client closed the connection after {len(body)} bytes of the body"
            )
        chunk = message.get("body", b"")
        if len(body) + len(chunk) > limit.max_bytes:
            raise limit.too_large(f"passes {limit.max_bytes} bytes")
        body += chunk
        if not message.get("more_body", False):
            return body


@dataclass(frozen=True)
class TensorBody:
    """The raw body of a request that may carry tensors as JSON or as a safetensors file."""

    data: bytes | bytearray
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
    return TensorBody(await read_body(request), binary)


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


async def json_body(request: Request) -> bytearray:
    """The raw body of a JSON request (415 for any other content type)."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"this endpoint takes {JSON_MEDIA_TYPE}, not {content_type}",
            supported=[JSON_MEDIA_TYPE],
        )
    return await read_body(request)


def load_json(body: bytes | bytearray, *, tensors: Collection[str] = ()) -> Any:
    """The JSON document in `body` (400 if there is none).

    With `tensors` (top-level fields that hold tensors), a large body's tensors may come back
    as numpy float64 arrays rather than nested lists (`_load_with_numpy_tensors`); their values
    and shapes are the ones the lists would give.

    Strict JSON (orjson) first. What orjson refuses is tried once more with the standard
    library, which also reads the non-finite literals that Python's `json.dumps` writes (`NaN`,
    `Infinity`, `-Infinity`) and numbers beyond float64's range (as ±Inf): so a NaN gradient or
    loss reaches the session's `nonfinite` policy instead of failing as malformed. Bodies with a
    surrogate escape (`\\ud800`) are left to orjson's verdict: the standard library would let a
    lone surrogate through, which no database can store.
    """
    if tensors and len(body) >= NUMPY_TENSORS_MIN_BYTES and _may_be_regular(body):
        document = _load_with_numpy_tensors(body, tensors)
        if document is not None:
            return document
    require_few_values(
        body,
        "this JSON",
        "larger documents are read only if each tensor is one regular array of finite numbers "
        f"(all rows alike): send large tensors as safetensors ({SAFETENSORS_MEDIA_TYPE})",
    )
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


def _may_be_regular(body: bytes | bytearray) -> bool:
    """Whether the numpy path might take `body`: it takes no document with more nested arrays
    than an eighth of its numbers (`_MAX_ARRAYS_PER_ELEMENT`), and numbers are about as many
    as commas, so a body of mostly brackets (`[[],[],…]`) is not handed to simdjson at all."""
    return body.count(b"[") <= 64 + body.count(b",") // 4


def _int_as_orjson_reads_it(text: str) -> int | float:
    """Integers beyond 64 bits become floats, as orjson reads them."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)


def parse_json(
    body: bytes | bytearray, model: type[Model], *, tensors: Collection[str] = ()
) -> Model:
    """Blocking: parse `body` as JSON and validate it as `model` (400 / 422 on failure).

    `tensors` names the model's tensor fields (read straight into numpy when the body is big).
    """
    return validate(load_json(body, tensors=tensors), model, prefix=("body",))


def parse_tensor_body(body: TensorBody, model: type[Model], tensors: str) -> Model:
    """Blocking: `body` as `model`, from JSON or from a safetensors file.

    A file's tensors (by name, `NamedTensors`) are the model's field `tensors`; its
    `__metadata__` may give the model's other fields, each as JSON text (`"0.42"`, `"true"`,
    `NaN` too, as in JSON bodies). Other metadata keys are ignored: tools write their own
    (`"format": "pt"`).
    """
    if not body.binary:
        return parse_json(body.data, model, tensors=(tensors,))
    arrays, metadata = tensors_from_safetensors(body.data)
    document: dict[str, Any] = {tensors: NamedTensors(arrays)}
    document.update(_metadata_fields(metadata, set(model.model_fields) - {tensors}))
    return validate(document, model, prefix=("body", "__metadata__"))


SETTINGS_METADATA_KEY = "optaas"
"""The `__metadata__` key of a creation file: the creation's JSON settings, as text."""


def parse_settings_file(body: bytes | bytearray, model: type[Model], tensors: str) -> Model:
    """Blocking: a safetensors file as `model`: its tensors (by name, `NamedTensors`, views of
    `body`) are the field `tensors`, and the JSON object under `__metadata__["optaas"]` gives
    every other field (none: all defaults). Settings are validated as a JSON body's would be,
    and located under `__metadata__.optaas`; other metadata keys are ignored.
    """
    arrays, metadata = tensors_from_safetensors(body)
    settings = _settings_metadata(metadata.get(SETTINGS_METADATA_KEY), tensors)
    document = {**settings, tensors: NamedTensors(arrays)}
    return validate(document, model, prefix=("body", "__metadata__", SETTINGS_METADATA_KEY))


def _settings_metadata(text: str | None, tensors: str) -> dict[str, Any]:
    if text is None:
        return {}
    field = f"__metadata__.{SETTINGS_METADATA_KEY}"
    try:
        settings = load_json(text.encode("utf-8", "surrogateescape"))
    except MalformedBody:
        settings = None
    if not isinstance(settings, dict):
        raise InvalidContent(
            f"{field} must hold a JSON object of the creation's settings "
            f'(e.g. {{"optimizer": {{"type": "adam"}}}}), not {text[:40]!r}',
            field=field,
        )
    if tensors in settings:
        raise InvalidContent(
            f"{field} must not hold {tensors!r}: the file's tensors are the {tensors}",
            field=f"{field}.{tensors}",
        )
    return settings


def _metadata_fields(metadata: Mapping[str, str], fields: Collection[str]) -> dict[str, Any]:
    values = {}
    for name in fields:
        if name not in metadata:
            continue
        try:
            values[name] = load_json(metadata[name].encode("utf-8", "surrogateescape"))
        except MalformedBody:
            raise InvalidContent(
                f"__metadata__ {name!r} must hold a JSON value (e.g. 0.42, true), "
                f"not {metadata[name][:40]!r}",
                field=f"__metadata__.{name}",
            ) from None
    return values


def validate(document: Any, model: type[Model], *, prefix: tuple[str, ...]) -> Model:
    """`document` validated as `model`; a 422 listing every problem under `prefix` otherwise."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise validation_problem(list(error.errors()), prefix=prefix) from None


# -- JSON tensors straight to numpy ----------------------------------------------------------

NUMPY_TENSORS_MIN_BYTES = 64 * 1024
"""Smaller bodies are parsed the standard way (lists are cheap there)."""
_MAX_ARRAYS_PER_ELEMENT = 1 / 8
"""Tensors with more nested arrays than this per element (shape (10⁶, 1), …) are read as lists:
their regularity check would cost more than the lists."""
_MAX_FAST_DIMENSIONS = 32
_MAX_PLAIN_VALUES = 4096
"""Fields beside the tensors (`loss`, `partial`, a config) are small; a larger one sends the
document the standard way, whose size is bounded (`require_few_values`)."""
SIMDJSON_MAX_LENGTH = 2**24 - 1
"""simdjson reports the length of a longer array as this (it keeps lengths in 24 bits)."""


class _NotFast(Exception):  # noqa: N818 (not an error: the document takes the standard path)
    """The document is not one the numpy path takes exactly as the lists path would."""


def _load_with_numpy_tensors(
    body: bytes | bytearray, tensors: Collection[str]
) -> dict[str, Any] | None:
    """The document with its `tensors` fields as numpy float64 arrays, or None to say "parse it
    the standard way".

    simdjson parses; each tensor's numbers are copied out as float64 in one call
    (`as_buffer`, which raises on anything but numbers). Its shape is read along the first
    elements, and it is taken only if it is regular: every nested array has its level's length
    (each is visited), and the body holds no `[` beyond the arrays accounted for — so there is
    no nested array where a number should be, nor a `[` inside a string anywhere.
    """
    try:
        parsed = simdjson.Parser().parse(body)
        if not isinstance(parsed, simdjson.Object):
            return None
        document: dict[str, Any] = {}
        arrays = 0
        for key, value in _members(parsed):
            if key in tensors:
                document[key], counted = _tensors_value(value)
            else:
                document[key] = _plain(value, _MAX_PLAIN_VALUES)
                counted = _count_lists(document[key])
            arrays += counted
    except (_NotFast, ValueError, TypeError, KeyError, IndexError, OverflowError, RuntimeError):
        return None
    if body.count(b"[") != arrays:
        return None
    return document


def _tensors_value(value: Any) -> tuple[Any, int]:
    """A tensor field's value (one tensor or an object of them) and its number of arrays.
    Sparse rows (`{"rows", "values"}`, whose rows are integers) take the standard path: an
    object of exactly those two members may be a single-form session's sparse gradient."""
    if isinstance(value, simdjson.Object):
        if set(value.keys()) == ROWS_FIELDS:
            raise _NotFast()
        named, arrays = {}, 0
        for name, item in _members(value):
            named[name], counted = _tensor(item)
            arrays += counted
        return named, arrays
    return _tensor(value)


def _members(value: Any) -> list[tuple[str, Any]]:
    """An object's members, values left as simdjson's proxies (`items()` would turn them into
    lists). A key given twice is left to the standard path (orjson keeps the last value)."""
    keys = list(value.keys())
    if len(set(keys)) != len(keys):
        raise _NotFast()
    return [(key, value[key]) for key in keys]


def _tensor(value: Any) -> tuple[Any, int]:
    if not isinstance(value, simdjson.Array):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _NotFast()
        return value, 0
    shape = _leading_shape(value)
    flat = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
    if SIMDJSON_MAX_LENGTH in shape:
        shape = _long_shape(shape, flat.size)
    if flat.size != math.prod(shape):
        raise _NotFast()
    return flat.reshape(shape), _check_regular(value, shape)


def _long_shape(shape: tuple[int, ...], numbers: int) -> tuple[int, ...]:
    """The shape of an array with an axis of 2²⁴ − 1 or more elements, which simdjson cannot
    count: exact for a flat array (its numbers are its length; a nested array inside it would
    show in the final count of brackets). A longer axis of a nested array cannot be checked for
    regularity without visiting each of its elements in Python, and the lists would take
    gigabytes: 413, pointing to safetensors."""
    if len(shape) == 1:
        return (numbers,)
    raise PayloadTooLarge(
        f"a nested JSON array has an axis of {SIMDJSON_MAX_LENGTH} or more elements; only flat "
        f"(1-d) arrays may be that long in JSON: send the tensor as safetensors "
        f"({SAFETENSORS_MEDIA_TYPE}), or flat",
    )


def _leading_shape(array: Any) -> tuple[int, ...]:
    shape = []
    node = array
    while isinstance(node, simdjson.Array):
        shape.append(len(node))
        if len(shape) > _MAX_FAST_DIMENSIONS:
            raise _NotFast()
        if not shape[-1]:
            break
        node = node[0]
    return tuple(shape)


def _check_regular(array: Any, shape: tuple[int, ...]) -> int:
    """Visit every nested array above the numbers; each must have its level's length. Returns
    how many arrays the tensor has (1 + d1 + d1·d2 + … + d1⋯d(k−1))."""
    nested = sum(math.prod(shape[:depth]) for depth in range(1, len(shape)))
    if nested > max(64, math.prod(shape) * _MAX_ARRAYS_PER_ELEMENT):
        raise _NotFast()
    level = [array]
    for length in shape[1:]:
        below = []
        for node in level:
            for child in node:
                if not isinstance(child, simdjson.Array) or len(child) != length:
                    raise _NotFast()
                below.append(child)
        level = below
    return 1 + nested


def _plain(value: Any, budget: int) -> Any:
    """`value` as Python objects, if it holds at most `budget` values (else `_NotFast`)."""
    _spend(value, budget)
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _spend(value: Any, budget: int) -> int:
    """What is left of `budget` after `value`'s values; visits at most `budget` of them."""
    if isinstance(value, simdjson.Object | simdjson.Array):
        budget -= len(value)
        if budget < 0:
            raise _NotFast()
        children = value
        if isinstance(value, simdjson.Object):  # values() would build the lists: index instead
            children = (value[key] for key in value)
        for child in children:
            budget = _spend(child, budget)
    return budget


def _count_lists(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(_count_lists(item) for item in value)
    if isinstance(value, dict):
        return sum(_count_lists(item) for item in value.values())
    return 0
