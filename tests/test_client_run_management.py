"""The client on the contract's run-management verbs and binary form, against the app in this
process (`tests.in_process`, through the client's `transport`):
safetensors steps and reads, export (`GET …/state`) and import, torch interop through the
service, PATCH, fork, `wait_for_step` and `accumulate`, and `RemoteOptimizer`'s state dict and
LR-scheduler support (which ride on export, import and PATCH).
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from optaas_client import (
    Client,
    InvalidContent,
    Pending,
    RemoteOptimizer,
    StepWaitTimeout,
    export_from_torch,
    torch_optimizer,
    torch_optimizers,
    torch_state_dict,
)
from optaas_client import SparseRows as ClientRows

from app.optim import SparseRows
from app.store.database import Database
from app.tensors import SAFETENSORS_MEDIA_TYPE
from tests.conftest import run_lengths
from tests.optim.reference import assert_moved_alike
from tests.support import CoreRun, DroppingTransport, database_snapshot, random_arrays
from tests.test_client_interop import (
    MIXED_SHAPES,
    MORE_TORCH_CASES,
    MUON_AND_ADAMW,
    SHAPES,
    STEPS,
    TORCH_CASES,
    assert_same_params,
    more_problem,
    numpy_of,
    problem,
    torch_parameters,
    torch_run_exported,
    torch_step,
    torch_steps,
)

FAST_RETRIES = {"backoff": 0.001, "max_delay": 0.01}
HALVES = run_lengths(8, STEPS)
"""The steps of each half of a round trip between the service and torch: 8 in the fast loop,
50 with the slow tests."""


@pytest.fixture
def client(module_app):
    with Client(
        module_app.url, transport=module_app.transport(), trust_env=False, **FAST_RETRIES
    ) as client:
        yield client


def recording_client(server, **options):
    transport = DroppingTransport(inner=server.transport())
    return Client(server.url, transport=transport, **FAST_RETRIES, **options), transport


def media(content_type):
    return (content_type or "").split(";")[0]


def assert_same_arrays(ours, theirs):
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        for name in theirs:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    else:
        np.testing.assert_array_equal(ours, theirs)


# -- the binary form ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["named", "single"])
def test_sessions_above_the_threshold_step_and_read_in_safetensors(module_app, layout):
    rng = np.random.default_rng(10)
    shapes = {"w": (40, 30), "b": (30,)} if layout == "named" else {"params": (40, 30)}
    theta0 = random_arrays(rng, shapes, "float32")
    client, transport = recording_client(module_app, binary_threshold=1000)
    with client:
        session = client.create_session(
            theta0 if layout == "named" else theta0["params"],
            optimizer={"type": "adam", "lr": 0.01},
        )
        reference = CoreRun(session.info(), theta0)
        for k in range(3):
            grads = random_arrays(rng, shapes, "float32")
            params = session.step(grads if layout == "named" else grads["params"], loss=0.5 + k)
            reference.step(grads, loss=0.5 + k)
            assert_same_arrays(
                params, reference.params if layout == "named" else reference.params["params"]
            )
        assert session.last_step.step == 3 and session.last_step.lr == 0.01  # __metadata__
        read = session.params()
        history = session.history()

    assert client.binary_supported
    step_exchanges = [
        exchange
        for (method, path, _), exchange in zip(
            transport.requests, transport.media_types, strict=True
        )
        if path.endswith("/step")
    ]
    assert [(media(sent), media(got)) for sent, got in step_exchanges] == [
        (SAFETENSORS_MEDIA_TYPE, SAFETENSORS_MEDIA_TYPE)
    ] * 3
    assert media(transport.media_types[-2][1]) == SAFETENSORS_MEDIA_TYPE  # GET …/params
    assert_same_arrays(read, reference.params if layout == "named" else reference.params["params"])
    assert [record["loss"] for record in history] == [0.5, 1.5, 2.5]  # loss in __metadata__


def test_a_binary_step_may_ask_for_a_json_answer_without_params(module_app):
    client, transport = recording_client(module_app, binary_threshold=1)
    with client:
        session = client.create_session(np.zeros(4), optimizer={"type": "sgd", "lr": 0.5})
        assert session.step(np.ones(4), return_params=False) is None
        assert session.last_step.step == 1 and session.last_step.update_norm == 1.0
        np.testing.assert_array_equal(session.params(), np.full(4, -0.5))
    sent, got = transport.media_types[1]
    assert (media(sent), media(got)) == (SAFETENSORS_MEDIA_TYPE, "application/json")


# -- export and import -------------------------------------------------------------------------


def stepped_session(client, steps=5, seed=11, **settings):
    rng = np.random.default_rng(seed)
    theta0 = random_arrays(rng, SHAPES, "float64")
    session = client.create_session(theta0, optimizer={"type": "adam", "lr": 0.01}, **settings)
    grads = [random_arrays(rng, SHAPES, "float64") for _ in range(steps)]
    for g in grads:
        session.step(g, loss=1.0)
    return session, rng


def test_an_export_holds_config_step_params_and_every_slot(client):
    session, _ = stepped_session(client, name="exported")
    export = session.export()
    assert export["format"] == "optaas-state/1" and export["id"] == session.id
    assert (export["name"], export["dtype"], export["layout"]) == ("exported", "float64", "named")
    assert export["tensors"] == ["w", "b"] and export["step"] == 5 and export["last_loss"] == 1.0
    assert export["config"]["optimizer"] == session.info()["optimizer"]
    assert_same_arrays(export["params"], session.params())
    for name, shape in SHAPES.items():
        slots = export["state"][name]
        assert set(slots) == {"exp_avg", "exp_avg_sq", "step"} and slots["step"] == 5
        assert slots["exp_avg"].shape == shape and slots["exp_avg"].dtype == np.float64

    binary = session.export(binary=True)
    assert {k: v for k, v in binary.items() if k not in ("params", "state")} == {
        k: v for k, v in export.items() if k not in ("params", "state")
    }
    assert_same_arrays(binary["params"], export["params"])
    for name in SHAPES:
        assert_same_arrays(binary["state"][name]["exp_avg_sq"], export["state"][name]["exp_avg_sq"])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "safetensors"])
def test_an_imported_session_continues_exactly_as_its_source(client, binary):
    source, rng = stepped_session(client)
    copy = client.import_session(source.export(binary=binary), binary=binary)
    assert copy.id != source.id and copy.token != source.token
    assert copy.info()["step"] == 5 and copy.shapes == source.shapes
    for _ in range(5):
        grads = random_arrays(rng, SHAPES, "float64")
        assert_same_arrays(copy.step(grads), source.step(grads))


def test_a_corrupted_export_is_refused_and_creates_nothing(client, module_migrated_database_url):
    source, _ = stepped_session(client)
    export = source.export()
    export["state"]["w"]["exp_avg"] = np.zeros((1, 1))
    database = Database(module_migrated_database_url)
    try:
        before = database_snapshot(database, source.id)
        with pytest.raises(InvalidContent):
            client.import_session(export)
        assert database_snapshot(database, source.id) == before  # sessions counted too
    finally:
        database.dispose()


def test_an_export_states_each_groups_rate_and_an_import_ignores_it(client):
    """`rates`: η_t of the base optimizer, then of each group, at the exported step — what the
    torch converters read, since the client cannot evaluate schedules."""
    session = client.create_session(
        {"w": np.zeros(2), "b": np.zeros(1)},
        optimizer={"type": "sgd", "lr": 0.8},
        schedule={"type": "cosine", "total_steps": 10, "min_lr": 0.1},
        groups=[{"match": ["b"], "lr": 0.4}],
    )
    for _ in range(3):
        session.step({"w": np.ones(2), "b": np.ones(1)})
    export = session.export()
    cosine = (1 + np.cos(np.pi * 3 / 10)) / 2
    expected = [0.1 + (lr - 0.1) * cosine for lr in (0.8, 0.4)]  # not proportional to lr
    np.testing.assert_allclose(export["rates"], expected, rtol=1e-12)
    assert export["rates"][0] == session.info()["lr"]
    assert session.export(binary=True)["rates"] == export["rates"]

    groups = torch_state_dict(export)["param_groups"]
    assert [(group["param_names"], group["lr"], group["initial_lr"]) for group in groups] == [
        (["w"], export["rates"][0], 0.8),
        (["b"], export["rates"][1], 0.4),
    ]

    export["rates"] = [123.0, 456.0]  # derived, so an import recomputes it
    assert client.import_session(export).export()["rates"] == session.export()["rates"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "safetensors"])
def test_a_tensor_imported_as_step_0_alone_starts_fresh(client, binary):
    session, _ = stepped_session(client, steps=2)
    export = session.export()
    export["state"]["b"] = {"step": 0}  # as torch holds no state for a tensor never stepped
    copy = client.import_session(export, binary=binary)
    slots = copy.export()["state"]["b"]
    assert set(slots) == {"exp_avg", "exp_avg_sq", "step"} and slots["step"] == 0
    np.testing.assert_array_equal(slots["exp_avg_sq"], np.zeros(SHAPES["b"]))

    export["state"]["b"] = {"step": 1}  # had an update, so its slots are missing
    with pytest.raises(InvalidContent, match="lacks 'exp_avg'"):
        client.import_session(export, binary=binary)


# -- torch interop through the service ---------------------------------------------------------


@pytest.mark.parametrize("steps", HALVES)
@pytest.mark.parametrize("case", TORCH_CASES)
def test_half_on_the_service_then_half_in_torch_equal_all_on_the_service(client, case, steps):
    spec, _, _ = TORCH_CASES[case]
    theta0, grads = problem(12, 2 * steps)
    session = client.create_session(theta0, optimizer=spec)
    for g in grads[:steps]:
        session.step(g)
    export = session.export()
    for g in grads[steps:]:
        on_the_service = session.step(g)

    parameters = torch_parameters({name: np.zeros(shape) for name, shape in SHAPES.items()})
    optimizer = torch_optimizer(export, parameters)
    for g in grads[steps:]:
        torch_step(optimizer, parameters, g)
    assert_same_params(parameters, on_the_service)


@pytest.mark.parametrize("steps", HALVES)
@pytest.mark.parametrize("case", TORCH_CASES)
def test_half_in_torch_then_half_on_the_service_equal_all_in_torch(client, case, steps):
    optimizer, parameters, grads, export = torch_run_exported(case, 13, steps)
    session = client.import_session(export)
    for g in grads[steps:]:
        torch_step(optimizer, parameters, g)
        on_the_service = session.step(g)
    assert session.step_count == 2 * steps
    assert_same_params(parameters, on_the_service)


def more_dense_problem(case, seed, steps):
    """θ₀ and `steps` dense gradients for a case, and the same gradients as torch takes them:
    SparseAdam's as every row of a sparse COO gradient (the service's reading of a dense one)."""
    _, _, _, shapes, sparse = MORE_TORCH_CASES[case]
    rng = np.random.default_rng(seed)
    theta0 = random_arrays(rng, shapes, "float64")
    grads = [random_arrays(rng, shapes, "float64") for _ in range(steps)]
    if not sparse:
        return theta0, grads, grads
    as_rows = [
        {name: SparseRows(np.arange(len(g)), g) for name, g in step.items()} for step in grads
    ]
    return theta0, grads, as_rows


@pytest.mark.parametrize("steps", HALVES)
@pytest.mark.parametrize("case", MORE_TORCH_CASES)
def test_the_rest_of_torch_optim_goes_on_in_torch_from_a_service_export(client, case, steps):
    spec, *_ = MORE_TORCH_CASES[case]
    theta0, grads, torch_grads = more_dense_problem(case, 14, 2 * steps)
    session = client.create_session(theta0, optimizer=spec)
    for g in grads[:steps]:
        session.step(g)
    export = session.export()
    for g in grads[steps:]:
        on_the_service = session.step(g)

    parameters = torch_parameters({name: np.zeros_like(array) for name, array in theta0.items()})
    optimizer = torch_optimizer(export, parameters)
    torch_steps([optimizer], parameters, torch_grads[steps:])
    assert_moved_alike(on_the_service, numpy_of(parameters), theta0, 1e-9)


@pytest.mark.parametrize("steps", HALVES)
@pytest.mark.parametrize("case", MORE_TORCH_CASES)
def test_the_rest_of_torch_optim_goes_on_on_the_service_from_torch(client, case, steps):
    _, torch_class, settings, *_ = MORE_TORCH_CASES[case]
    theta0, grads, torch_grads = more_dense_problem(case, 15, 2 * steps)
    parameters = torch_parameters(theta0)
    optimizer = torch_class(list(parameters.values()), **settings)
    torch_steps([optimizer], parameters, torch_grads[:steps])
    export = export_from_torch(optimizer, parameters, step=steps if case == "muon" else None)
    session = client.import_session(export)
    torch_steps([optimizer], parameters, torch_grads[steps:])
    for g in grads[steps:]:
        on_the_service = session.step(g)
    assert session.step_count == 2 * steps
    assert_moved_alike(on_the_service, numpy_of(parameters), theta0, 1e-9)


@pytest.mark.parametrize("steps", HALVES)
def test_sparse_adam_on_embedding_rows_goes_on_in_torch_with_sparse_coo_gradients(client, steps):
    """Sparse row gradients (repeats, empty steps) posted as the client's `SparseRows`; the
    export continues in torch's SparseAdam fed the same rows as sparse COO tensors."""
    spec, *_ = MORE_TORCH_CASES["sparse_adam"]
    theta0, grads = more_problem("sparse_adam", 17, 2 * steps)
    session = client.create_session(theta0, optimizer=spec)

    def posted(step):
        return {name: ClientRows(g.rows.copy(), g.values.copy()) for name, g in step.items()}

    for g in grads[:steps]:
        session.step(posted(g), return_params=False)
    export = session.export()
    for g in grads[steps:]:
        session.step(posted(g), return_params=False)

    parameters = torch_parameters({name: np.zeros_like(array) for name, array in theta0.items()})
    optimizer = torch_optimizer(export, parameters)
    torch_steps([optimizer], parameters, grads[steps:])
    assert_moved_alike(session.params(), numpy_of(parameters), theta0, 1e-9)


