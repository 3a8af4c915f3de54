"""Synchronous accumulation (`accumulate: K`) and waiting for a step, over HTTP on SQLite and
PostgreSQL: K posts — from one worker or K, on one server or two processes — averaged and
applied as one step, durable from the first 202, never counted twice. The app runs in this
process on a clock of the test's (`tests.fake_clock`): a wait times out when the test moves the
clock, not after real seconds; crashes and two processes use live servers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.api.waiting import MAX_POLL_SECONDS
from tests.fake_clock import FakeClock
from tests.in_process import InProcessServer
from tests.support import (
    CoreRun,
    bearer,
    create_session,
    database_snapshot,
    post_json,
    read_tensors,
)
from tests.test_observability import scrape, value


@pytest.fixture(scope="module")
def clock():
    return FakeClock()


@pytest.fixture(scope="module")
def module_app(module_migrated_database_url, clock):
    with InProcessServer(module_migrated_database_url, clock=clock) as app:
        yield app


@pytest.fixture
def client(module_app):
    with module_app.client() as client:
        yield client


def new_session(client, accumulate, **config):
    body = {
        "params": {"w": [0.0, 0.0], "b": [0.0]},
        "dtype": "float64",
        "optimizer": {"type": "sgd", "lr": 0.5},
        "accumulate": accumulate,
        **config,
    }
    return create_session(client, body)


def post(client, session, gradients, **fields):
    headers = {**bearer(session["token"]), **fields.pop("headers", {})}
    return post_json(
        client,
        f"/v1/sessions/{session['id']}/step",
        {"gradients": gradients, **fields},
        headers=headers,
    )


def post_raw(client, session, body: bytes):
    """A body as Python's json writes it: NaN and Infinity as literals (orjson writes null)."""
    headers = {**bearer(session["token"]), "Content-Type": "application/json"}
    return client.post(f"/v1/sessions/{session['id']}/step", content=body, headers=headers)


def view(client, session):
    return client.get(f"/v1/sessions/{session['id']}", headers=bearer(session["token"])).json()


def wait(client, session, step, timeout):
    return client.get(
        f"/v1/sessions/{session['id']}/params",
        params={"wait_for_step": step, "timeout": timeout},
        headers=bearer(session["token"]),
    )


def records(client, session):
    response = client.get(f"/v1/sessions/{session['id']}/history", headers=bearer(session["token"]))
    return response.json()["records"]


def test_k_posts_are_averaged_and_applied_as_one_step(client, module_app):
    session = new_session(client, 3, optimizer={"type": "adam", "lr": 0.1})
    params = {"w": np.zeros(2), "b": np.zeros(1)}
    reference = CoreRun(session, params)
    posts = [
        ({"w": [1.0, 2.0], "b": [0.5]}, 0.9),
        ({"w": [3.0, -4.0], "b": [0.25]}, 0.6),
        ({"w": [0.5, 1.5], "b": [-2.0]}, None),
    ]
    before = scrape(module_app)

    first = post(client, session, posts[0][0], loss=posts[0][1])
    second = post(client, session, posts[1][0], loss=posts[1][1])
    assert view(client, session)["accumulated"] == 2
    third = post(client, session, posts[2][0])

    path = f"/v1/sessions/{session['id']}/params?wait_for_step=1"
    for response, received in ((first, 1), (second, 2)):
        assert response.status_code == 202, response.text
        assert response.json() == {
            "step": 0,
            "received": received,
            "missing": 3 - received,
            "wait_for_step": 1,
        }
        assert (response.headers["ETag"], response.headers["Location"]) == ('"0"', path)
    assert third.status_code == 200, third.text
    mean = {
        name: (np.asarray(posts[0][0][name]) + posts[1][0][name] + posts[2][0][name]) / 3
        for name in params
    }
    expected = reference.step(mean, (0.9 + 0.6) / 2)
    answer = third.json()
    assert (answer["step"], answer["lr"], third.headers["ETag"]) == (1, 0.1, '"1"')
    assert answer["grad_norm"] == expected.grad_norm
    for name, array in read_tensors(answer["params"], "float64").items():
        np.testing.assert_array_equal(array, reference.params[name], err_msg=name)
    shown = view(client, session)
    assert (shown["step"], shown["accumulated"], shown["last_loss"]) == (1, 0, 0.75)
    (record,) = records(client, session)  # one step in the history, not three
    assert (record["step"], record["loss"], record["grad_norm"]) == (1, 0.75, expected.grad_norm)
    after = scrape(module_app)
    moved = {
        outcome: value(after, "optaas_steps_total", optimizer="adam", outcome=outcome)
        - value(before, "optaas_steps_total", optimizer="adam", outcome=outcome)
        for outcome in ("accumulated", "applied")
    }
    assert moved == {"accumulated": 2, "applied": 1}


