"""Liveness and readiness of a real server process, with and without its database."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.live_server import REPO_ROOT, free_port


def test_healthz_and_readyz_of_a_ready_server(module_app):
    with module_app.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ok"}


def test_readyz_is_503_while_the_database_does_not_answer(tmp_path):
    """The app itself (no migrations first) against a database that cannot be opened."""
    port = free_port()
    (tmp_path / "a-directory").mkdir()
    unreachable = f"sqlite:///{tmp_path / 'a-directory'}"  # SQLite cannot open a directory
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPTAAS_DATABASE_URL": unreachable}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and server.poll() is None, "no server"
                    time.sleep(0.05)
            ready = client.get("/readyz")
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    assert ready.json()["type"] == "/problems/database-unavailable"
    assert int(ready.headers["Retry-After"]) > 0
