"""A step's writes held back and sent together (`app.store.held`, `app.store.driver`).

On a SQLite file and on PostgreSQL: one statement for the log entry, the row's UPDATE and the
history record on PostgreSQL, one each elsewhere; what they leave is what the statements sent
one by one left; a stale row is refused; held writes go before a commit and never after a
rollback; a skipped step's held log entry is never sent. Then two apps on one database (as
two server processes) stepping one Adam session at once: no step lost or doubled, and θ is
exactly what the same steps give in one process.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.exc import StaleDataError

from app.stepping import SessionArrays
from app.store import driver
from app.store.database import Database, TransientFailure, transient_failure
from app.store.held import HELD, send
from app.store.history import HistoryEntry, HistoryRepository
from app.store.repository import SessionRepository
from app.store.steplog import LoggedStep
from tests.in_process import InProcessServer
from tests.support import bearer, create_session, new_record, post_json


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every write run through `DriverStatement` (reads apart), in order."""
    sent: list[str] = []
    execute = driver.DriverStatement.execute

    def counting(self: driver.DriverStatement, db, params):
        if not str(self.statement).startswith("SELECT"):
            sent.append(str(self.statement))
        return execute(self, db, params)

    monkeypatch.setattr(driver.DriverStatement, "execute", counting)
    return sent


def add_session(database: Database) -> uuid.UUID:
    record = new_record()
    with database.transaction(write=True) as db:
        SessionRepository(db).add(record)
    return record.id


def log_entry(version: int, gradient: np.ndarray) -> LoggedStep:
    return LoggedStep(
        version=version,
        step=version - 1,
        names=["w"],
        config={"optimizer": {"type": "sgd"}},
        schedule_state={},
        loss=0.5,
        partial=False,
        gradients={"w": gradient},
    )


def hold_a_step(db, session_id: uuid.UUID, gradient: np.ndarray) -> None:
    """What a logged step holds: its log entry, the row's UPDATE, its history record."""
    repository = SessionRepository(db)
    row = repository.row(session_id, for_update=True)
    SessionArrays(db).store.append_log(
        db, session_id, log_entry(row.version + 1, gradient), hold=True
    )
    repository.advance(row, step=row.step + 1, schedule_state={"x": 1.0}, last_loss=0.5)
    HistoryRepository(db, 1000).record_step(
        session_id,
        step=row.step,
        lr=0.1,
        loss=0.5,
        grad_norm=1.0,
        update_norm=0.1,
        skipped=False,
        duration_ms=1.0,
    )


def test_a_steps_writes_are_one_statement_on_postgresql_and_leave_what_three_did(
    database: Database, executions: list[str]
):
    session_id = add_session(database)
    gradient = np.arange(6, dtype=np.float32).reshape(2, 3)
    with database.transaction(write=True) as db:
        hold_a_step(db, session_id, gradient)
        gradient[:] = -1  # the core may use the gradient as scratch: the held entry is a copy
        assert executions == []  # nothing sent yet
        send(db)
        assert HELD not in db.info
    assert len(executions) == (1 if database.dialect == "postgresql" else 3)
    if database.dialect == "postgresql":
        assert executions[0].startswith("WITH")
    with database.transaction(write=False) as db:
        row = SessionRepository(db).row(session_id)
        assert (row.step, row.version, row.schedule_state, row.last_loss) == (1, 2, {"x": 1.0}, 0.5)
        stored = SessionArrays(db).store.read(db, session_id, writable=False)
        [logged] = stored.log
        assert logged.version == 2 and logged.loss == 0.5
        np.testing.assert_array_equal(logged.gradients["w"], np.arange(6).reshape(2, 3))
        records = db.scalars(select(HistoryEntry).where(HistoryEntry.session_id == session_id))
        assert [(entry.seq, entry.step) for entry in records] == [(1, 1)]  # t after the step


def test_a_held_update_of_a_row_that_moved_on_is_refused_with_the_rest(database: Database):
    session_id = add_session(database)
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        row = repository.row(session_id, for_update=True)
        row.version = 7  # as if read before another writer's change
        repository.advance(row, step=1, schedule_state={}, last_loss=None)
        HistoryRepository(db, 1000).record_step(
            session_id, step=1, lr=0.1, loss=None, grad_norm=None, update_norm=None,
            skipped=False, duration_ms=1.0,
        )  # fmt: skip
        with pytest.raises(StaleDataError):
            send(db)
        db.rollback()
    with database.transaction(write=False) as db:
        assert SessionRepository(db).row(session_id).version == 1
        assert HistoryRepository(db).page(session_id, after=0, limit=10)[0] == []


