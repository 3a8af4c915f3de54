"""Run management end to end — PATCH, fork, export and import — over real HTTP, on SQLite and
PostgreSQL: the numbers against the optimizer core driven in-process, the stored bytes against
what the contract says is kept."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from app.optim import Optimizer
from app.tensors import tensors_from_safetensors
from tests.support import (
    CoreRun,
    bearer,
    create_session,
    database_snapshot,
    post_json,
    random_arrays,
    read_tensors,
    wire_tensors,
)

SAFETENSORS = "application/vnd.safetensors"
SHAPES = {"encoder.w": (3, 4), "encoder.b": (4,), "head": ()}


@pytest.fixture
def client(module_app):
    with module_app.client() as client:
        yield client


def path_of(session, tail=""):
    return f"/v1/sessions/{session['id']}{tail}"


def step(client, session, grads, *, loss=None, partial=False, layout="named", headers=None):
    body = {"gradients": wire_tensors(grads, layout), "partial": partial}
    if loss is not None:
        body["loss"] = loss
    response = post_json(
        client,
        path_of(session, "/step"),
        body,
        headers={**bearer(session["token"]), **(headers or {})},
    )
    assert response.status_code == 200, response.text
    return response.json()


def patch(client, session, body, **headers):
    return client.patch(
        path_of(session),
        content=json.dumps(body),
        headers={**bearer(session["token"]), "Content-Type": "application/json", **headers},
    )


def export(client, session, *, binary=False):
    headers = {**bearer(session["token"]), **({"Accept": SAFETENSORS} if binary else {})}
    response = client.get(path_of(session, "/state"), headers=headers)
    assert response.status_code == 200, response.text
    return response


def history(client, session):
    response = client.get(path_of(session, "/history"), headers=bearer(session["token"]))
    assert response.status_code == 200
    return response.json()["records"]


def stream(shapes, dtype, steps, seed):
    rng = np.random.default_rng(seed)
    return [random_arrays(rng, shapes, dtype) for _ in range(steps)]


def new_run(client, config, *, dtype="float64", seed=1):
    params = random_arrays(np.random.default_rng(seed), SHAPES, dtype)
    body = {"params": wire_tensors(params, "named"), "dtype": dtype, **config}
    created = create_session(client, body)
    return created, CoreRun(created, params)


def reconfigure(reference: CoreRun, view):
    """The reference run under a session's new config, its state kept (the core's rule)."""
    config = {name: view[name] for name in ("optimizer", "schedule", "clip_grad_norm")}
    config.update(clip_grad_value=view["clip_grad_value"], nonfinite=view["nonfinite"])
    reference.optimizer = Optimizer({**config, "groups": view["groups"]}, list(reference.params))


def assert_params_equal(client, session, reference: CoreRun, dtype="float64"):
    response = client.get(path_of(session, "/params"), headers=bearer(session["token"]))
    stored = read_tensors(response.json()["params"], dtype)
    for name, array in reference.params.items():
        np.testing.assert_array_equal(stored[name], array, err_msg=name)


# -- PATCH ------------------------------------------------------------------------------------


def test_patch_changes_hyper_parameters_mid_run_keeping_t_and_state(client):
    session, reference = new_run(client, {"optimizer": {"type": "adam", "lr": 0.01}})
    grads = stream(SHAPES, "float64", 20, seed=2)
    for g in grads[:10]:
        step(client, session, g)
        reference.step(g)

    response = patch(client, session, {"optimizer": {"lr": 0.002, "betas": [0.8, 0.99]}})

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"10"'
    view = response.json()
    assert view["step"] == 10
    assert view["optimizer"] == {**session["optimizer"], "lr": 0.002, "betas": [0.8, 0.99]}
    assert view["lr"] == 0.002
    assert client.get(path_of(session), headers=bearer(session["token"])).json() == view
    reconfigure(reference, view)
    for g in grads[10:]:
        answer = step(client, session, g)
        assert answer["lr"] == reference.step(g).lr == 0.002
    assert_params_equal(client, session, reference)  # exact: moments and step counts were kept
    change = [record for record in history(client, session) if record["kind"] == "change"]
    assert change == [
        {
            "seq": 11,
            "kind": "change",
            "step": 10,
            "at": change[0]["at"],
            "changes": {
                "optimizer.lr": {"old": 0.01, "new": 0.002},
                "optimizer.betas": {"old": [0.9, 0.999], "new": [0.8, 0.99]},
            },
        }
    ]


def test_patch_merges_replaces_and_resets_fields(client):
    session, _ = new_run(
        client,
        {
            "name": "before",
            "optimizer": {"type": "sgd", "lr": 0.1, "weight_decay": 0.5},
            "schedule": {"type": "warmup", "warmup_steps": 5},
            "clip_grad_norm": 1.0,
        },
    )
    response = patch(
        client,
        session,
        {
            "name": "after",
            "optimizer": {"weight_decay": None, "momentum": 0.9},
            "schedule": {"type": "cosine", "total_steps": 50},
            "clip_grad_norm": None,
            "groups": [{"match": ["encoder.*"], "lr": 0.01}],
        },
    )
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["name"] == "after"
    assert view["optimizer"]["weight_decay"] == 0.0  # null: back to the default
    assert (view["optimizer"]["lr"], view["optimizer"]["momentum"]) == (0.1, 0.9)
    assert view["schedule"] == {"type": "cosine", "total_steps": 50, "min_lr": 0.0}  # replaced
    assert view["clip_grad_norm"] is None
    assert view["groups"] == [{"match": ["encoder.*"], "lr": 0.01}]
    (record,) = [r for r in history(client, session) if r["kind"] == "change"]
    assert record["changes"]["name"] == {"old": "before", "new": "after"}
    assert record["changes"]["schedule.warmup_steps"] == {"old": 5, "new": None}
    as_merge_patch = client.patch(
        path_of(session),
        content=b'{"name": null}',
        headers={**bearer(session["token"]), "Content-Type": "application/merge-patch+json"},
    )
    assert as_merge_patch.status_code == 200, as_merge_patch.text
    assert as_merge_patch.json()["name"] is None


def test_patch_that_switches_momentum_on_and_off_fits_the_state(client):
    """A slot the new config keeps starts fresh (as the core starts it); one it no longer keeps
    is dropped: the stored state always holds exactly what an import of the config expects."""
    session, reference = new_run(client, {"optimizer": {"type": "sgd", "lr": 0.1}})
    grads = stream(SHAPES, "float64", 6, seed=3)
    step(client, session, grads[0])
    reference.step(grads[0])
    assert set(export(client, session).json()["state"]["head"]) == {"step"}

    view = patch(client, session, {"optimizer": {"momentum": 0.9, "dampening": 0.1}}).json()

    state = export(client, session).json()["state"]
    assert state["encoder.b"] == {"momentum_buffer": [0.0] * 4, "step": 1}
    reconfigure(reference, view)
    for g in grads[1:4]:
        step(client, session, g)
        reference.step(g)
    assert_params_equal(client, session, reference)

    patch(client, session, {"optimizer": {"momentum": 0.0}})
    assert set(export(client, session).json()["state"]["encoder.w"]) == {"step"}


def test_patch_keeps_the_plateau_state_when_its_settings_change(client):
    plateau = {"type": "reduce_on_plateau", "patience": 0, "factor": 0.5}
    session, _ = new_run(client, {"optimizer": {"type": "sgd", "lr": 0.4}, "schedule": plateau})
    zero = {name: np.zeros(shape) for name, shape in SHAPES.items()}
    for loss in (1.0, 2.0, 3.0):  # two steps without improvement: two reductions
        step(client, session, zero, loss=loss)
    assert client.get(path_of(session), headers=bearer(session["token"])).json()["lr"] == 0.1

    view = patch(client, session, {"optimizer": {"lr": 0.8}, "schedule": {"patience": 5}}).json()

    assert view["lr"] == 0.2  # the new base rate, reduced as many times
    assert export(client, session).json()["schedule_state"]["num_reductions"] == 2.0
    view = patch(client, session, {"schedule": {"type": "constant"}}).json()
    assert view["lr"] == 0.8
    assert export(client, session).json()["schedule_state"] == {}


def test_patch_refuses_an_optimizer_type_change_and_changes_nothing(
    client, module_migrated_database
):
    session, _ = new_run(client, {"optimizer": {"type": "adam"}})
    before = database_snapshot(module_migrated_database, session["id"])

    response = patch(client, session, {"optimizer": {"type": "sgd", "lr": 0.1}})

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "/problems/optimizer-type-change"
    assert problem["field"] == "optimizer.type"
    assert "fork" in problem["detail"]
    assert database_snapshot(module_migrated_database, session["id"]) == before
    assert history(client, session) == []


def test_patch_honours_if_match(client, module_migrated_database):
    session, _ = new_run(client, {"optimizer": {"type": "sgd"}})
    step(client, session, {name: np.ones(shape) for name, shape in SHAPES.items()})
    before = database_snapshot(module_migrated_database, session["id"])

    stale = patch(client, session, {"optimizer": {"lr": 0.5}}, **{"If-Match": '"0"'})
    assert stale.status_code == 412
    assert stale.json()["current_step"] == 1
    assert database_snapshot(module_migrated_database, session["id"]) == before

    current = patch(client, session, {"optimizer": {"lr": 0.5}}, **{"If-Match": '"1"'})
    assert current.status_code == 200
    assert current.json()["optimizer"]["lr"] == 0.5


def test_a_patch_that_changes_nothing_records_nothing(client, module_migrated_database):
    session, _ = new_run(client, {"optimizer": {"type": "sgd", "lr": 0.1}})
    before = database_snapshot(module_migrated_database, session["id"])
    response = patch(client, session, {"optimizer": {"lr": 0.1}})
    assert response.status_code == 200
    assert (
        database_snapshot(module_migrated_database, session["id"]) == before
    )  # version and updated_at too
    assert history(client, session) == []


def test_patch_during_concurrent_steps_splits_them_cleanly(start_server, database_url):
    """Steps from four clients on two worker processes while one PATCH changes lr: each step
    runs under the old lr or the new, never a mix, and the change lands between two steps.

    SGD with exact binary fractions: θ = −(lr₁·s + lr₂·(N − s)) exactly, where s is the step
    the change record shows, and every step record's lr says which rate it used."""
    server = start_server(database_url, workers=2)
    clients, steps, lr1, lr2 = 4, 15, 0.25, 0.5
    with server.client() as client:
        session = create_session(
            client, {"params": [0.0], "dtype": "float64", "optimizer": {"type": "sgd", "lr": lr1}}
        )
    failures: list[str] = []
    halfway, patched = threading.Event(), threading.Event()

    def post_steps() -> None:
        with server.client() as own:
            for index in range(steps):
                if index == steps // 2:
                    halfway.set()
                if index == steps - 3:
                    # Some steps stay after the change, however slowly it is answered on a
                    # busy machine (else it could land after the last step); the other
                    # clients' steps up to here still race with it.
                    patched.wait(120)
                response = post_json(
                    own,
                    path_of(session, "/step"),
                    {"gradients": [1.0]},
                    headers=bearer(session["token"]),
                )
                if response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=post_steps) for _ in range(clients)]
    for thread in threads:
        thread.start()
    halfway.wait(60)
    try:
        with server.client() as client:
            assert patch(client, session, {"optimizer": {"lr": lr2}}).status_code == 200
    finally:
        patched.set()
    for thread in threads:
        thread.join()

    with server.client() as client:
        final = client.get(path_of(session, "/params"), headers=bearer(session["token"])).json()
        records = client.get(
            path_of(session, "/history?limit=1000"), headers=bearer(session["token"])
        ).json()["records"]
    assert failures == []
    total = clients * steps
    (change,) = [record for record in records if record["kind"] == "change"]
    s = change["step"]
    assert 0 < s < total
    assert final == {"step": total, "params": [-(lr1 * s + lr2 * (total - s))]}
    rates = [(record["step"], record["lr"]) for record in records if record["kind"] == "step"]
    assert sorted(rates) == [(t, lr1 if t <= s else lr2) for t in range(1, total + 1)]


