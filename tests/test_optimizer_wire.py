"""Issues 16 and 17 on the wire: every optimizer type the core gained — the rest of torch.optim,
optax's classics, the learning-rate-free family — created, stepped, patched, forked and grouped
over HTTP, through the whole app in this process (`tests.in_process`) on a real database.

Parity runs post 120 steps of random gradients (the learning-rate-free family: gradients of a
noisy quadratic taken at the θ each answer gives) in float64 and float32, and hold the
displacement θ − θ₀ to the references: torch 2.13 (1e-9 in float64, 1e-5 in float32), optax
(1e-7, 1e-5) and the family's authors' packages (their own tolerances, tests/optim). The step
size a learning-rate-free type chose is the answer's `lr` and the history's. Bad input is a 422
naming the field or tensor, and leaves every stored byte as it was.

The app runs on a SQLite file and on PostgreSQL (skipped without one). The fast loop runs each
parity case for 30 steps in float64 on SQLite; the slow tests run the 120 steps in both dtypes
on both databases.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.optim import OPTIMIZER_TYPES, SparseRows, optimizer_defaults
from app.optim.catalog import CATALOG, CHOOSES_ITS_STEP_SIZE, ENTRIES
from app.store.database import Database
from tests.conftest import BACKENDS, migrated_database
from tests.in_process import InProcessServer
from tests.optim.learning_rate_free_reference import (
    NoisyQuadratic,
    ReferenceRun,
    assert_displacement_close,
    quantity_tolerance,
)
from tests.optim.reference import assert_moved_alike, random_problem, run_torch
from tests.support import bearer, create_session, database_snapshot, post_json, read_tensors

ROOT = Path(__file__).resolve().parents[1]
STEPS = 120
SHORT_STEPS = 30
"""A short run still passes ASGD's `t0` (20) and schedule-free AdamW's warm-up (10)."""
RUNS = [
    pytest.param("sqlite", np.float64, SHORT_STEPS, id=f"sqlite-float64-{SHORT_STEPS}-steps"),
    pytest.param("sqlite", np.float64, STEPS, id="sqlite-float64", marks=pytest.mark.slow),
    pytest.param("sqlite", np.float32, STEPS, id="sqlite-float32", marks=pytest.mark.slow),
    pytest.param(
        "postgresql",
        np.float64,
        STEPS,
        id="postgresql-float64",
        marks=[pytest.mark.postgres, pytest.mark.slow],
    ),
    pytest.param(
        "postgresql",
        np.float32,
        STEPS,
        id="postgresql-float32",
        marks=[pytest.mark.postgres, pytest.mark.slow],
    ),
]
"""Parity runs by database, dtype and length: 120 steps over HTTP take seconds, so the fast loop
runs a short float64 one on SQLite and the slow tests the full ones on both databases."""
parity_runs = pytest.mark.parametrize(
    ("database_url", "dtype", "steps"), RUNS, indirect=["database_url"]
)
TORCH_RTOL = {np.float64: 1e-9, np.float32: 1e-5}
OPTAX_RTOL = {np.float64: 1e-7, np.float32: 1e-5}
SHAPES = {"scalar": (), "vector": (7,), "matrix": (4, 5), "cube": (2, 3, 4)}
MATRICES = {"wide": (4, 6), "tall": (7, 3)}
TABLES = {"embedding": (10, 3), "bias": (6,)}

FIRST_TYPES = {
    "sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta",
    "lion", "custom",
}  # fmt: skip
"""The types the wire served before issues 16 and 17."""

TORCH_CASES = {
    "adafactor": ({"lr": 0.05, "weight_decay": 0.1, "beta2_decay": -0.5}, SHAPES),
    "muon": ({"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"}, MATRICES),
    "rprop": ({"lr": 0.1, "etas": [0.3, 1.5], "step_sizes": [1e-3, 0.2]}, SHAPES),
    "asgd": ({"lr": 0.05, "t0": 20, "lambd": 0.01, "weight_decay": 0.1}, SHAPES),
    "sparse_adam": ({"lr": 0.01, "betas": [0.8, 0.9]}, TABLES),
}
OPTAX_CASES = {
    "yogi": {"lr": 0.05, "b1": 0.5},
    "lamb": {"weight_decay": 0.1, "eps_root": 1e-8},
    "lars": {"lr": 0.1, "weight_decay": 0.1, "nesterov": True},
    "adabelief": {"nesterov": True},
    "novograd": {"weight_decay": 0.1},
    "adan": {"weight_decay": 0.1, "maximize": True},
}
LEARNING_RATE_FREE_CASES = {
    "schedule_free_adamw": {"lr": 0.05, "warmup_steps": 10, "weight_decay": 0.01},
    "schedule_free_sgd": {"lr": 0.1, "momentum": 0.8},
    "prodigy": {"use_bias_correction": True, "weight_decay": 0.01},
    "dadapt_adam": {"decouple": True, "weight_decay": 0.1},
    "dadapt_sgd": {"momentum": 0.9},
    "dadapt_adagrad": {"momentum": 0.5},
    "dog": {"weight_decay": 0.01},
    "ldog": {"reps_rel": 1e-4},
}


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory, database_templates):
    """A migrated database: a SQLite file, then PostgreSQL (the parity runs choose theirs)."""
    directory = tmp_path_factory.mktemp("db")
    with migrated_database(request.param, directory, database_templates) as url:
        yield url


@pytest.fixture(scope="module")
def server(database_url) -> Iterator[InProcessServer]:
    with InProcessServer(database_url) as app:
        yield app


@pytest.fixture(scope="module")
def database(database_url, server) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


class Remote:
    """A session driven over HTTP like a local optimizer: θ as the answers give it."""

    def __init__(
        self,
        client: httpx.Client,
        params: Mapping[str, np.ndarray],
        config: Mapping[str, Any],
    ) -> None:
        self.client = client
        self.dtype = next(iter(params.values())).dtype
        body = {"params": _wire(params), "dtype": self.dtype.name, **config}
        self.view = create_session(client, body)
        self.id, self.token = self.view["id"], self.view["token"]
        self.theta = {name: value.copy() for name, value in params.items()}
        self.answers: list[dict[str, Any]] = []

    @property
    def path(self) -> str:
        return f"/v1/sessions/{self.id}"

    def step(self, grads: Mapping[str, np.ndarray]) -> dict[str, Any]:
        response = post_json(
            self.client, f"{self.path}/step", {"gradients": _wire(grads)}, headers=self.headers
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        self.theta = read_tensors(answer["params"], self.dtype.name)
        self.answers.append(answer)
        return answer

    def history(self) -> list[dict[str, Any]]:
        """Every history record, page by page."""
        records: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            response = self.client.get(
                f"{self.path}/history", params={"after": after}, headers=self.headers
            )
            assert response.status_code == 200, response.text
            page = response.json()
            records += page["records"]
            after = page["next"]
        return records

    def history_rates(self) -> list[float]:
        return [record["lr"] for record in self.history() if record["kind"] == "step"]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def _wire(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Arrays for JSON: 0-d ones as numbers (orjson writes no 0-d float64 array)."""
    return {name: array if array.ndim else array.item() for name, array in arrays.items()}


