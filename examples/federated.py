"""Federated learning with optaas as Flower's server optimizer, beside Flower's own FedAdam.

A softmax regression (64 → 10) on scikit-learn's digits (bundled: nothing is downloaded), the
training set split unevenly over eight clients. Each round every client takes the global model,
runs one epoch of mini-batch SGD on its own examples and sends its model back; the server
averages them (weighted by example counts) and applies its optimizer to the pseudo-gradient
θ_t − x̄_t. Both runs use Flower's own server loop (`flwr.server.Server`, the clients in
process) from the same initial weights:

- Flower's `FedAdam`, its optimizer state in the server's memory;
- `FedOptaas` on an optaas session holding Flower's FedAdam rule (`fedadam(rounds)`): the
  first `rounds − resumed` rounds, then — as if the Flower server had restarted — a new
  strategy from the same session file runs the rest, continuing the session's state.

It prints both test accuracies and the largest difference between the two global models after
every round (float64: ~1e-15 relative), and writes them to `federated.json`.

Run a server (`optaas serve`), then:

    python examples/federated.py [--url http://127.0.0.1:8000] [--rounds 30 | --quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flwr.client import NumPyClient
from flwr.common import (
    Code,
    DisconnectRes,
    GetPropertiesRes,
    NDArrays,
    Scalar,
    Status,
    ndarrays_to_parameters,
)
from flwr.common.logger import FLOWER_LOGGER
from flwr.server import Server, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAdam, Strategy
from optaas_client import Client
from optaas_client.flower import FedOptaas, fedadam, open_session
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

CLIENTS = 8
QUICK_ROUNDS = 6
LOCAL_LR = 0.5
BATCH_SIZE = 32
NAMES = ["weight", "bias"]
SERVER = {"eta": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
"""The server optimizer, Flower's FedAdam with these settings, in both runs."""


# -- the model and the clients ---------------------------------------------------------------


def probabilities(model: NDArrays, inputs: np.ndarray) -> np.ndarray:
    weight, bias = model
    logits = inputs @ weight + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def cross_entropy(model: NDArrays, inputs: np.ndarray, labels: np.ndarray) -> float:
    chosen = probabilities(model, inputs)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(chosen)))


def accuracy(model: NDArrays, inputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities(model, inputs).argmax(axis=1) == labels))


class DigitsClient(NumPyClient):
    """One client's examples: `fit` is one epoch of mini-batch SGD from the global model, the
    batches shuffled by (client, round) so both runs see the same ones."""

    def __init__(self, number: int, inputs: np.ndarray, labels: np.ndarray) -> None:
        self.number, self.inputs, self.labels = number, inputs, labels

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        weight, bias = (np.array(array) for array in parameters)
        order = np.random.default_rng([self.number, int(config["round"])]).permutation(
            len(self.labels)
        )
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            x, y = self.inputs[batch], self.labels[batch]
            error = probabilities([weight, bias], x)
            error[np.arange(len(y)), y] -= 1.0  # ∂ cross-entropy / ∂ logits
            weight -= LOCAL_LR * x.T @ error / len(y)
            bias -= LOCAL_LR * error.mean(axis=0)
        model = [weight, bias]
        return model, len(self.labels), {"loss": cross_entropy(model, self.inputs, self.labels)}

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        return cross_entropy(parameters, self.inputs, self.labels), len(self.labels), {}


