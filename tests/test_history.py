"""Step history: the repository on both databases, and `GET …/history` over real HTTP."""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from app.store.database import Database
from app.store.history import HistoryRepository, changed_fields, prune_interval
from app.store.repository import SessionRepository
from tests.support import bearer, create_session, new_record, post_json

# -- the repository -----------------------------------------------------------------------------


def add_session(database: Database) -> uuid.UUID:
    record = new_record()
    with database.transaction(write=True) as db:
        SessionRepository(db).add(record)
    return record.id


def record_steps(database: Database, session_id: uuid.UUID, count: int, max_records: int | None):
    for t in range(count):
        with database.transaction(write=True) as db:
            HistoryRepository(db, max_records).record_step(
                session_id,
                step=t + 1,
                lr=0.1,
                loss=None,
                grad_norm=1.0,
                update_norm=0.1,
                skipped=False,
                duration_ms=1.0,
            )


def all_seqs(database: Database, session_id: uuid.UUID) -> list[int]:
    with database.transaction(write=False) as db:
        entries, _ = HistoryRepository(db).page(session_id, after=0, limit=10**6)
    return [entry.seq for entry in entries]


@pytest.mark.slow  # over three hundred transactions
def test_retention_prunes_the_oldest_in_batches_and_never_keeps_more_than_the_limit(database):
    max_records = 300
    interval = prune_interval(max_records)
    assert interval == 3
    session_id, other = add_session(database), add_session(database)
    record_steps(database, other, 5, max_records)
    counts = []
    for _ in range(max_records + 3 * interval):
        record_steps(database, session_id, 1, max_records)
        counts.append(len(all_seqs(database, session_id)))

    seqs = all_seqs(database, session_id)
    keep = max_records - interval + 1
    assert max(counts) <= max_records
    assert counts[:keep] == list(range(1, keep + 1))
    assert min(counts[keep:]) == keep
    prunes = [i for i in range(1, len(counts)) if counts[i] < counts[i - 1]]
    assert len(prunes) >= 3
    assert {b - a for a, b in itertools.pairwise(prunes)} == {interval}  # batches, not each step
    assert seqs == list(range(seqs[0], max_records + 3 * interval + 1))  # the newest, in order
    assert all_seqs(database, other) == [1, 2, 3, 4, 5]  # other sessions untouched


def test_no_limit_keeps_everything_and_zero_keeps_nothing(database):
    kept, none = add_session(database), add_session(database)
    record_steps(database, kept, 30, None)
    record_steps(database, none, 30, 0)
    assert all_seqs(database, kept) == list(range(1, 31))
    assert all_seqs(database, none) == []


def test_a_change_records_each_changed_leaf_with_old_and_new(database):
    session_id = add_session(database)
    old = {
        "optimizer": {"type": "adam", "lr": 1e-3, "betas": [0.9, 0.999]},
        "schedule": {"type": "warmup", "warmup_steps": 10, "then": {"type": "constant"}},
        "clip_grad_norm": None,
    }
    new = {
        "optimizer": {"type": "adam", "lr": 1e-4, "betas": [0.9, 0.99]},
        "schedule": {"type": "warmup", "warmup_steps": 10, "then": {"type": "cosine"}},
        "clip_grad_norm": 1.0,
    }
    with database.transaction(write=True) as db:
        history = HistoryRepository(db, 100)
        recorded = history.record_change(session_id, step=7, old=old, new=new)
        unchanged = history.record_change(session_id, step=7, old=new, new=new)
    with database.transaction(write=False) as db:
        (entry,), next_cursor = HistoryRepository(db).page(session_id, after=0, limit=10)

    expected = {
        "optimizer.lr": {"old": 1e-3, "new": 1e-4},
        "optimizer.betas": {"old": [0.9, 0.999], "new": [0.9, 0.99]},
        "schedule.then.type": {"old": "constant", "new": "cosine"},
        "clip_grad_norm": {"old": None, "new": 1.0},
    }
    assert recorded == expected
    assert unchanged == {}  # nothing changed: nothing recorded
    assert (entry.kind, entry.step, entry.seq, entry.changes) == ("change", 7, 1, expected)
    assert next_cursor is None


def test_changed_fields_shows_keys_on_one_side_only_as_null():
    old = {"schedule": {"type": "step", "step_size": 5}}
    new = {"schedule": {"type": "cosine", "total_steps": 9}}
    assert changed_fields(old, new) == {
        "schedule.type": {"old": "step", "new": "cosine"},
        "schedule.step_size": {"old": 5, "new": None},
        "schedule.total_steps": {"old": None, "new": 9},
    }


def test_deleting_a_session_deletes_its_history(database):
    session_id = add_session(database)
    record_steps(database, session_id, 3, 100)
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        repository.delete(repository.get(session_id))
    assert all_seqs(database, session_id) == []


