"""Sessions end to end: real HTTP to a real server process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import numpy as np
import pytest

from app.optim import optimizer_defaults
from app.stepping import SessionArrays
from app.store.database import Database
from tests.support import (
    CoreRun,
    bearer,
    create_session,
    database_snapshot,
    post_json,
    random_arrays,
    read_tensors,
    wire_tensors,
)

RUNS = {
    "named-float32-adam-warmup-cosine-clipped": {
        "layout": "named",
        "shapes": {"encoder.w": (3, 4), "encoder.b": (4,), "scale": ()},
        "config": {
            "dtype": "float32",
            "optimizer": {"type": "adam", "lr": 0.01, "weight_decay": 0.01},
            "schedule": {
                "type": "warmup",
                "warmup_steps": 10,
                "then": {"type": "cosine", "total_steps": 90},
            },
            "clip_grad_norm": 1.0,
        },
    },
    "single-float64-rmsprop-centered-momentum-step": {
        "layout": "single",
        "shapes": {"params": (5, 2)},
        "config": {
            "dtype": "float64",
            "optimizer": {"type": "rmsprop", "lr": 0.01, "momentum": 0.9, "centered": True},
            "schedule": {"type": "step", "step_size": 30, "gamma": 0.5},
            "clip_grad_value": 0.5,
        },
    },
}


def gradient_stream(shapes, dtype, steps, seed):
    rng = np.random.default_rng(seed)
    return [random_arrays(rng, shapes, dtype) for _ in range(steps)]


@pytest.mark.slow_on_postgres
@pytest.mark.parametrize("run", list(RUNS))
def test_hundred_steps_equal_the_cores_own_result(module_app, run):
    spec = RUNS[run]
    layout, dtype = spec["layout"], spec["config"]["dtype"]
    params = random_arrays(np.random.default_rng(1), spec["shapes"], dtype)
    with module_app.client() as client:
        created = create_session(client, {"params": wire_tensors(params, layout), **spec["config"]})
        reference = CoreRun(created, params)
        auth = bearer(created["token"])
        path = f"/v1/sessions/{created['id']}"

        for t, grads in enumerate(gradient_stream(spec["shapes"], dtype, 100, seed=2)):
            loss = 1.0 / (t + 1)
            response = post_json(
                client,
                f"{path}/step",
                {"gradients": wire_tensors(grads, layout), "loss": loss},
                headers=auth,
            )
            assert response.status_code == 200, response.text
            expected = reference.step(grads, loss)
            answer = response.json()
            assert answer["step"] == t + 1
            assert response.headers["ETag"] == f'"{t + 1}"'
            assert answer["lr"] == expected.lr
            assert answer["grad_norm"] == pytest.approx(expected.grad_norm, rel=1e-12)
            assert answer["skipped"] is False

        stepped = read_tensors(answer["params"], dtype)
        stored = read_tensors(client.get(f"{path}/params", headers=auth).json()["params"], dtype)
        view = client.get(path, headers=auth).json()

    assert list(stepped) == list(params)
    for name in params:
        np.testing.assert_array_equal(stepped[name], reference.params[name], err_msg=name)
        np.testing.assert_array_equal(stored[name], reference.params[name], err_msg=name)
    assert view["step"] == 100
    assert view["last_loss"] == 1.0 / 100
    assert view["lr"] == reference.optimizer.lr(reference.state)


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill-9"])
def test_restart_mid_run_continues_exactly_where_it_stopped(start_server, database_url, kill):
    """θ, every state slot, t and the plateau schedule's state survive the server process."""
    shapes = {"w": (4, 3), "b": (3,)}
    params = random_arrays(np.random.default_rng(3), shapes, "float32")
    config = {
        "optimizer": {"type": "adam", "lr": 0.05, "amsgrad": True},
        "schedule": {"type": "reduce_on_plateau", "patience": 2, "factor": 0.5},
    }
    grads = gradient_stream(shapes, "float32", 100, seed=4)
    losses = [float(x) for x in np.random.default_rng(5).uniform(0.5, 1.5, size=100)]

    server = start_server(database_url)
    client = server.client()
    created = create_session(client, {"params": wire_tensors(params, "named"), **config})
    reference = CoreRun(created, params)
    auth = bearer(created["token"])
    path = f"/v1/sessions/{created['id']}"
    lrs = []
    for t in range(100):
        if t == 50:
            client.close()
            server.restart(kill=kill)
            client = server.client()
        body = {"gradients": grads[t], "loss": losses[t]}
        response = post_json(client, f"{path}/step", body, headers=auth)
        assert response.status_code == 200, response.text
        lrs.append(reference.step(grads[t], losses[t]).lr)
        assert response.json()["lr"] == lrs[-1]
    final = read_tensors(client.get(f"{path}/params", headers=auth).json()["params"], "float32")
    assert client.get(path, headers=auth).json()["step"] == 100
    client.close()

    assert len(set(lrs[50:])) > 1, "the plateau schedule should act after the restart"
    for name in shapes:
        np.testing.assert_array_equal(final[name], reference.params[name], err_msg=name)


