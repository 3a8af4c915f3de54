"""The state paths of issues 16 and 17 over HTTP, through the whole app in this process on a real
database (SQLite, PostgreSQL): the eval view (`GET …/params?for=eval`, JSON and safetensors)
against schedulefree's `eval()` and torch's ASGD average; the learning-rate-free types' global
quantities across a restart with steps in the log, through export → import (JSON and
safetensors), fork and PATCH; partial steps as the references define them (DoG refuses them);
and bad globals in an import, each a 422 that creates nothing.

The long runs take PostgreSQL with the slow tests only (`slow_on_postgres`, `run_lengths`): its
round trips cost several times SQLite's and the bytes they store are the same. The fast loop
restarts and exports after 6 of 12 steps, the slow tests after 20 of 40."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from optaas_state import safetensors_arrays, tensors_to_safetensors
from sqlalchemy import func, select

from app.store.database import Database
from app.store.models import SessionRecord
from tests.conftest import run_lengths
from tests.in_process import InProcessServer
from tests.optim.learning_rate_free_reference import (
    NoisyQuadratic,
    ReferenceRun,
    assert_displacement_close,
)
from tests.optim.reference import torch_default_dtype
from tests.support import bearer, create_session, post_json, read_tensors

SAFETENSORS = "application/vnd.safetensors"
STEPS = 40
FAMILY = {
    "schedule_free_adamw": {"lr": 0.05, "warmup_steps": 5},
    "schedule_free_sgd": {"lr": 0.1, "momentum": 0.8},
    "prodigy": {"use_bias_correction": True},
    "dadapt_adam": {"weight_decay": 0.1},
    "dadapt_sgd": {"momentum": 0.9},
    "dadapt_adagrad": {"momentum": 0.5},
    "dog": {},
    "ldog": {"reps_rel": 1e-4},
}


@pytest.fixture(scope="module")
def server(module_migrated_database_url) -> Iterator[InProcessServer]:
    # A long step log: steps are logged (globals and all) and replayed after a restart.
    env = {"OPTAAS_CHECKPOINT_EVERY": "100000"}
    with InProcessServer(module_migrated_database_url, env=env) as app:
        yield app


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def database(module_migrated_database_url, server) -> Iterator[Database]:
    database = Database(module_migrated_database_url)
    yield database
    database.dispose()


def wire(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {name: array.tolist() for name, array in arrays.items()}


class Run:
    """A session over HTTP, θ as its answers give it."""

    def __init__(self, client, params=None, config=None, *, created=None):
        self.client = client
        if created is None:
            self.dtype = next(iter(params.values())).dtype
            body = {"params": wire(params), "dtype": self.dtype.name, **config}
            created = create_session(client, body)
        self.id, self.token = created["id"], created["token"]
        self.dtype = np.dtype(created["dtype"])
        self.theta = None

    @property
    def path(self):
        return f"/v1/sessions/{self.id}"

    @property
    def headers(self):
        return bearer(self.token)

    def step(self, grads, **fields):
        response = self.post_step(grads, **fields)
        assert response.status_code == 200, response.text
        self.theta = read_tensors(response.json()["params"], self.dtype.name)

    def post_step(self, grads, **fields):
        body = {"gradients": wire(grads), **fields}
        return post_json(self.client, f"{self.path}/step", body, headers=self.headers)

    def params(self, *, for_eval=False, binary=False):
        headers = {**self.headers, **({"Accept": SAFETENSORS} if binary else {})}
        query = {"for": "eval"} if for_eval else {}
        response = self.client.get(f"{self.path}/params", params=query, headers=headers)
        assert response.status_code == 200, response.text
        if binary:
            arrays, metadata = safetensors_arrays(response.content)
            assert int(metadata["step"]) >= 0
            return dict(arrays)
        return read_tensors(response.json()["params"], self.dtype.name)

    def export(self, *, binary=False):
        headers = {**self.headers, **({"Accept": SAFETENSORS} if binary else {})}
        response = self.client.get(f"{self.path}/state", headers=headers)
        assert response.status_code == 200, response.text
        return response.content if binary else response.json()

    def imported(self, export, *, binary=False):
        response = import_body(self.client, export, binary=binary)
        assert response.status_code == 201, response.text
        return Run(self.client, created=response.json())

    def fork(self, **overrides):
        response = post_json(self.client, f"{self.path}/fork", overrides, headers=self.headers)
        assert response.status_code == 201, response.text
        return Run(self.client, created=response.json())


def import_body(client, export, *, binary=False):
    if binary:
        headers = {"Content-Type": SAFETENSORS}
        return client.post("/v1/sessions/import", content=export, headers=headers)
    return post_json(client, "/v1/sessions/import", export)


# -- the eval view -----------------------------------------------------------------------------


@pytest.mark.slow_on_postgres
@pytest.mark.parametrize("kind", ["schedule_free_adamw", "schedule_free_sgd"])
def test_the_eval_view_is_schedulefrees_x(client, kind):
    """x − θ₀ from `?for=eval` (JSON and safetensors) agrees with schedulefree's eval() to
    1e-7 relative, after 40 steps; θ stays y, where the gradients are taken."""
    problem = NoisyQuadratic(3, np.float64, STEPS)
    reference = ReferenceRun(kind, FAMILY[kind], problem.start)
    run = Run(client, problem.start, {"optimizer": {"type": kind, **FAMILY[kind]}})
    for t in range(STEPS):
        reference.step(problem.gradients(reference.theta(), t))
        run.step(problem.gradients(run.theta or problem.start, t))
    expected = reference.eval_theta()
    assert_displacement_close(run.params(for_eval=True), expected, problem.start, np.float64)
    assert_displacement_close(
        run.params(for_eval=True, binary=True), expected, problem.start, np.float64
    )
    assert_displacement_close(run.params(), reference.theta(), problem.start, np.float64)
    x, y = run.params(for_eval=True), run.params()
    assert not all(np.allclose(x[name], y[name]) for name in y)  # x and y are apart


@pytest.mark.slow_on_postgres
def test_the_eval_view_of_asgd_is_torchs_average(client):
    rng = np.random.default_rng(5)
    start = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    fields = {"lr": 0.05, "t0": 10, "lambd": 0.01}
    tensors = {
        name: torch.tensor(value.copy(), requires_grad=True) for name, value in start.items()
    }
    with torch_default_dtype(np.float64):  # torch keeps ASGD's eta and mu in it
        reference = torch.optim.ASGD(list(tensors.values()), **fields)
    run = Run(client, start, {"optimizer": {"type": "asgd", **fields}})
    for _ in range(30):
        grads = {name: rng.standard_normal(value.shape) for name, value in start.items()}
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        with torch_default_dtype(np.float64):
            reference.step()
        run.step(grads)
    averaged = {name: reference.state[tensor]["ax"].numpy() for name, tensor in tensors.items()}
    for binary in (False, True):
        served = run.params(for_eval=True, binary=binary)
        for name in start:
            np.testing.assert_allclose(
                served[name] - start[name], averaged[name] - start[name], rtol=1e-9
            )


def test_an_unknown_view_is_a_422(client):
    run = Run(client, {"w": np.zeros(2)}, {"optimizer": {"type": "adam"}})
    response = client.get(f"{run.path}/params", params={"for": "train"}, headers=run.headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


# -- global quantities: restarts, exports, forks ----------------------------------------------


@pytest.mark.parametrize("steps", run_lengths(12, STEPS))
@pytest.mark.parametrize("kind", sorted(FAMILY))
def test_a_restart_mid_run_changes_nothing(client, server, kind, steps):
    """40 steps (12 in the fast loop) with the server restarted half way (steps in the log, the
    working sets gone): θ − θ₀ agrees with the reference's uninterrupted run to 1e-7 relative."""
    problem = NoisyQuadratic(4, np.float64, steps)
    reference = ReferenceRun(kind, FAMILY[kind], problem.start)
    run = Run(client, problem.start, {"optimizer": {"type": kind, **FAMILY[kind]}})
    for t in range(steps):
        if t == steps // 2:
            server.restart()
            client = server.client()
            run.client = client
        reference.step(problem.gradients(reference.theta(), t))
        run.step(problem.gradients(run.theta or problem.start, t))
    assert_displacement_close(run.params(), reference.theta(), problem.start, np.float64)