def test_held_writes_go_before_the_commit_and_never_after_a_rollback(database: Database):
    session_id = add_session(database)
    with pytest.raises(RuntimeError), database.transaction(write=True) as db:
        hold_a_step(db, session_id, np.ones((2, 3), np.float32))
        raise RuntimeError("the step fails after holding its writes")
    with database.transaction(write=True) as db:
        assert SessionRepository(db).row(session_id).version == 1  # nothing was sent
        hold_a_step(db, session_id, np.ones((2, 3), np.float32))  # not sent by hand
    with database.transaction(write=False) as db:
        assert SessionRepository(db).row(session_id).version == 2  # sent at the commit
        assert len(SessionArrays(db).store.read(db, session_id, writable=False).log) == 1


def test_a_skipped_steps_held_log_entry_is_taken_back_unsent(
    database: Database, executions: list[str]
):
    session_id = add_session(database)
    with database.transaction(write=True) as db:
        store = SessionArrays(db).store
        store.append_log(db, session_id, log_entry(2, np.ones((2, 3), np.float32)), hold=True)
        store.drop_log_entry(db, session_id, 2)
        send(db)
    assert executions == []
    with database.transaction(write=False) as db:
        assert SessionArrays(db).store.read(db, session_id, writable=False).log == []


STEPS_EACH = 40


@pytest.fixture
def two_apps(migrated_database_url: str) -> Iterator[list[InProcessServer]]:
    """Two apps on one database, each with its own engine and working sets: two processes."""
    with (
        InProcessServer(migrated_database_url) as first,
        InProcessServer(migrated_database_url) as second,
    ):
        yield [first, second]


def test_two_processes_stepping_one_adam_session_lose_no_step_and_stay_exact(
    two_apps: list[InProcessServer],
):
    """Every step posts the same gradient, so θ after n steps does not depend on which app
    applied which: the two apps' steps, taken at once, must give θ bit for bit as n steps of
    one app do, with every step in the history once."""
    theta0 = np.linspace(-1, 1, 10).astype(np.float32)
    gradient = np.linspace(0.5, -0.25, 10).astype(np.float32)
    body = {"params": theta0, "optimizer": {"type": "adam", "lr": 0.01}}
    with two_apps[0].client() as client:
        shared = create_session(client, body)
        alone = create_session(client, body)
    failures: list[str] = []

    def step_many(app: InProcessServer, session: dict, count: int) -> None:
        with app.client() as client:
            for _ in range(count):
                answer = post_json(
                    client,
                    f"/v1/sessions/{session['id']}/step",
                    {"gradients": gradient},
                    headers=bearer(session["token"]),
                )
                if answer.status_code != 200:
                    failures.append(answer.text)

    threads = [
        threading.Thread(target=step_many, args=(app, shared, STEPS_EACH)) for app in two_apps
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    step_many(two_apps[1], alone, 2 * STEPS_EACH)

    def final(app: InProcessServer, session: dict) -> tuple[int, np.ndarray, list[int]]:
        with app.client() as client:
            params = client.get(
                f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"])
            ).json()
            history = client.get(
                f"/v1/sessions/{session['id']}/history?limit=1000",
                headers=bearer(session["token"]),
            ).json()
        seqs = [record["seq"] for record in history["records"]]
        return params["step"], np.asarray(params["params"], np.float32), seqs

    for reader in two_apps:  # each app: from its working set or from the log, the same
        step, theta, seqs = final(reader, shared)
        assert step == 2 * STEPS_EACH
        assert seqs == list(range(1, 2 * STEPS_EACH + 1))
        np.testing.assert_array_equal(theta, final(two_apps[1], alone)[1])


def test_a_lock_not_had_on_the_driver_is_the_same_transient_failure(migrated_database_url: str):
    """The step path's BEGIN (SQLite) and row lock (PostgreSQL) run on the driver: a lock held
    elsewhere past the lock timeout is still SQLAlchemy's `DBAPIError`, a lock timeout (503)."""
    holder = Database(migrated_database_url)
    waiter = Database(migrated_database_url, lock_timeout_seconds=0.05)
    try:
        session_id = add_session(holder)
        with holder.transaction(write=True) as db:
            SessionRepository(db).row(session_id, for_update=True)
            with pytest.raises(DBAPIError) as refused, waiter.transaction(write=True) as other:
                SessionRepository(other).row(session_id, for_update=True)
        assert transient_failure(refused.value) is TransientFailure.LOCK_TIMEOUT
    finally:
        waiter.dispose()
        holder.dispose()