def test_get_shows_the_config_with_every_default_filled_in(module_app):
    with module_app.client() as client:
        response = post_json(
            client, "/v1/sessions", {"params": [[1.0, 2.0]], "optimizer": {"type": "adam"}}
        )
        assert response.status_code == 201
        created = response.json()
        assert response.headers["Location"] == f"/v1/sessions/{created['id']}"
        assert response.headers["ETag"] == '"0"'
        view_response = client.get(
            f"/v1/sessions/{created['id']}", headers=bearer(created["token"])
        )
    view = view_response.json()

    assert view_response.headers["ETag"] == '"0"'
    assert "token" not in view
    assert {key: value for key, value in created.items() if key != "token"} == view
    assert view["optimizer"] == {"type": "adam", **optimizer_defaults("adam")}
    assert view["schedule"] == {"type": "constant"}
    assert view["clip_grad_norm"] is None
    assert view["clip_grad_value"] is None
    assert view["nonfinite"] == "reject"
    assert view["groups"] is None
    assert view["accumulate"] == 1
    assert (view["dtype"], view["layout"], view["shapes"]) == (
        "float32",
        "single",
        {"params": [1, 2]},
    )
    assert (view["step"], view["lr"], view["last_loss"], view["name"]) == (0, 0.001, None, None)
    assert datetime.fromisoformat(view["created_at"]).utcoffset().total_seconds() == 0
    assert view["created_at"] == view["updated_at"]


def test_a_step_moves_step_loss_and_updated_at(module_app):
    with module_app.client() as client:
        created = create_session(
            client,
            {"name": "tiny", "params": {"x": [1.0]}, "optimizer": {"type": "sgd", "lr": 0.5}},
        )
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        step = post_json(
            client, f"{path}/step", {"gradients": {"x": [2.0]}, "loss": 3.5}, headers=auth
        )
        view = client.get(path, headers=auth).json()
    assert step.json()["params"] == {"x": [0.0]}
    assert (view["name"], view["step"], view["last_loss"]) == ("tiny", 1, 3.5)
    assert datetime.fromisoformat(view["updated_at"]) > datetime.fromisoformat(view["created_at"])


def test_return_none_leaves_the_params_out(module_app):
    with module_app.client() as client:
        created = create_session(client, {"params": [1.0, 2.0], "optimizer": {"type": "sgd"}})
        response = post_json(
            client,
            f"/v1/sessions/{created['id']}/step?return=none",
            {"gradients": [1.0, 1.0]},
            headers=bearer(created["token"]),
        )
    assert response.status_code == 200
    assert "params" not in response.json()
    assert response.json()["step"] == 1
    assert response.headers["ETag"] == '"1"'


