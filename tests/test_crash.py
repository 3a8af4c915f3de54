"""`kill -9` of the server while clients post: after a restart, exactly the committed steps.

Adagrad over one-hot gradients makes every applied gradient visible twice over: gradient k adds
1 to the `sum` slot at k and moves θ at k (to −lr/(1 + eps), the same for every k). So the set
of applied gradients can be read off θ and off the optimizer state separately — read through
the store layer, as stored — and both must agree with each other, with the step count t, with
the per-tensor `step` slot, and must hold every acknowledged gradient. Run with every step
rewriting θ and state, and with every step only logged (then the store layer rebuilds them by
replaying the log: the kill leaves dozens of logged steps and no working set).
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from app.stepping import SessionArrays
from app.store.database import Database
from app.store.repository import SessionRepository
from tests.support import bearer, create_session, json_bytes, post_json

SIZE, CLIENTS, LR = 400, 4, 0.5
ACKNOWLEDGED_BEFORE_KILL = 40


def stored_state(database_url: str, session_id: str):
    """The session's row and arrays as the store layer reads them."""
    database = Database(database_url)
    try:
        with database.transaction(write=False) as db:
            repository = SessionRepository(db)
            record = repository.get(uuid.UUID(session_id))
            return record.step, SessionArrays(db).load(record.id)
    finally:
        database.dispose()


@pytest.mark.parametrize(
    ("checkpoint_every", "chunk_bytes"),
    [("1", None), ("100000", None), ("1", "1024"), ("100000", "1024")],
    ids=["rewrite", "log", "rewrite-chunked", "log-chunked"],
)
def test_kill_9_mid_run_keeps_exactly_the_committed_steps(
    start_server, database_url, checkpoint_every, chunk_bytes
):
    """`chunked`: θ, the state and each logged gradient (3200 bytes) in rows of 1 KiB."""
    env = {"OPTAAS_CHECKPOINT_EVERY": checkpoint_every}
    if chunk_bytes is not None:
        env["OPTAAS_ARRAY_CHUNK_BYTES"] = chunk_bytes
    server = start_server(database_url, env=env)
    with server.client() as client:
        session = create_session(
            client,
            {
                "params": [0.0] * SIZE,
                "dtype": "float64",
                "optimizer": {"type": "adagrad", "lr": LR},
            },
        )
    headers = {**bearer(session["token"]), "Content-Type": "application/json"}
    path = f"/v1/sessions/{session['id']}/step"
    acknowledged: set[int] = set()
    in_flight: set[int] = set()
    lock = threading.Lock()

    def client(c: int) -> None:
        with server.client() as own:
            for k in range(c, SIZE, CLIENTS):
                gradient = np.zeros(SIZE)
                gradient[k] = 1.0
                with lock:
                    in_flight.add(k)
                try:
                    response = own.post(
                        path, content=json_bytes({"gradients": gradient}), headers=headers
                    )
                except httpx.TransportError:
                    return  # the server is gone; k may or may not have been committed
                assert response.status_code == 200, response.text
                with lock:
                    in_flight.discard(k)
                    acknowledged.add(k)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL:
        assert time.monotonic() < deadline, "the clients made no progress"
        time.sleep(0.005)
    server.kill()
    for thread in threads:
        thread.join()
    assert len(acknowledged) < SIZE, "the run ended before the kill: nothing was tested"

    server.start()  # same port, same database

    t, arrays = stored_state(database_url, session["id"])
    theta, accumulated, steps = arrays["param/params"], arrays["sum/params"], arrays["step/params"]
    applied_by_theta = set(np.flatnonzero(theta).tolist())
    applied_by_state = set(np.flatnonzero(accumulated).tolist())
    assert applied_by_theta == applied_by_state  # θ and σ come from the same steps
    assert len(applied_by_state) == t == int(steps)  # and so do t and the per-tensor count
    assert set(accumulated[sorted(applied_by_state)].tolist()) <= {1.0}  # none applied twice
    assert acknowledged <= applied_by_state <= acknowledged | in_flight
    one_step = -LR / (1.0 + 1e-10)  # Adagrad's first update of a unit gradient
    assert np.all(theta[sorted(applied_by_theta)] == one_step)

    with server.client() as client:  # and the session goes on from there
        gradient = np.zeros(SIZE)
        gradient[SIZE - 1] = 1.0
        response = post_json(
            client, path, {"gradients": gradient}, headers=bearer(session["token"])
        )
        assert response.status_code == 200, response.text
        assert response.json()["step"] == t + 1
