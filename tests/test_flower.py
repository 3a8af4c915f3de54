"""optaas as Flower's server optimizer (`optaas_client.flower`), the client talking to the app in
this process (tests/in_process.py) on SQLite and PostgreSQL.

Several clients train locally (a few gradient steps on a quadratic of their own, so each
round's models depend on the global model they start from) and answer with Flower's `FitRes`;
the strategy aggregates them round after round. Flower's own strategies, fed the same way,
are the reference: their rules written as optaas specs (`fedavgm`, `fedadagrad`, `fedadam`)
give the same global model, displacement θ − θ₀ within 1e-10 in float64 (the sums run in
other orders). Flower's FedYogi is not expressible (no bias correction, moments from 0, where
optax's Yogi corrects both and starts them at 1e-6): `yogi` is held to optax.yogi instead,
and the gap to FedYogi is shown to be real.
"""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

flwr = pytest.importorskip("flwr", reason="the client's `flower` extra (flwr) is not installed")

from flwr.common import (  # noqa: E402 -- after the skip
    Code,
    DisconnectRes,
    EvaluateRes,
    FitIns,
    FitRes,
    GetPropertiesRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import Server, SimpleClientManager  # noqa: E402
from flwr.server.client_proxy import ClientProxy  # noqa: E402
from flwr.server.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi  # noqa: E402
from optaas_client import Client, PreconditionFailed  # noqa: E402
from optaas_client.flower import (  # noqa: E402
    FedOptaas,
    fedadagrad,
    fedadam,
    fedavgm,
    open_session,
)

from tests.optim.reference import assert_moved_alike  # noqa: E402

ROUNDS = 6
NAMES = ["weight", "bias"]  # not in alphabetical order: the session must keep Flower's order
SHAPES = [(3, 4), (4,)]
EXAMPLES = [50, 120, 30]  # num_examples per client: FedAvg's weights
RTOL = 1e-10

# Flower's strategy and its rule in optaas, with settings away from the defaults.
RULES = {
    "FedAvg": (
        lambda initial: FedAvg(initial_parameters=initial),
        {"optimizer": {"type": "sgd", "lr": 1.0}},  # θ_t − 1·(θ_t − x̄_t) = x̄_t
    ),
    "FedAvgM": (
        lambda initial: FedAvgM(
            initial_parameters=initial, server_learning_rate=0.7, server_momentum=0.9
        ),
        fedavgm(server_learning_rate=0.7, server_momentum=0.9),
    ),
    "FedAdagrad": (
        lambda initial: FedAdagrad(initial_parameters=initial, eta=0.3, tau=1e-2),
        fedadagrad(eta=0.3, tau=1e-2),
    ),
    "FedAdam": (
        lambda initial: FedAdam(
            initial_parameters=initial, eta=0.05, beta_1=0.8, beta_2=0.95, tau=1e-3
        ),
        fedadam(ROUNDS, eta=0.05, beta_1=0.8, beta_2=0.95, tau=1e-3),
    ),
}


def client_of(app):
    return Client(app.url, transport=app.transport(), trust_env=False, backoff=0.001)


@pytest.fixture
def client(module_app):
    """A client of the app in this process (tests/in_process.py), on SQLite and PostgreSQL."""
    with client_of(module_app) as client:
        yield client


class QuadraticClient(ClientProxy):
    """A client whose data is a quadratic ½‖A(x − c)‖²: `fit` takes three gradient steps from
    the global model and answers the model it reached, its example count and its loss."""

    def __init__(self, cid: str, seed: int, num_examples: int) -> None:
        super().__init__(cid)
        rng = np.random.default_rng(seed)
        self.num_examples = num_examples
        self.scale = [rng.uniform(0.5, 2.0, shape) for shape in SHAPES]
        self.centre = [rng.normal(0.0, 1.0, shape) for shape in SHAPES]

    def loss(self, model):
        return sum(
            0.5 * float(np.sum((a * (x - c)) ** 2))
            for a, x, c in zip(self.scale, model, self.centre, strict=True)
        )

    def fit(self, ins, timeout, group_id):
        model = parameters_to_ndarrays(ins.parameters)
        for _ in range(3):
            model = [
                x - 0.1 * a * a * (x - c)
                for a, x, c in zip(self.scale, model, self.centre, strict=True)
            ]
        return FitRes(
            status=Status(code=Code.OK, message=""),
            parameters=ndarrays_to_parameters(model),
            num_examples=self.num_examples,
            metrics={"loss": self.loss(model)},
        )

    def evaluate(self, ins, timeout, group_id):
        model = parameters_to_ndarrays(ins.parameters)
        return EvaluateRes(
            status=Status(code=Code.OK, message=""),
            loss=self.loss(model),
            num_examples=self.num_examples,
            metrics={},
        )

    def get_properties(self, ins, timeout, group_id):
        return GetPropertiesRes(status=Status(code=Code.OK, message=""), properties={})

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError("the strategy holds the initial model")

    def reconnect(self, ins, timeout, group_id):
        return DisconnectRes(reason="")


CLIENTS = [QuadraticClient(str(k), seed=k, num_examples=n) for k, n in enumerate(EXAMPLES)]


def initial_model():
    rng = np.random.default_rng(2026)
    return [rng.normal(0.0, 1.0, shape) for shape in SHAPES]


def run_rounds(strategy, model, rounds, first_round=1):
    """`rounds` rounds of Flower's fit loop by hand, the clients in a fixed order: θ after each."""
    trajectory = []
    for server_round in range(first_round, first_round + rounds):
        ins = FitIns(ndarrays_to_parameters(model), {})
        results = [(proxy, proxy.fit(ins, None, server_round)) for proxy in CLIENTS]
        parameters, _ = strategy.aggregate_fit(server_round, results, [])
        model = parameters_to_ndarrays(parameters)
        trajectory.append(model)
    return trajectory


def by_name(model):
    return dict(zip(NAMES, model, strict=True))


def assert_same_trajectory(ours, theirs, start):
    assert len(ours) == len(theirs)
    for round_number, (mine, reference) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert [x.dtype for x in mine] == [np.dtype(np.float64)] * len(NAMES), round_number
        assert_moved_alike(by_name(mine), by_name(reference), by_name(start), RTOL)


# -- Flower's rules, in optaas -------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(RULES))
def test_flowers_server_rules_in_optaas_give_flowers_global_model(client, rule):
    flower_strategy, spec = RULES[rule]
    start = initial_model()
    theirs = run_rounds(flower_strategy(ndarrays_to_parameters(start)), start, ROUNDS)

    session = open_session(client, start, names=NAMES, name=f"flower {rule}", **spec)
    strategy = FedOptaas(session)
    initial = parameters_to_ndarrays(strategy.initialize_parameters(SimpleClientManager()))
    assert all(np.array_equal(x, y) for x, y in zip(initial, start, strict=True))
    ours = run_rounds(strategy, initial, ROUNDS)

    assert_same_trajectory(ours, theirs, start)
    assert session.info()["step"] == ROUNDS
    assert list(session.shapes) == NAMES


def test_fedadam_is_not_adam_with_flowers_settings(client):
    """Why `fedadam` needs `custom` and a schedule: `adam` with β1, β2, eps = τ and lr = η
    (its bias correction one round behind Flower's, eps added to √v̂) moves elsewhere."""
    start = initial_model()
    theirs = run_rounds(FedAdam(initial_parameters=ndarrays_to_parameters(start)), start, 3)
    adam = {"type": "adam", "lr": 0.1, "betas": [0.9, 0.99], "eps": 1e-9}
    session = open_session(client, start, names=NAMES, optimizer=adam)
    ours = run_rounds(FedOptaas(session), start, 3)
    moved_ours, moved_theirs = (model[0] - start[0] for model in (ours[-1], theirs[-1]))
    assert np.max(np.abs(moved_ours - moved_theirs)) > 0.01 * np.max(np.abs(moved_theirs))


def test_the_fedadam_schedule_is_flowers_rate(client):
    spec = fedadam(5, eta=0.2, beta_1=0.5, beta_2=0.9)
    rates = client.preview_schedule(spec["schedule"], steps=7, lr=0.2)
    rounds = np.arange(1, 6, dtype=np.float64)  # Flower's server_round = t + 1
    flowers = 0.2 * np.sqrt(1 - 0.9 ** (rounds + 1)) / (1 - 0.5 ** (rounds + 1))
    np.testing.assert_allclose(rates[:5], flowers, rtol=1e-15)
    assert rates[5] == rates[6] == rates[4]  # the last value holds after the rounds given


@pytest.mark.slow_on_postgres
def test_yogi_is_optaxs_and_flowers_fedyogi_is_not_expressible(client):
    """optaas's `yogi` through the strategy is optax.yogi on the pseudo-gradients g_t (1e-7,
    the contract's optax tolerance). Flower's FedYogi with the same settings moves elsewhere:
    it starts m and v at 0 and corrects neither, where optax starts them at 1e-6 and divides
    by 1 − β^t, and no optaas type has FedYogi's σ-update without them."""
    optax_reference = pytest.importorskip(
        "tests.optim.optax_reference", reason="the `reference` extra (jax, optax) is missing"
    )
    if '"yogi"' not in client.request("GET", "/openapi.json").text:
        pytest.skip("this server does not take `yogi` on the wire yet (issue 16)")
    settings = {"lr": 0.05, "b1": 0.9, "b2": 0.99, "eps": 1e-3}
    start = initial_model()
    session = open_session(client, start, names=NAMES, optimizer={"type": "yogi", **settings})
    strategy = FedOptaas(session)
    pseudo_gradients, model = [], start
    for server_round in range(1, ROUNDS + 1):
        before = model
        (model,) = run_rounds(strategy, model, 1, first_round=server_round)
        mean = weighted_mean([proxy.fit(FitIns(ndarrays_to_parameters(before), {}), None, 0)
                              for proxy in CLIENTS])  # fmt: skip
        pseudo_gradients.append(by_name([x - y for x, y in zip(before, mean, strict=True)]))
    optax_model = optax_reference.run_optax("yogi", settings, by_name(start), pseudo_gradients)
    assert_moved_alike(by_name(model), optax_model, by_name(start), 1e-7)

    fedyogi = FedYogi(
        initial_parameters=ndarrays_to_parameters(start), eta=0.05, beta_1=0.9, beta_2=0.99,
        tau=1e-3,
    )  # fmt: skip
    (*_, flowers) = run_rounds(fedyogi, start, ROUNDS)
    moved_ours, moved_flowers = (m[0] - start[0] for m in (model, flowers))
    assert np.max(np.abs(moved_ours - moved_flowers)) > 0.05 * np.max(np.abs(moved_flowers))


def weighted_mean(results):
    """FedAvg's x̄ = Σ n_k·x_k / Σ n_k, layer by layer."""
    models = [parameters_to_ndarrays(res.parameters) for res in results]
    weights = [res.num_examples for res in results]
    layers = zip(*models, strict=True)
    return [np.average(np.stack(layer), axis=0, weights=weights) for layer in layers]


# -- durable state: resuming, exactly once ---------------------------------------------------


@pytest.mark.slow_on_postgres
def test_a_restarted_flower_server_resumes_the_session(start_app, migrated_database_url, tmp_path):
    """Three rounds, then the Flower server goes (and the optaas server restarts too); a new
    strategy from the same session file continues, and six rounds in two runs are six rounds
    of Flower's FedAdam in one."""
    start, session_file = initial_model(), tmp_path / "session.json"
    spec = fedadam(ROUNDS)
    theirs = run_rounds(FedAdam(initial_parameters=ndarrays_to_parameters(start)), start, ROUNDS)

    app = start_app(migrated_database_url)
    with client_of(app) as client:
        session = open_session(client, start, names=NAMES, session_file=session_file, **spec)
        first = FedOptaas(session)
        model = parameters_to_ndarrays(first.initialize_parameters(SimpleClientManager()))
        ours = run_rounds(first, model, 3)
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600  # it holds the token
    record = json.loads(session_file.read_text())
    assert record["id"] == first.session.id

    app.restart()  # nothing of the session left in the server's memory either
    with client_of(app) as again:
        resumed = open_session(again, start, names=NAMES, session_file=session_file, **spec)
        assert resumed.id == first.session.id
        second = FedOptaas(resumed)
        model = parameters_to_ndarrays(second.initialize_parameters(SimpleClientManager()))
        assert all(np.array_equal(x, y) for x, y in zip(model, ours[-1], strict=True))
        # Flower numbers a new run's rounds from 1 again; the session's t carries on.
        ours += run_rounds(second, model, 3)
        history = resumed.history()

    assert_same_trajectory(ours, theirs, start)
    steps = [record for record in history if record["kind"] == "step"]
    assert [record["step"] for record in steps] == list(range(1, ROUNDS + 1))
    assert all(record["loss"] > 0 for record in steps)  # the clients' weighted loss


def test_a_stale_round_is_refused_and_changes_nothing(client):
    """Two strategies on one session: the second's round was trained from θ_0, but the session
    is at t = 1 — its update is refused (If-Match), not applied."""
    start = initial_model()
    session = open_session(client, start, names=NAMES, **fedadagrad())
    early, late = FedOptaas(session), FedOptaas(client.session(session.id, session.token))
    (after_one,) = run_rounds(early, start, 1)
    with pytest.raises(PreconditionFailed) as refused:
        run_rounds(late, start, 1)
    assert refused.value.current_step == 1
    now = session.params()
    assert session.step_count == 1
    assert all(np.array_equal(now[name], x) for name, x in zip(NAMES, after_one, strict=True))


def test_a_session_of_one_array_is_a_model_of_one_layer(client):
    """The contract's single form (one array, the tensor `params`) is a one-layer model."""
    start = initial_model()[0]
    session = client.create_session(start, optimizer=fedadagrad()["optimizer"])
    assert session.layout == "single"
    strategy = FedOptaas(session)
    reference = FedAdagrad(initial_parameters=ndarrays_to_parameters([start]))
    rng = np.random.default_rng(7)
    models = [[start + rng.normal(size=start.shape)] for _ in CLIENTS]
    results = [
        (proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(model), proxy.num_examples, {}))
        for proxy, model in zip(CLIENTS, models, strict=True)
    ]
    (ours,) = parameters_to_ndarrays(strategy.aggregate_fit(1, results, [])[0])
    (theirs,) = parameters_to_ndarrays(reference.aggregate_fit(1, results, [])[0])
    assert_moved_alike({"params": ours}, {"params": theirs}, {"params": start}, RTOL)