# -- over HTTP ----------------------------------------------------------------------------------


def history(client, path: str, auth: dict[str, str], **params) -> dict:
    response = client.get(f"{path}/history", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def all_records(client, path: str, auth: dict[str, str], limit: int) -> tuple[list[dict], int]:
    """Every record, page by page following `next`; and how many pages that took."""
    records, after, pages = [], 0, 0
    while True:
        page = history(client, path, auth, after=after, limit=limit)
        pages += 1
        records += page["records"]
        if page["next"] is None:
            return records, pages
        assert page["next"] == page["records"][-1]["seq"]
        after = page["next"]


def test_history_records_every_step_as_answered_and_pages_in_order(module_app):
    rng = np.random.default_rng(11)
    params = {"w": rng.standard_normal(3).astype("float32")}
    config = {
        "optimizer": {"type": "adam", "lr": 0.1},
        "schedule": {
            "type": "warmup",
            "warmup_steps": 4,
            "then": {"type": "exponential", "gamma": 0.9},
        },
        "nonfinite": "skip",
    }
    with module_app.client() as client:
        created = create_session(client, {"params": params, **config})
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        answers, losses = [], []
        for t in range(25):
            grads = {"w": rng.standard_normal(3).astype("float32")}
            if t == 10:  # 1e39 is beyond float32: it arrives as +inf, and the step is skipped
                grads = {"w": [1.0, 1e39, 0.0]}
            loss = None if t % 5 == 4 else float(1 / (t + 1))
            body = {"gradients": grads, **({} if loss is None else {"loss": loss})}
            started = datetime.now(UTC)
            response = post_json(client, f"{path}/step", body, headers=auth)
            assert response.status_code == 200, response.text
            answers.append(response.json())
            losses.append(loss)
        records, pages = all_records(client, path, auth, limit=7)
        # a failed step leaves no record
        bad = post_json(client, f"{path}/step", {"gradients": {"w": [1.0]}}, headers=auth)
        assert bad.status_code == 422
        assert history(client, path, auth, after=25)["records"] == []

    assert pages == 4  # 7 + 7 + 7 + 4
    assert [record["seq"] for record in records] == list(range(1, 26))
    for record, answer, loss in zip(records, answers, losses, strict=True):
        assert record["kind"] == "step"
        for field in ("step", "lr", "grad_norm", "update_norm", "skipped"):
            assert record[field] == answer[field], field
        assert record["loss"] == loss
        assert record["duration_ms"] > 0
    skipped = records[10]
    assert (skipped["skipped"], skipped["step"], skipped["grad_norm"]) == (True, 10, None)
    assert records[11]["step"] == 11
    assert datetime.fromisoformat(records[-1]["at"]) >= started
    assert [record["at"] for record in records] == sorted(record["at"] for record in records)


def test_history_needs_the_token_and_bounds_its_limit(module_app):
    with module_app.client() as client:
        created = create_session(client, {"params": [1.0], "optimizer": {"type": "sgd"}})
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        assert client.get(f"{path}/history").status_code == 401
        wrong = client.get(f"{path}/history", headers=bearer("not-the-token"))
        unknown = client.get(f"/v1/sessions/{uuid.uuid4()}/history", headers=auth)
        assert wrong.status_code == unknown.status_code == 404
        assert wrong.json() == unknown.json()
        bad = ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": 2**63}, {"limit": "x"})
        for params in bad:
            response = client.get(f"{path}/history", params=params, headers=auth)
            assert response.status_code == 422, params
            assert response.headers["content-type"] == "application/problem+json"
        assert history(client, path, auth, limit=1000) == {"records": [], "next": None}


def test_concurrent_steps_are_numbered_in_the_order_they_were_applied(module_app):
    with module_app.client() as client:
        created = create_session(client, {"params": [0.0], "optimizer": {"type": "sgd"}})
    auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
    failures: list[str] = []

    def post_steps() -> None:
        with module_app.client() as own:
            for _ in range(8):
                response = post_json(own, f"{path}/step", {"gradients": [1.0]}, headers=auth)
                if response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=post_steps) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with module_app.client() as client:
        records, _ = all_records(client, path, auth, limit=1000)
    assert failures == []
    assert [(r["seq"], r["step"]) for r in records] == [(n, n) for n in range(1, 33)]


def test_retention_setting_keeps_the_newest_records(start_server, database_url):
    server = start_server(database_url, env={"OPTAAS_HISTORY_MAX_RECORDS": "5"})
    with server.client() as client:
        created = create_session(client, {"params": [0.0], "optimizer": {"type": "sgd"}})
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        for _ in range(12):
            assert post_json(client, f"{path}/step", {"gradients": [1.0]}, headers=auth).is_success
        records = history(client, path, auth)["records"]
    assert [record["step"] for record in records] == [8, 9, 10, 11, 12]
