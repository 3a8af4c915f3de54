"""What a request must pass before its body is read: its credential, its rate limit, and the
limits its body is then read within.

Each endpoint that takes a body lists its admission among its route's `dependencies`, which
FastAPI resolves before the endpoint's own parameters — so before `read_body`:

- **Sessions** (`step_admission`, `patch_admission`, `fork_admission`): the session is looked up
  and its token checked from the headers (`SessionGate`), so a wrong token or an unknown id costs
  one row lookup — never a read, a parse or an allocation of the body — and gets the same 404.
  The use case checks the token again in its transaction (a session deleted meanwhile is a 404
  there). A step's body may then be as large as its session needs (`step_limits`).
- **Creations** (`creation_admission`: create, import, and fork too) need the API key where the
  server has keys.
- Every other body is bounded by the server's defaults (`app.api.bodies.default_limits`).

Before any of that, before routing even, `RateLimitMiddleware` counts creations, imports,
forks and previews per caller (`RateLimits`) and answers those over the limit itself: a flood
of them costs the server little more than reading their headers.

A caller is its valid API key (by digest), else its address: the rate limits count per
caller, and a creation's `Idempotency-Key` is unique per caller, so that a replay never hands
one caller's token to another.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import time
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app import service
from app.api.bodies import BodyLimit, BodyLimits, admit_body, default_limits
from app.api.deps import ApiKeyDep, DatabaseDep, SettingsDep, TokenDep, valid_api_key
from app.api.errors import optaas_problem
from app.config import Settings
from app.errors import RateLimited, SessionNotFound
from app.service import SessionFacts
from app.store.database import Database
from app.tensors import SAFETENSORS_MEDIA_TYPE

FACTS_CACHE_ENTRIES = 4096
"""Sessions whose facts a process keeps (least recently used first out): tokens' hashes and
sizes never change, so a session's requests after its first are admitted without a lookup."""

CONFIG_BODY_MAX_BYTES = 1024**2
"""Bodies that carry a configuration and never tensors (PATCH, fork, preview)."""

JSON_BYTES_PER_NUMBER = 48
"""Room for one number in a step's JSON: float64's longest shortest form (24 characters), a
separator, and indentation of pretty-printed nesting."""
JSON_BYTES_PER_ARRAY = 16
BINARY_BYTES_PER_NUMBER = 8
"""float64 and int64, the widest types a gradient file may hold."""
HEADER_BYTES_PER_TENSOR = 256
"""A tensor's entry in a safetensors header (dtype, shape, offsets), its name apart."""
NAME_ESCAPE_FACTOR = 6
"""A name's bytes in JSON text at most: each may be escaped (`\\u00e9`)."""
BODY_SLACK_BYTES = 64 * 1024
"""Room for everything else: `loss`, `partial`, metadata, whitespace."""


class SessionGate:
    """Admits a session's request by its token, from a bounded cache of `SessionFacts`.

    A cached session whose token matches costs a SHA-256 and a constant-time comparison; any
    other request — an unknown id, a wrong token, a session not seen lately — costs one row
    read in the thread pool (a wrong token for a cached session too, so that it answers like
    an unknown id). Only found sessions are kept, so strangers cannot fill the cache.
    """

    def __init__(self, entries: int = FACTS_CACHE_ENTRIES) -> None:
        self.entries = entries
        self._facts: OrderedDict[str, SessionFacts] = OrderedDict()

    async def admit(self, database: Database, session_id: str, token: str) -> SessionFacts:
        """The session's facts if `token` is its token; else `SessionNotFound` (404)."""
        facts = self._facts.get(session_id)
        if facts is not None and service.token_matches(facts.token_hash, token):
            self._facts.move_to_end(session_id)
            return facts
        facts = await run_in_threadpool(self._look_up, database, session_id)
        if not service.token_matches(facts.token_hash if facts else None, token):
            raise SessionNotFound()
        assert facts is not None
        self._facts[session_id] = facts
        if len(self._facts) > self.entries:
            self._facts.popitem(last=False)
        return facts

    def forget(self, session_id: str) -> None:
        """The session is deleted (its next requests are looked up, and fail)."""
        self._facts.pop(session_id, None)

    @staticmethod
    def _look_up(database: Database, session_id: str) -> SessionFacts | None:
        with database.transaction(write=False) as db:
            return service.session_facts(db, session_id)