def test_a_session_that_accumulates_is_refused(client):
    session = client.create_session(initial_model()[0], optimizer="sgd", accumulate=3)
    with pytest.raises(ValueError, match="without accumulate"):
        FedOptaas(session)


def test_a_session_file_of_another_model_is_refused(client, tmp_path):
    session_file = tmp_path / "session.json"
    open_session(client, initial_model(), names=NAMES, session_file=session_file, **fedavgm())
    with pytest.raises(ValueError, match="not this model's"):
        open_session(
            client, [np.zeros((4, 3)), np.zeros(4)], names=NAMES, session_file=session_file,
            **fedavgm(),
        )  # fmt: skip


# -- Flower's own server loop ----------------------------------------------------------------


def flower_server_run(strategy, rounds):
    """Flower's `Server.fit` (configure_fit, the clients in threads, aggregate_fit, evaluate
    rounds) with the quadratic clients; the global model after each round, by evaluate_fn."""
    models = []

    def record(server_round, model, config):
        models.append([np.array(x) for x in model])
        return None

    strategy.evaluate_fn = record
    manager = SimpleClientManager()
    for proxy in CLIENTS:
        manager.register(proxy)
    history, _ = Server(client_manager=manager, strategy=strategy).fit(rounds, timeout=None)
    return models, history


def test_flowers_server_loop_with_fedoptaas_equals_it_with_fedadam(client):
    """Flower's loop hands the results over in the order the clients finish: the weighted
    mean's sums run in another order from round to round, within the tolerance."""
    start = initial_model()
    reference = FedAdam(initial_parameters=ndarrays_to_parameters(start), min_available_clients=3)
    theirs, _ = flower_server_run(reference, 4)
    session = open_session(client, start, names=NAMES, **fedadam(4))
    ours, history = flower_server_run(FedOptaas(session, min_available_clients=3), 4)
    assert len(ours) == len(theirs) == 5  # θ₀, then one per round
    assert_same_trajectory(ours[1:], theirs[1:], start)
    fit_metrics = history.metrics_distributed_fit
    assert [step for _, step in fit_metrics["optaas_step"]] == [1, 2, 3, 4]
    assert len(history.losses_distributed) == 4  # the clients evaluated every round's model
