"""`kill -9` of the server while clients post: after a restart, exactly the committed steps.

Adagrad over one-hot gradients makes every applied gradient visible twice over: gradient k adds
1 to the `sum` slot at k and moves θ at k (to −lr/(1 + eps), the same for every k). So the set
of applied gradients can be read off θ and off the optimizer state separately — read through
the store layer, as stored — and both must agree with each other, with the step count t, with
the per-tensor `step` slot, and must hold every acknowledged gradient. Run with every step
rewriting θ and state, and with every step only logged (then the store layer rebuilds them by
replaying the log: the kill leaves dozens of logged steps and no working set).

With spread checkpoints (small chunks: every step rewrites a share of them), a kill mid-run
leaves chunks written at many versions; what the store layer reads back must be the core's own
run over exactly the committed steps, bit for bit.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from app.stepping import SessionArrays
from app.store.database import Database
from app.store.models import SessionArray
from app.store.repository import SessionRepository
from tests.support import CoreRun, bearer, create_session, json_bytes, post_json

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


def chunk_versions(database_url: str, session_id: str) -> set[int | None]:
    """The versions the session's checkpoint rows were written at (None: a whole checkpoint)."""
    database = Database(database_url)
    try:
        with database.transaction(write=False) as db:
            statement = select(SessionArray.written_at).where(
                SessionArray.session_id == uuid.UUID(session_id),
                SessionArray.key.not_like("~log/%"),
            )
            return set(db.scalars(statement))
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
    """`chunked`: θ, the state and each logged gradient (3200 bytes) in rows of 1 KiB; `log-chunked`
    then spreads its checkpoints (Adagrad is piecewise): each step rewrites one chunk of θ and
    `sum`, and the log holds the steps since the oldest."""
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


SPREAD_SHAPES = {"w": (50, 40), "b": (40,)}


@pytest.mark.parametrize("kill_after", [13, 22])
def test_kill_9_with_spread_checkpoints_recovers_the_uninterrupted_run_bit_for_bit(
    start_server, database_url, kill_after
):
    """1 KiB chunks and a checkpoint share of 1/4 per step: the kill leaves θ and the state in
    chunks written at many versions, and the log since the oldest. NAdam's per-tensor
    `mu_product` and partial steps make each chunk's replay depend on the step it starts from.
    What the store layer reads back after the restart is the core's own run over exactly the
    committed steps (every acknowledged one, and the one in flight if it committed), bit for
    bit, and the session goes on from there as the uninterrupted run does."""
    env = {"OPTAAS_CHECKPOINT_EVERY": "4", "OPTAAS_ARRAY_CHUNK_BYTES": "1024"}
    server = start_server(database_url, env=env)
    theta = {
        name: np.random.default_rng(7).standard_normal(shape)
        for name, shape in SPREAD_SHAPES.items()
    }
    config = {"optimizer": {"type": "nadam", "lr": 0.01}, "dtype": "float64"}
    with server.client() as client:
        session = create_session(
            client, {"params": {name: array for name, array in theta.items()}, **config}
        )
    path = f"/v1/sessions/{session['id']}/step"

    def gradient(k: int) -> tuple[dict[str, np.ndarray], bool]:
        rng = np.random.default_rng(1000 + k)
        grads = {name: rng.standard_normal(shape) for name, shape in SPREAD_SHAPES.items()}
        partial = k % 3 == 2
        if partial:
            grads.pop("w")
        return grads, partial

    acknowledged = []

    def client() -> None:
        with server.client() as own:
            for k in range(10_000):
                grads, partial = gradient(k)
                try:
                    response = post_json(
                        own,
                        path,
                        {"gradients": grads, "partial": partial},
                        headers=bearer(session["token"]),
                    )
                except httpx.TransportError:
                    return
                assert response.status_code == 200, response.text
                acknowledged.append(k)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < kill_after:
        assert time.monotonic() < deadline, "the client made no progress"
        time.sleep(0.002)
    server.kill()
    thread.join()
    versions = chunk_versions(database_url, session["id"])
    assert len(versions - {None}) > 1  # chunks of several versions: the kill met a spread
    server.start()

    t, arrays = stored_state(database_url, session["id"])
    assert len(acknowledged) <= t <= len(acknowledged) + 1
    reference = CoreRun(session, theta)
    for k in range(t):
        grads, partial = gradient(k)
        reference.step(grads, partial=partial)
    for name in theta:
        np.testing.assert_array_equal(arrays[f"param/{name}"], reference.params[name])
    for key, array in reference.state.to_arrays().items():
        np.testing.assert_array_equal(arrays[key], array, err_msg=key)

    with server.client() as client:  # and the session goes on as the uninterrupted run
        for k in range(t, t + 6):
            grads, partial = gradient(k)
            reference.step(grads, partial=partial)
            response = post_json(
                client,
                path,
                {"gradients": grads, "partial": partial},
                headers=bearer(session["token"]),
            )
            assert response.status_code == 200, response.text
        params = client.get(
            f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"])
        )
        for name in theta:
            np.testing.assert_array_equal(
                np.asarray(params.json()["params"][name]), reference.params[name]
            )
