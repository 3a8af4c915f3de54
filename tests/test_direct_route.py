"""The step route's direct handler (`app.api.direct`): FastAPI's dependencies called by hand.

In process on memory://: which requests it takes and which it leaves to FastAPI, that both
ways answer alike (the dependencies' errors in FastAPI's order), and that the route is still
FastAPI's in the OpenAPI document.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.api import sessions
from app.api.direct import DirectRoute
from tests.in_process import InProcessServer
from tests.support import bearer, create_session, post_json


@pytest.fixture
def server():
    with InProcessServer("memory://") as app:
        yield app


@pytest.fixture
def direct_calls(monkeypatch) -> list[str]:
    """The `return` of each step the direct handler took (FastAPI's own handler calls the
    endpoint it was given at registration, not this module attribute)."""
    calls: list[str] = []
    original = sessions.step_session

    async def recording(*args):
        calls.append(args[-1])
        return await original(*args)

    monkeypatch.setattr(sessions, "step_session", recording)
    return calls


def test_usual_steps_are_taken_directly_and_other_queries_left_to_fastapi(server, direct_calls):
    with server.client() as client:
        session = create_session(client, {"params": [0.0, 0.0], "optimizer": {"type": "sgd"}})
        path, auth = f"/v1/sessions/{session['id']}/step", bearer(session["token"])
        grads = {"gradients": np.ones(2)}
        taken = [post_json(client, path, grads, headers=auth)]
        for query in ("?return=full", "?return=none"):
            taken.append(post_json(client, path + query, grads, headers=auth))
        assert [answer.status_code for answer in taken] == [200, 200, 200]
        assert direct_calls == ["params", "full", "none"]
        assert "params" not in taken[2].json()

        left = post_json(client, path + "?return=none&extra=1", grads, headers=auth)
        assert left.status_code == 200 and "params" not in left.json()
        refused = post_json(client, path + "?return=everything", grads, headers=auth)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["query", "return"]
        twice = post_json(client, path + "?return=none&return=full", grads, headers=auth)
        assert twice.status_code == 200
        assert direct_calls == ["params", "full", "none"]  # none of the last three
        assert left.json()["step"] == 4 and twice.json()["step"] == 5


def test_the_dependencies_errors_come_in_fastapis_order(server, direct_calls):
    """No token: 401 before anything else; a wrong one: 404 before the body is judged; then
    the body's media type (415), an empty Idempotency-Key (400)."""
    with server.client() as client:
        session = create_session(client, {"params": [0.0], "optimizer": {"type": "sgd"}})
        path, auth = f"/v1/sessions/{session['id']}/step", bearer(session["token"])
        body = b'{"gradients": [1.0]}'
        answers = [
            client.post(path, content=body, headers={"Content-Type": "text/plain"}),
            client.post(path, content=body, headers={**bearer("wrong"), "Content-Type": "x/y"}),
            client.post(path, content=body, headers={**auth, "Content-Type": "text/plain"}),
            client.post(
                path,
                content=body,
                headers={**auth, "Content-Type": "application/json", "Idempotency-Key": ""},
            ),
        ]
    assert [answer.status_code for answer in answers] == [401, 404, 415, 400]
    assert all(answer.headers["content-type"] == "application/problem+json" for answer in answers)
    assert direct_calls == []  # each refused before the endpoint


def test_the_route_is_a_direct_route_documented_as_declared(server):
    (route,) = [route for route in sessions.router.routes if route.path.endswith("/step")]
    assert isinstance(route, DirectRoute)
    operation = server.app.openapi()["paths"]["/v1/sessions/{session_id}/step"]["post"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert names == {"session_id", "return", "Idempotency-Key", "If-Match"}
    assert operation["security"] == [{"HTTPBearer": []}]