@pytest.mark.parametrize("steps", HALVES)
def test_muon_beside_adamw_round_trips_between_the_service_and_a_pair_of_torch_optimizers(
    client, steps
):
    rng = np.random.default_rng(16)
    theta0 = random_arrays(rng, MIXED_SHAPES, "float64")
    grads = [random_arrays(rng, MIXED_SHAPES, "float64") for _ in range(3 * steps)]
    session = client.create_session(
        theta0, optimizer=MUON_AND_ADAMW["optimizer"], groups=MUON_AND_ADAMW["groups"]
    )
    for g in grads[:steps]:
        session.step(g)
    parameters = torch_parameters({name: np.zeros_like(array) for name, array in theta0.items()})
    optimizers = torch_optimizers(session.export(), parameters)
    assert list(optimizers) == ["adamw", "muon"]
    torch_steps(optimizers.values(), parameters, grads[steps : 2 * steps])

    back = client.import_session(export_from_torch(list(optimizers.values()), parameters))
    for g in grads[steps:]:
        on_the_service = session.step(g)
    for g in grads[2 * steps :]:
        on_the_service_again = back.step(g)
    assert back.step_count == session.step_count == 3 * steps
    assert_moved_alike(on_the_service_again, on_the_service, theta0, 1e-9)


# -- PATCH and fork ----------------------------------------------------------------------------


