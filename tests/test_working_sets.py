"""Working sets cached by version, the step log, and steps that roll back after the update.

End to end on live servers: several server processes stepping one session in turn, steps that
are computed and then rolled back (an idempotent repeat is found only at the end), refused
gradients, restarts with a long log — each run checked against the core itself, exactly
(float64). In process: the log replays each step with its own configuration, bit for bit.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import select

from app import service
from app.api.inputs import new_session
from app.optim import Optimizer
from app.schemas import CreateSession
from app.service import GradientPost
from app.stepping import SessionArrays, WorkingSet, WorkingSetCache
from app.store.database import Database
from app.store.models import SessionArray, SessionRecord
from app.store.repository import SessionRepository
from app.store.steplog import is_log_key
from tests.conftest import BACKENDS, temporary_database
from tests.support import CoreRun, bearer, create_session, post_json, step_in_transaction

SIZE = 50
ADAM = {"type": "adam", "lr": 0.05, "amsgrad": True}


@pytest.fixture(params=["memory", *BACKENDS])
def store_url(request, tmp_path):
    """memory://, a SQLite file, a PostgreSQL database."""
    if request.param == "memory":
        yield "memory://"
        return
    with temporary_database(request.param, tmp_path) as url:
        yield url


class Run:
    """A float64 session on a server and the core's own run, stepped side by side."""

    def __init__(self, client, body=None) -> None:
        rng = np.random.default_rng(11)
        self.rng = rng
        theta = rng.standard_normal(SIZE)
        body = body or {"params": theta, "dtype": "float64", "optimizer": ADAM}
        self.session = create_session(client, body)
        self.reference = CoreRun(self.session, {"params": theta})
        self.path = f"/v1/sessions/{self.session['id']}"
        self.auth = bearer(self.session["token"])

    def gradient(self) -> np.ndarray:
        return self.rng.standard_normal(SIZE)

    def step(self, client, gradient=None, *, headers=None, apply=True):
        gradient = self.gradient() if gradient is None else gradient
        if apply:
            self.reference.step({"params": gradient}, loss=float(gradient[0]))
        response = post_json(
            client,
            f"{self.path}/step",
            {"gradients": gradient, "loss": float(gradient[0])},
            headers={**self.auth, **(headers or {})},
        )
        return response

    def assert_exact(self, client) -> None:
        params = client.get(f"{self.path}/params", headers=self.auth)
        assert params.status_code == 200, params.text
        np.testing.assert_array_equal(np.asarray(params.json()["params"]), self.theta())

    def theta(self) -> np.ndarray:
        return self.reference.params["params"]


@pytest.mark.parametrize("checkpoint_every", ["1", "8"])
def test_processes_stepping_one_session_in_turn_never_use_a_stale_working_set(
    start_server, database_url, checkpoint_every
):
    env = {"OPTAAS_CHECKPOINT_EVERY": checkpoint_every}
    first = start_server(database_url, env=env)
    second = start_server(database_url, env=env)
    with first.client() as one, second.client() as two:
        run = Run(one)
        # runs of 1, 2, 3 steps on one server, then the other: each server's working set is
        # out of date whenever it gets the session back
        for turn in range(8):
            client = (one, two)[turn % 2]
            for _ in range(1 + turn % 3):
                response = run.step(client)
                assert response.status_code == 200, response.text
                np.testing.assert_array_equal(np.asarray(response.json()["params"]), run.theta())
            run.assert_exact(one)
            run.assert_exact(two)


def test_a_step_rolled_back_after_its_update_leaves_nothing_behind(start_server, store_url):
    server = start_server(store_url)
    with server.client() as client:
        run = Run(client)
        for _ in range(3):
            assert run.step(client).status_code == 200
        keyed = run.gradient()
        key = {"Idempotency-Key": str(uuid.uuid4())}
        assert run.step(client, keyed, headers=key).status_code == 200
        # the repeat is applied to the working set in place, then finds its key kept and rolls
        # back: its update must not survive in any cache or store
        repeat = run.step(client, keyed, headers=key, apply=False)
        assert repeat.status_code == 200 and repeat.headers["idempotent-replayed"] == "true"
        run.assert_exact(client)
        for _ in range(3):
            response = run.step(client)
            assert response.status_code == 200
            np.testing.assert_array_equal(np.asarray(response.json()["params"]), run.theta())


def test_a_refused_gradient_keeps_the_session_as_it_was(start_server, store_url):
    server = start_server(store_url)
    with server.client() as client:
        run = Run(client)
        assert run.step(client).status_code == 200
        bad = run.gradient()
        bad[7] = np.inf
        refused = post_json(client, f"{run.path}/step", {"gradients": bad}, headers=run.auth)
        assert refused.status_code == 422
        assert run.step(client, run.gradient()[:10], apply=False).status_code == 422
        for _ in range(2):
            response = run.step(client)
            assert response.status_code == 200
            np.testing.assert_array_equal(np.asarray(response.json()["params"]), run.theta())