def test_every_new_type_has_a_wire_case():
    covered = set(TORCH_CASES) | set(OPTAX_CASES) | set(LEARNING_RATE_FREE_CASES)
    assert covered == set(OPTIMIZER_TYPES) - FIRST_TYPES
    assert set(LEARNING_RATE_FREE_CASES) == CHOOSES_ITS_STEP_SIZE


# -- parity ------------------------------------------------------------------------------------


def _every_row(grads: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, SparseRows]]:
    """Dense gradients as torch's SparseAdam takes them: every row listed."""
    return [
        {name: SparseRows(np.arange(g.shape[0]), g.copy()) for name, g in step.items()}
        for step in grads
    ]


def _rates_are_reported(remote: Remote, expected: Sequence[float], rtol: float) -> None:
    """The answers' `lr`, and the history's, are the step sizes `expected`."""
    answered = [answer["lr"] for answer in remote.answers]
    np.testing.assert_allclose(answered, expected, rtol=rtol)
    assert remote.history_rates() == answered


@parity_runs
@pytest.mark.parametrize("kind", sorted(TORCH_CASES))
def test_torch_types_match_torch_through_http(client, kind, dtype, steps):
    fields, shapes = TORCH_CASES[kind]
    params, grads = random_problem(11, dtype, steps, shapes)
    remote = Remote(client, params, {"optimizer": {"type": kind, **fields}})
    for step in grads:
        remote.step(step)
    theirs = run_torch(kind, fields, params, _every_row(grads) if kind == "sparse_adam" else grads)
    assert_moved_alike(remote.theta, theirs, params, TORCH_RTOL[dtype])
    _rates_are_reported(remote, [fields.get("lr", optimizer_defaults(kind)["lr"])] * steps, 0)


