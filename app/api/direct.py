"""Routes whose usual requests skip FastAPI's generic dependency solving.

FastAPI solves an endpoint's dependency tree anew for every request — for each dependency a
cache key, its scopes, its kind of callable, its parameters' validation — which for the step
endpoint (a dozen dependencies) cost more than the rest of a small step's work in the API. A
`DirectRoute` keeps everything FastAPI derives from the endpoint's signature (the OpenAPI
document is FastAPI's own, unchanged) and gives each request first to its `direct` handler,
which calls the same dependency functions by hand, in FastAPI's order; a request it does not
take (it answers None, e.g. for a query it leaves FastAPI to validate) goes the usual way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

DirectHandler = Callable[[Request], Awaitable[Response | None]]


class DirectRoute(APIRoute):
    """An `APIRoute` whose requests go to `direct` first (see the module's docstring)."""

    direct: DirectHandler

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        usual = super().get_route_handler()
        direct = type(self).direct

        async def handler(request: Request) -> Response:
            response = await direct(request)
            return response if response is not None else await usual(request)

        return handler


def direct_route(handler: DirectHandler) -> type[APIRoute]:
    """A `DirectRoute` class for `router.add_api_route(…, route_class_override=…)`."""
    return type(f"Direct_{handler.__name__}", (DirectRoute,), {"direct": staticmethod(handler)})