def test_clipping_and_partial_posts_act_on_the_mean(client):
    """Clip the mean (torch users clip accumulated .grad once); a tensor no post carried is left
    alone with its state, one that some posts carried gets their sum / K."""
    session = create_session(
        client,
        {
            "params": {"w": [1.0, 1.0], "b": [1.0], "frozen": [5.0]},
            "dtype": "float64",
            "optimizer": {"type": "adam", "lr": 0.1},
            "clip_grad_norm": 1.0,
            "accumulate": 2,
        },
    )
    params = {"w": np.ones(2), "b": np.ones(1), "frozen": np.array([5.0])}
    reference = CoreRun(session, params)
    assert post(client, session, {"w": [4.0, 0.0]}, partial=True).status_code == 202
    done = post(client, session, {"w": [0.0, 4.0], "b": [3.0]}, partial=True)
    assert done.status_code == 200, done.text
    reference.step({"w": np.array([2.0, 2.0]), "b": np.array([1.5])}, partial=True)
    answer = done.json()
    assert answer["grad_norm"] == pytest.approx(np.sqrt(8 + 2.25), rel=1e-15)
    for name, array in read_tensors(answer["params"], "float64").items():
        np.testing.assert_array_equal(array, reference.params[name], err_msg=name)
    assert answer["params"]["frozen"] == [5.0]
    state = client.get(
        f"/v1/sessions/{session['id']}/state", headers=bearer(session["token"])
    ).json()["state"]
    assert state["frozen"] == {"exp_avg": [0.0], "exp_avg_sq": [0.0], "step": 0}
    assert state["w"]["step"] == 1


def test_a_worker_that_never_arrives_times_out_saying_so(
    client, module_app, module_migrated_database, clock
):
    session = new_session(client, 3)
    for gradients in ({"w": [1.0, 1.0], "b": [1.0]}, {"w": [2.0, 2.0], "b": [2.0]}):
        assert post(client, session, gradients).status_code == 202
    before = database_snapshot(module_migrated_database, session["id"])
    answers = []

    def waiter() -> None:
        with module_app.client() as own:
            answers.append(wait(own, session, 1, 0.5))

    sleepers = clock.sleeping
    thread = threading.Thread(target=waiter)
    thread.start()
    clock.wait_for_sleepers(sleepers + 1)  # the wait has looked once and sleeps till it looks again
    clock.advance(0.4)
    clock.wait_for_sleepers(sleepers + 1)
    assert not answers  # 0.4 s of its clock: still waiting
    clock.advance(0.1)
    thread.join(30)

    [response] = answers
    assert response.status_code == 408, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/wait-timeout"
    assert problem["detail"] == (
        "waited 0.5 s for step 1; the session is at step 0, with 2 of 3 gradients received for "
        "step 1 (1 missing)"
    )
    assert {
        key: problem[key] for key in ("current_step", "wait_for_step", "received", "missing")
    } == {
        "current_step": 0,
        "wait_for_step": 1,
        "received": 2,
        "missing": 1,
    }
    assert database_snapshot(module_migrated_database, session["id"]) == before


