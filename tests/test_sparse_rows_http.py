"""Sparse row gradients over real HTTP (SQLite and PostgreSQL): JSON `{"rows", "values"}` and
safetensors `rows/<tensor>`, parity with torch's sparse COO gradients, answers that carry only
the changed rows, the step log replayed across a restart, accumulation of sparse posts,
idempotent repeats, and every bad input refused with a 422 that changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from optaas_state import safetensors_arrays, tensors_to_safetensors

from tests.support import bearer, create_session, database_snapshot, post_json

pytestmark = pytest.mark.slow

SAFETENSORS = "application/vnd.safetensors"
ROWS, DIM = 12, 3


@pytest.fixture(scope="module")
def server(module_start_server, module_database_url):
    # A long step log: steps are logged (sparse rows included) and replayed after a restart.
    return module_start_server(module_database_url, env={"OPTAAS_CHECKPOINT_EVERY": "100000"})


@pytest.fixture
def client(server):
    with server.client() as client:
        yield client


def initial(dtype="float64"):
    rng = np.random.default_rng(7)
    return {
        "emb": rng.standard_normal((ROWS, DIM)).astype(dtype),
        "w": rng.standard_normal((DIM, 2)).astype(dtype),
    }


def new_session(client, optimizer, dtype="float64", **config):
    params = initial(dtype)
    body = {
        "params": {name: array.tolist() for name, array in params.items()},
        "dtype": dtype,
        "optimizer": optimizer,
        **config,
    }
    return create_session(client, body), params


def step(client, session, gradients, query=None, headers=None, **fields):
    return post_json(
        client,
        f"/v1/sessions/{session['id']}/step",
        {"gradients": gradients, **fields},
        params=query or {},
        headers={**bearer(session["token"]), **(headers or {})},
    )


def step_file(client, session, arrays, metadata=None, query=None, accept=SAFETENSORS):
    headers = {**bearer(session["token"]), "Content-Type": SAFETENSORS, "Accept": accept}
    return client.post(
        f"/v1/sessions/{session['id']}/step",
        content=tensors_to_safetensors(arrays, metadata),
        params=query or {},
        headers=headers,
    )


def params_of(client, session):
    response = client.get(f"/v1/sessions/{session['id']}/params", headers=bearer(session["token"]))
    assert response.status_code == 200, response.text
    return {name: np.asarray(value) for name, value in response.json()["params"].items()}


def sparse_batch(rng, dtype="float64"):
    """An embedding table's gradient as torch makes it: uncoalesced rows (repeats included)."""
    rows = rng.integers(0, ROWS, size=rng.integers(1, 9))
    values = rng.standard_normal((rows.size, DIM)).astype(dtype)
    return rows, values


def torch_sparse(rows, values):
    return torch.sparse_coo_tensor(
        torch.from_numpy(rows[None, :].copy()),
        torch.from_numpy(values.copy()),
        (ROWS, DIM),
        check_invariants=True,
    )


def rows_json(rows, values):
    return {"rows": rows.tolist(), "values": values.tolist()}


# -- parity with torch's sparse gradients ------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "make_torch"),
    [
        (
            {"type": "adagrad", "lr": 0.1},
            lambda params: torch.optim.Adagrad(params, lr=0.1, foreach=False),
        ),
        ({"type": "sgd", "lr": 0.05}, lambda params: torch.optim.SGD(params, lr=0.05)),
        (
            {"type": "sparse_adam", "lr": 0.01},
            lambda params: SparseAdamWithDenseW(params, lr=0.01),
        ),
    ],
    ids=["adagrad", "sgd", "sparse_adam"],
)
def test_sparse_steps_agree_with_torch_across_a_restart(
    client, server, module_database, spec, make_torch
):
    """60 steps, the table's gradients as sparse COO tensors (JSON in the first half, a
    safetensors file in the second), the server restarted half-way with steps in its log (for
    Adagrad, whose state makes logging pay): the displacement θ − θ₀ agrees with torch's to
    1e-9 relative."""
    session, params = new_session(client, spec)
    tensors = {name: torch.tensor(array, requires_grad=True) for name, array in params.items()}
    reference = make_torch(list(tensors.values()))
    rng = np.random.default_rng(1)
    for k in range(60):
        rows, values = sparse_batch(rng)
        dense_w = rng.standard_normal((DIM, 2))
        tensors["emb"].grad = torch_sparse(rows, values)
        tensors["w"].grad = torch.from_numpy(dense_w.copy())
        reference.step()
        if k == 30:
            if spec["type"] in ("adagrad", "sparse_adam"):
                assert logged_rows(module_database, session["id"]), "no sparse step was logged"
            server.restart()
        if k < 30:
            response = step(client, session, {"emb": rows_json(rows, values), "w": dense_w})
            assert response.status_code == 200, response.text
        else:
            response = step_file(
                client,
                session,
                {"rows/emb": rows, "emb": values, "w": dense_w},
                accept="application/json",
            )
            assert response.status_code == 200, response.text
    served = params_of(client, session)
    for name, tensor in tensors.items():
        expected = tensor.detach().numpy() - params[name]
        np.testing.assert_allclose(served[name] - params[name], expected, rtol=1e-9, atol=1e-15)


