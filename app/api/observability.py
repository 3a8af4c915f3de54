"""Every request observed once: one access log line and its metrics; and `GET /metrics`.

`ObservabilityMiddleware` is the outermost of the app's own middleware, so it sees every
answer the app gives, problem documents included (a 500 is seen as the exception it is). It
opens the request's `RequestFacts` (`app.observe`), in which the step use-case notes the
optimizer type and whether the step was skipped. What it logs and counts comes from the request
line, the matched route, the response status and headers (the step from `ETag`) and those facts
— never from request headers, so no token or API key can reach a log line; the path is logged
without its query string.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics, observe
from app.api.deps import DatabaseDep
from app.api.errors import PROBLEM_MEDIA_TYPE
from app.logs import ACCESS_LOGGER

STEP_ROUTE = "/v1/sessions/{session_id}/step"
SESSIONS_PREFIX = "/v1/sessions/"
PROBLEM_PREFIX = "/problems/"
MAX_PROBLEM_BYTES = 64 * 1024
"""Problem documents are small; a larger error body is not read for its slug."""

access_log = logging.getLogger(ACCESS_LOGGER)


@dataclass
class Exchange:
    """What one request and its answer showed, gathered as the messages pass."""

    started: float = field(default_factory=time.perf_counter)
    request_bytes: int = 0
    status: int = 500
    headers: Headers = field(default_factory=Headers)
    problem: bytearray = field(default_factory=bytearray)

    def duration(self) -> float:
        return time.perf_counter() - self.started

    def session_id(self, scope: Scope) -> str | None:
        """The session in the path, or the one a creation answer's `Location` points to."""
        in_path = scope.get("path_params", {}).get("session_id")
        if in_path is not None:
            return in_path
        location = self.headers.get("location", "")
        return (
            location.removeprefix(SESSIONS_PREFIX) if location.startswith(SESSIONS_PREFIX) else None
        )

    def step(self) -> int | None:
        """The session's step, from the `ETag: "<t>"` that answers showing a session carry."""
        tag = self.headers.get("etag", "").strip('"')
        return int(tag) if tag.isdigit() else None

    def problem_slug(self) -> str:
        try:
            kind = orjson.loads(self.problem).get("type", "")
        except (orjson.JSONDecodeError, AttributeError):
            return "unknown"
        return kind.removeprefix(PROBLEM_PREFIX) if isinstance(kind, str) else "unknown"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.request_bytes += len(message.get("body", b""))
            return message

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.headers = Headers(raw=message.get("headers", []))
            elif message["type"] == "http.response.body" and _wants_problem_body(exchange):
                exchange.problem += message.get("body", b"")
            await send(message)

        with observe.request_facts() as facts:
            try:
                await self.app(scope, counting_receive, observing_send)
            except Exception:
                exchange.status = 500  # the server error middleware answers it, outside
                raise
            finally:
                record(scope, exchange, facts)


def _wants_problem_body(exchange: Exchange) -> bool:
    """An error answer in problem+json, of which not too much has been kept yet."""
    content_type = exchange.headers.get("content-type", "")
    return (
        exchange.status >= 400
        and content_type.startswith(PROBLEM_MEDIA_TYPE)
        and len(exchange.problem) < MAX_PROBLEM_BYTES
    )


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/sessions/{session_id}`), or `unmatched`."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def record(scope: Scope, exchange: Exchange, facts: observe.RequestFacts) -> None:
    """Count the request in the metrics and write its access log line."""
    seconds = exchange.duration()
    route = route_template(scope)
    status = exchange.status
    slug = exchange.problem_slug() if status >= 400 else None
    metrics.REQUEST_BYTES.labels(route).observe(exchange.request_bytes)
    if slug is not None:
        metrics.REJECTIONS.labels(str(status), slug).inc()
    if route == STEP_ROUTE and scope["method"] == "POST":
        outcome = step_outcome(exchange, facts)
        metrics.STEPS.labels(facts.optimizer or "unknown", outcome).inc()
        if outcome in ("applied", "skipped"):
            metrics.STEP_LATENCY.observe(seconds)
    log_access(scope, exchange, seconds, slug)


def step_outcome(exchange: Exchange, facts: observe.RequestFacts) -> str:
    if exchange.status >= 400:
        return "rejected"
    if exchange.headers.get("idempotent-replayed", "").lower() == "true":
        return "replayed"
    if exchange.status == 202:
        return "accumulated"
    return "skipped" if facts.skipped else "applied"


def log_access(scope: Scope, exchange: Exchange, seconds: float, slug: str | None) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    fields = {
        "method": scope["method"],
        "path": scope["path"],
        "status": exchange.status,
        "duration_ms": round(seconds * 1000, 3),
        "request_bytes": exchange.request_bytes,
        "session_id": exchange.session_id(scope),
        "step": exchange.step(),
        "problem": slug,
        "client": f"{client[0]}:{client[1]}" if client else None,
    }
    line = f"{fields['method']} {fields['path']} {fields['status']} {fields['duration_ms']} ms"
    for name in ("session_id", "step", "problem"):
        if fields[name] is not None:
            line += f" {name}={fields[name]}"
    access_log.info(line, extra=fields)


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format, version 0.0.4.",
            "content": {
                "text/plain": {
                    "example": (
                        "# HELP optaas_steps_total Step requests answered, by …\n"
                        "# TYPE optaas_steps_total counter\n"
                        'optaas_steps_total{optimizer="adam",outcome="applied"} 1200.0\n'
                        "# HELP optaas_sessions Sessions stored in the database.\n"
                        "# TYPE optaas_sessions gauge\n"
                        "optaas_sessions 3.0\n"
                    )
                }
            },
        }
    },
)
async def get_metrics(database: DatabaseDep) -> Response:
    """Steps by optimizer type and outcome (`optaas_steps_total`), step latency
    (`optaas_step_latency_seconds`), request body sizes by route (`optaas_request_body_bytes`),
    error answers by status and problem type (`optaas_rejections_total`) and the number of
    sessions stored (`optaas_sessions`). Counts are summed over all server processes.
    """
    content = await run_in_threadpool(metrics.scrape, database)
    return Response(content, media_type="text/plain; version=0.0.4; charset=utf-8")