def test_patch_changes_the_rate_mid_run_and_keeps_t(client):
    session = client.create_session(np.zeros(2), optimizer={"type": "sgd", "lr": 0.5})
    session.step(np.ones(2))
    view = session.patch(optimizer={"lr": 0.25})
    assert view["optimizer"]["lr"] == 0.25 and view["step"] == 1
    np.testing.assert_array_equal(session.step(np.ones(2)), [-0.75, -0.75])
    change = [record for record in session.history() if record["kind"] == "change"]
    assert change[0]["changes"] == {"optimizer.lr": {"old": 0.5, "new": 0.25}}
    with pytest.raises(InvalidContent):
        session.patch(optimizer={"type": "adam"})
    assert session.info()["optimizer"]["type"] == "sgd"


def test_a_fork_starts_where_its_source_is_and_goes_its_own_way(client):
    source = client.create_session(np.zeros(2), optimizer={"type": "sgd", "lr": 0.5})
    source.step(np.ones(2))
    fork = source.fork(optimizer={"lr": 0.25})
    assert fork.id != source.id and fork.token != source.token
    assert fork.info()["step"] == 1 and fork.info()["optimizer"]["lr"] == 0.25
    np.testing.assert_array_equal(fork.params(), [-0.5, -0.5])
    np.testing.assert_array_equal(fork.step(np.ones(2)), [-0.75, -0.75])
    np.testing.assert_array_equal(source.step(np.ones(2)), [-1.0, -1.0])
    plain = source.fork()
    assert plain.info()["optimizer"]["lr"] == 0.5 and plain.info()["step"] == 2