class SparseAdamWithDenseW:
    """torch's SparseAdam for the table; `w`'s gradient is dense, which SparseAdam refuses, so
    it goes to SparseAdam as sparse rows of every row (the core's sparse_adam takes a dense
    gradient as every row touched, docs/design.md)."""

    def __init__(self, params, lr):
        self.params = params
        self.optimizer = torch.optim.SparseAdam(params, lr=lr)

    def step(self):
        w = self.params[1]
        dense = w.grad
        rows = torch.arange(dense.shape[0])
        w.grad = torch.sparse_coo_tensor(rows[None, :], dense, dense.shape, check_invariants=True)
        self.optimizer.step()


def logged_rows(database, session_id):
    """The keys of the sparse rows in the session's step log."""
    import uuid

    from sqlalchemy import select

    from app.store.models import SessionArray

    with database.transaction(write=False) as db:
        keys = db.scalars(
            select(SessionArray.key).where(SessionArray.session_id == uuid.UUID(session_id))
        ).all()
    return [key for key in keys if key.startswith("~log/") and "#rows/" in key]


# -- what a step answers ---------------------------------------------------------------------


def test_the_answer_holds_only_the_changed_rows_unless_full_is_asked(client):
    session, params = new_session(client, {"type": "adagrad", "lr": 0.1})
    response = step(
        client,
        session,
        {
            "emb": {"rows": [5, 2, 5], "values": [[1, 1, 1], [2, 2, 2], [3, 3, 3]]},
            "w": np.ones((3, 2)),
        },
    )
    assert response.status_code == 200, response.text
    answer = response.json()["params"]
    assert answer["emb"]["rows"] == [2, 5]
    after = params_of(client, session)
    np.testing.assert_array_equal(np.asarray(answer["emb"]["values"]), after["emb"][[2, 5]])
    np.testing.assert_array_equal(np.asarray(answer["w"]), after["w"])
    untouched = [i for i in range(ROWS) if i not in (2, 5)]
    np.testing.assert_array_equal(after["emb"][untouched], params["emb"][untouched])

    full = step(
        client,
        session,
        {"emb": rows_json(np.array([1]), np.ones((1, DIM))), "w": np.ones((3, 2))},
        query={"return": "full"},
    )
    assert full.status_code == 200, full.text
    np.testing.assert_array_equal(
        np.asarray(full.json()["params"]["emb"]), params_of(client, session)["emb"]
    )

    none = step(
        client,
        session,
        {"emb": rows_json(np.array([1]), np.ones((1, DIM))), "w": np.ones((3, 2))},
        query={"return": "none"},
    )
    assert none.status_code == 200 and "params" not in none.json()


def test_a_safetensors_answer_carries_the_rows_beside_the_values(client):
    session, _ = new_session(client, {"type": "sgd", "lr": 0.5})
    response = step_file(
        client,
        session,
        {"rows/emb": np.array([3, 0, 3]), "emb": np.ones((3, DIM)), "w": np.zeros((3, 2))},
    )
    assert response.status_code == 200, response.text
    arrays, metadata = safetensors_arrays(response.content)
    assert metadata["step"] == "1"
    np.testing.assert_array_equal(arrays["rows/emb"], [0, 3])
    assert arrays["rows/emb"].dtype == np.int64
    after = params_of(client, session)
    np.testing.assert_array_equal(arrays["emb"], after["emb"][[0, 3]])
    np.testing.assert_array_equal(arrays["w"], after["w"])


