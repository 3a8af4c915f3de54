"""Spread checkpoints: each step rewrites the oldest share of a session's chunks, and the step
log replays onto each chunk from the version it was written at.

In process, on SQLite and PostgreSQL, with 1 KiB chunks so that small tensors take many: after
every step, what a reader in another process gets (no working set: checkpoint chunks and log
read back and replayed) is the core's own run bit for bit — the state a kill -9 right after that
commit leaves. Rules that are not piecewise (a global norm, a whole-step rule, sparse rows) keep
whole checkpoints. The kill -9 runs on live servers are in tests/test_crash.py.
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
from app.stepping import SessionArrays
from app.stepping.spread import pieces_of
from app.store.database import Database
from app.store.models import SessionArray
from app.store.steplog import is_log_key
from tests.support import CoreRun, step_in_transaction

CHUNK_BYTES = 1024
EVERY = 4

NADAM_WITH_ADAM_GROUP = {
    "optimizer": {"type": "nadam", "lr": 0.01, "weight_decay": 0.01},
    "groups": [{"match": ["b*"], "optimizer": {"type": "adam", "lr": 0.02, "amsgrad": True}}],
    "schedule": {"type": "reduce_on_plateau", "patience": 0, "factor": 0.5},
}


def theta_of(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tensors of 10 chunks and more, of one chunk and less, and a scalar."""
    return {
        "w": rng.standard_normal((40, 30)),
        "b": rng.standard_normal(30),
        "v": rng.standard_normal(300),
        "s": rng.standard_normal(()),
    }


def stored_rows(database: Database, session_id: uuid.UUID) -> list[tuple[str, int, int | None]]:
    """(key, chunk, written_at) of every stored row of the session."""
    with database.transaction(write=False) as db:
        statement = select(SessionArray.key, SessionArray.chunk, SessionArray.written_at).where(
            SessionArray.session_id == session_id
        )
        return [tuple(row) for row in db.execute(statement)]


class Spread:
    """A session stepped through the service with spread checkpoints, and the core's own run."""

    def __init__(self, url: str, config: dict, *, every: int = EVERY, seed: int = 3) -> None:
        self.rng = np.random.default_rng(seed)
        self.theta = theta_of(self.rng)
        self.stepping = Database(
            url, cache_max_bytes=1 << 24, checkpoint_every=every, chunk_bytes=CHUNK_BYTES
        )
        self.reader = Database(url, chunk_bytes=CHUNK_BYTES)  # another process: no working set
        body = {
            "params": {name: array.tolist() for name, array in self.theta.items()},
            "dtype": "float64",
            **config,
        }
        with self.stepping.transaction(write=True) as db:
            self.created = service.create_session(
                db, new_session(CreateSession.model_validate(body))
            )
        self.reference = CoreRun(self.created.session.config, self.theta)

    def step(self, index: int, *, partial: bool = False) -> None:
        gradients = {
            name: self.rng.standard_normal(array.shape) for name, array in self.theta.items()
        }
        if partial:
            gradients.pop("v")
        loss = float(index % 3)
        copies = {name: array.copy() for name, array in gradients.items()}  # the core's scratch
        self.reference.step(gradients, loss=loss, partial=partial)
        step_in_transaction(
            self.stepping,
            str(self.created.session.id),
            self.created.token,
            GradientPost(copies, loss=loss, partial=partial),
            history_max_records=1000,
        )

    def assert_recovered_exactly(self) -> None:
        """What another process reads is the reference's θ and state, bit for bit."""
        with self.reader.transaction(write=False) as db:
            arrays = SessionArrays(db).load(self.created.session.id)
        assert not any(is_log_key(key) for key in arrays)
        for name in self.theta:
            np.testing.assert_array_equal(arrays[f"param/{name}"], self.reference.params[name])
        expected = self.reference.state.to_arrays()
        assert set(arrays) == {*expected, *(f"param/{name}" for name in self.theta)}
        for key, array in expected.items():
            np.testing.assert_array_equal(arrays[key], array, err_msg=key)

    def rows(self) -> list[tuple[str, int, int | None]]:
        return stored_rows(self.reader, self.created.session.id)

    def close(self) -> None:
        self.stepping.dispose()
        self.reader.dispose()


