"""Steps of small sessions run on the event loop; anything that would wait for a lock there goes
to the thread pool instead (`run_use_case(inline=True)`, `Database.transaction(wait=False)`).

In process, on memory://, a SQLite file and PostgreSQL: which thread ran each step, what a
transaction that must not wait does when another one holds the lock, and that a step meeting a
held lock is still applied once the lock is free, in order.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from app import service
from app.api import runner, sessions
from app.store.database import Database, WouldWait
from app.store.repository import SessionRepository
from tests.conftest import BACKENDS, DatabaseTemplates, migrated_database
from tests.in_process import InProcessServer
from tests.support import bearer, create_session, new_record, post_json

WORKER_PREFIX = "AnyIO worker"
"""The name of the thread pool's threads (anyio's)."""


@contextmanager
def store(backend: str, directory: Path, templates: DatabaseTemplates) -> Iterator[str]:
    """memory://, or a migrated SQLite file or PostgreSQL database."""
    if backend == "memory":
        yield "memory://"
        return
    with migrated_database(backend, directory, templates) as url:
        yield url


@pytest.fixture(params=["memory", *BACKENDS])
def store_url(request, tmp_path, database_templates) -> Iterator[str]:
    with store(request.param, tmp_path, database_templates) as url:
        yield url


@pytest.fixture
def step_threads(monkeypatch) -> list[str]:
    """The name of the thread each step's use case ran on, in order."""
    names: list[str] = []
    original = service.step

    def recording(*args, **kwargs):
        names.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(service, "step", recording)
    return names


@pytest.fixture
def handed_off(monkeypatch) -> threading.Event:
    """Set when the runner hands work to the thread pool."""
    event = threading.Event()
    original = runner.run_in_threadpool

    async def recording(function, *args, **kwargs):
        event.set()
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(runner, "run_in_threadpool", recording)
    return event


def new_session(client, size: int) -> tuple[str, dict[str, str]]:
    created = create_session(
        client, {"params": np.zeros(size).tolist(), "optimizer": {"type": "sgd", "lr": 1.0}}
    )
    return f"/v1/sessions/{created['id']}/step", bearer(created["token"])


def test_small_steps_run_on_the_event_loop_where_no_lock_can_be_foreign(store_url, step_threads):
    """memory:// and PostgreSQL: a small session's steps run on the loop (after the first on
    PostgreSQL, which opens the pool's connection); a large one's, and any on a SQLite file
    (whose lock another process may hold), in the thread pool."""
    small, large = 10, sessions.INLINE_STEP_ELEMENTS + 1
    with InProcessServer(store_url) as app, app.client() as client:
        for size in (small, large):
            path, auth = new_session(client, size)
            for step in range(1, 4):
                answer = post_json(client, path, {"gradients": np.ones(size)}, headers=auth)
                assert answer.status_code == 200, answer.text
                assert answer.json()["params"] == [-float(step)] * size
    on_loop = [not name.startswith(WORKER_PREFIX) for name in step_threads]
    if store_url.startswith("sqlite"):
        assert on_loop == [False] * 6
    else:
        assert on_loop[1:3] == [True, True]  # the small session's (the pool has a connection)
        assert on_loop[3:] == [False] * 3  # the large session's


@pytest.mark.parametrize("backend", ["memory", BACKENDS[1]])
def test_a_step_meeting_a_held_lock_waits_for_it_in_the_thread_pool(
    backend, tmp_path, database_templates, step_threads, handed_off
):
    """Another transaction holds the lock (memory's one turn; PostgreSQL's row lock): the
    step does not wait on the event loop — it is handed to the thread pool, which waits, and
    it is applied once the lock is free."""
    with (
        store(backend, tmp_path, database_templates) as url,
        InProcessServer(url) as app,
        app.client() as client,
    ):
        path, auth = new_session(client, 3)
        assert post_json(client, path, {"gradients": [1, 1, 1]}, headers=auth).status_code == 200
        handed_off.clear()
        database: Database = app.app.state.database
        session_id = uuid.UUID(path.split("/")[3])
        with ThreadPoolExecutor(1) as pool, database.transaction(write=True) as db:
            SessionRepository(db).row(session_id, for_update=True)  # the lock, held
            pending = pool.submit(post_json, client, path, {"gradients": [1, 1, 1]}, headers=auth)
            assert handed_off.wait(30), "the step was not handed to the thread pool"
            assert not pending.done()
        answer = pending.result(60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["params"] == [-2.0, -2.0, -2.0]
    assert step_threads[-1].startswith(WORKER_PREFIX)


@pytest.mark.parametrize("backend", ["memory", BACKENDS[1]])
def test_a_transaction_that_must_not_wait_gives_way_at_once(backend, tmp_path, database_templates):
    """`transaction(wait=False)`: memory's turn or a row locked by another transaction is
    `WouldWait`, raised at once (PostgreSQL: `FOR UPDATE NOWAIT`, not the lock timeout);
    nothing of it is kept; with the lock free it runs as any transaction."""
    with store(backend, tmp_path, database_templates) as url:
        database = Database(url, lock_timeout_seconds=600)
        try:
            record = new_record()
            with database.transaction(write=True) as db:
                SessionRepository(db).add(record)
            if backend != "memory":  # two idle connections in the pool: the holder takes one
                with (
                    database.transaction(write=False) as one,
                    database.transaction(write=False) as two,
                ):
                    one.execute(text("SELECT 1")), two.execute(text("SELECT 1"))
            holding, release = threading.Event(), threading.Event()

            def hold() -> None:
                with database.transaction(write=True) as db:
                    SessionRepository(db).row(record.id, for_update=True)
                    holding.set()
                    release.wait(60)

            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(hold)
                assert holding.wait(30)
                with (
                    pytest.raises(WouldWait) as refused,
                    database.transaction(write=True, wait=False) as db,
                ):
                    repository = SessionRepository(db)
                    row = repository.row(record.id, for_update=True)
                    repository.advance(row, step=5, schedule_state={}, last_loss=None)
                if backend != "memory":
                    assert "could not obtain lock" in str(refused.value.__cause__)
                release.set()
                held.result(60)
            with database.transaction(write=True, wait=False) as db:
                row = SessionRepository(db).row(record.id, for_update=True)
                assert (row.step, row.version) == (0, 1)  # the refused one left nothing
        finally:
            database.dispose()
