"""`Idempotency-Key`, `If-Match` and `ETag` over HTTP, on SQLite and PostgreSQL.

One app in this process per backend (`tests.in_process`), with API keys (creation keys are
scoped per API key), a short retention and a clock of the test's (`tests.fake_clock`), so that
expiry and pruning are watched by moving the clock, not by sleeping.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.api.idempotency import prune
from app.config import Settings
from app.store.database import Database
from app.store.models import IdempotencyRecord, SessionRecord
from app.store.repository import IdempotencyRepository
from tests.fake_clock import FakeClock
from tests.in_process import InProcessServer
from tests.support import all_at_once, bearer, database_snapshot, post_json

API_KEYS = ("key-a", "key-b")
TTL_SECONDS = 3
SGD = {"params": [0.0, 0.0], "dtype": "float64", "optimizer": {"type": "sgd", "lr": 0.5}}


@pytest.fixture(scope="module")
def clock():
    return FakeClock()


@pytest.fixture(scope="module")
def server(module_migrated_database_url, clock):
    env = {
        "OPTAAS_API_KEYS": ",".join(API_KEYS),
        "OPTAAS_IDEMPOTENCY_TTL_SECONDS": str(TTL_SECONDS),
        "OPTAAS_IDEMPOTENCY_TOMBSTONE_TTL_SECONDS": str(TTL_SECONDS),
    }
    with InProcessServer(module_migrated_database_url, env=env, clock=clock) as app:
        yield app


@pytest.fixture
def client(server):
    with server.client() as client:
        yield client


@pytest.fixture
def session(client):
    response = post_json(client, "/v1/sessions", SGD, headers={"X-API-Key": API_KEYS[0]})
    assert response.status_code == 201, response.text
    return response.json()


def step(client, session, gradients, **headers):
    path = f"/v1/sessions/{session['id']}/step"
    return post_json(
        client, path, {"gradients": gradients}, headers={**bearer(session["token"]), **headers}
    )


def params(client, session):
    response = client.get(f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"]))
    assert response.status_code == 200
    return response.json()


def session_count(module_migrated_database):
    with module_migrated_database.transaction(write=False) as db:
        return db.execute(select(func.count()).select_from(SessionRecord)).scalar_one()


def records_of(module_migrated_database, session_id):
    with module_migrated_database.transaction(write=False) as db:
        return db.scalars(
            select(IdempotencyRecord).where(IdempotencyRecord.session_id == uuid.UUID(session_id))
        ).all()


KEPT = ("content-type", "etag", "location")


def kept_headers(response):
    return {name: response.headers[name] for name in KEPT if name in response.headers}


# -- steps -----------------------------------------------------------------------------------


def test_a_retried_step_replays_its_answer_byte_for_byte_and_applies_nothing(
    client, session, module_migrated_database
):
    first = step(client, session, [1.0, 2.0], **{"Idempotency-Key": "step-1"})
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    after_first = database_snapshot(module_migrated_database, session["id"])

    retry = step(client, session, [1.0, 2.0], **{"Idempotency-Key": "step-1"})

    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert (
        kept_headers(retry)
        == kept_headers(first)
        == {
            "content-type": "application/json",
            "etag": '"1"',
        }
    )
    assert database_snapshot(module_migrated_database, session["id"]) == after_first
    assert params(client, session) == {"step": 1, "params": [-0.5, -1.0]}


def test_a_key_is_scoped_to_its_session(client, session):
    other = post_json(client, "/v1/sessions", SGD, headers={"X-API-Key": API_KEYS[0]}).json()
    assert step(client, session, [1.0, 1.0], **{"Idempotency-Key": "shared"}).status_code == 200
    reply = step(client, other, [1.0, 1.0], **{"Idempotency-Key": "shared"})
    assert reply.status_code == 200
    assert "Idempotent-Replayed" not in reply.headers
    assert params(client, other)["step"] == 1


def test_the_same_key_with_another_request_is_refused(client, session, module_migrated_database):
    assert step(client, session, [1.0, 2.0], **{"Idempotency-Key": "k"}).status_code == 200
    before = database_snapshot(module_migrated_database, session["id"])
    for changed in (
        step(client, session, [1.0, 3.0], **{"Idempotency-Key": "k"}),  # another body
        step(client, session, [1.0, 2.0], **{"Idempotency-Key": "k", "Accept": "text/html"}),
        post_json(
            client,
            f"/v1/sessions/{session['id']}/step?return=none",  # another query
            {"gradients": [1.0, 2.0]},
            headers={**bearer(session["token"]), "Idempotency-Key": "k"},
        ),
    ):
        assert changed.status_code == 422
        assert changed.json()["type"] == "/problems/idempotency-key-reused"
    assert database_snapshot(module_migrated_database, session["id"]) == before


def test_an_error_is_not_kept_so_a_retry_is_evaluated_afresh(client, session):
    stale = step(client, session, [1.0, 1.0], **{"Idempotency-Key": "e", "If-Match": '"7"'})
    assert stale.status_code == 412
    applied = step(client, session, [1.0, 1.0], **{"Idempotency-Key": "e", "If-Match": '"0"'})
    assert applied.status_code == 200
    assert "Idempotent-Replayed" not in applied.headers
    assert params(client, session)["step"] == 1


def test_concurrent_requests_with_one_key_apply_once_and_all_get_the_same_answer(server, session):
    def send():
        with server.client() as own:
            return step(own, session, [1.0, 0.0], **{"Idempotency-Key": "race"})

    answers = all_at_once(6, send)

    assert [answer.status_code for answer in answers] == [200] * 6
    assert len({answer.content for answer in answers}) == 1
    assert sum("Idempotent-Replayed" not in answer.headers for answer in answers) == 1
    with server.client() as client:
        assert params(client, session) == {"step": 1, "params": [-0.5, 0.0]}


def test_after_the_retention_a_retry_is_refused_and_the_record_stays_as_a_tombstone(
    client, session, module_migrated_database, clock
):
    assert step(client, session, [1.0, 1.0], **{"Idempotency-Key": "late"}).status_code == 200
    clock.advance(TTL_SECONDS - 0.5)
    kept = step(client, session, [1.0, 1.0], **{"Idempotency-Key": "late"})
    assert kept.status_code == 200 and kept.headers["Idempotent-Replayed"] == "true"
    clock.advance(0.7)

    late = step(client, session, [1.0, 1.0], **{"Idempotency-Key": "late"})

    assert late.status_code == 422
    problem = late.json()
    assert problem["type"] == "/problems/idempotency-key-expired"
    assert "already applied" in problem["detail"]
    assert params(client, session)["step"] == 1
    clock.advance(max(1, TTL_SECONDS / 2))  # the app prunes every max(1, TTL/2) s of its clock
    deadline = time.monotonic() + 10
    while records_of(module_migrated_database, session["id"])[0].body is not None:
        assert time.monotonic() < deadline, "the server never pruned the expired answer"
        time.sleep(0.2)
    [tombstone] = records_of(module_migrated_database, session["id"])
    assert (tombstone.status, tombstone.headers, tombstone.body) == (None, None, None)
    assert len(tombstone.fingerprint) == 64


def test_deleting_a_session_deletes_its_records(client, session, module_migrated_database):
    assert step(client, session, [1.0, 1.0], **{"Idempotency-Key": "gone"}).status_code == 200
    assert len(records_of(module_migrated_database, session["id"])) == 1
    deleted = client.delete(f"/v1/sessions/{session['id']}", headers=bearer(session["token"]))
    assert deleted.status_code == 204
    assert records_of(module_migrated_database, session["id"]) == []


def test_kept_answers_are_sealed_and_keys_stored_as_digests(client, module_migrated_database):
    key = f"create-{uuid.uuid4()}"
    created = post_json(
        client, "/v1/sessions", SGD, headers={"X-API-Key": API_KEYS[0], "Idempotency-Key": key}
    ).json()
    with module_migrated_database.transaction(write=False) as db:
        stored = db.execute(select(IdempotencyRecord.__table__)).all()
    dumped = repr(stored).encode()
    assert created["token"].encode() not in dumped
    assert key.encode() not in dumped
    assert any(row.body is not None for row in stored)


# -- If-Match and ETag -----------------------------------------------------------------------


@pytest.mark.parametrize("if_match", ['"0"', "*", '"5", "0"', 'W/"0", "0"'])
def test_if_match_with_the_current_tag_applies_the_step(client, session, if_match):
    response = step(client, session, [1.0, 1.0], **{"If-Match": if_match})
    assert response.status_code == 200
    assert response.headers["ETag"] == '"1"'


def test_if_match_fails_once_another_step_moved_the_session(
    client, session, module_migrated_database
):
    tag = client.get(f"/v1/sessions/{session['id']}", headers=bearer(session["token"])).headers[
        "ETag"
    ]
    assert step(client, session, [1.0, 1.0], **{"If-Match": tag}).status_code == 200
    before = database_snapshot(module_migrated_database, session["id"])
    second = step(client, session, [1.0, 1.0], **{"If-Match": tag})
    assert second.status_code == 412
    assert second.json()["current_step"] == 1
    assert database_snapshot(module_migrated_database, session["id"]) == before


def test_a_retry_of_an_applied_conditional_step_replays_rather_than_failing(client, session):
    headers = {"Idempotency-Key": "conditional", "If-Match": '"0"'}
    first = step(client, session, [1.0, 1.0], **headers)
    retry = step(client, session, [1.0, 1.0], **headers)  # "0" is stale by now
    assert first.status_code == retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content


def test_every_answer_that_shows_a_session_carries_its_etag(client, session):
    auth = bearer(session["token"])
    path = f"/v1/sessions/{session['id']}"
    assert step(client, session, [1.0, 1.0]).headers["ETag"] == '"1"'
    assert client.get(path, headers=auth).headers["ETag"] == '"1"'
    assert client.get(f"{path}/params", headers=auth).headers["ETag"] == '"1"'
    created = post_json(client, "/v1/sessions", SGD, headers={"X-API-Key": API_KEYS[0]})
    assert created.headers["ETag"] == '"0"'
    patched = client.patch(path, json={"optimizer": {"lr": 0.25}}, headers=auth)
    assert patched.headers["ETag"] == '"1"'  # the tag is t: a config change keeps it
    assert client.get(f"{path}/state", headers=auth).headers["ETag"] == '"1"'
    forked = fork(client, session)
    assert forked.headers["ETag"] == '"1"'
    exported = client.get(f"{path}/state", headers=auth)
    imported = import_(client, exported.content)
    assert imported.headers["ETag"] == '"1"'
    accumulating = post_json(
        client, "/v1/sessions", {**SGD, "accumulate": 2}, headers={"X-API-Key": API_KEYS[0]}
    ).json()
    assert step(client, accumulating, [1.0, 1.0]).headers["ETag"] == '"0"'  # the 202


# -- creation ----------------------------------------------------------------------------------


def create(client, key, api_key=API_KEYS[0], body=SGD):
    return post_json(
        client, "/v1/sessions", body, headers={"X-API-Key": api_key, "Idempotency-Key": key}
    )


def test_a_retried_creation_returns_the_same_session(client, module_migrated_database):
    before = session_count(module_migrated_database)
    first = create(client, "create-once")
    retry = create(client, "create-once")
    assert first.status_code == retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content  # the same id and the same token
    assert kept_headers(retry) == kept_headers(first)
    assert set(kept_headers(first)) == {"content-type", "etag", "location"}
    assert session_count(module_migrated_database) == before + 1
    reused = create(client, "create-once", body={**SGD, "name": "another"})
    assert reused.status_code == 422
    assert reused.json()["type"] == "/problems/idempotency-key-reused"


def test_creation_keys_are_scoped_to_the_api_key(client, module_migrated_database):
    before = session_count(module_migrated_database)
    first = create(client, "per-api-key", api_key=API_KEYS[0])
    second = create(client, "per-api-key", api_key=API_KEYS[1])
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]
    assert session_count(module_migrated_database) == before + 2


def test_concurrent_duplicate_creations_make_exactly_one_session(server, module_migrated_database):
    before = session_count(module_migrated_database)

    def send():
        with server.client() as own:
            return create(own, "create-race")

    answers = all_at_once(8, send)

    assert [answer.status_code for answer in answers] == [201] * 8
    assert len({answer.content for answer in answers}) == 1
    assert sum("Idempotent-Replayed" not in answer.headers for answer in answers) == 1
    assert session_count(module_migrated_database) == before + 1


# -- fork and import ---------------------------------------------------------------------------


def fork(client, session, key=None, body=b"", api_key=API_KEYS[0]):
    headers = {**bearer(session["token"]), "X-API-Key": api_key}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(f"/v1/sessions/{session['id']}/fork", content=body, headers=headers)


def import_(client, export, key=None, api_key=API_KEYS[0]):
    headers = {"Content-Type": "application/json", "X-API-Key": api_key}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/sessions/import", content=export, headers=headers)


def test_a_retried_fork_returns_the_same_fork(client, session, module_migrated_database):
    step(client, session, [1.0, 1.0])
    before = session_count(module_migrated_database)
    first = fork(client, session, "fork-once")
    retry = fork(client, session, "fork-once")
    assert first.status_code == retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content  # the same fork, the same token
    assert kept_headers(retry) == kept_headers(first)
    assert session_count(module_migrated_database) == before + 1
    reused = fork(client, session, "fork-once", body=b'{"name": "another"}')
    assert reused.status_code == 422
    assert reused.json()["type"] == "/problems/idempotency-key-reused"
    assert session_count(module_migrated_database) == before + 1


def test_fork_keys_are_the_source_sessions(client, module_migrated_database):
    """A fork's key is unique among its source's keys (steps included), as a step's is."""
    one, other = (
        post_json(client, "/v1/sessions", SGD, headers={"X-API-Key": API_KEYS[0]}).json()
        for _ in range(2)
    )
    assert fork(client, one, "same-key").status_code == 201
    assert "Idempotent-Replayed" not in fork(client, other, "same-key").headers
    stepped = step(client, one, [1.0, 1.0], **{"Idempotency-Key": "a-step-key"})
    assert stepped.status_code == 200
    assert fork(client, one, "a-step-key").json()["type"] == "/problems/idempotency-key-reused"


