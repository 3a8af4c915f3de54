"""Metrics and access logs of a live server: counters that move with the steps, the sum over
worker processes, and log lines (text and JSON) that carry the request's facts but no secret."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.cli import prepare_metrics_dir
from app.config import PROMETHEUS_MULTIPROC_ENV
from app.store.database import Database
from app.store.models import SessionRecord
from tests.support import bearer, create_session, json_bytes, post_json

STEP_ROUTE = "/v1/sessions/{session_id}/step"


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics` by (name, sorted labels)."""
    with server.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_as_steps_are_taken(module_server, module_database_url):
    before = scrape(module_server)
    with module_server.client() as client:
        created = create_session(
            client, {"params": [1.0, 2.0], "optimizer": {"type": "rmsprop"}, "nonfinite": "skip"}
        )
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        bodies = [json_bytes({"gradients": [0.5, -0.5], "loss": 1.0}) for _ in range(3)]
        for body in bodies:
            response = client.post(f"{path}/step", content=body, headers=auth)
            assert response.status_code == 200
        assert post_json(client, f"{path}/step", {"gradients": [1e39, 0]}, headers=auth).is_success
        mismatch = post_json(client, f"{path}/step", {"gradients": [1.0]}, headers=auth)
        assert mismatch.status_code == 422
        no_session = post_json(client, f"{path}/step", {"gradients": [1.0, 1.0]})
        assert no_session.status_code == 401
    after = scrape(module_server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("optaas_steps_total", optimizer="rmsprop", outcome="applied") == 3
    assert moved("optaas_steps_total", optimizer="rmsprop", outcome="skipped") == 1
    assert moved("optaas_steps_total", optimizer="rmsprop", outcome="rejected") == 1
    assert moved("optaas_steps_total", optimizer="unknown", outcome="rejected") == 1
    assert moved("optaas_step_latency_seconds_count") == 4  # applied and skipped
    assert moved("optaas_step_latency_seconds_sum") > 0
    assert moved("optaas_rejections_total", status="422", slug="gradient-mismatch") == 1
    assert moved("optaas_rejections_total", status="401", slug="token-missing") == 1
    step_bytes = len(b"".join(bodies)) + len(json_bytes({"gradients": [1e39, 0]}))
    step_bytes += len(json_bytes({"gradients": [1.0]}))  # the 401's body is never read
    assert moved("optaas_request_body_bytes_sum", route=STEP_ROUTE) == step_bytes
    assert moved("optaas_request_body_bytes_count", route=STEP_ROUTE) == 6

    database = Database(module_database_url)
    with database.transaction(write=False) as db:
        stored = db.scalar(select(func.count()).select_from(SessionRecord))
    database.dispose()
    assert value(after, "optaas_sessions") == stored
    assert value(after, "optaas_sessions") - value(before, "optaas_sessions") == 1


def test_two_workers_counts_add_up(start_server, database_url, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file: removed
    server = start_server(database_url, workers=2, env={PROMETHEUS_MULTIPROC_ENV: str(metrics_dir)})
    with server.client() as client:
        created = create_session(client, {"params": [0.0], "optimizer": {"type": "sgd"}})
    auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
    taken, failures = 0, []

    def post_steps(count: int) -> None:
        for _ in range(count):
            with server.client() as own:  # a new connection each time: either worker may take it
                response = post_json(own, f"{path}/step", {"gradients": [1.0]}, headers=auth)
                if response.status_code != 200:
                    failures.append(response.text)

    # Until both workers have taken steps (their files are named by process id).
    while len(worker_pids(metrics_dir)) < 2 and taken < 400:
        threads = [threading.Thread(target=post_steps, args=(5,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        taken += 20
    assert failures == []
    assert len(worker_pids(metrics_dir)) == 2
    assert not (metrics_dir / "counter_1.db").exists()

    scrapes = [scrape(server) for _ in range(4)]  # answered by either worker, all the same
    for samples in scrapes:
        assert value(samples, "optaas_steps_total", optimizer="sgd", outcome="applied") == taken
        assert value(samples, "optaas_step_latency_seconds_count") == taken
        assert value(samples, "optaas_sessions") == 1
    with server.client() as client:
        assert client.get(path, headers=auth).json()["step"] == taken


def worker_pids(metrics_dir: Path) -> set[str]:
    return {re.sub(r"\D", "", path.stem) for path in metrics_dir.glob("counter_*.db")}


def test_a_fresh_metrics_directory_is_made_when_none_is_configured(monkeypatch, tmp_path):
    # Set, then removed: monkeypatch then restores the variable prepare_metrics_dir sets, which
    # would otherwise point later tests of this process at a directory removed below.
    monkeypatch.setenv(PROMETHEUS_MULTIPROC_ENV, "")
    monkeypatch.delenv(PROMETHEUS_MULTIPROC_ENV)
    directory, made = prepare_metrics_dir()
    try:
        assert made
        assert directory.is_dir() and list(directory.iterdir()) == []
        assert Path(__import__("os").environ[PROMETHEUS_MULTIPROC_ENV]) == directory
    finally:
        directory.rmdir()


# -- access logs ---------------------------------------------------------------------------------


def exercise(server, api_key: str) -> tuple[dict, list[tuple[str, str, int]]]:
    """Create, step, read, fail: the session and the (method, path, status) of each request."""
    with server.client() as client:
        created = create_session(
            client,
            {"params": [1.0], "optimizer": {"type": "sgd"}},
            headers={"X-API-Key": api_key},
        )
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        requests = [("POST", "/v1/sessions", 201)]
        for _ in range(2):
            assert post_json(client, f"{path}/step", {"gradients": [1.0]}, headers=auth).is_success
            requests.append(("POST", f"{path}/step", 200))
        assert client.get(f"{path}/history", params={"after": 0}, headers=auth).is_success
        requests.append(("GET", f"{path}/history", 200))
        wrong = client.get(path, headers=bearer(created["token"] + "x"))
        requests.append(("GET", path, wrong.status_code))
    return created, requests


def server_log_lines(server) -> list[str]:
    """The log of the last run (after the `=== command` line LiveServer writes)."""
    text = server.log_path.read_text()
    return text.rsplit("\n=== ", 1)[-1].splitlines()[1:]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_one_access_line_per_request_with_session_and_step_and_no_secret(
    start_server, tmp_path, log_format
):
    api_key = "key-" + "k" * 40
    server = start_server(
        f"sqlite:///{tmp_path / 'optaas.sqlite3'}",
        env={"OPTAAS_LOG_FORMAT": log_format, "OPTAAS_API_KEYS": api_key},
        log_level="info",
    )
    created, requests = exercise(server, api_key)
    server.stop()
    lines = server_log_lines(server)
    text = "\n".join(lines)

    assert created["token"] not in text
    assert api_key not in text
    assert "uvicorn.access" not in text
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        access = [r for r in records if r["logger"] == "optaas.access" and r["path"] != "/readyz"]
        seen = [(r["method"], r["path"], r["status"]) for r in access]
        assert seen == requests
        steps = [r for r in access if r["path"].endswith("/step")]
        assert [r["step"] for r in steps] == [1, 2]
        assert {r["session_id"] for r in access} == {created["id"]}
        assert access[0]["step"] == 0  # the creation's answer shows the new session at t = 0
        assert access[-1]["problem"] == "session-not-found"
        assert all(r["duration_ms"] > 0 and r["level"] == "INFO" for r in access)
        assert all(re.match(r"\d{4}-\d\d-\d\dT", r["time"]) for r in records)
    else:
        access = [line for line in lines if " optaas.access: " in line and "/readyz" not in line]
        assert len(access) == len(requests)
        for line, (method, path, status) in zip(access, requests, strict=True):
            assert f"{method} {path} {status} " in line
        assert access[1].endswith(f"session_id={created['id']} step=1")


def test_an_idempotent_repeat_counts_as_replayed_and_adds_no_history(module_server):
    before = scrape(module_server)
    with module_server.client() as client:
        created = create_session(client, {"params": [1.0], "optimizer": {"type": "lion"}})
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        headers = {**auth, "Idempotency-Key": "the-one-step"}
        first = post_json(client, f"{path}/step", {"gradients": [1.0]}, headers=headers)
        again = post_json(client, f"{path}/step", {"gradients": [1.0]}, headers=headers)
        records = client.get(f"{path}/history", headers=auth).json()["records"]
    after = scrape(module_server)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    for outcome, count in (("applied", 1), ("replayed", 1)):
        moved = value(after, "optaas_steps_total", optimizer="lion", outcome=outcome) - value(
            before, "optaas_steps_total", optimizer="lion", outcome=outcome
        )
        assert moved == count, outcome
    assert [record["step"] for record in records] == [1]