class InProcessProxy(ClientProxy):
    """A Flower client in this process, as the server loop sees its clients."""

    def __init__(self, cid: str, client: NumPyClient) -> None:
        super().__init__(cid)
        self.client = client.to_client()

    def fit(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        return self.client.fit(ins)

    def evaluate(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        return self.client.evaluate(ins)

    def get_parameters(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        return self.client.get_parameters(ins)

    def get_properties(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        return GetPropertiesRes(status=Status(code=Code.OK, message=""), properties={})

    def reconnect(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        return DisconnectRes(reason="")


def federated_digits(seed: int) -> tuple[list[DigitsClient], np.ndarray, np.ndarray]:
    """Eight clients with 4 %–25 % of the training set each, and the test set."""
    data = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        data.data / 16.0, data.target, test_size=0.25, stratify=data.target, random_state=seed
    )
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(CLIENTS, 2.0)) * 0.68 + 0.04  # each ≥ 4 %, they sum to 1
    cuts = np.round(np.cumsum(shares)[:-1] * len(train_y)).astype(int)
    parts = np.split(rng.permutation(len(train_y)), cuts)
    clients = [DigitsClient(k, train_x[part], train_y[part]) for k, part in enumerate(parts)]
    return clients, test_x, test_y


# -- the runs ---------------------------------------------------------------------------------


def run(strategy: Strategy, clients: list[DigitsClient], rounds: int) -> list[NDArrays]:
    """Flower's server loop for `rounds` rounds: the global model after each (not θ₀)."""
    models: list[NDArrays] = []

    def keep(server_round: int, model: NDArrays, config: dict[str, Scalar]) -> None:
        if server_round > 0:
            models.append([np.array(array) for array in model])

    strategy.evaluate_fn = keep  # type: ignore[attr-defined]  # FedAvg's centralised evaluation
    manager = SimpleClientManager()
    for number, client in enumerate(clients):
        manager.register(InProcessProxy(str(number), client))
    Server(client_manager=manager, strategy=strategy).fit(rounds, timeout=None)
    return models


def loop_settings(clients: list[DigitsClient], rounds_before: int = 0) -> dict[str, Any]:
    """FedAvg's settings for both strategies: every client every round, told the round of the
    whole training (Flower numbers a resumed run's rounds from 1 again)."""
    return {
        "min_fit_clients": len(clients),
        "min_available_clients": len(clients),
        "fraction_evaluate": 0.0,
        "on_fit_config_fn": lambda server_round: {"round": rounds_before + server_round},
        "fit_metrics_aggregation_fn": mean_loss,
    }


def mean_loss(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """The clients' training loss, weighted by their example counts."""
    total = sum(count for count, _ in metrics)
    return {"loss": sum(count * float(m["loss"]) for count, m in metrics) / total}


def relative_difference(ours: NDArrays, theirs: NDArrays, start: NDArrays) -> float:
    """max |(θ − θ₀) − (θ' − θ₀)| / max |θ' − θ₀| over the tensors."""
    return max(
        float(np.max(np.abs(a - b)) / np.max(np.abs(b - s)))
        for a, b, s in zip(ours, theirs, start, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--session-file", type=Path, help="default: a new temporary file")
    parser.add_argument("--output", type=Path, default=Path("federated.json"))
    args = parser.parse_args()
    rounds = QUICK_ROUNDS if args.quick else args.rounds
    FLOWER_LOGGER.setLevel(logging.WARNING)  # its per-round INFO lines

    clients, test_x, test_y = federated_digits(args.seed)
    start = [np.random.default_rng(args.seed).normal(0.0, 0.01, (64, 10)), np.zeros(10)]

    flowers = run(
        FedAdam(initial_parameters=ndarrays_to_parameters(start), **SERVER,
                **loop_settings(clients)),
        clients,
        rounds,
    )  # fmt: skip

    session_file = args.session_file or Path(tempfile.mkdtemp()) / "federated.optaas.json"
    first_run, second_run = rounds - rounds // 3, rounds // 3
    spec = {**fedadam(rounds, **SERVER), "name": "federated digits"}
    with Client(args.url) as client:
        session = open_session(client, start, names=NAMES, session_file=session_file, **spec)
        ours = run(FedOptaas(session, **loop_settings(clients)), clients, first_run)
    print(f"session {session.id}: {first_run} rounds; the Flower server stops")
    with Client(args.url) as client:  # a new Flower server process would start here
        session = open_session(client, start, names=NAMES, session_file=session_file, **spec)
        resumed = FedOptaas(session, **loop_settings(clients, session.info()["step"]))
        ours += run(resumed, clients, second_run)
        step = session.info()["step"]
    print(f"session {session.id}: resumed at step {first_run}, now at step {step}")

    differences = [relative_difference(a, b, start) for a, b in zip(ours, flowers, strict=True)]
    results = {
        "rounds": rounds,
        "resumed_after": first_run,
        "session": {"id": session.id, "step": step},
        "flower_fedadam": {"test_accuracy": accuracy(flowers[-1], test_x, test_y)},
        "optaas": {"test_accuracy": accuracy(ours[-1], test_x, test_y)},
        "largest_relative_difference": max(differences),
        "relative_difference_by_round": differences,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    for label in ("flower_fedadam", "optaas"):
        print(f"{label:>15s}: test accuracy {results[label]['test_accuracy']:.4f}")
    print(f"largest relative difference of the global models: {max(differences):.2e}")


if __name__ == "__main__":
    main()