def test_a_retried_import_returns_the_same_session(client, session, module_migrated_database):
    export = client.get(
        f"/v1/sessions/{session['id']}/state", headers=bearer(session["token"])
    ).content
    before = session_count(module_migrated_database)
    first = import_(client, export, "import-once")
    retry = import_(client, export, "import-once")
    assert first.status_code == retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert session_count(module_migrated_database) == before + 1
    elsewhere = import_(client, export, "import-once", api_key=API_KEYS[1])  # per API key
    assert elsewhere.status_code == 201 and "Idempotent-Replayed" not in elsewhere.headers
    assert elsewhere.json()["id"] != first.json()["id"]
    assert session_count(module_migrated_database) == before + 2


def test_concurrent_duplicate_imports_make_exactly_one_session(
    server, session, module_migrated_database
):
    with server.client() as client:
        export = client.get(
            f"/v1/sessions/{session['id']}/state", headers=bearer(session["token"])
        ).content
    before = session_count(module_migrated_database)

    def send():
        with server.client() as own:
            return import_(own, export, "import-race")

    answers = all_at_once(6, send)

    assert [answer.status_code for answer in answers] == [201] * 6
    assert len({answer.content for answer in answers}) == 1
    assert session_count(module_migrated_database) == before + 1


# -- pruning, in-process, on a database of its own -------------------------------------------


