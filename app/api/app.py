"""The application factory. Nothing is built at import: the engine is made in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from app import optim, stepping
from app.api import health, history, observability, schedules, sessions
from app.api.admission import RateLimitMiddleware, RateLimits, SessionGate
from app.api.bodies import BodyLimitMiddleware
from app.api.errors import install_error_handlers
from app.api.idempotency import prune_periodically
from app.api.openapi import build_openapi
from app.api.pages import install_pages
from app.clock import SYSTEM_CLOCK, Clock
from app.config import Settings
from app.store.database import Database
from app.version import VERSION

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Optimisation as a service: the optimizer of a training run — parameters θ, σ-accumulators,
momentum, step count and learning-rate schedule — kept in a database. Clients post gradients
and get the updated parameters back: `θ_{t+1} = θ_t − (η_t / (σ_t + eps)) · m_t`.
"""


async def checkpoint_logged_sessions(database: Database) -> None:
    """At a clean stop, write out the step logs this process holds (see `app.stepping`); a
    failure is logged, not fatal: the logs stay valid, they are replayed by the next reader."""
    try:
        written = await run_in_threadpool(stepping.checkpoint_logged_sessions, database)
    except SQLAlchemyError as error:
        logger.warning("step logs not checkpointed at stop: %s", str(error).splitlines()[0])
        return
    if written:
        logger.info("checkpointed %d session(s) with logged steps", written)


def operation_id(route: APIRoute) -> str:
    """Readable operation ids for generated clients: `<tag>-<function name>`."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> FastAPI:
    """The optaas ASGI app; `settings` default to the environment's (`OPTAAS_*`), `clock` is
    what its retention, pruning and waits read the time from (`app.clock`)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        optim.set_num_threads(settings.compute_threads)
        # Compiled (or loaded from numba's disk cache) before the server takes requests, so
        # that /readyz answers only once no step will wait for a compiler.
        await run_in_threadpool(optim.warm_up)
        app.state.database = Database(
            settings.database_url,
            lock_timeout_seconds=settings.lock_timeout_seconds,
            cache_max_bytes=settings.cache_max_bytes,
            checkpoint_every=settings.checkpoint_every,
            chunk_bytes=settings.array_chunk_bytes,
        )
        pruning = asyncio.create_task(prune_periodically(app.state.database, settings, clock))
        try:
            yield
        finally:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
            await checkpoint_logged_sessions(app.state.database)
            app.state.database.dispose()

    app = FastAPI(
        title="optaas",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        docs_url=None,  # served by app.api.pages, with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.session_gate = SessionGate()
    app.include_router(sessions.router)
    app.include_router(history.router)
    app.include_router(schedules.router)
    app.include_router(health.router)
    app.include_router(observability.router)
    install_pages(app, settings.guide_dir)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, rate_limits=RateLimits(settings), settings=settings)
    # Added last, so outermost: it sees every answer, the body limit's 413s included.
    app.add_middleware(observability.ObservabilityMiddleware)
    install_error_handlers(app)

    def openapi() -> dict[str, Any]:
        return build_openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
    return app