class RateLimits:
    """Requests per caller and kind (`creation`, `preview`), counted in this process's memory.

    `limits`' sliding-window counter: two counters per caller and window, the previous
    window's weighted by how much of it still overlaps the last period. Several server
    processes count apart (each allows the configured rate).
    """

    def __init__(self, settings: Settings) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._items: dict[str, list[RateLimitItem]] = {
            "creation": _parse(settings.creation_rate_limit),
            "preview": _parse(settings.preview_rate_limit),
        }

    def hit(self, kind: str, caller: str) -> None:
        """Count one request of `kind` by `caller`; 429 with `Retry-After` if over a limit."""
        for item in self._items[kind]:
            if not self._limiter.hit(item, kind, caller):
                reset = self._limiter.get_window_stats(item, kind, caller).reset_time
                retry_after = max(1, math.ceil(reset - time.time()))
                who = "API key" if caller.startswith("key/") else "address"
                raise RateLimited(
                    f"more {kind} requests from this {who} than its limit of {item}; send "
                    f"it again after {retry_after} s",
                    retry_after=retry_after,
                    limit=str(item),
                )


def _parse(limit: str) -> list[RateLimitItem]:
    return parse_many(limit) if limit else []


_FORK = re.compile(r"/v1/sessions/[^/]+/fork")


def limited_kind(method: str, path: str) -> str | None:
    """The rate limit a request counts against: `creation` (create, import, fork), `preview`,
    or None."""
    if method != "POST":
        return None
    if path in ("/v1/sessions", "/v1/sessions/import") or _FORK.fullmatch(path):
        return "creation"
    return "preview" if path == "/v1/schedules/preview" else None


