"""An optaas server inside the test process: `create_app` behind httpx's ASGI transport.

`InProcessServer` is the in-process twin of `tests.live_server.LiveServer` for the tests of HTTP
behaviour (status codes, problem documents, headers, negotiation, bodies, what is stored): the
request goes through the app's whole middleware stack, routers and database, and the app's
lifespan runs as under uvicorn (optimizer warm-up, the database, the pruning task, the final
checkpoint), but there is no socket, no uvicorn and no second process — starting one costs a few
milliseconds instead of a second or more.

The app runs on one event loop in a thread of its own (an anyio blocking portal), so the app's
background tasks and waits behave as in a server and several test threads may send requests at
once. `client()` is an ordinary synchronous `httpx.Client`; each request's body is read whole and
handed to the app in one piece.

What it cannot show stays with live server processes: uvicorn's HTTP parsing, bodies that arrive
in pieces (or too slowly), several worker processes, crashes and restarts of a process.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from app.api.app import create_app
from app.clock import SYSTEM_CLOCK, Clock
from app.config import Settings

BASE_URL = "http://optaas.test"
CLIENT_ADDRESS = ("127.0.0.1", 40000)
SERVER_DEFAULTS: dict[str, Any] = {
    # Tests create sessions and previews by the hundred from one address: rate limits are off
    # unless a test sets them (as for the live servers, tests/live_server.py).
    "creation_rate_limit": "",
    "preview_rate_limit": "",
}


def settings_from(
    database_url: str, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> Settings:
    """`Settings` as a server started with the environment variables `env` (`OPTAAS_<FIELD>`, as a
    `LiveServer` takes them) and the keyword `overrides` would read them."""
    fields = {name.removeprefix("OPTAAS_").lower(): value for name, value in env.items()}
    return Settings(**{**SERVER_DEFAULTS, "database_url": database_url, **fields, **overrides})


class _PortalTransport(httpx.BaseTransport):
    """A synchronous transport that hands each request to the app on the portal's event loop."""

    def __init__(self, portal: BlockingPortal, app: FastAPI, *, raise_app_exceptions: bool) -> None:
        self.portal = portal
        self.asgi = httpx.ASGITransport(
            app=app, client=CLIENT_ADDRESS, raise_app_exceptions=raise_app_exceptions
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # The ASGI transport reads an asynchronous body; a synchronous client's is read here.
        whole = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.read(),
            extensions=request.extensions,
        )
        return self.portal.call(self._send, whole)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        answer = await self.asgi.handle_async_request(request)
        content = await answer.aread()
        # The raw bytes, as a socket would carry them: the client decodes any Content-Encoding.
        return httpx.Response(
            answer.status_code, headers=answer.headers, stream=httpx.ByteStream(content)
        )


class InProcessServer:
    """`create_app(Settings(...))` with its lifespan entered, reached through `client()`.

    `env` takes `OPTAAS_*` variables as `LiveServer` does; keyword `settings` override them;
    `clock` is the app's (`tests.fake_clock.FakeClock` to move time by hand).
    The database must be migrated already (`optaas serve` migrates; the app alone does not):
    the `migrated_database_url` fixtures give such databases.
    """

    url = BASE_URL

    def __init__(
        self,
        database_url: str,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        raise_app_exceptions: bool = True,
        **settings: Any,
    ) -> None:
        self.database_url = database_url
        self.settings = settings_from(database_url, env or {}, settings)
        self.clock = clock
        self.raise_app_exceptions = raise_app_exceptions
        self.app: FastAPI | None = None
        self._portal: BlockingPortal | None = None
        self._running: ExitStack | None = None

    @property
    def running(self) -> bool:
        return self._running is not None

    def start(self) -> InProcessServer:
        """A fresh app on a fresh event loop, its lifespan entered (as a server's start)."""
        if self._running is not None:
            raise RuntimeError("the in-process server is already running")
        with ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal())
            # At the stop, requests still under way (a wait on a clock nobody moves) are
            # cancelled, as a server's connections are closed, instead of being waited for.
            stack.callback(portal.call, portal.stop, True)
            app = create_app(self.settings, self.clock)
            lifespan: AbstractContextManager[Any] = portal.wrap_async_context_manager(
                app.router.lifespan_context(app)
            )
            stack.enter_context(lifespan)
            self.app, self._portal, self._running = app, portal, stack.pop_all()
        return self

    def stop(self) -> None:
        """Leave the lifespan (final checkpoint, database disposed) and end the event loop."""
        running, self._running = self._running, None
        if running is not None:
            running.close()

    def restart(self) -> InProcessServer:
        """Stop and start a new app over the same database (a graceful restart)."""
        self.stop()
        return self.start()

    def transport(self) -> httpx.BaseTransport:
        """An httpx transport to this app, for clients made elsewhere (`optaas_client.Client`
        takes one): requests for any URL reach it."""
        if self._portal is None or self.app is None:
            raise RuntimeError("the in-process server has not been started")
        return _PortalTransport(
            self._portal, self.app, raise_app_exceptions=self.raise_app_exceptions
        )

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client whose requests reach this app (no network, no proxies)."""
        return httpx.Client(base_url=self.url, transport=self.transport(), timeout=60.0, **kwargs)

    def __enter__(self) -> InProcessServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
