"""The service's pure rules without HTTP: PATCH's merge (`merge_patch`), an import's checks
(`import_session` on a real database: SQLite, then PostgreSQL) and the arithmetic of
synchronous accumulation (`accumulate`). Their HTTP answers are tested end to end in
test_runs.py, test_api_errors.py and test_accumulation.py; here each rule is reached directly,
case by case, in milliseconds."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from app.errors import InvalidContent
from app.exports import SessionState
from app.optim import NonFiniteGradient, Optimizer
from app.schemas import SessionConfig
from app.service import (
    Accepted,
    accumulate,
    accumulation_key,
    core_config,
    import_session,
    merge_patch,
)
from app.stepping import SessionArrays
from app.store.models import SessionRecord
from app.store.repository import SessionRepository
from app.tensors import Layout
from tests.support import new_record


@pytest.fixture
def database(module_migrated_database):
    """One migrated database per module and backend (a copy per test would cost more than the
    tests): every test here adds rows of its own and counts only its own changes."""
    return module_migrated_database


# -- merge_patch: RFC 7396 plus whole replacement of a tagged object of another type -----------

MERGES = {
    "a field changes, the others stay": (
        {"optimizer": {"type": "adam", "lr": 0.1, "eps": 1e-8}},
        {"optimizer": {"lr": 0.2}},
        {"optimizer": {"type": "adam", "lr": 0.2, "eps": 1e-8}},
    ),
    "null removes a key, so its default applies": (
        {"clip_grad_norm": 1.0, "accumulate": 2},
        {"clip_grad_norm": None},
        {"accumulate": 2},
    ),
    "null for a key that is not there changes nothing": (
        {"accumulate": 2},
        {"clip_grad_value": None},
        {"accumulate": 2},
    ),
    "a value replaces, a list whole": (
        {"optimizer": {"type": "adam", "betas": [0.9, 0.999]}},
        {"optimizer": {"betas": [0.8, 0.99]}},
        {"optimizer": {"type": "adam", "betas": [0.8, 0.99]}},
    ),
    "the same type named again merges": (
        {"schedule": {"type": "step", "step_size": 10, "gamma": 0.5}},
        {"schedule": {"type": "step", "gamma": 0.1}},
        {"schedule": {"type": "step", "step_size": 10, "gamma": 0.1}},
    ),
    "another type replaces the object whole": (
        {"schedule": {"type": "warmup", "warmup_steps": 5, "after": {"type": "constant"}}},
        {"schedule": {"type": "cosine", "total_steps": 100}},
        {"schedule": {"type": "cosine", "total_steps": 100}},
    ),
    "nested objects merge at every depth": (
        {
            "schedule": {
                "type": "warmup",
                "warmup_steps": 5,
                "after": {"type": "step", "gamma": 0.5},
            }
        },
        {"schedule": {"after": {"gamma": 0.1}}},
        {
            "schedule": {
                "type": "warmup",
                "warmup_steps": 5,
                "after": {"type": "step", "gamma": 0.1},
            }
        },
    ),
    "an object where there was none is taken without its nulls": (
        {"clip_grad_norm": 1.0},
        {"schedule": {"type": "step", "step_size": 3, "gamma": None}},
        {"clip_grad_norm": 1.0, "schedule": {"type": "step", "step_size": 3}},
    ),
    "an object replaces a value that was not one": (
        {"groups": None},
        {"groups": {"type": "x"}},
        {"groups": {"type": "x"}},
    ),
    "a value replaces an object": (
        {"schedule": {"type": "step", "step_size": 3}},
        {"schedule": "constant"},
        {"schedule": "constant"},
    ),
}


@pytest.mark.parametrize("case", list(MERGES))
def test_merge_patch(case):
    target, patch, expected = MERGES[case]
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert target == before  # the session's config is not changed in place


# -- an import's checks, one rule at a time -------------------------------------------------------

SHAPES = {"w": (2, 3), "b": (3,)}


def config_of(optimizer: dict[str, Any], **more: Any) -> dict[str, Any]:
    return SessionConfig.model_validate({"optimizer": optimizer, **more}).model_dump(mode="json")


def exported(steps: int = 2, **changes: Any) -> SessionState:
    """A valid export of an Adam run of `steps` steps over two float32 tensors, made by the core."""
    config = config_of({"type": "adam", "lr": 0.1})
    optimizer = Optimizer(core_config(config), list(SHAPES))
    rng = np.random.default_rng(7)
    params = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()}
    state = optimizer.init(params)
    for _ in range(steps):
        grads = {
            name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()
        }
        optimizer.step(params, state, grads)
    fields: dict[str, Any] = {
        "id": None,
        "name": "run",
        "dtype": "float32",
        "layout": Layout.NAMED,
        "tensors": list(SHAPES),
        "config": config,
        "step": steps,
        "schedule_state": {},
        "last_loss": None,
        "params": params,
        "slots": {name: dict(state.slots[name]) for name in SHAPES},
    }
    return SessionState(**{**fields, **changes})


def session_count(database) -> int:
    with database.transaction(write=False) as db:
        return db.execute(select(func.count()).select_from(SessionRecord)).scalar_one()


def refused(database, imported: SessionState) -> InvalidContent:
    """The import's refusal; nothing stored."""
    before = session_count(database)
    with pytest.raises(InvalidContent) as error, database.transaction(write=True) as db:
        import_session(db, imported)
    assert session_count(database) == before
    return error.value