def test_a_waiting_worker_gets_the_parameters_once_the_last_gradient_arrives(
    client, module_app, clock
):
    session = new_session(client, 2)
    assert post(client, session, {"w": [1.0, 1.0], "b": [1.0]}).status_code == 202
    answers = []

    def waiter() -> None:
        with module_app.client() as own:
            answers.append(wait(own, session, 1, 20))

    sleepers = clock.sleeping
    thread = threading.Thread(target=waiter)
    thread.start()
    clock.wait_for_sleepers(sleepers + 1)
    assert not answers  # still waiting
    assert post(client, session, {"w": [3.0, 1.0], "b": [0.0]}).status_code == 200
    clock.advance(MAX_POLL_SECONDS)  # the wait looks again within one poll interval
    thread.join(30)

    [response] = answers
    assert response.status_code == 200, response.text
    assert response.json() == {"step": 1, "params": {"w": [-1.0, -0.5], "b": [-0.25]}}
    assert response.headers["ETag"] == '"1"'
    assert clock.monotonic() < 20  # answered long before its timeout
    already = wait(client, session, 1, 0)  # a step already reached answers at once
    assert already.status_code == 200 and already.json()["step"] == 1


def test_a_retried_post_is_not_counted_twice(client):
    session = new_session(client, 3)
    key = {"Idempotency-Key": "grad-of-worker-1"}
    first = post(client, session, {"w": [1.0, 0.0], "b": [0.0]}, headers=key)
    retry = post(client, session, {"w": [1.0, 0.0], "b": [0.0]}, headers=key)
    assert first.status_code == retry.status_code == 202
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert view(client, session)["accumulated"] == 1
    assert post(client, session, {"w": [2.0, 0.0], "b": [0.0]}).json()["received"] == 2
    done = post(client, session, {"w": [3.0, 0.0], "b": [0.0]})
    assert done.json()["params"] == {"w": [-1.0, 0.0], "b": [0.0]}  # mean of 1, 2 and 3
    late = post(client, session, {"w": [1.0, 0.0], "b": [0.0]}, headers=key)
    assert late.status_code == 202 and late.content == first.content  # counted once, in step 1
    assert view(client, session)["accumulated"] == 0


def test_if_match_counts_a_gradient_only_toward_the_step_it_was_computed_for(
    client, module_migrated_database
):
    session = new_session(client, 2)
    current = {"If-Match": '"0"'}
    assert post(client, session, {"w": [1.0, 1.0], "b": [1.0]}, headers=current).status_code == 202
    assert post(client, session, {"w": [1.0, 1.0], "b": [1.0]}, headers=current).status_code == 200
    before = database_snapshot(module_migrated_database, session["id"])

    stale = post(client, session, {"w": [1.0, 1.0], "b": [1.0]}, headers=current)

    assert stale.status_code == 412
    assert stale.json()["current_step"] == 1
    assert database_snapshot(module_migrated_database, session["id"]) == before


def test_reject_refuses_a_non_finite_post_and_does_not_count_it(client, module_migrated_database):
    session = new_session(client, 2)
    assert post(client, session, {"w": [1.0, 1.0], "b": [1.0]}).status_code == 202
    before = database_snapshot(module_migrated_database, session["id"])
    response = post_raw(client, session, b'{"gradients": {"w": [1.0, 1e999], "b": [1.0]}}')
    assert response.status_code == 422
    assert (response.json()["type"], response.json()["tensor"]) == (
        "/problems/non-finite-gradient",
        "w",
    )
    assert database_snapshot(module_migrated_database, session["id"]) == before
    mismatch = post(client, session, {"w": [1.0], "b": [1.0]})
    assert mismatch.status_code == 422 and mismatch.json()["tensor"] == "w"
    assert database_snapshot(module_migrated_database, session["id"]) == before


def test_skip_skips_the_whole_step_when_a_post_was_not_finite(client):
    """As torch's GradScaler skips a step whose accumulated .grad holds inf: the batch ends, θ,
    state and t stay, and the history shows the skip."""
    session = new_session(client, 2, nonfinite="skip")
    nan = b'{"gradients": {"w": [1.0, NaN], "b": [1.0]}}'
    assert post_raw(client, session, nan).status_code == 202
    skipped = post(client, session, {"w": [1.0, 1.0], "b": [1.0]})
    assert skipped.status_code == 200
    assert skipped.json()["skipped"] is True
    assert skipped.json()["params"] == {"w": [0.0, 0.0], "b": [0.0]}
    shown = view(client, session)
    assert (shown["step"], shown["accumulated"]) == (0, 0)
    assert [record["skipped"] for record in records(client, session)] == [True]
    assert post(client, session, {"w": [2.0, 2.0], "b": [2.0]}).status_code == 202  # a new batch


