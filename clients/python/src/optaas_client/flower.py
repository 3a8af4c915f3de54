"""optaas as Flower's server optimizer: FedOpt's server update, made by an optaas session.

    from optaas_client import Client
    from optaas_client.flower import FedOptaas, open_session

    client = Client("http://127.0.0.1:8000")
    session = open_session(client, initial_ndarrays, optimizer={"type": "adam", "lr": 1e-2},
                           session_file="run.json")
    strategy = FedOptaas(session, min_fit_clients=4, min_available_clients=4)

Each round, FedAvg's weighted mean of the clients' models (weights `num_examples`),
x̄_t = Σ_k n_k·x_k / Σ_k n_k, makes the pseudo-gradient

    g_t = θ_t − x̄_t                    (−Δ_t, the mean client delta negated: FedOpt's definition)

which is posted to the session with `If-Match: t`; the session answers θ_{t+1} (any optaas
optimizer, schedule, clipping …), the next global model. The optimizer's state lives in the
database, so the session shows in `/ui` and a restarted Flower server resumes it
(`open_session` with the same `session_file`). Flower's own server rules as optaas specs:
`fedavgm`, `fedadagrad` and `fedadam` below (Flower's FedYogi is not expressible: see
docs/federated.md).

Needs the `flower` extra (`pip install 'optaas-client[flower]'`); importing `optaas_client`
does not import this module or Flower.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.common import (
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from optaas_state import SINGLE_TENSOR_NAME

from optaas_client.errors import ProtocolError
from optaas_client.session import Pending, Session

if TYPE_CHECKING:
    from optaas_client.client import Client

SESSION_FILE_FORMAT = "optaas-flower-session/1"


class FedOptaas(FedAvg):
    """FedAvg whose server update is a step of an optaas session.

    The session's tensors, in its order, are Flower's list of arrays; its θ_t is the initial
    global model (`initialize_parameters`), so a strategy made on a session that has run
    continues from where it stopped. `aggregate_fit` posts g_t = θ_t − x̄_t (module docstring)
    with `If-Match: t`: if anything else stepped the session since this strategy read it, the
    update is stale and the round fails with `PreconditionFailed` instead of being applied.
    A retried post (lost answer) is applied once (the client's idempotency key).

    `loss_metric`: when every client's `FitRes.metrics` has it, its mean weighted by
    `num_examples` is posted as the step's `loss` (the history, `/ui`'s curve,
    `reduce_on_plateau`). The aggregated metrics gain `optaas_step` and `optaas_lr`. Every
    other keyword is FedAvg's, except `initial_parameters`: the session's θ is the model.
    """

    def __init__(
        self, session: Session, *, loss_metric: str | None = "loss", **options: Any
    ) -> None:
        if "initial_parameters" in options:
            raise TypeError("FedOptaas takes the initial model from the session's parameters")
        # A round is one step: with `accumulate` K > 1 a round's post would only count toward one.
        accumulate = session.info().get("accumulate", 1)
        if accumulate != 1:
            raise ValueError(f"FedOptaas needs a session without accumulate (it has {accumulate})")
        super().__init__(**options)
        self.session = session
        self.loss_metric = loss_metric
        self.names = list(session.shapes)
        """The session's tensors in Flower's order (the order of its creation)."""
        self.current_weights: NDArrays = []
        """θ_t: the global model the clients of the coming round start from."""
        self.step_count = 0
        """t: the session's step count when θ_t was read or answered."""
        self._read_session()

    def __repr__(self) -> str:
        return f"FedOptaas(session={self.session.id!r}, step={self.step_count})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """θ_t of the session, read again: a run starts (or resumes) where the session is."""
        self._read_session()
        return ndarrays_to_parameters(self.current_weights)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """x̄_t by FedAvg, then θ_{t+1} = the session's step on g_t = θ_t − x̄_t."""
        averaged, metrics = super().aggregate_fit(server_round, results, failures)
        if averaged is None:
            return None, metrics
        mean = parameters_to_ndarrays(averaged)
        pseudo_gradient = {
            name: theta - x
            for name, theta, x in zip(self.names, self.current_weights, mean, strict=True)
        }
        single = self.session.layout == "single"
        answer = self.session.step(
            pseudo_gradient[SINGLE_TENSOR_NAME] if single else pseudo_gradient,
            loss=self._mean_loss(results),
            if_match=self.step_count,
        )
        if isinstance(answer, Pending) or answer is None:  # `accumulate` patched in since
            raise ProtocolError("the session did not answer θ: it accumulates gradients")
        self.current_weights = self._in_order(answer)
        assert self.session.last_step is not None  # set by the step just made
        self.step_count = self.session.last_step.step
        metrics = {**metrics, "optaas_step": self.step_count}
        if self.session.last_step.lr is not None:
            metrics["optaas_lr"] = self.session.last_step.lr
        return ndarrays_to_parameters(self.current_weights), metrics

    def _read_session(self) -> None:
        params = self.session.params()
        assert self.session.step_count is not None  # set by the read
        self.current_weights = self._in_order(params)
        self.step_count = self.session.step_count

    def _in_order(self, params: np.ndarray | Mapping[str, np.ndarray]) -> NDArrays:
        if not isinstance(params, Mapping):
            params = {SINGLE_TENSOR_NAME: params}
        return [np.asarray(params[name]) for name in self.names]

    def _mean_loss(self, results: Sequence[tuple[ClientProxy, FitRes]]) -> float | None:
        """Σ n_k·loss_k / Σ n_k over the round's clients, if every one reported a loss."""
        if self.loss_metric is None or not results:
            return None
        reported = [(res.num_examples, res.metrics.get(self.loss_metric)) for _, res in results]
        if not all(isinstance(loss, int | float) for _, loss in reported):
            return None
        total = sum(count for count, _ in reported)
        if total == 0:
            return None
        return sum(count * float(loss) for count, loss in reported) / total


