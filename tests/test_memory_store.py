"""`OPTAAS_DATABASE_URL=memory://`: the same API over sessions kept in one server process.

Live servers on `memory://`: a session's whole life in both forms, concurrent clients, the
refusal of several workers, and the loss of every session when the process stops (its
documented nature). Rolled-back steps on it are in tests/test_working_sets.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from app.tensors import SAFETENSORS_MEDIA_TYPE, tensors_from_safetensors, tensors_to_safetensors
from tests.live_server import REPO_ROOT
from tests.support import CoreRun, bearer, create_session, post_json
from tests.test_api_sessions import post_concurrently

MEMORY = "memory://"


@pytest.fixture(scope="module")
def memory_server(module_start_server):
    return module_start_server(MEMORY)


def test_a_session_lives_its_whole_life_in_memory(memory_server):
    theta = np.linspace(-1, 1, 12).reshape(3, 4)
    with memory_server.client() as client:
        session = create_session(
            client, {"params": {"w": theta}, "dtype": "float64", "optimizer": {"type": "adam"}}
        )
        reference = CoreRun(session, {"w": theta})
        auth, path = bearer(session["token"]), f"/v1/sessions/{session['id']}"
        rng = np.random.default_rng(1)
        for step in range(1, 7):
            gradient = rng.standard_normal((3, 4))
            reference.step({"w": gradient}, loss=0.1 * step)
            if step % 2:
                response = post_json(
                    client,
                    f"{path}/step",
                    {"gradients": {"w": gradient}, "loss": 0.1 * step},
                    headers=auth,
                )
                got = np.asarray(response.json()["params"]["w"])
            else:
                response = client.post(
                    f"{path}/step",
                    content=tensors_to_safetensors({"w": gradient}, {"loss": repr(0.1 * step)}),
                    headers={
                        **auth,
                        "Content-Type": SAFETENSORS_MEDIA_TYPE,
                        "Accept": SAFETENSORS_MEDIA_TYPE,
                    },
                )
                got = tensors_from_safetensors(response.content)[0]["w"]
            assert response.status_code == 200, response.text
            np.testing.assert_array_equal(got, reference.params["w"])
        view = client.get(path, headers=auth).json()
        assert view["step"] == 6 and view["last_loss"] == pytest.approx(0.6)
        history = client.get(f"{path}/history", headers=auth).json()["records"]
        assert [record["step"] for record in history] == [1, 2, 3, 4, 5, 6]
        params = client.get(f"{path}/params", headers=auth).json()
        np.testing.assert_array_equal(np.asarray(params["params"]["w"]), reference.params["w"])
        sessions = re.search(r"^optaas_sessions (\S+)$", client.get("/metrics").text, re.M)
        assert sessions is not None and float(sessions.group(1)) >= 1
        assert client.delete(path, headers=auth).status_code == 204
        assert client.get(f"{path}/params", headers=auth).status_code == 404


def test_concurrent_clients_on_one_session_lose_no_step(memory_server):
    clients, steps, lr = 4, 10, 0.25
    final, failures = post_concurrently(memory_server, clients, steps, lr)
    assert failures == []
    assert final["step"] == clients * steps
    assert final["params"] == [-lr * clients * steps, -lr * steps * sum(range(clients))]


def test_sessions_are_gone_when_the_process_stops(start_server):
    server = start_server(MEMORY)
    with server.client() as client:
        session = create_session(client, {"params": [1.0], "optimizer": {"type": "sgd"}})
        path = f"/v1/sessions/{session['id']}"
        assert client.get(path, headers=bearer(session["token"])).status_code == 200
    server.restart()
    with server.client() as client:
        assert client.get(path, headers=bearer(session["token"])).status_code == 404


def test_several_workers_are_refused_with_a_clear_error():
    finished = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--database-url", MEMORY, "--workers", "2"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert "memory://" in finished.stderr and "one worker" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_run_management_works_in_memory(memory_server):
    """PATCH, accumulation, fork, export and import over `memory://`: the numbers are the
    core's, and a fork and an import continue from exactly the source's state."""
    theta = {"w": np.linspace(-1, 1, 6).reshape(2, 3)}
    rng = np.random.default_rng(3)
    grads = [{"w": rng.standard_normal((2, 3))} for _ in range(3)]
    with memory_server.client() as client:
        session = create_session(
            client, {"params": theta, "dtype": "float64", "optimizer": {"type": "adam"}}
        )
        reference = CoreRun(session, theta)
        auth, path = bearer(session["token"]), f"/v1/sessions/{session['id']}"
        assert post_json(client, f"{path}/step", {"gradients": grads[0]}, headers=auth).is_success
        reference.step(grads[0])

        patched = client.patch(
            path,
            content=b'{"optimizer": {"lr": 0.05}, "accumulate": 2}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert patched.status_code == 200, patched.text
        reference.optimizer = CoreRun(patched.json(), theta).optimizer  # the state stays
        first = post_json(client, f"{path}/step", {"gradients": grads[1]}, headers=auth)
        assert (first.status_code, first.json()["missing"]) == (202, 1)
        second = post_json(client, f"{path}/step", {"gradients": grads[2]}, headers=auth)
        assert second.status_code == 200, second.text
        reference.step({"w": (grads[1]["w"] + grads[2]["w"]) / 2})
        np.testing.assert_allclose(second.json()["params"]["w"], reference.params["w"], rtol=1e-12)

        export = client.get(f"{path}/state", headers=auth).json()
        assert export["step"] == 2
        forked = client.post(f"{path}/fork", headers=auth)
        imported = post_json(client, "/v1/sessions/import", export)
        for created in (forked, imported):
            assert created.status_code == 201, created.text
            copy = created.json()
            copy_state = client.get(
                f"/v1/sessions/{copy['id']}/state", headers=bearer(copy["token"])
            ).json()
            assert copy_state["params"] == export["params"]
            assert copy_state["state"] == export["state"]