@pytest.mark.parametrize("steps", run_lengths(12, STEPS))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "safetensors"])
@pytest.mark.parametrize("kind", sorted(FAMILY))
def test_export_import_continue_equals_an_uninterrupted_run(client, kind, binary, steps):
    """Half a run, exported (globals included) and imported; both sessions continue with the
    same gradients and end bit for bit alike."""
    problem = NoisyQuadratic(6, np.float64, steps)
    run = Run(client, problem.start, {"optimizer": {"type": kind, **FAMILY[kind]}})
    for t in range(steps // 2):
        run.step(problem.gradients(run.theta or problem.start, t))
    export = run.export(binary=binary)
    if not binary:
        assert export["globals"], "a learning-rate-free session exports its globals"
    copy = run.imported(export, binary=binary)
    for t in range(steps // 2, steps):
        grads = problem.gradients(run.theta, t)
        run.step(grads)
        copy.step(grads)
    for name, value in run.params().items():
        np.testing.assert_array_equal(copy.params()[name], value, err_msg=name)


def test_an_export_carries_the_globals_in_both_forms(client):
    problem = NoisyQuadratic(7, np.float32, 5)
    run = Run(client, problem.start, {"optimizer": {"type": "ldog"}})
    for t in range(5):
        run.step(problem.gradients(run.theta or problem.start, t))
    document = run.export()
    assert set(document["globals"]) == {"optimizer.rbar", "optimizer.G"}
    assert len(document["globals"]["optimizer.rbar"]) == len(problem.start)
    arrays, _ = safetensors_arrays(run.export(binary=True))
    assert arrays["~global/optimizer.rbar"].dtype == np.float32  # the session's dtype
    np.testing.assert_array_equal(
        arrays["~global/optimizer.G"], np.asarray(document["globals"]["optimizer.G"], np.float32)
    )
    adam = Run(client, problem.start, {"optimizer": {"type": "adam"}})
    adam.step(problem.gradients(problem.start, 0))
    assert adam.export()["globals"] == {}


def test_a_fork_carries_the_globals_and_a_new_type_starts_its_own(client):
    problem = NoisyQuadratic(8, np.float64, 20)
    run = Run(client, problem.start, {"optimizer": {"type": "prodigy"}})
    for t in range(10):
        run.step(problem.gradients(run.theta or problem.start, t))
    same = run.fork()
    assert same.export()["globals"] == run.export()["globals"]
    for t in range(10, 20):
        grads = problem.gradients(run.theta, t)
        run.step(grads)
        same.step(grads)
    for name, value in run.params().items():
        np.testing.assert_array_equal(same.params()[name], value)
    other = run.fork(optimizer={"type": "dadapt_adam"})
    assert other.export()["globals"] == {}  # prodigy's d is not D-Adaptation's
    other.step(problem.gradients(run.params(), 0))
    assert set(other.export()["globals"]) == {"d", "numerator_weighted", "k"}


def test_regrouping_ldog_restarts_the_groups_distances(client):
    """LDoG keeps one distance per tensor of a group: a PATCH of `groups` fits them (a group
    whose tensors changed starts its distances again) instead of failing the next step."""
    problem = NoisyQuadratic(9, np.float64, 10)
    run = Run(client, problem.start, {"optimizer": {"type": "ldog"}})
    for t in range(5):
        run.step(problem.gradients(run.theta or problem.start, t))
    patch = {"groups": [{"match": ["cube"], "weight_decay": 0.01}]}
    response = client.patch(run.path, json=patch, headers=run.headers)
    assert response.status_code == 200, response.text
    assert run.export()["globals"] == {}
    for t in range(5, 10):
        run.step(problem.gradients(run.theta, t))
    assert set(run.export()["globals"]) == {
        "optimizer.rbar",
        "optimizer.G",
        "groups.0.rbar",
        "groups.0.G",
    }


# -- partial steps -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dog", "ldog"])
def test_dog_refuses_a_partial_step_naming_the_missing_tensor(client, database, kind):
    problem = NoisyQuadratic(10, np.float64, 2)
    run = Run(client, problem.start, {"optimizer": {"type": kind}})
    run.step(problem.gradients(problem.start, 0))
    grads = problem.gradients(run.theta, 1)
    grads.pop("vector")
    response = run.post_step(grads, partial=True)
    assert response.status_code == 422, response.text
    assert response.json()["tensor"] == "vector"
    assert "partial" in response.json()["detail"]


@pytest.mark.slow_on_postgres
@pytest.mark.parametrize("kind", ["prodigy", "dadapt_adam", "schedule_free_adamw"])
def test_partial_steps_follow_the_reference(client, kind):
    """A tensor left out of a step is `grad is None` in the reference: its sums skip it."""
    problem = NoisyQuadratic(11, np.float64, 20)
    reference = ReferenceRun(kind, FAMILY[kind], problem.start)
    run = Run(client, problem.start, {"optimizer": {"type": kind, **FAMILY[kind]}})
    for t in range(20):
        theirs = problem.gradients(reference.theta(), t)
        ours = problem.gradients(run.theta or problem.start, t)
        if t % 3 == 1:
            theirs["cube"] = None
            ours.pop("cube")
        reference.step(theirs)
        run.step(ours, partial=t % 3 == 1)
    assert_displacement_close(run.params(), reference.theta(), problem.start, np.float64)


# -- bad globals -------------------------------------------------------------------------------


def session_count(database):
    with database.transaction(write=False) as db:
        return db.execute(select(func.count()).select_from(SessionRecord)).scalar_one()


BAD_GLOBALS = [
    ("unknown", {"optimizer.rbar": 1e-6}, "globals.optimizer.rbar"),
    ("wrong shape", {"d": [1e-6, 1e-6]}, "globals.d"),
    ("fractional count", {"k": 2.5}, "globals.k"),
    ("negative count", {"k": -1}, "globals.k"),
    ("not a number", {"d": "big"}, "globals.d"),
    ("a matrix", {"d": [[1.0]]}, "globals.d"),
]


@pytest.mark.parametrize(
    ("case", "globals_", "field"), BAD_GLOBALS, ids=[c[0] for c in BAD_GLOBALS]
)
def test_bad_globals_in_an_import_are_named_and_create_nothing(
    client, database, case, globals_, field
):
    problem = NoisyQuadratic(12, np.float64, 3)
    run = Run(client, problem.start, {"optimizer": {"type": "prodigy"}})
    for t in range(3):
        run.step(problem.gradients(run.theta or problem.start, t))
    export = run.export()
    export["globals"] = {**export["globals"], **globals_}
    before = session_count(database)
    response = import_body(client, export)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.json()
    assert session_count(database) == before


def test_a_non_finite_global_in_a_file_is_named(client, database):
    problem = NoisyQuadratic(13, np.float64, 3)
    run = Run(client, problem.start, {"optimizer": {"type": "dog"}})
    for t in range(3):
        run.step(problem.gradients(run.theta or problem.start, t))
    arrays, metadata = safetensors_arrays(run.export(binary=True))
    arrays = dict(arrays)
    arrays["~global/optimizer.G"] = np.array(np.inf)
    before = session_count(database)
    response = import_body(client, tensors_to_safetensors(arrays, metadata), binary=True)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "~global/optimizer.G"
    assert session_count(database) == before