@pytest.fixture
def spread_run(migrated_database_url):
    runs: list[Spread] = []

    def make(config: dict, **options) -> Spread:
        runs.append(Spread(migrated_database_url, config, **options))
        return runs[-1]

    yield make
    for run in runs:
        run.close()


def logged_versions(rows) -> set[int]:
    return {int(key.split("/")[1]) for key, _, _ in rows if is_log_key(key) and "#" not in key}


def test_every_step_recovers_exactly_from_chunks_of_many_versions(spread_run):
    """NAdam (a 0-d `mu_product` per tensor) beside an AMSGrad group, reduce_on_plateau, partial
    steps: each step writes about 1/EVERY of the chunks and logs its gradient; the log keeps
    only the steps some chunk is older than; every state read back is the core's."""
    run = spread_run(NADAM_WITH_ADAM_GROUP)
    seen_versions: set[int] = set()
    for index in range(3 * EVERY + 5):
        run.step(index, partial=index % 5 == 4)
        run.assert_recovered_exactly()
        rows = run.rows()
        chunk_versions = {written for key, _, written in rows if not is_log_key(key)}
        seen_versions |= chunk_versions
        logged = logged_versions(rows)
        oldest = min(written or 0 for key, _, written in rows if not is_log_key(key))
        assert logged == {version for version in logged if version > oldest}
        assert len(logged) <= 2 * EVERY  # bounded: every chunk is rewritten every few steps
        assert len(chunk_versions) > 1  # the chunks are of several versions: spread
    assert len(seen_versions) > 2 * EVERY


def test_the_steps_write_a_share_of_the_chunks_on_average(spread_run):
    """Whole pieces, oldest first: after n steps, n/EVERY of the pieces' bytes within one piece
    (what a step writes beyond its share, the next ones write less), never all at once."""
    run = spread_run(NADAM_WITH_ADAM_GROUP)
    run.step(0)
    with run.stepping.transaction(write=False) as db:
        arrays = SessionArrays(db).load(run.created.session.id)
    pieces = pieces_of(arrays, CHUNK_BYTES)
    assert pieces is not None and len(pieces) > EVERY
    total = sum(piece.nbytes for piece in pieces)
    largest = max(piece.nbytes for piece in pieces)
    written = 0
    for index in range(1, 3 * EVERY):
        before = {(key, chunk): version for key, chunk, version in run.rows()}
        run.step(index)
        after = run.rows()
        version = max(version or 0 for *_, version in after)
        rewritten = {
            (key, chunk)
            for key, chunk, at in after
            if not is_log_key(key) and at == version and before.get((key, chunk)) != version
        }
        nbytes = sum(
            piece.nbytes
            for piece in pieces
            if any((key, piece.chunk) in rewritten for key in piece.cut + piece.whole)
        )
        assert nbytes < total
        written += nbytes
        assert abs(written - index * (total // EVERY)) <= largest + index


@pytest.mark.parametrize(
    "config",
    [
        {"optimizer": {"type": "adam"}, "clip_grad_norm": 1.0},
        {"optimizer": {"type": "prodigy"}},
        {"optimizer": {"type": "lamb"}},
    ],
    ids=["global-norm", "whole-step-rule", "trust-ratio"],
)
def test_rules_that_are_not_piecewise_keep_whole_checkpoints(spread_run, config):
    run = spread_run(config)
    assert not run.reference.optimizer.piecewise
    for index in range(2 * EVERY + 1):
        run.step(index)
        run.assert_recovered_exactly()
        assert {written for key, _, written in run.rows() if not is_log_key(key)} == {None}


def test_piecewise_is_a_property_of_the_rule():
    names = ["w"]
    assert Optimizer({"optimizer": {"type": "adam"}}, names).piecewise
    assert Optimizer({"optimizer": {"type": "sgd"}, "clip_grad_value": 1.0}, names).piecewise
    assert not Optimizer({"optimizer": {"type": "sgd"}, "clip_grad_norm": 1.0}, names).piecewise
    assert not Optimizer({"optimizer": {"type": "adafactor"}}, names).piecewise
    assert not Optimizer({"optimizer": {"type": "dog"}}, names).piecewise
    muon_group = {"match": ["w"], "optimizer": {"type": "muon"}}
    assert not Optimizer({"optimizer": {"type": "adamw"}, "groups": [muon_group]}, names).piecewise