def test_a_restart_replays_a_long_log_exactly(start_server, database_url):
    server = start_server(database_url, env={"OPTAAS_CHECKPOINT_EVERY": "1000"})
    with server.client() as client:
        run = Run(client)
        for _ in range(30):
            assert run.step(client).status_code == 200
    assert logged_steps(database_url, run.session["id"]) == 30
    server.restart(kill=True)  # no working set survives: θ and state come from the log
    with server.client() as client:
        run.assert_exact(client)
        response = run.step(client)
        assert response.status_code == 200
        np.testing.assert_array_equal(np.asarray(response.json()["params"]), run.theta())


def test_a_clean_stop_checkpoints_the_logs_it_holds_and_a_crash_leaves_them(
    start_server, database_url
):
    server = start_server(database_url, env={"OPTAAS_CHECKPOINT_EVERY": "1000"})
    with server.client() as client:
        run = Run(client)
        for _ in range(5):
            assert run.step(client).status_code == 200
    assert logged_steps(database_url, run.session["id"]) == 5
    server.stop()  # SIGTERM: uvicorn's graceful shutdown, then the lifespan's end
    assert logged_steps(database_url, run.session["id"]) == 0
    server.start()
    with server.client() as client:
        run.assert_exact(client)
        for _ in range(3):
            assert run.step(client).status_code == 200
    server.kill()
    assert logged_steps(database_url, run.session["id"]) == 3
    server.start()
    with server.client() as client:
        run.assert_exact(client)


def logged_steps(database_url: str, session_id: str) -> int:
    """The steps in the session's log (its `~log/<version>` rows), read as stored."""
    database = Database(database_url)
    try:
        with database.transaction(write=False) as db:
            keys = db.scalars(
                select(SessionArray.key).where(SessionArray.session_id == uuid.UUID(session_id))
            ).all()
    finally:
        database.dispose()
    return sum(1 for key in keys if is_log_key(key) and key.count("/") == 1)


# -- in process: the log's replay -----------------------------------------------------------


def test_the_log_replays_each_step_with_its_own_configuration(database):
    """A configuration change made after logged steps (as a PATCH makes one: a new config and
    a new version, the arrays untouched) must not change how those steps replay: a reader in
    another process (an export, a fork) replays them with the configuration they ran with."""
    url = database.engine.url.render_as_string(hide_password=False)
    stepping = Database(url, cache_max_bytes=1 << 20, checkpoint_every=1000)
    rng = np.random.default_rng(5)
    theta = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    body = {
        "params": {name: array.tolist() for name, array in theta.items()},
        "dtype": "float64",
        "optimizer": {"type": "adam", "lr": 0.01},
        "schedule": {"type": "reduce_on_plateau", "patience": 0, "factor": 0.5},
        "clip_grad_norm": 1.0,
    }
    with stepping.transaction(write=True) as db:
        created = service.create_session(db, new_session(CreateSession.model_validate(body)))
    reference = CoreRun(created.session.config, theta)

    def step(index: int) -> dict:
        gradients = {name: rng.standard_normal(array.shape) for name, array in theta.items()}
        partial = index % 4 == 3
        if partial:
            gradients.pop("b")
        copies = {name: array.copy() for name, array in gradients.items()}  # the core's scratch
        reference.step(gradients, loss=float(index % 3), partial=partial)
        post = GradientPost(copies, loss=float(index % 3), partial=partial)
        return step_in_transaction(
            stepping, str(created.session.id), created.token, post, history_max_records=100
        ).params

    def assert_stored_state_is_the_references() -> None:
        with database.transaction(write=False) as db:  # another process: no working set
            arrays = SessionArrays(db).load(created.session.id)
        assert not any(is_log_key(key) for key in arrays)  # callers never see the log
        for name in theta:
            np.testing.assert_array_equal(arrays[f"param/{name}"], reference.params[name])
        for key, array in reference.state.to_arrays().items():
            np.testing.assert_array_equal(arrays[key], array)

    for index in range(6):
        step(index)
    assert logged_steps(url, str(created.session.id)) == 6
    with stepping.transaction(write=True) as db:  # the PATCH
        record = db.get(SessionRecord, created.session.id, with_for_update=True)
        optimizer = {**record.config["optimizer"], "lr": 0.1, "betas": [0.5, 0.9]}
        record.config = {**record.config, "optimizer": optimizer}
        record.version += 1
    assert_stored_state_is_the_references()
    reference = rebuilt_reference(reference, record.config)
    for index in range(6, 12):
        live = step(index)
    assert_stored_state_is_the_references()
    for name in theta:
        np.testing.assert_array_equal(np.asarray(live[name]), reference.params[name])
    stepping.dispose()


def rebuilt_reference(reference: CoreRun, config: dict) -> CoreRun:
    """The reference run going on with another configuration, its state kept."""
    core = ("optimizer", "schedule", "clip_grad_norm", "clip_grad_value", "nonfinite", "groups")
    reference.optimizer = Optimizer({key: config[key] for key in core}, list(reference.params))
    return reference