def with_slot(slot: str, value: Any, tensor: str = "w") -> SessionState:
    state = exported()
    state.slots[tensor][slot] = value
    return state


def without_slot(slot: str, tensor: str = "w") -> SessionState:
    state = exported()
    del state.slots[tensor][slot]
    return state


def with_param(tensor: str, value: np.ndarray) -> SessionState:
    state = exported()
    state.params[tensor] = value
    return state


IMPORT_REFUSALS = {
    "single layout with another tensor name": (
        lambda: exported(layout=Layout.SINGLE),
        "tensors",
        None,
    ),
    "no θ for a tensor": (
        lambda: exported(params={"w": np.zeros((2, 3), np.float32)}),
        "params",
        "b",
    ),
    "θ for a tensor that is not one": (
        lambda: with_param("v", np.zeros(1, np.float32)),
        "params",
        "v",
    ),
    "no state for a tensor": (
        lambda: exported(slots={"w": exported().slots["w"]}),
        "state",
        "b",
    ),
    "θ of another shape than its slots (θ gives the tensor's shape)": (
        lambda: with_param("w", np.zeros((3, 2), np.float32)),
        "state.w.exp_avg",
        "w",
    ),
    "θ of another dtype": (
        lambda: with_param("b", np.zeros(3, np.float64)),
        "params.b",
        "b",
    ),
    "θ not finite": (
        lambda: with_param("b", np.array([0, np.inf, 0], np.float32)),
        "params.b",
        "b",
    ),
    "a slot missing": (lambda: without_slot("exp_avg_sq"), "state.w.exp_avg_sq", "w"),
    "a slot the optimizer does not keep": (
        lambda: with_slot("momentum_buffer", np.zeros((2, 3), np.float32)),
        "state.w.momentum_buffer",
        "w",
    ),
    "a slot of another shape": (
        lambda: _bad_shape(),
        "state.b.exp_avg",
        "b",
    ),
    "a slot not finite": (
        lambda: with_slot("exp_avg", np.full((2, 3), np.nan, np.float32)),
        "state.w.exp_avg",
        "w",
    ),
    "a tensor's step past the export's": (
        lambda: with_slot("step", np.array(3, np.int64)),
        "state.w.step",
        "w",
    ),
    "a tensor's step below zero": (
        lambda: with_slot("step", np.array(-1, np.int64)),
        "state.w.step",
        "w",
    ),
    "schedule state the schedule does not keep": (
        lambda: exported(schedule_state={"bad_epochs": 1.0}),
        "schedule_state.bad_epochs",
        None,
    ),
    "a loss that is not finite": (lambda: exported(last_loss=math.nan), "last_loss", None),
}


def _bad_shape() -> SessionState:
    state = exported()
    state.slots["b"]["exp_avg"] = np.zeros((1, 3), np.float32)
    return state


@pytest.mark.parametrize("case", list(IMPORT_REFUSALS))
def test_an_import_is_refused_naming_what_is_wrong(database, case):
    make, field, tensor = IMPORT_REFUSALS[case]
    error = refused(database, make())
    assert error.extras.get("field") == field, error.extras
    assert error.extras.get("tensor") == tensor


def test_a_valid_import_continues_the_run(database):
    imported = exported(steps=2)
    with database.transaction(write=True) as db:
        created = import_session(db, imported)
    assert created.session.step == 2
    with database.transaction(write=False) as db:
        arrays = SessionArrays(db).load(created.session.id, writable=False)
    for name in SHAPES:
        np.testing.assert_array_equal(arrays[f"param/{name}"], imported.params[name])
        for slot, value in imported.slots[name].items():
            np.testing.assert_array_equal(arrays[f"{slot}/{name}"], value)