def test_a_patch_of_accumulate_mid_batch_applies_to_the_posts_pending(client):
    """The mean is over the posts received: lowering K below them completes the step with the
    next post."""
    session = new_session(client, 4)
    for g in (1.0, 2.0):
        assert post(client, session, {"w": [g, 0.0], "b": [0.0]}).status_code == 202
    patched = client.patch(
        f"/v1/sessions/{session['id']}",
        json={"accumulate": 2},
        headers=bearer(session["token"]),
    )
    assert patched.status_code == 200 and patched.json()["accumulated"] == 2
    done = post(client, session, {"w": [6.0, 0.0], "b": [0.0]})
    assert done.status_code == 200
    assert done.json()["params"] == {"w": [-1.5, 0.0], "b": [0.0]}  # 0.5 × (1 + 2 + 6) / 3


def test_pending_gradients_are_neither_exported_nor_forked(client):
    session = new_session(client, 2)
    assert post(client, session, {"w": [1.0, 1.0], "b": [1.0]}).status_code == 202
    auth = bearer(session["token"])
    exported = client.get(f"/v1/sessions/{session['id']}/state", headers=auth).json()
    assert set(exported["state"]["w"]) == {"step"}
    forked = client.post(f"/v1/sessions/{session['id']}/fork", headers=auth)
    assert forked.status_code == 201, forked.text
    assert (forked.json()["accumulated"], forked.json()["accumulate"]) == (0, 2)
    assert view(client, session)["accumulated"] == 1


def test_posts_answered_202_survive_a_crash(start_server, database_url):
    server = start_server(database_url)
    with server.client() as client:
        session = new_session(client, 2)
        assert post(client, session, {"w": [1.0, 3.0], "b": [1.0]}, loss=2.0).status_code == 202
    server.restart(kill=True)
    with server.client() as client:
        assert view(client, session)["accumulated"] == 1
        nan_loss = b'{"gradients": {"w": [3.0, 1.0], "b": [3.0]}, "loss": NaN}'
        done = post_raw(client, session, nan_loss)
        assert done.status_code == 200, done.text
        assert done.json()["params"] == {"w": [-1.0, -1.0], "b": [-1.0]}
        assert view(client, session)["last_loss"] is None  # the mean of 2.0 and NaN


def test_k_workers_on_two_processes_each_round_one_step(start_server, database_url):
    """Four workers, two server processes, ten rounds: each worker posts its gradient, then
    waits for the step it is part of (the 202's `wait_for_step`) before its next. Every round
    is exactly three 202s and one 200, and θ is exact (integers / 4 and lr = 1/4, in float64)."""
    server = start_server(database_url, workers=2)
    workers, rounds = 4, 10
    with server.client() as client:
        session = create_session(
            client,
            {
                "params": [0.0, 0.0],
                "dtype": "float64",
                "optimizer": {"type": "sgd", "lr": 0.25},
                "accumulate": workers,
            },
        )
    statuses: list[list[int]] = [[] for _ in range(rounds)]
    failures: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        with server.client() as own:
            for r in range(rounds):
                response = post(own, session, [float(w + 1), float(r)])
                with lock:
                    statuses[r].append(response.status_code)
                if response.status_code == 202:
                    target = response.json()["wait_for_step"]
                    waited = wait(own, session, target, 30)
                    if waited.status_code != 200 or waited.json()["step"] < r + 1:
                        failures.append(waited.text)
                elif response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert [sorted(round_statuses) for round_statuses in statuses] == [
        [200, 202, 202, 202]
    ] * rounds
    with server.client() as client:
        final = client.get(f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"]))
    mean_first = (1 + 2 + 3 + 4) / 4
    assert final.json() == {
        "step": rounds,
        "params": [-0.25 * mean_first * rounds, -0.25 * sum(range(rounds))],
    }
