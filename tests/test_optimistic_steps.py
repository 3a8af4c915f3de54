"""Optimistic steps on PostgreSQL (`app.service.stepping`): a step of a session whose row and
working set this process's last step committed skips the locking read; its UPDATE's version
check refuses it when the session moved on meanwhile (another process stepped it), and it is
redone the locking way, exactly once, with the gradient as posted. A step that finds the row
locked elsewhere in a transaction that must not wait is `WouldWait`, not a wait.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from app.service import stepping
from app.store.database import Database, WouldWait
from app.store.held import send
from app.store.repository import SessionRepository
from tests.in_process import InProcessServer
from tests.support import bearer, create_session, new_record, post_json

THETA0 = np.linspace(-1, 1, 10).astype(np.float32)
GRADIENTS = [np.linspace(0.5, -0.25, 10).astype(np.float32) * (index + 1) for index in range(4)]


@pytest.fixture
def postgres_url(migrated_database_url: str) -> str:
    if not migrated_database_url.startswith("postgresql"):
        pytest.skip("optimistic steps are PostgreSQL's (SQLite locks the database at BEGIN)")
    return migrated_database_url


@pytest.fixture
def two_apps(postgres_url: str) -> Iterator[list[InProcessServer]]:
    """Two apps on one database, each with its own engine and working sets: two processes."""
    with InProcessServer(postgres_url) as first, InProcessServer(postgres_url) as second:
        yield [first, second]


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How each attempt at a step went: "optimistic", "redo" (an optimistic one refused) or
    "locked"."""
    seen: list[str] = []
    optimistic, locked = stepping._step_cached, stepping.authorized_row

    def counted_optimistic(*args, **kwargs):
        try:
            result = optimistic(*args, **kwargs)
        except Exception:  # a stale row's refusal, or `Redo`: the step is run again
            seen.append("redo")
            raise
        seen.append("optimistic")
        return result

    def counted_locked(*args, **kwargs):
        seen.append("locked")
        return locked(*args, **kwargs)

    monkeypatch.setattr(stepping, "_step_cached", counted_optimistic)
    monkeypatch.setattr(stepping, "authorized_row", counted_locked)
    return seen


def add_session(database: Database) -> uuid.UUID:
    with database.transaction(write=True) as db:
        record = new_record()
        SessionRepository(db).add(record)
        return record.id


def step(app: InProcessServer, session: dict, gradient: np.ndarray) -> dict:
    with app.client() as client:
        answer = post_json(
            client,
            f"/v1/sessions/{session['id']}/step",
            {"gradients": gradient},
            headers=bearer(session["token"]),
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_stale_optimistic_step_is_refused_and_redone_exactly(
    two_apps: list[InProcessServer], attempts: list[str]
):
    """First app, second app, first app again: the first app's third step starts from its
    cached row at step 1, is refused by the version check and redone from step 2. θ, the step
    count and the history are those of the four steps taken in one app."""
    first, second = two_apps
    body = {"params": THETA0, "optimizer": {"type": "adam", "lr": 0.01}}
    with first.client() as client:
        shared, alone = create_session(client, body), create_session(client, body)
    step(first, shared, GRADIENTS[0])
    step(first, shared, GRADIENTS[1])  # from the cache: optimistic
    step(second, shared, GRADIENTS[2])  # the second app has no working set: locks
    answer = step(first, shared, GRADIENTS[3])  # cached at step 2, the session is at 3
    assert attempts == ["locked", "optimistic", "locked", "redo", "locked"]
    for gradient in GRADIENTS:
        expected = step(second, alone, gradient)
    assert answer["step"] == expected["step"] == 4
    np.testing.assert_array_equal(
        np.asarray(answer["params"], np.float32), np.asarray(expected["params"], np.float32)
    )
    with second.client() as client:
        history = client.get(
            f"/v1/sessions/{shared['id']}/history?limit=100", headers=bearer(shared["token"])
        ).json()
    assert [record["step"] for record in history["records"]] == [1, 2, 3, 4]
    assert [record["seq"] for record in history["records"]] == [1, 2, 3, 4]


def test_an_optimistic_step_leaves_what_a_locked_one_does(
    two_apps: list[InProcessServer], attempts: list[str]
):
    """Steps after the first are optimistic, and the session read back by the other app (from
    the database: the step log replayed) is θ as the answers showed it."""
    first, second = two_apps
    body = {"params": THETA0, "optimizer": {"type": "adam", "lr": 0.01}}
    with first.client() as client:
        session = create_session(client, body)
    for gradient in GRADIENTS:
        answer = step(first, session, gradient)
    assert attempts == ["locked", "optimistic", "optimistic", "optimistic"]
    with second.client() as client:
        params = client.get(
            f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"])
        ).json()
    assert params["step"] == 4
    np.testing.assert_array_equal(
        np.asarray(params["params"], np.float32), np.asarray(answer["params"], np.float32)
    )


def test_a_refused_request_leaves_the_working_set_for_the_next_optimistic_step(
    two_apps: list[InProcessServer], attempts: list[str]
):
    """A step with a wrong token is refused (404) and changes nothing; a step with a gradient of
    the wrong shape is refused (422) after the optimistic attempt hands it to the locking way,
    which decides; the next good step is optimistic again, from the working set as it was."""
    first = two_apps[0]
    body = {"params": THETA0, "optimizer": {"type": "adam", "lr": 0.01}}
    with first.client() as client:
        session = create_session(client, body)
        step(first, session, GRADIENTS[0])
        path = f"/v1/sessions/{session['id']}/step"
        wrong_token = post_json(client, path, {"gradients": GRADIENTS[1]}, headers=bearer("x"))
        wrong_shape = post_json(
            client, path, {"gradients": GRADIENTS[1][:3]}, headers=bearer(session["token"])
        )
    assert (wrong_token.status_code, wrong_shape.status_code) == (404, 422)
    assert step(first, session, GRADIENTS[1])["step"] == 2
    assert attempts[0] == "locked" and attempts[-1] == "optimistic"


def test_an_unlocked_update_of_a_row_locked_elsewhere_does_not_wait(postgres_url: str):
    """In a transaction that must not wait, the UPDATE of a row this transaction did not lock
    locks it NOWAIT first: a row another transaction holds is `WouldWait` at once."""
    holder, waiter = Database(postgres_url), Database(postgres_url)
    try:
        session_id = add_session(holder)
        with waiter.transaction(write=False) as db:
            row = SessionRepository(db).row(session_id)
        assert row is not None
        with holder.transaction(write=True) as db:
            SessionRepository(db).row(session_id, for_update=True)
            with pytest.raises(WouldWait), waiter.transaction(write=True, wait=False) as other:
                repository = SessionRepository(other)
                repository.advance(row, step=1, schedule_state={}, last_loss=None, locked=False)
                send(other)
    finally:
        waiter.dispose()
        holder.dispose()