@parity_runs
@pytest.mark.parametrize("kind", sorted(OPTAX_CASES))
def test_optax_types_match_optax_through_http(client, kind, dtype, steps):
    from tests.optim.optax_reference import run_optax  # skips without the `reference` extra

    fields = OPTAX_CASES[kind]
    params, grads = random_problem(13, dtype, steps, SHAPES)
    remote = Remote(client, params, {"optimizer": {"type": kind, **fields}})
    for step in grads:
        remote.step(step)
    theirs = run_optax(kind, fields, params, grads)
    assert_moved_alike(remote.theta, theirs, params, OPTAX_RTOL[dtype])


@parity_runs
@pytest.mark.parametrize("kind", sorted(LEARNING_RATE_FREE_CASES))
def test_learning_rate_free_types_match_their_packages_through_http(client, kind, dtype, steps):
    """Each run takes its gradients at its own θ (the answers' θ for the session); the step
    size the reference chose is the answer's `lr` and the history's."""
    fields = LEARNING_RATE_FREE_CASES[kind]
    problem = NoisyQuadratic(17, dtype, steps)
    reference = ReferenceRun(kind, fields, problem.start)
    remote = Remote(client, problem.start, {"optimizer": {"type": kind, **fields}})
    chosen = []
    for t in range(steps):
        chosen.append(reference.step(problem.gradients(reference.theta(), t)))
        remote.step(problem.gradients(remote.theta, t))
    assert_displacement_close(remote.theta, reference.theta(), problem.start, dtype)
    _rates_are_reported(remote, chosen, quantity_tolerance(dtype))
    view = client.get(remote.path, headers=remote.headers).json()
    assert view["step"] == steps and view["optimizer"]["type"] == kind


@parity_runs
def test_muon_with_adamw_in_groups_matches_torch(client, dtype, steps):
    """Muon for the matrices, the session's AdamW for the rest (optax's `multi_transform`):
    each tensor moves as its own torch optimizer moves it."""
    shapes = {"layer.weight": (6, 4), "layer.bias": (6,), "out.weight": (3, 6), "out.bias": ()}
    params, grads = random_problem(19, dtype, steps, shapes)
    muon = {"lr": 0.02, "momentum": 0.9}
    config = {
        "optimizer": {"type": "adamw", "lr": 0.01},
        "groups": [{"match": ["*.weight"], "optimizer": {"type": "muon", **muon}}],
    }
    remote = Remote(client, params, config)
    assert remote.view["groups"][0]["optimizer"] == {
        **optimizer_defaults("muon"),
        "type": "muon",
        **muon,
    }
    for step in grads:
        remote.step(step)
    weights = [name for name in shapes if name.endswith("weight")]
    others = [name for name in shapes if name not in weights]
    theirs = run_torch("muon", muon, _pick(params, weights), [_pick(g, weights) for g in grads])
    theirs |= run_torch(
        "adamw", {"lr": 0.01}, _pick(params, others), [_pick(g, others) for g in grads]
    )
    assert_moved_alike(remote.theta, theirs, params, TORCH_RTOL[dtype])


