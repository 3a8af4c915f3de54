"""Concurrent clients and retries against two separate server processes on one database.

Numbers are chosen so that every result is exact in float64 whatever the order of the steps:
SGD with a constant lr that is a power of two, θ₀ and gradients small integers — every partial
sum θ₀ − lr·Σg is a multiple of lr far below 2⁵³, so "θ = θ₀ − lr·Σg" is an exact equality.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import httpx
import numpy as np
import pytest

from tests.support import DroppingTransport, bearer, create_session, json_bytes

LR = 0.25


@pytest.fixture(scope="module")
def servers(module_database_url, module_start_server):
    """Two `optaas serve` processes on one database."""
    return [module_start_server(module_database_url), module_start_server(module_database_url)]


def sgd_session(server, theta0):
    with server.client() as client:
        return create_session(
            client,
            {"params": theta0, "dtype": "float64", "optimizer": {"type": "sgd", "lr": LR}},
        )


def step_path(session):
    return f"/v1/sessions/{session['id']}/step"


def read_params(server, session):
    with server.client() as client:
        response = client.get(
            f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"])
        )
    assert response.status_code == 200
    return response.json()


def run_threads(targets):
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- no lost updates ---------------------------------------------------------------------------

CLIENTS, STEPS = 8, 100


def test_concurrent_clients_on_two_processes_lose_and_double_no_step(servers):
    """8 clients × 100 steps, alternating between the two processes. Client c's gradients are
    one-hot at c plus a random small integer at the end, so θ shows each client's count too."""
    theta0 = [float(index) for index in range(CLIENTS + 1)]
    session = sgd_session(servers[0], theta0)
    headers = {**bearer(session["token"]), "Content-Type": "application/json"}
    acknowledged: list[np.ndarray] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        rng = np.random.default_rng(c)
        with servers[0].client() as first, servers[1].client() as second:
            for index in range(STEPS):
                gradient = np.zeros(CLIENTS + 1)
                gradient[c] = 1.0
                gradient[-1] = float(rng.integers(-3, 4))
                own = (first, second)[(c + index) % 2]
                response = own.post(
                    step_path(session), content=json_bytes({"gradients": gradient}), headers=headers
                )
                with lock:
                    if response.status_code == 200:
                        acknowledged.append(gradient)
                    else:
                        failures.append(f"{response.status_code} {response.text}")

    run_threads([lambda c=c: client(c) for c in range(CLIENTS)])

    assert failures == []
    final = read_params(servers[1], session)
    assert final["step"] == len(acknowledged) == CLIENTS * STEPS
    expected = np.asarray(theta0) - LR * np.sum(acknowledged, axis=0)
    assert np.array_equal(np.asarray(final["params"]), expected)
    assert final["params"][:CLIENTS] == [c - LR * STEPS for c in range(CLIENTS)]


# -- retries ---------------------------------------------------------------------------------


RETRY_CLIENTS, GRADIENTS_PER_CLIENT, DOUBLED = 4, 30, 12


def one_hot(index: int, size: int) -> list[float]:
    gradient = [0.0] * size
    gradient[index] = 1.0
    return gradient


def test_retries_and_duplicate_keys_apply_every_gradient_exactly_once(servers):
    """Gradient k is one-hot at k, sent with key g-k: θ shows which gradients were applied, and
    how often. Clients lose every third answer and retry with the same key; `DOUBLED` more
    gradients are each sent by two clients at once, one per process."""
    size = RETRY_CLIENTS * GRADIENTS_PER_CLIENT + DOUBLED
    session = sgd_session(servers[0], [0.0] * size)
    headers = {**bearer(session["token"]), "Content-Type": "application/json"}
    final_answers: dict[int, list[httpx.Response]] = defaultdict(list)
    transports: list[DroppingTransport] = []
    lock = threading.Lock()

    def post(client: httpx.Client, k: int) -> httpx.Response:
        body = json_bytes({"gradients": one_hot(k, size)})
        for _attempt in range(20):
            try:
                return client.post(
                    step_path(session),
                    content=body,
                    headers={**headers, "Idempotency-Key": f"g-{k}"},
                )
            except httpx.TransportError:
                continue  # lost: send it again, same key
        raise AssertionError(f"gradient {k} never got an answer")

    def retrying_client(c: int) -> None:
        transport = DroppingTransport(drop_every=3)
        with lock:
            transports.append(transport)
        server = servers[c % 2]
        with httpx.Client(base_url=server.url, transport=transport, trust_env=False) as client:
            for k in range(c, RETRY_CLIENTS * GRADIENTS_PER_CLIENT, RETRY_CLIENTS):
                response = post(client, k)
                with lock:
                    final_answers[k].append(response)

    barriers = {k: threading.Barrier(2) for k in range(size - DOUBLED, size)}

    def doubling_client(k: int, server_index: int) -> None:
        with servers[server_index].client() as client:
            barriers[k].wait()
            response = post(client, k)
            with lock:
                final_answers[k].append(response)

    run_threads(
        [lambda c=c: retrying_client(c) for c in range(RETRY_CLIENTS)]
        + [lambda k=k, i=i: doubling_client(k, i) for k in barriers for i in (0, 1)]
    )

    final = read_params(servers[0], session)
    assert final["step"] == size
    assert final["params"] == [-LR] * size  # every gradient exactly once: none lost, none doubled
    assert all(r.status_code == 200 for answers in final_answers.values() for r in answers)

    lost = {key: bodies for transport in transports for key, bodies in transport.lost.items()}
    assert len(lost) >= RETRY_CLIENTS * GRADIENTS_PER_CLIENT // 4  # the network did lose answers
    for key, bodies in lost.items():
        [answer] = final_answers[int(key.removeprefix("g-"))]
        assert answer.headers["Idempotent-Replayed"] == "true"
        assert {answer.content} == set(bodies)  # the replay is the lost original, byte for byte

    for k in barriers:
        first, second = final_answers[k]
        assert first.content == second.content
        assert sorted(r.headers.get("Idempotent-Replayed", "no") for r in (first, second)) == [
            "no",
            "true",
        ]