# -- waiting and accumulation ------------------------------------------------------------------


def test_params_waits_for_a_step(client):
    session = client.create_session(np.zeros(2), optimizer={"type": "sgd", "lr": 0.5})
    poster = threading.Timer(0.5, lambda: session.step(np.ones(2)))
    poster.start()
    started = time.monotonic()
    params = session.params(wait_for_step=1, timeout=30)
    poster.join()
    assert time.monotonic() - started >= 0.4
    np.testing.assert_array_equal(params, [-0.5, -0.5])
    assert session.step_count == 1
    with pytest.raises(StepWaitTimeout) as timed_out:
        session.params(wait_for_step=5, timeout=0.3)
    assert timed_out.value.status == 408


def test_accumulated_gradients_answer_pending_then_the_averaged_step(client):
    session = client.create_session(np.zeros(2), optimizer={"type": "sgd", "lr": 0.5}, accumulate=2)
    pending = session.step([1.0, 2.0])
    assert isinstance(pending, Pending)
    assert (pending.step, pending.received, pending.missing) == (0, 1, 1)
    params = session.step([3.0, 4.0])
    np.testing.assert_array_equal(params, [-1.0, -1.5])  # θ − 0.5 · mean of the two
    np.testing.assert_array_equal(pending.wait(timeout=5), params)

    answers = []
    workers = [
        threading.Thread(target=lambda g=g: answers.append(session.step(g, wait=True)))
        for g in ([1.0, 1.0], [3.0, 3.0])
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(answers) == 2
    for answer in answers:  # both workers get the parameters of the step they made together
        np.testing.assert_array_equal(answer, [-2.0, -2.5])

    with pytest.raises(StepWaitTimeout):
        session.step([1.0, 1.0], wait=True, wait_timeout=0.3)  # the second worker never comes


def test_remote_optimizers_of_two_workers_share_one_accumulated_step(client):
    models = [torch.nn.Linear(3, 1).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    first = RemoteOptimizer(
        models[0].named_parameters(),
        client=client,
        optimizer={"type": "sgd", "lr": 0.1},
        accumulate=2,
        wait_timeout=30,
    )
    second = RemoteOptimizer(models[1].named_parameters(), session=first.session, wait_timeout=30)
    inputs = torch.randn(2, 8, 3, dtype=torch.float64)

    def work(model, optimizer, batch):
        for _ in range(3):
            optimizer.zero_grad()
            model(batch).pow(2).mean().backward()
            optimizer.step()

    workers = [
        threading.Thread(target=work, args=(models[i], optimizer, inputs[i]))
        for i, optimizer in enumerate((first, second))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert first.session.info()["step"] == 3
    for ours, theirs in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(ours, theirs)


# -- RemoteOptimizer: state dicts and torch schedulers -----------------------------------------


def regression(seed=14):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    return inputs, inputs @ torch.randn(4, 1, generator=generator, dtype=torch.float64)


def fit(model, optimizer, steps, data, scheduler=None):
    inputs, targets = data
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.slow_on_postgres
def test_a_remote_optimizer_checkpoint_resumes_exactly(client):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).double()
    optimizer = RemoteOptimizer(model, client=client, optimizer={"type": "adam", "lr": 0.05})
    data = regression()
    fit(model, optimizer, 10, data)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    fit(model, optimizer, 10, data)

    resumed = torch.nn.Linear(4, 1).double()
    resumed.load_state_dict(checkpoint["model"])
    again = RemoteOptimizer(resumed, client=client, optimizer="sgd")
    again.load_state_dict(checkpoint["optimizer"])
    assert again.session.id != optimizer.session.id and again.session.step_count == 10
    assert again.session.info()["optimizer"]["type"] == "adam"
    fit(resumed, again, 10, data)
    for ours, theirs in zip(resumed.parameters(), model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.slow_on_postgres
def test_a_torch_lr_scheduler_drives_the_session_rate(client):
    torch.manual_seed(1)
    remote_model = torch.nn.Linear(4, 1).double()
    local_model = torch.nn.Linear(4, 1).double()
    local_model.load_state_dict(remote_model.state_dict())
    remote = RemoteOptimizer(remote_model, client=client, optimizer={"type": "adam", "lr": 0.1})
    local = torch.optim.Adam(local_model.parameters(), lr=0.1)
    data = regression(15)
    fit(remote_model, remote, 30, data, torch.optim.lr_scheduler.StepLR(remote, 10, gamma=0.5))
    fit(local_model, local, 30, data, torch.optim.lr_scheduler.StepLR(local, 10, gamma=0.5))
    for ours, theirs in zip(remote_model.parameters(), local_model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=0)
    assert remote.session.info()["optimizer"]["lr"] == 0.025