def test_partial_step_leaves_the_other_tensors_and_their_state_alone(module_app):
    params = {"w": np.array([1.0, 2.0], "float32"), "b": np.array([3.0], "float32")}
    with module_app.client() as client:
        created = create_session(
            client, {"params": params, "optimizer": {"type": "adam", "lr": 0.1}}
        )
        reference = CoreRun(created, params)
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        for body, partial in [({"w": [1.0, -1.0], "b": [0.5]}, False), ({"w": [0.5, 0.5]}, True)]:
            response = post_json(
                client, f"{path}/step", {"gradients": body, "partial": partial}, headers=auth
            )
            assert response.status_code == 200, response.text
            grads = {name: np.asarray(value, "float32") for name, value in body.items()}
            reference.step(grads, partial=partial)
        after = read_tensors(response.json()["params"], "float32")
    np.testing.assert_array_equal(after["w"], reference.params["w"])
    np.testing.assert_array_equal(after["b"], reference.params["b"])
    assert after["b"][0] != params["b"][0]  # moved by the first step, not by the partial one


def test_non_finite_gradient_under_skip_changes_nothing(module_app, module_migrated_database_url):
    with module_app.client() as client:
        created = create_session(
            client,
            {"params": {"w": [1.0, 2.0]}, "optimizer": {"type": "sgd"}, "nonfinite": "skip"},
        )
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        database = Database(module_migrated_database_url)
        before = database_snapshot(database, created["id"])
        # 1e39 is beyond float32: it arrives as +inf, like an overflowed gradient.
        response = post_json(
            client, f"{path}/step", {"gradients": {"w": [1.0, 1e39]}}, headers=auth
        )
        after = database_snapshot(database, created["id"])
        database.dispose()
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["skipped"], answer["step"], answer["params"]) == (True, 0, {"w": [1.0, 2.0]})
    assert answer["grad_norm"] is None
    assert before == after


def test_delete_removes_the_session_and_its_arrays(module_app, module_migrated_database_url):
    with module_app.client() as client:
        created = create_session(client, {"params": [1.0], "optimizer": {"type": "sgd"}})
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        assert client.delete(path, headers=auth).status_code == 204
        assert client.get(path, headers=auth).status_code == 404
        assert client.get(f"{path}/params", headers=auth).status_code == 404
        assert (
            post_json(client, f"{path}/step", {"gradients": [1.0]}, headers=auth).status_code == 404
        )
        assert client.delete(path, headers=auth).status_code == 404
    database = Database(module_migrated_database_url)
    with database.transaction(write=False) as db:
        left = SessionArrays(db).load(uuid.UUID(created["id"]))
    database.dispose()
    assert left == {}


def post_concurrently(server, clients: int, steps: int, lr: float) -> tuple[dict, list[str]]:
    """`clients` threads post `steps` SGD steps each to one session; its final params and failures.

    SGD with gradients and lr that are exact binary fractions, so the sum does not depend on the
    order the steps are applied in: θ = θ₀ − lr·Σg exactly, iff every step was applied once.
    """
    with server.client() as client:
        created = create_session(
            client,
            {"params": [0.0, 0.0], "dtype": "float64", "optimizer": {"type": "sgd", "lr": lr}},
        )
    auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
    failures: list[str] = []

    def post_steps(worker: int) -> None:
        with server.client() as own:
            for _ in range(steps):
                body = {"gradients": [1.0, worker]}
                response = post_json(own, f"{path}/step", body, headers=auth)
                if response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=post_steps, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with server.client() as client:
        return client.get(f"{path}/params", headers=auth).json(), failures


def test_concurrent_clients_on_one_session_lose_no_step(module_app):
    clients, steps, lr = 4, 10, 0.25
    final, failures = post_concurrently(module_app, clients, steps, lr)
    assert failures == []
    assert final["step"] == clients * steps
    assert final["params"] == [-lr * clients * steps, -lr * steps * sum(range(clients))]


def test_two_worker_processes_serialise_steps_on_one_session(start_server, database_url):
    server = start_server(database_url, workers=2)
    clients, steps, lr = 4, 10, 0.25
    final, failures = post_concurrently(server, clients, steps, lr)
    assert failures == []
    assert final["step"] == clients * steps
    assert final["params"] == [-lr * clients * steps, -lr * steps * sum(range(clients))]