def test_a_single_form_session_takes_sparse_rows_of_its_one_tensor(client):
    table = np.zeros((4, 2))
    session = create_session(
        client,
        {"params": table.tolist(), "dtype": "float64", "optimizer": {"type": "sgd", "lr": 1.0}},
    )
    response = step(client, session, {"rows": [3, 3], "values": [[1, 2], [3, 4]]})
    assert response.status_code == 200, response.text
    assert response.json()["params"] == {"rows": [3], "values": [[-4.0, -6.0]]}


def test_a_skipped_sparse_step_answers_no_rows(client):
    session, _ = new_session(client, {"type": "sgd", "lr": 1.0}, nonfinite="skip")
    gradients = {"emb": {"rows": [1], "values": [[1.0, float("nan"), 0.0]]}, "w": [[0, 0]] * 3}
    response = client.post(  # Python's json writes NaN as a literal, which the server reads
        f"/v1/sessions/{session['id']}/step",
        content=json.dumps({"gradients": gradients}).encode(),
        headers={**bearer(session["token"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["skipped"] is True
    assert response.json()["params"]["emb"] == {"rows": [], "values": []}


# -- accumulation, idempotency, history ------------------------------------------------------


def test_accumulated_sparse_posts_are_summed_by_row_and_step_sparse(client):
    """K = 3 posts (two sparse, then one dense for `w` only): the step is the mean, the table's
    mean stays sparse rows (its other rows, and Adagrad's sums there, untouched)."""
    session, params = new_session(client, {"type": "adagrad", "lr": 0.1}, accumulate=3)
    posts = [
        {
            "emb": rows_json(np.array([1, 4]), np.array([[1.0, 2, 3], [4, 5, 6]])),
            "w": np.ones((3, 2)),
        },
        {
            "emb": rows_json(np.array([4, 7]), np.array([[1.0, 1, 1], [2, 2, 2]])),
            "w": np.ones((3, 2)),
        },
        {"w": np.full((3, 2), 4.0)},
    ]
    for k, gradients in enumerate(posts):
        response = step(client, session, gradients, partial=k == 2)
        assert response.status_code == (202 if k < 2 else 200), response.text
    answer = response.json()
    assert answer["params"]["emb"]["rows"] == [1, 4, 7]

    from app.optim import Optimizer, SparseRows

    optimizer = Optimizer({"optimizer": {"type": "adagrad", "lr": 0.1}}, ["emb", "w"])
    expected = {name: array.copy() for name, array in params.items()}
    state = optimizer.init(expected)
    mean_rows = np.array([[1.0, 2, 3], [5, 6, 7], [2, 2, 2]]) / 3
    optimizer.step(
        expected,
        state,
        {"emb": SparseRows(np.array([1, 4, 7]), mean_rows), "w": np.full((3, 2), 2.0)},
    )
    served = params_of(client, session)
    for name in params:
        np.testing.assert_allclose(served[name], expected[name], rtol=1e-15)


def test_a_sparse_and_a_dense_post_make_a_dense_mean(client):
    session, params = new_session(client, {"type": "sgd", "lr": 1.0}, accumulate=2)
    first = step(
        client, session, {"emb": rows_json(np.array([2]), np.ones((1, DIM))), "w": np.zeros((3, 2))}
    )
    assert first.status_code == 202, first.text
    dense = np.full((ROWS, DIM), 0.5)
    second = step(client, session, {"emb": dense, "w": np.zeros((3, 2))})
    assert second.status_code == 200, second.text
    expected = params["emb"] - dense / 2
    expected[2] -= 0.5
    np.testing.assert_allclose(params_of(client, session)["emb"], expected, rtol=1e-15)
    assert isinstance(second.json()["params"]["emb"], list)  # a dense step answers whole


def test_an_idempotent_repeat_of_a_sparse_step_replays_its_answer(client):
    session, _ = new_session(client, {"type": "adagrad", "lr": 0.1})
    gradients = {"emb": rows_json(np.array([0, 0, 9]), np.ones((3, DIM))), "w": np.ones((3, 2))}
    headers = {"Idempotency-Key": "sparse-1"}
    first = step(client, session, gradients, headers=headers)
    again = step(client, session, gradients, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    other = {"emb": rows_json(np.array([1]), np.ones((1, DIM))), "w": np.ones((3, 2))}
    assert step(client, session, other, headers=headers).status_code == 422
    history = client.get(
        f"/v1/sessions/{session['id']}/history", headers=bearer(session["token"])
    ).json()["records"]
    assert [record["step"] for record in history if record["kind"] == "step"] == [1]


# -- bad input -------------------------------------------------------------------------------

BAD_JSON = [
    ("adam", {"emb": {"rows": [1], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3}, "emb"),
    (
        "row out of range",
        {"emb": {"rows": [ROWS], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3},
        "emb",
    ),
    ("negative row", {"emb": {"rows": [-1], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3}, "emb"),
    (
        "values of the wrong shape",
        {"emb": {"rows": [1, 2], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3},
        "emb",
    ),
    ("values too wide", {"emb": {"rows": [1], "values": [[1, 2, 3, 4]]}, "w": [[0, 0]] * 3}, "emb"),
    ("fractional rows", {"emb": {"rows": [1.5], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3}, "emb"),
    ("boolean rows", {"emb": {"rows": [True], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3}, "emb"),
    ("huge row", {"emb": {"rows": [2**63], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3}, "emb"),
    (
        "a third member",
        {"emb": {"rows": [1], "values": [[1, 2, 3]], "x": 1}, "w": [[0, 0]] * 3},
        "emb",
    ),
    (
        "rows of a 1-d tensor",
        {"emb": [[0, 0, 0]] * ROWS, "w": {"rows": [0], "values": [[1, 1]]}},
        "w",
    ),
    ("momentum", {"emb": {"rows": [1], "values": [[1, 2, 3]]}, "w": [[0, 0]] * 3}, "emb"),
]


@pytest.mark.parametrize(
    ("case", "gradients", "tensor"), BAD_JSON, ids=[case[0] for case in BAD_JSON]
)
def test_bad_sparse_rows_are_a_422_naming_the_tensor_and_change_nothing(
    client, module_database, case, gradients, tensor
):
    optimizer = {"type": "sgd", "lr": 0.1}
    if case == "adam":
        optimizer = {"type": "adam"}
    elif case == "momentum":
        optimizer = {"type": "sgd", "momentum": 0.9}
    session, params = new_session(client, optimizer)
    if case == "rows of a 1-d tensor":  # w made 1-d: a session of its own
        session = create_session(
            client,
            {
                "params": {"emb": params["emb"].tolist(), "w": [0.0, 0.0]},
                "dtype": "float64",
                "optimizer": optimizer,
            },
        )
        gradients = {"emb": gradients["emb"], "w": {"rows": [0], "values": [1.0]}}
    assert step(client, session, initial_step(session)).status_code == 200
    before = database_snapshot(module_database, session["id"])
    response = step(client, session, gradients)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json().get("tensor") == tensor, response.json()
    assert database_snapshot(module_database, session["id"]) == before


def initial_step(session):
    """A dense first step, so that the refused one meets a session with state."""
    shapes = session["shapes"]
    return {name: np.zeros(shape).tolist() for name, shape in shapes.items()}


BAD_FILES = [
    ("float rows", {"rows/emb": np.array([1.0]), "emb": np.ones((1, DIM)), "w": np.zeros((3, 2))}),
    ("rows without values", {"rows/emb": np.array([1]), "w": np.zeros((3, 2))}),
    (
        "a matrix of rows",
        {"rows/emb": np.array([[1]]), "emb": np.ones((1, DIM)), "w": np.zeros((3, 2))},
    ),
    (
        "row out of range",
        {"rows/emb": np.array([ROWS]), "emb": np.ones((1, DIM)), "w": np.zeros((3, 2))},
    ),
    (
        "values of the wrong shape",
        {"rows/emb": np.array([1, 2]), "emb": np.ones((1, DIM)), "w": np.zeros((3, 2))},
    ),
]


@pytest.mark.parametrize(("case", "arrays"), BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_sparse_rows_in_a_file_are_a_422_and_change_nothing(
    client, module_database, case, arrays
):
    session, _ = new_session(client, {"type": "adagrad"})
    before = database_snapshot(module_database, session["id"])
    response = step_file(client, session, arrays)
    assert response.status_code == 422, response.text
    assert response.json().get("tensor") == "emb", response.json()
    assert database_snapshot(module_database, session["id"]) == before


def test_sparse_rows_for_a_type_without_them_are_refused_at_each_accumulated_post(
    client, module_database
):
    """A post that a later step could not apply is refused at once, not counted."""
    session, _ = new_session(client, {"type": "adam"}, accumulate=2)
    before = database_snapshot(module_database, session["id"])
    response = step(
        client, session, {"emb": rows_json(np.array([1]), np.ones((1, DIM))), "w": np.zeros((3, 2))}
    )
    assert response.status_code == 422, response.text
    assert response.json()["tensor"] == "emb"
    assert database_snapshot(module_database, session["id"]) == before
