"""The database going away, sessions held locked, and real bugs: 503 + Retry-After for what
passes by itself, 500 for what does not, and a service that recovers without a restart."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from app.store.database import Database, TransientFailure, transient_failure
from app.store.migrate import upgrade
from app.store.repository import SessionRepository
from tests.conftest import REQUIRE_POSTGRES
from tests.databases import PrivatePostgres, _free_port
from tests.support import bearer, create_session, database_snapshot, json_bytes, post_json

SGD = {"params": [0.0, 0.0], "dtype": "float64", "optimizer": {"type": "sgd", "lr": 0.5}}


def step(client, session, gradients, **headers):
    path = f"/v1/sessions/{session['id']}/step"
    return post_json(
        client, path, {"gradients": gradients}, headers={**bearer(session["token"]), **headers}
    )


# -- PostgreSQL stopped and started under load -----------------------------------------------


@pytest.fixture
def private_postgres():
    try:
        cluster = PrivatePostgres().init()
    except (FileNotFoundError, OSError) as error:
        if REQUIRE_POSTGRES:
            pytest.fail(f"OPTAAS_REQUIRE_POSTGRES=1 but no private cluster: {error}")
        pytest.skip(f"cannot make a private PostgreSQL cluster: {error}")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


CLIENTS, PER_CLIENT, LR = 3, 40, 0.5


@pytest.mark.postgres
def test_postgres_restart_mid_run_answers_503_meanwhile_then_serves_without_restart(
    private_postgres, start_server
):
    server = start_server(private_postgres.url)
    pid = server.process.pid
    size = CLIENTS * PER_CLIENT
    with server.client() as client:
        session = create_session(
            client,
            {"params": [0.0] * size, "dtype": "float64", "optimizer": {"type": "sgd", "lr": LR}},
        )
    headers = {**bearer(session["token"]), "Content-Type": "application/json"}
    answers: list[httpx.Response] = []
    transport_errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        """Posts one-hot gradients with keys, sending each again after a 503 until it is 200."""
        with server.client() as own:
            for k in range(c, size, CLIENTS):
                gradient = [0.0] * size
                gradient[k] = 1.0
                while True:
                    try:
                        response = own.post(
                            f"/v1/sessions/{session['id']}/step",
                            content=json_bytes({"gradients": gradient}),
                            headers={**headers, "Idempotency-Key": f"g-{k}"},
                        )
                    except httpx.TransportError as error:
                        with lock:
                            transport_errors.append(repr(error))
                        return
                    with lock:
                        answers.append(response)
                    if response.status_code != 503:
                        break
                    time.sleep(0.05)

    def count(status: int) -> int:
        with lock:
            return sum(answer.status_code == status for answer in answers)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: count(200) >= 15, "no steps before the outage")
    private_postgres.stop()
    wait_until(lambda: count(503) >= 10, "no 503 during the outage")
    with server.client() as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert int(ready.headers["Retry-After"]) > 0
    private_postgres.start()
    for thread in threads:
        thread.join(timeout=60)

    assert transport_errors == []
    assert {answer.status_code for answer in answers} == {200, 503}
    unavailable = [answer for answer in answers if answer.status_code == 503]
    assert all(int(answer.headers["Retry-After"]) > 0 for answer in unavailable)
    assert {answer.json()["type"] for answer in unavailable} == {"/problems/database-unavailable"}
    assert server.running and server.process.pid == pid  # recovered by itself
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        final = client.get(f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"]))
    assert final.json()["step"] == size
    assert final.json()["params"] == [-LR] * size  # each gradient exactly once, across the outage


def wait_until(condition, message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


# -- lock timeout ------------------------------------------------------------------------------


@contextmanager
def session_locked(database: Database, session_id: str):
    """Hold the session's lock as a step would: FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
    SQLite (through the store layer)."""
    with database.transaction(write=True) as db:
        assert SessionRepository(db).get(uuid.UUID(session_id), for_update=True) is not None
        yield


def test_a_step_waits_at_most_the_lock_timeout_then_gets_503_and_changes_nothing(
    start_server, database_url
):
    server = start_server(database_url, env={"OPTAAS_LOCK_TIMEOUT_SECONDS": "0.5"})
    database = Database(database_url)
    try:
        with server.client() as client:
            session = create_session(client, SGD)
            assert step(client, session, [1.0, 1.0]).status_code == 200
            before = database_snapshot(database, session["id"])

            with session_locked(database, session["id"]):
                busy = step(client, session, [1.0, 1.0], **{"Idempotency-Key": "busy"})
                assert database_snapshot(database, session["id"]) == before

            assert busy.status_code == 503, busy.text
            assert busy.headers["content-type"] == "application/problem+json"
            assert busy.json()["type"] == "/problems/lock-timeout"
            assert int(busy.headers["Retry-After"]) > 0
            after = step(client, session, [1.0, 1.0], **{"Idempotency-Key": "busy"})
            assert after.status_code == 200  # the 503 was not kept: the retry is applied
            assert "Idempotent-Replayed" not in after.headers
            assert after.json()["step"] == 2
    finally:
        database.dispose()


# -- real bugs stay 500 ------------------------------------------------------------------------


def test_a_database_error_that_is_no_outage_is_a_500_and_logged(start_server, database_url):
    server = start_server(database_url)
    with server.client() as client:
        session = create_session(client, SGD)
        engine = create_engine(database_url)
        with engine.begin() as connection:  # break the schema under the running server
            connection.execute(text("DROP TABLE session_arrays"))
        engine.dispose()
        response = step(client, session, [1.0, 1.0])
    assert response.status_code == 500
    assert response.json()["type"] == "/problems/internal-error"
    wait_until(lambda: "session_arrays" in server.log_tail(), "the server did not log the error")


def database_error(url: str, statement: str, *setup: str) -> DBAPIError:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for prepared in setup:
                connection.execute(text(prepared))
            connection.execute(text(statement))
    except DBAPIError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{statement!r} did not fail")


def test_only_lock_timeouts_and_outages_count_as_transient(database_url):
    upgrade(database_url)
    assert transient_failure(database_error(database_url, "SELECT * FROM no_such_table")) is None
    duplicate = "INSERT INTO idempotency_records VALUES ('s', 'k', NULL, 'f', NULL, NULL, NULL, "
    duplicate += "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    assert transient_failure(database_error(database_url, duplicate, duplicate)) is None

    if make_url(database_url).get_backend_name() == "sqlite":
        path = make_url(database_url).database
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            busy = database_error(database_url + "?timeout=0.05", "DELETE FROM sessions")
        finally:
            holder.rollback()
            holder.close()
        assert transient_failure(busy) is TransientFailure.LOCK_TIMEOUT
    else:
        refused = make_url(database_url).set(port=_free_port())
        engine = create_engine(refused)
        with pytest.raises(DBAPIError) as caught:
            engine.connect()
        engine.dispose()
        assert transient_failure(caught.value) is TransientFailure.UNAVAILABLE
        holder = create_engine(database_url)
        with holder.begin() as connection:
            connection.execute(text("LOCK TABLE sessions"))
            waiting = database_error(
                database_url, "SELECT * FROM sessions", "SET LOCAL lock_timeout = 50"
            )
        holder.dispose()
        assert transient_failure(waiting) is TransientFailure.LOCK_TIMEOUT