def open_session(
    client: Client,
    parameters: NDArrays,
    *,
    optimizer: Mapping[str, Any] | str,
    names: Sequence[str] | None = None,
    session_file: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> Session:
    """The session a `FedOptaas` steps: the one `session_file` records, if it exists (a
    restarted Flower server resumes it, θ and state as they were), else a new one with
    θ₀ = `parameters` whose id and token are then written to `session_file` (mode 0600: the
    token is the session's credential).

    `names` name Flower's arrays in the session (default "0", "1", …; a model's
    `state_dict()` keys read better in `/ui` and match `groups`). `optimizer` and `settings`
    (`schedule`, `name`, `dtype`, `clip_grad_norm`, …) are `Client.create_session`'s; a
    resumed session keeps its own, and must hold tensors of the names and shapes given.
    """
    names = [str(index) for index in range(len(parameters))] if names is None else list(names)
    if len(names) != len(parameters) or len(set(names)) != len(names):
        raise ValueError(f"{len(parameters)} arrays need as many distinct names, got {names}")
    path = None if session_file is None else Path(session_file)
    if path is not None and path.exists():
        session = _resume(client, path)
        _check_shapes(session, names, parameters, path)
        return session
    named = dict(zip(names, (np.asarray(array) for array in parameters), strict=True))
    session = client.create_session(named, optimizer=optimizer, **settings)
    if path is not None:
        _write_session_file(path, session)
    return session


# -- Flower's server rules as optaas specs ----------------------------------------------------


def fedavgm(server_learning_rate: float = 1.0, server_momentum: float = 0.0) -> dict[str, Any]:
    """Flower's FedAvgM: torch's SGD with momentum on g_t (b_t = μ·b_{t−1} + g_t from b_1 = g_1,
    θ_{t+1} = θ_t − η·b_t). Flower's defaults."""
    return {"optimizer": {"type": "sgd", "lr": server_learning_rate, "momentum": server_momentum}}


def fedadagrad(eta: float = 1e-1, tau: float = 1e-9) -> dict[str, Any]:
    """Flower's FedAdagrad: torch's Adagrad on g_t (v_t = v_{t−1} + g_t²,
    θ_{t+1} = θ_t − η·g_t/(√v_t + τ)). Flower's defaults."""
    return {"optimizer": {"type": "adagrad", "lr": eta, "eps": tau}}


def fedadam(
    rounds: int,
    eta: float = 1e-1,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 1e-9,
) -> dict[str, Any]:
    """Flower's FedAdam for `rounds` rounds: `custom` with m_t = β1·m_{t−1} + (1 − β1)·g_t,
    v_t = β2·v_{t−1} + (1 − β2)·g_t² (both from 0, neither bias-corrected) and
    θ_{t+1} = θ_t − η_t·m_t/(√v_t + τ), where the rate is Flower's

        η_t = η·√(1 − β2^(t+2)) / (1 − β1^(t+2))        (t = the step count, server round t + 1)

    as a `piecewise_constant` schedule of `rounds` values (the last holds after them). Not
    `adam`: Flower's correction runs one round ahead of Kingma & Ba's and adds τ to √v_t
    uncorrected, where Adam adds eps to √v̂_t. Flower's defaults.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    t = np.arange(rounds, dtype=np.float64)
    rates = eta * np.sqrt(1 - np.power(beta_2, t + 2.0)) / (1 - np.power(beta_1, t + 2.0))
    return {
        "optimizer": {
            "type": "custom",
            "lr": eta,
            "momentum": {"beta": beta_1, "dampening": beta_1},
            "sigma": {"kind": "ema", "alpha": beta_2},
            "eps": tau,
        },
        "schedule": {
            "type": "piecewise_constant",
            "boundaries": list(range(1, rounds)),
            "values": [float(rate) for rate in rates],
        },
    }


# -- the session file -------------------------------------------------------------------------


def _resume(client: Client, path: Path) -> Session:
    try:
        record = json.loads(path.read_text())
        if record.get("format") != SESSION_FILE_FORMAT:
            raise ValueError(f"not {SESSION_FILE_FORMAT}")
        session_id, token = str(record["id"]), str(record["token"])
    except (ValueError, KeyError, AttributeError) as error:
        raise ValueError(f"{path} is not an optaas session file: {error}") from None
    return client.session(session_id, token)


def _write_session_file(path: Path, session: Session) -> None:
    """Written to a new file, then renamed over: a crash leaves the old file or the new one."""
    record = {"format": SESSION_FILE_FORMAT, "id": session.id, "token": session.token}
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(record, file)
    partial.replace(path)


def _check_shapes(session: Session, names: Sequence[str], parameters: NDArrays, path: Path) -> None:
    """A resumed session must be this model's: the same names, in order, and shapes."""
    expected = {name: tuple(np.shape(array)) for name, array in zip(names, parameters, strict=True)}
    if list(session.shapes.items()) != list(expected.items()):
        raise ValueError(
            f"the session in {path} holds {session.shapes}, not this model's {expected}"
        )