def test_prune_drops_expired_answers_and_forgets_old_creation_tombstones(migrated_database_url):
    database = Database(migrated_database_url)
    settings = Settings(
        database_url=migrated_database_url,
        idempotency_ttl_seconds=60,
        idempotency_tombstone_ttl_seconds=3600,
    )
    now = datetime.now(UTC)

    def record(key, age, expires_in):
        created = now - timedelta(seconds=age)
        return IdempotencyRecord(
            scope="create/anonymous",
            key_hash=key,
            fingerprint="f" * 64,
            status=201,
            headers={"ETag": '"0"'},
            body=b"sealed",
            created_at=created,
            expires_at=now + timedelta(seconds=expires_in),
        )

    try:
        with database.transaction(write=True) as db:
            records = IdempotencyRepository(db)
            for key, age, expires_in in [
                ("fresh", 1, 59),
                ("expired", 120, -60),
                ("old", 7200, -7140),
            ]:
                assert records.add_unless_present(record(key, age, expires_in)) is None

        assert prune(database, settings) == (2, 1)  # two answers dropped, one record forgotten

        with database.transaction(write=False) as db:
            kept = {row.key_hash: row for row in db.scalars(select(IdempotencyRecord))}
        assert set(kept) == {"fresh", "expired"}
        assert kept["fresh"].body == b"sealed"
        assert (kept["expired"].status, kept["expired"].headers, kept["expired"].body) == (
            None,
            None,
            None,
        )
        assert prune(database, settings) == (0, 0)
    finally:
        database.dispose()
