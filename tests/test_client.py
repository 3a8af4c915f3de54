"""The Python client (`optaas_client`) against live servers: every method, the typed errors, retries
through a network that loses answers and a server that answers 503, and `RemoteOptimizer`
against local torch.optim.

Retry tests use SGD with lr a power of two and one-hot gradients, so θ₀ − lr·Σg is exact in
float64 and "θ = −lr everywhere" shows that every gradient was applied exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import optaas_client.session
import pytest
import torch
from optaas_client import (
    ApiError,
    AuthenticationRequired,
    Client,
    ConnectionFailed,
    InvalidContent,
    InvalidHyperParameter,
    NonFiniteGradient,
    NotFound,
    PreconditionFailed,
    RemoteOptimizer,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    Session,
    SessionNotFound,
    ShapeMismatch,
    StepInfo,
    ValidationFailed,
    error_for,
)

from app.optim import schedule_lrs
from tests.conftest import sqlite_url
from tests.live_server import free_port, source_environment
from tests.support import CoreRun, DroppingTransport, random_arrays

FAST_RETRIES = {"backoff": 0.001, "max_delay": 0.01}
LR = 0.25


@pytest.fixture
def client(module_app):
    with Client(
        module_app.url, transport=module_app.transport(), trust_env=False, **FAST_RETRIES
    ) as client:
        yield client


def lossy_client(server, transport, **options):
    return Client(server.url, transport=transport, **{**FAST_RETRIES, **options})


def one_hot(index, size):
    gradient = np.zeros(size)
    gradient[index] = 1.0
    return gradient


# -- import hygiene --------------------------------------------------------------------------


SERVER_STACK = {"app", "fastapi", "starlette", "sqlalchemy", "pydantic", "uvicorn", "alembic"}


def test_importing_the_client_imports_neither_the_server_nor_torch():
    code = (
        "import sys, optaas_client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        f"set({sorted(SERVER_STACK | {'torch'})!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=source_environment(),
    )
    assert result.stdout.strip() == "[]"


def test_the_shared_format_module_imports_the_standard_library_and_numpy_only():
    code = (
        "import sys; before = set(sys.modules); import optaas_state; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - "
        "set(sys.stdlib_module_names) - {'optaas_state', 'numpy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=source_environment(),
    )
    assert result.stdout.strip() == "[]"


# -- every method ----------------------------------------------------------------------------


def test_named_session_steps_like_the_core_and_shows_itself(client):
    rng = np.random.default_rng(1)
    shapes = {"w": (3, 2), "b": (2,)}
    theta0 = random_arrays(rng, shapes, "float64")
    session = client.create_session(
        theta0, optimizer={"type": "adam", "lr": 0.01}, name="client-named", clip_grad_norm=5.0
    )
    assert isinstance(session, Session)
    assert (session.layout, session.dtype, session.shapes) == ("named", np.float64, shapes)
    assert session.step_count == 0

    reference = CoreRun(session.info(), theta0)
    for k in range(5):
        grads = random_arrays(rng, shapes, "float64")
        params = session.step(grads, loss=float(k))
        reference.step(grads, loss=float(k))
        assert list(params) == ["w", "b"]
        for name in shapes:
            assert params[name].dtype == np.float64
            np.testing.assert_array_equal(params[name], reference.params[name])
    assert session.step_count == 5
    assert isinstance(session.last_step, StepInfo)
    assert session.last_step.step == 5 and session.last_step.lr == 0.01
    assert session.last_step.grad_norm > 0 and session.last_step.skipped is False

    read = session.params()
    for name in shapes:
        np.testing.assert_array_equal(read[name], reference.params[name])

    view = session.info()
    assert view["id"] == session.id and view["name"] == "client-named"
    assert view["step"] == 5 and view["last_loss"] == 4.0 and view["clip_grad_norm"] == 5.0
    assert view["optimizer"]["betas"] == [0.9, 0.999]  # every default filled in
    assert "token" not in view

    history = session.history()
    assert [record["step"] for record in history] == [1, 2, 3, 4, 5]
    assert [record["loss"] for record in history] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert session.history(after=history[1]["seq"], limit=2) == history[2:4]

    again = client.session(session.id, session.token)
    np.testing.assert_array_equal(again.params()["w"], reference.params["w"])

    session.delete()
    with pytest.raises(SessionNotFound):
        session.info()
    with pytest.raises(SessionNotFound):
        session.step({"w": np.zeros((3, 2)), "b": np.zeros(2)})


@pytest.mark.slow  # a thousand steps: the client's page size is the server's largest limit
def test_history_reads_every_page(client):
    session = client.create_session(np.zeros(1), optimizer="sgd")
    for k in range(1005):
        session.step(np.ones(1), return_params=False, loss=float(k))
    history = session.history()
    assert [record["step"] for record in history] == list(range(1, 1006))
    assert len(session.history(limit=1002)) == 1002


def test_history_follows_the_pages_to_the_end_and_stops_at_its_limit(client, monkeypatch):
    """The paging of the test above on pages of 4 records: the same loop, in a few steps."""
    monkeypatch.setattr(optaas_client.session, "HISTORY_PAGE_LIMIT", 4)
    session = client.create_session(np.zeros(1), optimizer="sgd")
    for k in range(10):
        session.step(np.ones(1), return_params=False, loss=float(k))
    assert [record["step"] for record in session.history()] == list(range(1, 11))
    assert [record["step"] for record in session.history(limit=6)] == list(range(1, 7))
    assert [record["step"] for record in session.history(after=8)] == [9, 10]


def test_single_array_session_in_float32(client):
    theta0 = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=np.float32)
    session = client.create_session(theta0, optimizer={"type": "sgd", "lr": 0.1, "momentum": 0.9})
    assert session.layout == "single" and session.dtype == np.float32
    reference = CoreRun(session.info(), {"params": theta0})
    for gradient in ([[1.0, 1.0], [1.0, 1.0]], np.full((2, 2), 0.3), np.eye(2)):
        params = session.step(gradient)
        reference.step({"params": np.asarray(gradient, np.float32)})
        assert isinstance(params, np.ndarray) and params.dtype == np.float32
        np.testing.assert_array_equal(params, reference.params["params"])
    np.testing.assert_array_equal(session.params(), reference.params["params"])


def test_dtype_follows_the_arrays_unless_given(client):
    assert client.create_session(np.zeros(2), optimizer="sgd").dtype == np.float64
    assert client.create_session(np.zeros(2, np.float32), optimizer="sgd").dtype == np.float32
    assert client.create_session([0.0, 1.0], optimizer="sgd").dtype == np.float32
    assert client.create_session(np.zeros(2), optimizer="sgd", dtype="float32").dtype == np.float32


def test_step_options_return_none_if_match_partial_and_skip(client):
    session = client.create_session(
        {"a": np.ones(2), "b": np.ones(3)}, optimizer={"type": "sgd", "lr": LR}, nonfinite="skip"
    )
    assert session.step({"a": np.ones(2), "b": np.ones(3)}, return_params=False) is None
    assert session.last_step.step == 1

    params = session.step({"a": np.ones(2), "b": np.ones(3)}, if_match=1)
    np.testing.assert_array_equal(params["a"], [0.5, 0.5])

    params = session.step({"b": np.ones(3)}, partial=True)
    np.testing.assert_array_equal(params["a"], [0.5, 0.5])
    np.testing.assert_array_equal(params["b"], [0.25, 0.25, 0.25])

    params = session.step({"a": [np.nan, 1.0], "b": np.ones(3)})
    assert session.last_step.skipped is True and session.last_step.step == 3
    np.testing.assert_array_equal(params["b"], [0.25, 0.25, 0.25])


def test_preview_schedule(client):
    rates = client.preview_schedule({"type": "inverse_sqrt"}, steps=5, lr=0.5)
    np.testing.assert_allclose(rates, 0.5 / np.sqrt(np.arange(1, 6)), rtol=1e-15)
    warmup = {"type": "warmup", "warmup_steps": 3, "then": {"type": "exponential", "gamma": 0.5}}
    np.testing.assert_array_equal(
        client.preview_schedule(warmup, steps=6), schedule_lrs(warmup, 1.0, 6)
    )
    # The optimizer's lr (its type's default, 1e-3 for muon) is the base rate without `lr`.
    np.testing.assert_array_equal(
        client.preview_schedule(warmup, steps=6, optimizer="muon"), schedule_lrs(warmup, 1e-3, 6)
    )
    np.testing.assert_array_equal(
        client.preview_schedule(warmup, steps=6, optimizer={"type": "prodigy", "lr": 0.5}),
        schedule_lrs(warmup, 0.5, 6),
    )


def test_ready(module_app):
    with Client(module_app.url, transport=module_app.transport(), trust_env=False) as client:
        assert client.ready()
    with Client(f"http://127.0.0.1:{free_port()}", trust_env=False) as nobody:
        assert not nobody.ready()


# -- typed errors ----------------------------------------------------------------------------


def test_errors_are_typed_and_change_nothing(client):
    session = client.create_session({"w": np.ones((2, 2))}, optimizer={"type": "sgd", "lr": LR})
    session.step({"w": np.ones((2, 2))})

    with pytest.raises(ShapeMismatch) as mismatch:
        session.step({"w": np.ones((1, 2))})
    assert mismatch.value.status == 422 and mismatch.value.slug == "gradient-mismatch"
    assert mismatch.value.tensor == "w"
    assert (mismatch.value.expected_shape, mismatch.value.got_shape) == ([2, 2], [1, 2])
    assert "shape [1, 2], expected [2, 2]" in str(mismatch.value)

    with pytest.raises(ShapeMismatch):
        session.step({"w": np.ones((2, 2)), "v": np.ones(1)})
    with pytest.raises(InvalidContent) as form:
        session.step(np.ones((2, 2)))  # the single form, for a named session
    assert form.value.field == "gradients"
    with pytest.raises(NonFiniteGradient) as nonfinite:
        session.step({"w": [[1.0, np.inf], [0.0, 0.0]]})
    assert nonfinite.value.tensor == "w"
    with pytest.raises(PreconditionFailed) as stale:
        session.step({"w": np.ones((2, 2))}, if_match=0)
    assert stale.value.status == 412 and stale.value.current_step == 1

    assert session.info()["step"] == 1
    np.testing.assert_array_equal(session.params()["w"], np.full((2, 2), 0.75))

    with pytest.raises(SessionNotFound):
        client.session(session.id, "not-the-token")
    with pytest.raises(SessionNotFound):
        client.session("not-an-id", session.token)
    with pytest.raises(InvalidHyperParameter) as negative:
        client.create_session(np.zeros(1), optimizer={"type": "adam", "lr": -1.0})
    assert negative.value.field == "optimizer.lr"
    with pytest.raises(ValidationFailed) as unknown:
        client.create_session(np.zeros(1), optimizer={"type": "adam", "bogus": 1})
    assert unknown.value.errors[0]["loc"][-1] == "bogus"


def problem_answer(status, slug, **extras):
    document = {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": "d"}
    return httpx.Response(status, json={**document, **extras})


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (problem_answer(404, "session-not-found"), SessionNotFound),
        (problem_answer(404, "not-found"), NotFound),  # a path an older server lacks
        (problem_answer(422, "gradient-mismatch", tensor="w"), ShapeMismatch),
        (problem_answer(422, "invalid-content"), InvalidContent),
        (problem_answer(503, "database-unavailable"), ServiceUnavailable),
        (problem_answer(418, "teapot"), ApiError),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_error_answers_become_the_most_specific_type(answer, kind):
    error = error_for(answer)
    assert type(error) is kind and error.status == answer.status_code
    if answer.headers["content-type"] == "application/json":
        assert error.slug == answer.json()["type"].removeprefix("/problems/")
    else:
        assert "bad gateway" in error.detail and error.slug == "about:blank"


def test_errors_are_not_retried(module_app):
    transport = DroppingTransport(inner=module_app.transport())
    with lossy_client(module_app, transport) as client:
        session = client.create_session(np.zeros(2), optimizer="sgd")
        with pytest.raises(ShapeMismatch):
            session.step(np.zeros(3))
    steps = [request for request in transport.requests if request[1].endswith("/step")]
    assert len(steps) == 1


def test_api_key_is_sent_when_creating(start_server, tmp_path):
    server = start_server(sqlite_url(tmp_path), env={"OPTAAS_API_KEYS": "k1,k2"})
    with Client(server.url, trust_env=False) as anonymous:
        with pytest.raises(AuthenticationRequired) as refused:
            anonymous.create_session(np.zeros(1), optimizer="sgd")
        assert refused.value.status == 401 and refused.value.slug == "api-key-required"
    with Client(server.url, trust_env=False, api_key="k2") as keyed:
        session = keyed.create_session(np.zeros(1), optimizer={"type": "sgd", "lr": LR})
        np.testing.assert_array_equal(session.step(np.ones(1)), [-LR])
        forked = session.fork()  # a fork creates a session: it needs the key too
        np.testing.assert_array_equal(forked.params(), [-LR])


# -- retries ---------------------------------------------------------------------------------

STEPS = 40


@pytest.mark.slow_on_postgres
def test_a_lossy_network_and_503s_apply_every_gradient_exactly_once(module_app):
    """Every third answer is lost after the server committed it, and every fifth request is
    answered 503 before reaching the server; the client retries both with the same key."""
    transport = DroppingTransport(drop_every=3, unavailable_every=5, inner=module_app.transport())
    with lossy_client(module_app, transport) as client:
        session = client.create_session(np.zeros(STEPS), optimizer={"type": "sgd", "lr": LR})
        answers = [session.step(one_hot(k, STEPS)) for k in range(STEPS)]
        final = session.params()

    assert session.step_count == STEPS
    np.testing.assert_array_equal(final, np.full(STEPS, -LR))  # none lost, none doubled
    for k, answer in enumerate(answers):  # each answer is θ after exactly k + 1 steps
        np.testing.assert_array_equal(answer, -LR * (np.arange(STEPS) <= k))

    posts = [key for method, path, key in transport.requests if path.endswith("/step")]
    assert len(set(posts)) == STEPS  # one key per gradient, whatever the number of attempts
    assert len(posts) > STEPS + 10  # so there were retries
    assert transport.unavailable >= 10
    lost_steps = {key: bodies for key, bodies in transport.lost.items() if key in set(posts)}
    assert len(lost_steps) >= STEPS // 4
    answer_of = dict(zip(dict.fromkeys(posts), answers, strict=True))
    for key, bodies in lost_steps.items():
        for body in bodies:  # what the retry returned is what was lost
            np.testing.assert_array_equal(json.loads(body)["params"], answer_of[key])


def test_a_creation_whose_answer_was_lost_makes_one_session(module_app):
    transport = DroppingTransport(drop={1}, inner=module_app.transport())
    with lossy_client(module_app, transport) as client:
        session = client.create_session(np.zeros(2), optimizer="sgd")
    [(key, [lost])] = transport.lost.items()
    assert json.loads(lost)["id"] == session.id  # the retry got the first creation back
    assert [request[2] for request in transport.requests] == [key, key]


def test_a_deletion_whose_answer_was_lost_succeeds(module_app):
    transport = DroppingTransport(drop={2}, inner=module_app.transport())
    with lossy_client(module_app, transport) as client:
        session = client.create_session(np.zeros(2), optimizer="sgd")
        session.delete()  # the retry finds it gone: the first attempt deleted it
        with pytest.raises(SessionNotFound):
            session.info()
    assert [method for method, _, _ in transport.requests] == ["POST", "DELETE", "DELETE", "GET"]


def test_reads_are_retried_too(module_app):
    transport = DroppingTransport(drop={2, 3}, inner=module_app.transport())
    with lossy_client(module_app, transport) as client:
        session = client.create_session(np.arange(3.0), optimizer="sgd")
        np.testing.assert_array_equal(session.params(), [0.0, 1.0, 2.0])
    assert [method for method, _, _ in transport.requests] == ["POST", "GET", "GET", "GET"]


class AlwaysBusy(httpx.BaseTransport):
    def __init__(self, retry_after: str) -> None:
        self.retry_after = retry_after
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return httpx.Response(
            503,
            headers={"Content-Type": "application/problem+json", "Retry-After": self.retry_after},
            json={
                "type": "/problems/lock-timeout",
                "title": "Session busy",
                "status": 503,
                "detail": "busy",
            },
        )


def test_retries_give_up_with_the_last_answer():
    transport = AlwaysBusy("0")
    client = Client("http://optaas.invalid", transport=transport, retries=3, **FAST_RETRIES)
    with client, pytest.raises(ServiceUnavailable) as busy:
        client.create_session(np.zeros(1), optimizer="sgd")
    assert transport.attempts == 4
    assert busy.value.slug == "lock-timeout" and busy.value.retry_after == 0.0


def test_connection_errors_are_retried_then_reported():
    client = Client(f"http://127.0.0.1:{free_port()}", retries=2, trust_env=False, **FAST_RETRIES)
    with client, pytest.raises(ConnectionFailed, match="3 attempts"):
        client.create_session(np.zeros(1), optimizer="sgd")


def test_backoff_grows_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(retries=5, backoff=0.5, max_delay=3.0)
    for attempt, (low, high) in enumerate([(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0)]):
        delays = [policy.delay(attempt, None) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high
        assert max(delays) - min(delays) > (high - low) / 4  # jittered
    assert policy.delay(0, 2.0) == 2.0  # Retry-After is a lower bound …
    assert policy.delay(0, 60.0) == 3.0  # … within max_delay


# -- RemoteOptimizer -------------------------------------------------------------------------


def small_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model.unused = torch.nn.Parameter(torch.ones(3))  # never gets a gradient: a partial step
    return model.double()


def training_data(seed=1):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, 5, generator=generator, dtype=torch.float64)
    targets = torch.randn(64, 2, generator=generator, dtype=torch.float64)
    return inputs, targets


PARITY = [
    (
        {"type": "adam", "lr": 0.01, "weight_decay": 0.01},
        torch.optim.Adam,
        {"lr": 0.01, "weight_decay": 0.01},
    ),
    (
        {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    ),
]


@pytest.mark.slow_on_postgres
@pytest.mark.parametrize(("spec", "local_class", "local_settings"), PARITY, ids=["adam", "sgd"])
def test_remote_optimizer_trains_to_the_weights_of_local_torch(
    client, spec, local_class, local_settings
):
    remote_model, local_model = small_model(), small_model()
    remote = RemoteOptimizer(remote_model.named_parameters(), client=client, optimizer=spec)
    local = local_class(local_model.parameters(), **local_settings)
    assert isinstance(remote, torch.optim.Optimizer)
    assert remote.session.dtype == np.float64
    inputs, targets = training_data()

    def train(model, optimizer, batch):
        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(inputs[batch]), targets[batch])
            loss.backward()
            return loss

        return optimizer.step(closure)

    for step in range(50):
        batch = slice((step % 4) * 16, (step % 4 + 1) * 16)
        remote_loss = train(remote_model, remote, batch)
        local_loss = train(local_model, local, batch)
        torch.testing.assert_close(remote_loss, local_loss, rtol=1e-9, atol=0)

    for (name, ours), theirs in zip(
        remote_model.named_parameters(), local_model.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=0, msg=name)
    assert torch.equal(remote_model.unused, torch.ones(3, dtype=torch.float64))
    assert remote.session.step_count == 50
    history = remote.session.history()
    assert len(history) == 50 and history[-1]["loss"] == pytest.approx(remote_loss.item())
    assert remote.param_groups[0]["lr"] == spec["lr"]


def test_remote_optimizer_without_gradients_posts_nothing(client):
    model = small_model()
    remote = RemoteOptimizer(model, client=client, optimizer="sgd")
    remote.zero_grad()
    assert remote.step() is None
    assert remote.session.info()["step"] == 0


def test_remote_optimizer_attaches_to_a_session_and_takes_its_parameters(client):
    model = small_model()
    named = dict(model.named_parameters())
    theta = {name: np.full(tuple(p.shape), 0.5) for name, p in named.items()}
    session = client.create_session(theta, optimizer={"type": "sgd", "lr": LR})
    remote = RemoteOptimizer(model.named_parameters(), session=session)
    assert remote.session is session
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, torch.full(parameter.shape, 0.5, dtype=torch.float64)), name

    other = client.create_session({"something": np.zeros(2)}, optimizer="sgd")
    with pytest.raises(ValueError, match="holds"):
        RemoteOptimizer(small_model().named_parameters(), session=other)
    with pytest.raises(NotImplementedError):
        remote.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})


def test_remote_optimizer_names_plain_tensors_by_position(client):
    weights = [torch.zeros(2, dtype=torch.float64, requires_grad=True), torch.ones(1)]
    weights[1].requires_grad_(True)
    remote = RemoteOptimizer(weights, client=client, optimizer={"type": "sgd", "lr": LR})
    assert remote.session.shapes == {"0": (2,), "1": (1,)}
    (weights[0].sum() + 2 * weights[1].sum()).backward()
    remote.step()
    assert weights[0].tolist() == [-LR, -LR] and weights[1].tolist() == [1 - 2 * LR]


def test_bodies_go_in_views_of_at_most_a_mebibyte_that_make_the_body():
    """Large bodies are sent in pieces (httpx copies the rest of a `bytes` body after every
    socket send); the pieces are views of the body, in order, and make it exactly."""
    from optaas_state import PIECE_BYTES, in_pieces

    body = bytes(range(256)) * (3 * PIECE_BYTES // 256 + 7)
    pieces = list(in_pieces(body))
    assert len(pieces) == 4 and all(len(piece) <= PIECE_BYTES for piece in pieces)
    assert all(isinstance(piece, memoryview) and piece.obj is body for piece in pieces)
    assert b"".join(pieces) == body
    assert b"".join(in_pieces(b"")) == b""