# -- fork -------------------------------------------------------------------------------------


def fork(client, session, body=None, **headers):
    content = b"" if body is None else json.dumps(body).encode()
    return client.post(
        path_of(session, "/fork"),
        content=content,
        headers={**bearer(session["token"]), "Content-Type": "application/json", **headers},
    )


def without_identity(document):
    return {key: value for key, value in document.items() if key not in ("id", "name")}


def test_fork_copies_the_run_and_then_both_go_their_own_ways(client):
    config = {
        "optimizer": {"type": "adam", "lr": 0.01, "amsgrad": True},
        "schedule": {"type": "reduce_on_plateau", "patience": 1},
    }
    session, reference = new_run(client, config)
    grads = stream(SHAPES, "float64", 10, seed=4)
    for t, g in enumerate(grads[:5]):
        step(client, session, g, loss=1.0 + t % 2)
        reference.step(g, 1.0 + t % 2)

    response = fork(client, session)

    assert response.status_code == 201, response.text
    forked = response.json()
    assert response.headers["Location"] == f"/v1/sessions/{forked['id']}"
    assert response.headers["ETag"] == '"5"'
    assert forked["id"] != session["id"] and forked["token"] != session["token"]
    assert (forked["step"], forked["last_loss"]) == (5, 1.0)
    assert without_identity(export(client, forked).json()) == without_identity(
        export(client, session).json()
    )
    assert history(client, forked) == []  # no overrides, no change
    copy = CoreRun(forked, reference.params)
    copy.state = reference.optimizer.init(copy.params)
    copy.state.step, copy.state.schedule = 5, dict(reference.state.schedule)
    for name, slots in reference.state.slots.items():
        copy.state.slots[name] = {slot: array.copy() for slot, array in slots.items()}

    for g, other in zip(grads[5:], reversed(grads[5:]), strict=True):
        step(client, session, g, loss=0.5)
        reference.step(g, 0.5)
        step(client, forked, other, loss=3.0)
        copy.step(other, 3.0)

    assert_params_equal(client, session, reference)
    assert_params_equal(client, forked, copy)
    assert client.get(path_of(forked), headers=bearer(session["token"])).status_code == 404


