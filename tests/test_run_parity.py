"""Parameter groups, partial steps and `reduce_on_plateau` through the service (real HTTP, SQLite
and PostgreSQL) against torch.optim on the same numbers, and partial steps against the stored
bytes. The fast loop runs groups and partial steps for 25 steps on SQLite, and the plateau
schedule's 100 (it needs them to reduce the rate several times); the slow tests run all for
100 steps on both databases."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from app.stepping import SessionArrays
from app.store.database import Database
from tests.conftest import run_lengths
from tests.optim.reference import assert_close, random_problem, run_torch, torch_default_dtype
from tests.support import (
    bearer,
    create_session,
    post_json,
    read_tensors,
    wire_tensors,
)

STEPS = 100
SHAPES = {"encoder.w": (3, 4), "encoder.b": (4,), "decoder.w": (4, 2), "scale": ()}


@pytest.fixture
def client(module_app):
    with module_app.client() as client:
        yield client


def start(client, params, config):
    body = {"params": wire_tensors(params, "named"), "dtype": "float64", **config}
    return create_session(client, body)


def post_step(client, session, grads, loss=None):
    present = {name: grad for name, grad in grads.items() if grad is not None}
    body = {"gradients": wire_tensors(present, "named"), "partial": len(present) < len(grads)}
    if loss is not None:
        body["loss"] = loss
    response = post_json(
        client, f"/v1/sessions/{session['id']}/step", body, headers=bearer(session["token"])
    )
    assert response.status_code == 200, response.text
    return response.json()


def final_params(client, session):
    response = client.get(f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"]))
    return read_tensors(response.json()["params"], "float64")


GROUP_CASES = [
    ("sgd", {"lr": 0.01, "momentum": 0.9}, {"lr": 0.1, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01}, {"lr": 0.001, "weight_decay": 0.1, "amsgrad": True}),
    ("adamw", {"lr": 0.01}, {"lr": 0.03, "weight_decay": 0.0, "betas": [0.8, 0.9]}),
]


@pytest.mark.parametrize("steps", run_lengths(25, STEPS))
@pytest.mark.parametrize("case", GROUP_CASES, ids=[case[0] for case in GROUP_CASES])
def test_groups_match_torch_param_groups(client, case, steps):
    """`groups` as torch's param_groups: encoder tensors take the overrides, `scale` its own lr,
    the rest the base optimizer; the first matching group wins."""
    kind, fields, overrides = case
    params, grads = random_problem(21, np.dtype("float64"), steps, SHAPES)
    session = start(
        client,
        params,
        {
            "optimizer": {"type": kind, **fields},
            "groups": [
                {"match": ["encoder.*"], **overrides},
                {"match": ["enc*", "sc?le"], "lr": 0.05},
            ],
        },
    )
    for g in grads:
        post_step(client, session, g)
    torch_overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    theirs = run_torch(
        kind,
        fields,
        params,
        grads,
        groups=[(["encoder.w", "encoder.b"], torch_overrides), (["scale"], {"lr": 0.05})],
    )
    assert_close(final_params(client, session), theirs, np.dtype("float64"))


@pytest.mark.parametrize("steps", run_lengths(25, STEPS))
@pytest.mark.parametrize("kind", ["adam", "rmsprop", "sgd"])
def test_partial_steps_match_torch_grad_none(client, kind, steps):
    fields = {"lr": 0.01, "momentum": 0.9} if kind != "adam" else {"lr": 0.01}
    params, grads = random_problem(22, np.dtype("float64"), steps, SHAPES)
    rng = np.random.default_rng(23)
    for g in grads:
        for name in g:
            if rng.random() < 0.4:
                g[name] = None
    grads[0]["decoder.w"] = None  # a tensor whose first update comes later
    session = start(client, params, {"optimizer": {"type": kind, **fields}})
    for g in grads:
        if any(grad is not None for grad in g.values()):
            post_step(client, session, g)
    theirs = run_torch(kind, fields, params, grads)
    assert_close(final_params(client, session), theirs, np.dtype("float64"))


def test_a_partial_step_leaves_the_other_tensors_and_their_state_byte_identical(
    client, module_migrated_database_url
):
    params, grads = random_problem(24, np.dtype("float64"), 3, SHAPES)
    session = start(client, params, {"optimizer": {"type": "adam", "lr": 0.01, "amsgrad": True}})
    post_step(client, session, grads[0])
    database = Database(module_migrated_database_url)
    try:
        before = stored_state(database, session["id"])
        post_step(client, session, {"encoder.w": grads[1]["encoder.w"], "scale": None})
        after = stored_state(database, session["id"])
    finally:
        database.dispose()

    # θ and state as the store keeps them after a commit (a checkpoint and any logged steps
    # replayed onto it: what every reader and a restart see)
    assert before.keys() == after.keys()
    untouched = [key for key in before if not key.endswith("/encoder.w")]
    assert {key.split("/", 1)[0] for key in untouched} == {
        "param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step",
    }  # fmt: skip
    for key in untouched:  # every byte of θ and state, the step count included
        assert after[key] == before[key], key
    for key in ("param/encoder.w", "exp_avg/encoder.w", "step/encoder.w"):
        assert after[key] != before[key], key


def stored_state(database: Database, session_id: str) -> dict[str, tuple[str, tuple, bytes]]:
    """Every array the store gives back for the session: key → (dtype, shape, bytes)."""
    with database.transaction(write=False) as db:
        arrays = SessionArrays(db).load(uuid.UUID(session_id))
    return {key: (a.dtype.str, a.shape, a.tobytes()) for key, a in arrays.items()}


def losses_with_plateaus(count: int) -> list[float]:
    """Improving, flat and noisy stretches, so that patience, threshold and cooldown all act."""
    rng = np.random.default_rng(25)
    trend = 1.0 / (1.0 + 0.02 * np.arange(count))
    flat = np.repeat(trend[::10], 10)[:count]  # ten-step plateaus
    return [float(x) for x in flat + 0.03 * rng.standard_normal(count)]


PLATEAU_CASES = [
    {"patience": 3, "factor": 0.5, "cooldown": 2},
    {"patience": 2, "cooldown": 4, "factor": 0.5, "min_lr": 0.02, "threshold": 0.05},
    {"mode": "max", "patience": 1, "threshold_mode": "abs", "cooldown": 3, "factor": 0.7},
]


@pytest.mark.slow_on_postgres
@pytest.mark.parametrize("fields", PLATEAU_CASES, ids=["rel", "min-lr", "max-abs"])
def test_reduce_on_plateau_matches_torch_on_the_same_losses(client, fields):
    """Each step's rate and θ against torch's `opt.step(); sched.step(loss)`, with two groups
    (each reaching its own floor), and the scheduler's counters kept with the session."""
    losses = losses_with_plateaus(STEPS)
    params, grads = random_problem(26, np.dtype("float64"), STEPS, SHAPES)
    session = start(
        client,
        params,
        {
            "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
            "schedule": {"type": "reduce_on_plateau", **fields},
            "groups": [{"match": ["decoder.*"], "lr": 0.05}],
        },
    )
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    decoder = [tensors["decoder.w"]]
    rest = [tensor for name, tensor in tensors.items() if name != "decoder.w"]
    with torch_default_dtype(np.dtype("float64")):
        optimizer = torch.optim.SGD(
            [{"params": rest}, {"params": decoder, "lr": 0.05}], lr=0.1, momentum=0.9
        )
        scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, **fields)
        rates = []
        for g, loss in zip(grads, losses, strict=True):
            answer = post_step(client, session, g, loss)
            assert answer["lr"] == optimizer.param_groups[0]["lr"], answer["step"]
            rates.append(answer["lr"])
            for name, tensor in tensors.items():
                tensor.grad = torch.tensor(g[name])
            optimizer.step()
            scheduler.step(loss)

    assert len(set(rates)) >= 3, "the losses should make the schedule reduce more than once"
    view = client.get(f"/v1/sessions/{session['id']}", headers=bearer(session["token"])).json()
    assert view["lr"] == optimizer.param_groups[0]["lr"]
    theirs = {name: tensor.detach().numpy() for name, tensor in tensors.items()}
    assert_close(final_params(client, session), theirs, np.dtype("float64"))
    exported = client.get(
        f"/v1/sessions/{session['id']}/state", headers=bearer(session["token"])
    ).json()["schedule_state"]
    assert exported["best"] == scheduler.best
    assert exported["num_bad_epochs"] == scheduler.num_bad_epochs
    assert exported["cooldown_counter"] == scheduler.cooldown_counter