def test_a_tensor_exported_with_step_zero_alone_starts_fresh(database):
    imported = exported(steps=2)
    imported.slots["b"] = {"step": np.array(0, np.int64)}
    with database.transaction(write=True) as db:
        created = import_session(db, imported)
    with database.transaction(write=False) as db:
        arrays = SessionArrays(db).load(created.session.id, writable=False)
    assert int(arrays["step/b"]) == 0
    np.testing.assert_array_equal(arrays["exp_avg/b"], np.zeros(3, np.float32))


# -- accumulation: sums kept per post, the K-th applying their mean --------------------------


def accumulating_record(accumulate_k: int, nonfinite: str = "reject") -> SessionRecord:
    record = new_record()
    record.dtype = "float64"
    record.tensors = [{"name": "w", "shape": [2]}, {"name": "b", "shape": [1]}]
    record.config = config_of({"type": "sgd"}, accumulate=accumulate_k, nonfinite=nonfinite)
    return record


PARAMS = {"w": np.zeros(2), "b": np.zeros(1)}


def post(database, record_id, grads, *, loss=None, partial=False):
    """One post in its own transaction, as the step endpoint makes it."""
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        record = repository.get(record_id)
        arrays = SessionArrays(db).load(record_id, writable=True)
        return accumulate(
            repository, record, PARAMS, arrays, grads, loss=loss, partial=partial
        ), record.accumulated


def added(database, record: SessionRecord) -> Any:
    with database.transaction(write=True) as db:
        SessionRepository(db).add(record)
    return record.id


def test_k_posts_give_their_mean_and_the_mean_of_the_losses_given(database):
    record_id = added(database, accumulating_record(3))
    first, received = post(
        database, record_id, {"w": np.array([1.0, 2.0]), "b": np.array([3.0])}, loss=1.0
    )
    assert first == Accepted(step=0, received=1, missing=2) and first.wait_for_step == 1
    second, _ = post(database, record_id, {"w": np.array([2.0, 2.0]), "b": np.array([0.0])})
    assert (second.received, second.missing) == (2, 1)
    (mean, loss, partial), received = post(
        database, record_id, {"w": np.array([3.0, 5.0]), "b": np.array([3.0])}, loss=4.0
    )
    assert received == 3
    np.testing.assert_array_equal(mean["w"], [2.0, 3.0])  # (1+2+3)/3, (2+2+5)/3
    np.testing.assert_array_equal(mean["b"], [2.0])
    assert loss == 2.5  # the mean of the losses given: (1 + 4) / 2
    assert partial is False


def test_a_tensor_no_post_carried_makes_the_step_partial_and_a_missing_one_adds_zero(database):
    record_id = added(database, accumulating_record(2))
    post(database, record_id, {"w": np.array([4.0, 2.0])}, partial=True)
    (mean, loss, partial), _ = post(database, record_id, {"w": np.array([0.0, 2.0])}, partial=True)
    assert set(mean) == {"w"} and partial is True and loss is None
    np.testing.assert_array_equal(mean["w"], [2.0, 2.0])

    record_id = added(database, accumulating_record(2))
    post(database, record_id, {"w": np.array([4.0, 2.0])}, partial=True)
    (mean, _, partial), _ = post(
        database, record_id, {"w": np.array([0.0, 0.0]), "b": np.array([6.0])}
    )
    assert partial is False
    np.testing.assert_array_equal(mean["b"], [3.0])  # (0 + 6) / 2: the first post added 0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the sum's, on purpose
def test_under_reject_a_post_that_makes_a_sum_non_finite_is_not_counted(database):
    record_id = added(database, accumulating_record(3))
    post(database, record_id, {"w": np.array([1e308, 0.0]), "b": np.array([0.0])})
    with pytest.raises(NonFiniteGradient):
        post(database, record_id, {"w": np.array([1e308, 0.0]), "b": np.array([0.0])})
    with database.transaction(write=False) as db:
        assert SessionRepository(db).get(record_id).accumulated == 1
        kept = SessionArrays(db).load(record_id, writable=False)[accumulation_key("w")]
    np.testing.assert_array_equal(kept, [1e308, 0.0])


def test_under_skip_a_non_finite_sum_is_counted_and_left_to_the_step(database):
    record_id = added(database, accumulating_record(2, nonfinite="skip"))
    post(database, record_id, {"w": np.array([np.inf, 0.0]), "b": np.array([0.0])})
    (mean, _, _), received = post(
        database, record_id, {"w": np.array([1.0, 0.0]), "b": np.array([0.0])}
    )
    assert received == 2 and np.isinf(mean["w"][0])