def test_fork_with_overrides_changes_the_copy_only_and_records_it(client):
    session, _ = new_run(client, {"name": "base", "optimizer": {"type": "adam", "lr": 0.01}})
    step(client, session, stream(SHAPES, "float64", 1, seed=5)[0])

    response = fork(client, session, {"name": "lower-lr", "optimizer": {"lr": 0.001}})

    assert response.status_code == 201, response.text
    forked = response.json()
    assert (forked["name"], forked["optimizer"]["lr"], forked["step"]) == ("lower-lr", 0.001, 1)
    assert (
        client.get(path_of(session), headers=bearer(session["token"])).json()["optimizer"]["lr"]
        == 0.01
    )
    (record,) = history(client, forked)
    assert record["step"] == 1
    assert record["changes"] == {
        "name": {"old": "base", "new": "lower-lr"},
        "optimizer.lr": {"old": 0.01, "new": 0.001},
    }


def test_fork_may_change_the_optimizer_type(client):
    session, reference = new_run(client, {"optimizer": {"type": "adam", "lr": 0.01}})
    grads = stream(SHAPES, "float64", 6, seed=6)
    for g in grads[:3]:
        step(client, session, g)
        reference.step(g)

    forked = fork(client, session, {"optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9}})

    assert forked.status_code == 201, forked.text
    forked = forked.json()
    assert forked["optimizer"] == {
        "type": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "dampening": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "maximize": False,
    }
    state = export(client, forked).json()["state"]
    assert state["head"] == {"momentum_buffer": 0.0, "step": 3}  # Adam's moments dropped
    copy = CoreRun(forked, reference.params)
    copy.state.step = 3
    for name in copy.state.slots:
        copy.state.slots[name]["step"][...] = 3
    for g in grads[3:]:
        step(client, forked, g)
        copy.step(g)
    assert_params_equal(client, forked, copy)


# -- export and import ------------------------------------------------------------------------

RUN_CONFIG = {
    "optimizer": {"type": "adam", "lr": 0.02, "amsgrad": True},
    "schedule": {
        "type": "warmup",
        "warmup_steps": 3,
        "then": {"type": "reduce_on_plateau", "patience": 1, "factor": 0.5},
    },
    "groups": [{"match": ["encoder.*"], "lr": 0.01, "weight_decay": 0.1}],
    "clip_grad_norm": 5.0,
    "name": "exported",
}


def import_export(client, response, **headers):
    content_type = response.headers["content-type"]
    return client.post(
        "/v1/sessions/import",
        content=response.content,
        headers={"Content-Type": content_type, **headers},
    )


@pytest.mark.slow_on_postgres
@pytest.mark.parametrize("binary", [False, True], ids=["json", "safetensors"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_imported_export_continues_the_run_exactly(client, binary, dtype):
    """30 steps (one partial, losses feeding the plateau), export, import; then 30 more on
    both: the same numbers, bit for bit, and the same export."""
    session, _ = new_run(client, RUN_CONFIG, dtype=dtype)
    grads = stream(SHAPES, dtype, 60, seed=7)
    losses = [float(x) for x in np.random.default_rng(8).uniform(0.5, 1.5, 60)]
    for t in range(30):
        g = {"encoder.w": grads[t]["encoder.w"]} if t == 10 else grads[t]
        step(client, session, g, loss=losses[t], partial=t == 10)
    exported = export(client, session, binary=binary)
    assert exported.headers["ETag"] == '"30"'

    response = import_export(client, exported)

    assert response.status_code == 201, response.text
    imported = response.json()
    assert response.headers["Location"] == f"/v1/sessions/{imported['id']}"
    assert response.headers["ETag"] == '"30"'
    assert imported["id"] != session["id"] and imported["token"] != session["token"]
    original = client.get(path_of(session), headers=bearer(session["token"])).json()
    fresh = ("id", "token", "created_at", "updated_at")
    assert {k: v for k, v in imported.items() if k not in fresh} == {
        k: v for k, v in original.items() if k not in fresh
    }
    for t in range(30, 60):
        ours = step(client, session, grads[t], loss=losses[t])
        theirs = step(client, imported, grads[t], loss=losses[t])
        assert ours == theirs
    assert without_identity(export(client, imported).json()) == without_identity(
        export(client, session).json()
    )


def test_the_json_export_follows_the_agreed_format(client):
    session, _ = new_run(client, RUN_CONFIG, dtype="float32")
    step(client, session, stream(SHAPES, "float32", 1, seed=9)[0], loss=0.3)
    view = client.get(path_of(session), headers=bearer(session["token"])).json()

    document = export(client, session).json()

    assert list(document) == [
        "format", "id", "name", "dtype", "layout", "tensors", "config", "step",
        "schedule_state", "last_loss", "rates", "params", "state", "globals",
    ]  # fmt: skip
    assert document["globals"] == {}  # Adam keeps no quantity over all tensors
    assert document["format"] == "optaas-state/1"
    assert (document["id"], document["name"], document["dtype"]) == (
        session["id"], "exported", "float32",
    )  # fmt: skip
    assert (document["layout"], document["tensors"]) == ("named", list(SHAPES))
    config_fields = ("optimizer", "schedule", "clip_grad_norm", "clip_grad_value", "nonfinite")
    assert document["config"] == {
        key: view[key] for key in (*config_fields, "groups", "accumulate")
    }
    assert (document["step"], document["last_loss"]) == (1, pytest.approx(0.3))
    # η_1 of the base optimizer and of the `encoder.*` group: step 2 of the 3-step warm-up
    assert document["rates"] == [pytest.approx(0.02 * 2 / 3), pytest.approx(0.01 * 2 / 3)]
    assert document["rates"][0] == view["lr"]
    assert document["schedule_state"] == {  # not fed during the warm-up: no `best` yet
        "num_bad_epochs": 0.0,
        "cooldown_counter": 0.0,
        "num_reductions": 0.0,
    }
    assert set(document["params"]) == set(SHAPES)
    assert set(document["state"]["encoder.w"]) == {
        "exp_avg",
        "exp_avg_sq",
        "max_exp_avg_sq",
        "step",
    }
    assert document["state"]["encoder.w"]["step"] == 1
    assert isinstance(document["state"]["head"]["exp_avg"], float)  # 0-d slots are numbers


def test_the_safetensors_export_follows_the_agreed_format(client):
    session, _ = new_run(client, RUN_CONFIG, dtype="float32")
    step(client, session, stream(SHAPES, "float32", 1, seed=10)[0], loss=0.25)
    as_json = export(client, session).json()

    response = export(client, session, binary=True)

    assert response.headers["content-type"] == SAFETENSORS
    assert response.headers["ETag"] == '"1"'
    arrays, metadata = tensors_from_safetensors(response.content)
    assert metadata == {
        "format": "optaas-state/1",
        "id": session["id"],
        "name": '"exported"',
        "dtype": "float32",
        "layout": "named",
        "tensors": json.dumps(list(SHAPES), separators=(",", ":")),
        "config": metadata["config"],
        "step": "1",
        "schedule_state": '{"num_bad_epochs":0.0,"cooldown_counter":0.0,"num_reductions":0.0}',
        "last_loss": "0.25",
        "rates": json.dumps(as_json["rates"], separators=(",", ":")),
    }
    assert json.loads(metadata["config"]) == as_json["config"]
    expected_keys = {f"param/{name}" for name in SHAPES} | {
        f"{slot}/{name}"
        for name in SHAPES
        for slot in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")
    }
    assert set(arrays) == expected_keys
    for name, shape in SHAPES.items():
        assert arrays[f"step/{name}"].dtype == np.int64 and arrays[f"step/{name}"].shape == ()
        assert int(arrays[f"step/{name}"]) == 1
        for slot in ("param", "exp_avg", "exp_avg_sq"):
            assert arrays[f"{slot}/{name}"].dtype == np.float32
            assert arrays[f"{slot}/{name}"].shape == shape
        np.testing.assert_array_equal(
            arrays[f"exp_avg/{name}"], np.asarray(as_json["state"][name]["exp_avg"], "float32")
        )


def test_a_large_safetensors_export_is_streamed_with_its_length(client):
    """An export bigger than a send piece (1 MiB) comes in pieces with its `Content-Length`
    known beforehand, and reads back as the JSON export's numbers."""
    params = {"w": np.random.default_rng(3).standard_normal(300_000).astype(np.float32)}
    body = {"params": wire_tensors(params, "named"), "dtype": "float32"}
    session = create_session(client, {**body, "optimizer": {"type": "adam"}})
    step(client, session, {"w": np.ones(300_000, np.float32)})

    response = export(client, session, binary=True)

    assert int(response.headers["content-length"]) == len(response.content) > 3 * (1 << 20)
    arrays, metadata = tensors_from_safetensors(response.content)
    assert metadata["step"] == "1"
    as_json = export(client, session).json()
    np.testing.assert_array_equal(arrays["param/w"], np.asarray(as_json["params"]["w"], "float32"))
    np.testing.assert_array_equal(
        arrays["exp_avg_sq/w"], np.asarray(as_json["state"]["w"]["exp_avg_sq"], "float32")
    )


def test_a_single_array_session_exports_and_imports_in_its_form(client):
    created = create_session(
        client, {"params": [[1.0, 2.0], [3.0, 4.0]], "optimizer": {"type": "rmsprop"}}
    )
    post_json(
        client,
        path_of(created, "/step"),
        {"gradients": [[1, 2], [3, 4]]},
        headers=bearer(created["token"]),
    )
    document = export(client, created).json()
    assert (document["layout"], document["tensors"]) == ("single", ["params"])
    assert np.asarray(document["params"]).shape == (2, 2)
    assert set(document["state"]) == {"params"}
    for binary in (False, True):
        response = import_export(client, export(client, created, binary=binary))
        assert response.status_code == 201, response.text
        assert response.json()["layout"] == "single"
        imported = response.json()
        params = client.get(path_of(imported, "/params"), headers=bearer(imported["token"]))
        assert params.json()["params"] == document["params"]
