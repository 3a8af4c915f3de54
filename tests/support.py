"""Helpers for tests that talk HTTP to a live server and look into its database."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import orjson
from sqlalchemy import func, select

from app.optim import Optimizer, StepResult
from app.store.database import Database, Redo
from app.store.models import IdempotencyRecord, SessionArray, SessionRecord
from app.tensors import Layout, tensors_to_json

CORE_CONFIG_FIELDS = ("optimizer", "schedule", "clip_grad_norm", "clip_grad_value", "nonfinite")


def json_bytes(document: Any) -> bytes:
    """JSON as a client would send it: numpy arrays as their shortest round-tripping text."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def post_json(client: httpx.Client, path: str, document: Any, **kwargs: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return client.post(path, content=json_bytes(document), headers=headers, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wire_tensors(arrays: Mapping[str, np.ndarray], layout: str) -> Any:
    """Arrays in the session's form: the one array (single) or the object of arrays (named)."""
    return tensors_to_json(Layout(layout), dict(arrays))


def read_tensors(value: Any, dtype: str) -> dict[str, np.ndarray]:
    """A JSON answer's tensors back as arrays of the session's dtype, by name."""
    if isinstance(value, dict):
        return {name: np.asarray(item, dtype=dtype) for name, item in value.items()}
    return {"params": np.asarray(value, dtype=dtype)}


def create_session(
    client: httpx.Client, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    response = post_json(client, "/v1/sessions", body, headers=dict(headers or {}))
    assert response.status_code == 201, response.text
    return response.json()


class CoreRun:
    """The optimizer core driven in-process with the config a session reports: the reference."""

    def __init__(self, view: Mapping[str, Any], params: Mapping[str, np.ndarray]) -> None:
        config = {name: view[name] for name in (*CORE_CONFIG_FIELDS, "groups")}
        self.optimizer = Optimizer(config, list(params))
        self.params = {name: array.copy() for name, array in params.items()}
        self.state = self.optimizer.init(self.params)

    def step(
        self, grads: Mapping[str, np.ndarray], loss: float | None = None, *, partial: bool = False
    ) -> StepResult:
        copies = {name: array.copy() for name, array in grads.items()}
        return self.optimizer.step(self.params, self.state, copies, loss=loss, partial=partial)


def new_record(step: int = 0) -> SessionRecord:
    """A session row (SGD, one tensor `w` of shape [2, 3]) for store-level tests."""
    now = datetime.now(UTC)
    return SessionRecord(
        id=uuid.uuid4(),
        name="test",
        token_hash="0" * 64,
        dtype="float32",
        layout="named",
        tensors=[{"name": "w", "shape": [2, 3]}],
        config={"optimizer": {"type": "sgd"}},
        step=step,
        version=1,
        schedule_state={},
        last_loss=None,
        created_at=now,
        updated_at=now,
    )


def database_snapshot(database: Database, session_id: str) -> tuple[Any, ...]:
    """Every stored byte of a session — its row, its arrays, its idempotency records — plus the
    number of sessions and of idempotency records."""
    parsed = uuid.UUID(session_id)
    with database.transaction(write=False) as db:
        row = db.execute(select(SessionRecord.__table__).where(SessionRecord.id == parsed)).one()
        arrays = db.execute(
            select(SessionArray.__table__)
            .where(SessionArray.session_id == parsed)
            .order_by(SessionArray.key)
        ).all()
        kept = db.execute(
            select(IdempotencyRecord.__table__)
            .where(IdempotencyRecord.session_id == parsed)
            .order_by(IdempotencyRecord.key_hash)
        ).all()
        sessions = db.execute(select(func.count()).select_from(SessionRecord)).scalar_one()
        records = db.execute(select(func.count()).select_from(IdempotencyRecord)).scalar_one()
    return (
        tuple(row),
        [tuple(array) for array in arrays],
        [tuple(record) for record in kept],
        sessions,
        records,
    )


def random_arrays(
    rng: np.random.Generator, shapes: Mapping[str, Sequence[int]], dtype: str
) -> dict[str, np.ndarray]:
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}


def all_at_once(count: int, call: Callable[[], Any]) -> list[Any]:
    """Run `call` in `count` threads released together by a barrier; their results."""
    results: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        result = call()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class DroppingTransport(httpx.BaseTransport):
    """A network that loses answers, in front of a server that is sometimes busy.

    Answers numbered in `drop` (1, 2, … in the order requests are sent), and every
    `drop_every`-th, are read in full — so the server has committed them — and then thrown
    away, the client seeing a dropped connection instead; the lost answers are kept by the
    request's `Idempotency-Key` (or "METHOD path" without one), to compare with what the retries
    get. Every `unavailable_every`-th request is answered 503 with `Retry-After: 0` and never
    reaches the server. `requests` lists (method, path, Idempotency-Key) of every request sent;
    `media_types` (request Content-Type, answer Content-Type) of those that reached it.
    The server is reached over the network, or through `inner` (an in-process app's transport).
    """

    def __init__(
        self,
        drop_every: int = 0,
        *,
        drop: Collection[int] = (),
        unavailable_every: int = 0,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.drop_every = drop_every
        self.drop = set(drop)
        self.unavailable_every = unavailable_every
        self.sent = 0
        self.unavailable = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.media_types: list[tuple[str | None, str | None]] = []
        self.lost: dict[str, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("Idempotency-Key")
        with self._lock:
            self.requests.append((request.method, request.url.path, key))
            refuse = self.unavailable_every and len(self.requests) % self.unavailable_every == 0
            self.unavailable += bool(refuse)
        if refuse:
            return httpx.Response(
                503,
                headers={"Content-Type": "application/problem+json", "Retry-After": "0"},
                json={
                    "type": "/problems/lock-timeout",
                    "title": "Session busy",
                    "status": 503,
                    "detail": "injected by the test's transport",
                },
            )
        response = self.inner.handle_request(request)
        response.read()
        with self._lock:
            self.sent += 1
            self.media_types.append(
                (request.headers.get("Content-Type"), response.headers.get("Content-Type"))
            )
            lose = self.sent in self.drop or (self.drop_every and self.sent % self.drop_every == 0)
            if lose:
                self.lost[key or f"{request.method} {request.url.path}"].append(response.content)
        if lose:
            raise httpx.ReadError("the answer was lost on the way", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def step_in_transaction(database: Database, *args: Any, **kwargs: Any) -> Any:
    """`service.step(db, *args, **kwargs)` in a write transaction of `database`, run again
    locking first if it raises `Redo` (an optimistic step refused), as the API's runner does."""
    from app import service

    try:
        with database.transaction(write=True) as db:
            return service.step(db, *args, **kwargs)
    except Redo:
        with database.transaction(write=True, lock_first=True) as db:
            return service.step(db, *args, **kwargs)