def test_save_arrays_is_a_checkpoint_that_drops_the_log(database):
    url = database.engine.url.render_as_string(hide_password=False)
    cached = Database(url, cache_max_bytes=1 << 20, checkpoint_every=1000)
    body = {"params": [1.0, 2.0, 3.0], "dtype": "float64", "optimizer": {"type": "adam"}}
    with cached.transaction(write=True) as db:
        created = service.create_session(db, new_session(CreateSession.model_validate(body)))
    for _ in range(3):
        step_in_transaction(
            cached,
            str(created.session.id),
            created.token,
            GradientPost({"params": np.ones(3)}),
            history_max_records=10,
        )
    with database.transaction(write=True) as db:
        arrays = SessionArrays(db).load(created.session.id, writable=True)
        arrays["param/params"][:] = 7.0
        SessionArrays(db).save(created.session.id, arrays)
    with database.transaction(write=False) as db:
        stored = SessionArrays(db).load(created.session.id)
    np.testing.assert_array_equal(stored["param/params"], [7.0, 7.0, 7.0])
    assert logged_steps(url, str(created.session.id)) == 0
    cached.dispose()


def test_a_step_that_changes_more_than_the_core_does_can_ask_for_a_checkpoint(database):
    """A step that changes arrays beside the core's update (as resetting accumulated sums
    would) passes checkpoint=True: nothing of it is left to a replay."""
    url = database.engine.url.render_as_string(hide_password=False)
    stepping = Database(url, cache_max_bytes=1 << 20, checkpoint_every=1000)
    body = {"params": [1.0, 2.0, 3.0], "dtype": "float64", "optimizer": {"type": "adam"}}
    with stepping.transaction(write=True) as db:
        created = service.create_session(db, new_session(CreateSession.model_validate(body)))
    with stepping.transaction(write=True) as db:
        repository = SessionRepository(db)
        record = repository.get(created.session.id, for_update=True)
        working = SessionArrays(db).working_set(record)
        optimizer, params, state = service.working_state(record, working)
        grads = {"params": np.array([0.5, -0.5, 1.0])}
        entry = service.logged_step(record, GradientPost({"params": grads["params"].copy()}))
        write = SessionArrays(db).begin_step(record, working, entry, checkpoint=True)
        optimizer.step(params, state, grads)
        arrays = {**service.stored_arrays(params, state), "accum/params": np.zeros(3)}
        write.finish(arrays)
        record.step, record.version = state.step, record.version + 1
    assert logged_steps(url, str(created.session.id)) == 0
    with database.transaction(write=False) as db:
        stored = SessionArrays(db).load(created.session.id)
    assert set(stored) == set(arrays)
    for key, array in arrays.items():
        np.testing.assert_array_equal(stored[key], array)
    stepping.dispose()


# -- the cache itself -----------------------------------------------------------------------


def working(version: int, size: int = 10, session_id: uuid.UUID | None = None) -> WorkingSet:
    return WorkingSet(session_id or uuid.uuid4(), version, {"param/x": np.zeros(size)})


def test_the_cache_gives_a_working_set_only_at_its_version_and_only_once():
    cache = WorkingSetCache(max_bytes=10_000)
    kept = working(3)
    cache.put(kept)
    assert cache.take(kept.session_id, 4) is None  # another version: dropped for good
    assert cache.take(kept.session_id, 3) is None
    cache.put(kept)
    taken = cache.take(kept.session_id, 3)
    assert taken is kept and taken.cached
    assert cache.take(kept.session_id, 3) is None  # taken: no one else gets it meanwhile


def test_the_cache_keeps_the_newest_version_and_evicts_the_least_recently_used():
    cache = WorkingSetCache(max_bytes=3 * 80)
    session = uuid.uuid4()
    cache.put(working(5, session_id=session))
    cache.put(working(4, session_id=session))  # a slower commit of an older step
    assert cache.take(session, 5) is not None
    oldest, middle, newest = working(1), working(1), working(1)
    for entry in (oldest, middle, newest):
        cache.put(entry)
    assert cache.copy_of(oldest.session_id, 1, lambda key: True) is not None  # now recent
    cache.put(working(1))
    assert cache.take(middle.session_id, 1) is None
    assert cache.take(oldest.session_id, 1) is not None
    assert cache.bytes <= 3 * 80
    cache.put(working(1, size=1000))  # larger than the whole cache: not kept
    assert cache.bytes <= 3 * 80


def test_copies_from_the_cache_are_copies():
    cache = WorkingSetCache(max_bytes=10_000)
    kept = working(2)
    cache.put(kept)
    copies = cache.copy_of(kept.session_id, 2, lambda key: key.startswith("param/"))
    copies["param/x"][:] = 1.0
    assert not kept.arrays["param/x"].any()
    assert cache.copy_of(kept.session_id, 3, lambda key: True) is None