class RateLimitMiddleware:
    """Rate limits before routing: a request over its caller's limit is answered 429 here,
    before FastAPI resolves anything (it is still logged and counted by the observability
    middleware outside)."""

    def __init__(self, app: ASGIApp, rate_limits: RateLimits, settings: Settings) -> None:
        self.app = app
        self.rate_limits = rate_limits
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = limited_kind(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if kind is not None:
            headers = Headers(scope=scope)
            key = valid_api_key(headers.get("x-api-key"), self.settings)
            try:
                self.rate_limits.hit(kind, caller_of(scope.get("client"), key))
            except RateLimited as error:
                await optaas_problem(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def caller_of(client: tuple[str, int] | None, api_key: str | None) -> str:
    """Who is asking: `key/<digest>` of a valid API key, else `address/<digest>` of the client's
    address (behind a proxy, the one uvicorn reads from `X-Forwarded-For` when the proxy is
    trusted: `FORWARDED_ALLOW_IPS`)."""
    if api_key is not None:
        return f"key/{_digest(api_key)}"
    return f"address/{_digest(client[0] if client else 'unknown')}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


async def get_gate(request: Request) -> SessionGate:
    return request.app.state.session_gate


GateDep = Annotated[SessionGate, Depends(get_gate)]


async def creation_caller(request: Request, api_key: ApiKeyDep) -> str:
    """The caller of a creating request (create, import, fork), whose API key is checked."""
    return caller_of(request.scope.get("client"), api_key)


CreationCallerDep = Annotated[str, Depends(creation_caller)]


async def creation_admission(request: Request, _caller: CreationCallerDep) -> None:
    """A creation: the API key (where keys are configured), then a creation's body (θ₀ as a
    file of up to `OPTAAS_MAX_BODY_BYTES`)."""
    admit_body(request, default_limits(request))


async def import_admission(
    request: Request, _caller: CreationCallerDep, settings: SettingsDep
) -> None:
    """An import: the API key, then an export's body, as large as that of a session created
    within the limits (`import_limits`)."""
    admit_body(request, import_limits(default_limits(request), settings))


EXPORT_ARRAYS_PER_PARAMETER = 6
"""An export holds θ and its optimizer's slots of θ's size: at most five (Adan: m, v, n and
the last gradient; with AMSGrad-like maxima, schedule-free's z and x, …); int64 step counts
are one number a tensor."""


def import_limits(defaults: BodyLimits, settings: Settings) -> BodyLimits:
    """An export file may carry `EXPORT_ARRAYS_PER_PARAMETER` arrays the size of the largest
    θ₀ a creation admits (`OPTAAS_MAX_BODY_BYTES`): a session made here can be moved here."""
    max_bytes = EXPORT_ARRAYS_PER_PARAMETER * settings.max_body_bytes
    binary = BodyLimit(
        max_bytes,
        f"an import file may have up to {max_bytes} bytes ({EXPORT_ARRAYS_PER_PARAMETER} times "
        f"OPTAAS_MAX_BODY_BYTES, which the server's operator can raise)",
    )
    return BodyLimits(json=defaults.json, binary=binary)


async def preview_admission(request: Request) -> None:
    """A preview needs no credential: a configuration's body."""
    admit_body(request, config_limits())


async def step_admission(
    request: Request,
    session_id: str,
    token: TokenDep,
    database: DatabaseDep,
    settings: SettingsDep,
    gate: GateDep,
) -> SessionFacts:
    """A step: the session's token, then a body as large as the session needs. Its facts
    (dtype, form) are what the body is parsed into (`StepFactsDep`)."""
    facts = await gate.admit(database, session_id, token)
    admit_body(request, step_limits(facts, settings))
    return facts


StepFactsDep = Annotated[SessionFacts, Depends(step_admission)]
"""The stepped session's facts, from its admission (run once per request: FastAPI caches it)."""


async def patch_admission(
    request: Request, session_id: str, token: TokenDep, database: DatabaseDep, gate: GateDep
) -> None:
    """A PATCH: the session's token, then a configuration's body."""
    await gate.admit(database, session_id, token)
    admit_body(request, config_limits())


async def fork_admission(
    request: Request,
    session_id: str,
    token: TokenDep,
    _caller: CreationCallerDep,
    database: DatabaseDep,
    gate: GateDep,
) -> None:
    """A fork creates a session: the API key, then the source's token, then a
    configuration's body."""
    await gate.admit(database, session_id, token)
    admit_body(request, config_limits())


def config_limits() -> BodyLimits:
    limit = BodyLimit(
        CONFIG_BODY_MAX_BYTES,
        f"this endpoint takes a configuration (never tensors), up to {CONFIG_BODY_MAX_BYTES} bytes",
    )
    return BodyLimits(json=limit, binary=limit)


def step_limits(facts: SessionFacts, settings: Settings) -> BodyLimits:
    """`session_limits` of the session, within the server's JSON body limit: made once per
    session and limit (a step's admission asked for them anew on every request)."""
    return session_limits(facts, settings.max_body_bytes)


@functools.lru_cache(maxsize=FACTS_CACHE_ENTRIES)
def session_limits(facts: SessionFacts, max_body_bytes: int) -> BodyLimits:
    """What a step of this session may send: room for each of its numbers (and arrays and
    names) in JSON or in a safetensors file.

    A file is bounded by the session's size alone — the session exists, so its gradients are
    legitimate, however large (a float64 session of 1e8 parameters takes 800 MB files) —; JSON
    by that size within `OPTAAS_MAX_BODY_BYTES` too (large JSON is slow to parse: files are the
    way for large models)."""
    names = NAME_ESCAPE_FACTOR * facts.names_bytes + BODY_SLACK_BYTES
    json_need = JSON_BYTES_PER_NUMBER * facts.elements + JSON_BYTES_PER_ARRAY * facts.arrays
    binary_need = BINARY_BYTES_PER_NUMBER * facts.elements + HEADER_BYTES_PER_TENSOR * facts.tensors
    session = f"a step of this session ({facts.elements} numbers in {facts.tensors} tensors)"

    def limit(need: int, form: str, cap: int | None = None) -> BodyLimit:
        if cap is None or need <= cap:
            return BodyLimit(need, f"{session} needs at most {need} bytes {form}")
        return BodyLimit(
            cap,
            f"JSON bodies may have up to {cap} bytes on this server (OPTAAS_MAX_BODY_BYTES, "
            f"which its operator can raise): send large gradients as {SAFETENSORS_MEDIA_TYPE}",
        )

    return BodyLimits(
        json=limit(
            json_need + names,
            f"in JSON (send large ones as {SAFETENSORS_MEDIA_TYPE})",
            max_body_bytes,
        ),
        binary=limit(binary_need + names, "as a safetensors file"),
    )