def _pick(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: arrays[name] for name in names}


# -- PATCH, fork and the view --------------------------------------------------------------------


def test_patch_changes_a_new_types_hyper_parameters_and_the_steps_follow(client):
    params, grads = random_problem(23, np.float64, 20, SHAPES)
    remote = Remote(client, params, {"optimizer": {"type": "lamb", "lr": 0.01}})
    for step in grads[:10]:
        remote.step(step)
    response = client.patch(
        remote.path, json={"optimizer": {"lr": 0.002, "b1": 0.8}}, headers=remote.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["optimizer"] | {"lr": 0.002, "b1": 0.8} == response.json()["optimizer"]
    for step in grads[10:]:
        remote.step(step)
    assert [answer["lr"] for answer in remote.answers] == [0.01] * 10 + [0.002] * 10


def test_fork_may_change_the_type_to_a_new_one(client):
    params, grads = random_problem(29, np.float32, 6, MATRICES)
    remote = Remote(client, params, {"optimizer": {"type": "adamw"}})
    for step in grads[:3]:
        remote.step(step)
    response = post_json(
        client,
        f"{remote.path}/fork",
        {"optimizer": {"type": "muon", "lr": 0.05}},
        headers=remote.headers,
    )
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["optimizer"]["type"] == "muon" and fork["step"] == 3
    state = client.get(f"/v1/sessions/{fork['id']}/state", headers=bearer(fork["token"])).json()
    assert set(state["state"]["wide"]) == {"momentum_buffer", "step"}
    forked = client.get(f"/v1/sessions/{fork['id']}/params", headers=bearer(fork["token"]))
    np.testing.assert_array_equal(
        read_tensors(forked.json()["params"], "float32")["wide"], remote.theta["wide"]
    )


def test_the_openapi_document_knows_every_type(client):
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    union = schemas["CreateSession"]["properties"]["optimizer"]
    listed = {ref["$ref"].rsplit("/", 1)[1] for ref in union["oneOf"]}
    assert listed == {entry.title for entry in CATALOG}
    for entry in CATALOG:
        model = schemas[entry.title]
        assert model["properties"]["type"]["const"] == entry.type
        for name, default in optimizer_defaults(entry.type).items():
            if entry.type == "custom" and name in ("momentum", "sigma"):
                continue
            assert model["properties"][name].get("default") == default, (entry.type, name)
        assert entry.reference in model["description"]
    group = schemas["Group"]["properties"]["optimizer"]
    assert {"$ref": "#/components/schemas/Muon"} in group["anyOf"][0]["oneOf"]


# -- bad input: a 422 naming the field or tensor, nothing stored or changed ----------------------

MATRIX_AND_VECTOR = {"w": np.ones((3, 2)), "b": np.zeros(3)}


def _refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


@pytest.fixture
def witness(client) -> Remote:
    """A session whose stored bytes (and the number of sessions) a bad request must not
    change: AdamW for `b`, Muon for `w` (a group of its own)."""
    config = {
        "optimizer": {"type": "adamw"},
        "groups": [{"match": ["w"], "optimizer": {"type": "muon", "lr": 0.02}}],
    }
    remote = Remote(client, MATRIX_AND_VECTOR, config)
    remote.step({"w": np.full((3, 2), 0.5), "b": np.ones(3)})
    return remote


MUON = {"type": "muon"}
CREATE_CASES = [
    (
        "muon-on-a-vector",
        {"optimizer": {"type": "muon"}},
        {"tensor": "b", "field": "optimizer.type"},
        "2-D",
    ),
    (
        "muon-group-on-a-vector",
        {"optimizer": {"type": "adamw"}, "groups": [{"match": ["*"], "optimizer": MUON}]},
        {"tensor": "b", "field": "groups.0.optimizer.type"},
        "2-D",
    ),
    (
        "two-types-for-one-tensor",
        {
            "optimizer": {"type": "adamw"},
            "groups": [
                {"match": ["w"], "optimizer": {"type": "muon"}},
                {"match": ["w", "b"], "optimizer": {"type": "lion"}},
            ],
        },
        {"tensor": "w", "field": "groups.1.match"},
        "one optimizer type",
    ),
    (
        "a-value-out-of-range",
        {"optimizer": {"type": "prodigy", "d0": -1.0}},
        {"field": "optimizer.d0"},
        "must be",
    ),
    (
        "a-group-beside-a-whole-step-rule",
        {
            "optimizer": {"type": "dog"},
            "groups": [{"match": ["w"], "optimizer": {"type": "muon"}}],
        },
        {"field": "groups.0.optimizer.type"},
        "learning-rate-free",
    ),
    (
        "a-session-wide-field-in-a-group",
        {"optimizer": {"type": "prodigy"}, "groups": [{"match": ["w"], "d0": 1e-3}]},
        {"field": "groups.0.d0"},
        "whole session",
    ),
]


@pytest.mark.parametrize(
    ("config", "names", "says"),
    [case[1:] for case in CREATE_CASES],
    ids=[case[0] for case in CREATE_CASES],
)
def test_bad_configurations_are_named_and_change_nothing(
    client, database, witness, config, names, says
):
    before = database_snapshot(database, witness.id)
    body = {"params": {name: value.tolist() for name, value in MATRIX_AND_VECTOR.items()}}
    response = post_json(client, "/v1/sessions", {**body, **config})
    problem = _refused(response)
    assert {key: problem.get(key) for key in names} == names, problem
    assert says in problem["detail"]
    assert database_snapshot(database, witness.id) == before


VALIDATION_CASES = [
    (
        {"type": "muon", "ns_coefficients": [3.0, "-4", 2.0]},
        ["optimizer", "muon", "ns_coefficients", 1],
    ),
    ({"type": "adafactor", "eps": "1e-3"}, ["optimizer", "adafactor", "eps"]),
    ({"type": "lars", "weight_decay_mask": "yes"}, ["optimizer", "lars", "weight_decay_mask"]),
    ({"type": "dog", "learning_rate": 1.0}, ["optimizer", "dog", "learning_rate"]),
    ({"type": "adam_free"}, ["optimizer"]),
]


@pytest.mark.parametrize(("spec", "location"), VALIDATION_CASES, ids=lambda v: str(v)[:40])
def test_bad_fields_are_named(client, database, witness, spec, location):
    before = database_snapshot(database, witness.id)
    body = {"params": [1.0, 2.0], "optimizer": spec}
    problem = _refused(post_json(client, "/v1/sessions", body))
    assert [error["loc"][1:] for error in problem["errors"]] == [location], problem
    assert database_snapshot(database, witness.id) == before


def test_an_unknown_type_in_a_group_is_named(client, database, witness):
    before = database_snapshot(database, witness.id)
    group = {"match": ["w"], "optimizer": {"type": "muonx", "lr": 0.02}}
    body = {"params": {"w": [[1.0]]}, "optimizer": {"type": "adamw"}, "groups": [group]}
    problem = _refused(post_json(client, "/v1/sessions", body))
    assert [error["loc"][1:] for error in problem["errors"]] == [["groups", 0, "optimizer"]]
    assert "muonx" in problem["detail"]
    assert database_snapshot(database, witness.id) == before


PATCH_CASES = [
    (
        "the-groups-type",
        {"groups": [{"match": ["w"], "optimizer": {"type": "lion"}}]},
        {"field": "groups.0.optimizer.type", "tensor": "w"},
        "fork",
    ),
    (
        "a-tensor-moved-to-another-type",
        {"groups": [{"match": ["w", "b"], "optimizer": {"type": "muon"}}]},
        {"field": "groups.0.optimizer.type"},
        "",
    ),
    (
        "a-tensor-moved-out-of-its-group",
        {"groups": []},
        {"tensor": "w"},
        "fork",
    ),
    ("the-base-type", {"optimizer": {"type": "yogi"}}, {"field": "optimizer.type"}, "fork"),
    (
        "a-bad-value-in-the-group",
        {"groups": [{"match": ["w"], "optimizer": {"type": "muon", "ns_steps": 100}}]},
        {"field": "groups.0.optimizer.ns_steps"},
        "100",
    ),
]


@pytest.mark.parametrize(
    ("patch", "names", "says"),
    [case[1:] for case in PATCH_CASES],
    ids=[case[0] for case in PATCH_CASES],
)
def test_bad_patches_are_named_and_change_nothing(client, database, witness, patch, names, says):
    before = database_snapshot(database, witness.id)
    response = client.patch(witness.path, json=patch, headers=witness.headers)
    problem = _refused(response)
    assert {key: problem.get(key) for key in names} == names, problem
    assert says in problem["detail"]
    assert database_snapshot(database, witness.id) == before


def test_patch_may_change_a_groups_hyper_parameters(client, witness):
    groups = [{"match": ["w"], "optimizer": {"type": "muon", "lr": 0.01, "nesterov": False}}]
    response = client.patch(witness.path, json={"groups": groups}, headers=witness.headers)
    assert response.status_code == 200, response.text
    assert response.json()["groups"][0]["optimizer"]["nesterov"] is False
    change = witness.history()[-1]
    assert change["kind"] == "change" and "groups" in next(iter(change["changes"]))


# -- the schedule preview and the docs -----------------------------------------------------------

COSINE = {"type": "cosine", "total_steps": 10}


@pytest.mark.parametrize("entry", CATALOG, ids=lambda entry: entry.type)
def test_the_preview_takes_every_type_and_its_default_lr(client, entry):
    spec = {"type": entry.type}
    if entry.type == "custom":
        spec["momentum"] = {"beta": 0.9}
    body = {"schedule": COSINE, "optimizer": spec, "steps": 10}
    response = post_json(client, "/v1/schedules/preview", body)
    assert response.status_code == 200, response.text
    lr = optimizer_defaults(entry.type)["lr"]
    plain = post_json(client, "/v1/schedules/preview", {"schedule": COSINE, "lr": lr, "steps": 10})
    assert response.json() == {
        "lr": plain.json()["lr"],
        "estimated": entry.type in CHOOSES_ITS_STEP_SIZE,
    }


def test_the_previews_lr_wins_over_the_optimizers(client):
    body = {"schedule": COSINE, "lr": 0.5, "optimizer": {"type": "prodigy"}, "steps": 3}
    response = post_json(client, "/v1/schedules/preview", body)
    assert response.status_code == 200, response.text
    assert response.json()["lr"][0] == 0.5


@pytest.mark.parametrize(
    ("optimizer", "field"),
    [
        ({"type": "muon", "ns_steps": 100}, "optimizer.ns_steps"),
        ({"type": "dog", "lr": 0}, "optimizer.lr"),
    ],
)
def test_the_preview_names_a_bad_optimizer_field(client, optimizer, field):
    body = {"schedule": COSINE, "optimizer": optimizer, "steps": 3}
    problem = _refused(post_json(client, "/v1/schedules/preview", body))
    assert problem["field"] == field


def test_the_docs_table_lists_every_type_with_its_reference():
    rows = [
        line.split("|")
        for line in (ROOT / "docs" / "optimizers.md").read_text().splitlines()
        if line.startswith("| `")
    ]
    listed = {row[1].strip().strip("`"): row[2].strip() for row in rows}
    assert listed == {entry.type: entry.reference for entry in CATALOG}
    assert list(ENTRIES) == [entry.type for entry in CATALOG]


def test_the_readmes_table_lists_every_type_once():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Optimizers") : readme.index("## Where to read on")]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")]
    types = [name for row in rows[1:] for name in re.findall(r"`(\w+)`", row[2])]
    assert sorted(types) == sorted(entry.type for entry in CATALOG)
