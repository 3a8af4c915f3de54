"""The server update of a federated round: Flower's FedAdam in memory against FedOptaas.

One round's `aggregate_fit` over K clients' `FitRes` (float32 models of n parameters), timed
for Flower's `FedAdam` (the optimizer in the server's memory) and for `FedOptaas` on a session
holding the same rule (`fedadam(rounds)`), stepped by an `optaas serve` process on SQLite or
PostgreSQL — the pseudo-gradient posted as a safetensors file (above the client's threshold),
θ answered the same way, the step logged and the state kept durable. Both include FedAvg's
weighted mean, which they share. The two are timed alternately, round after round, so that the
machine's other work falls on both alike; the medians and the difference are printed.

    python benchmarks/flower_round.py [--sizes 1e4 1e5 1e6] [--clients 8] [--rounds 15]
                                      [--database sqlite|postgresql] [--name flower_round]

Prints the figures and writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters  # noqa: E402
from flwr.common.logger import FLOWER_LOGGER  # noqa: E402
from flwr.server.strategy import FedAdam  # noqa: E402
from optaas_client import Client  # noqa: E402
from optaas_client.flower import FedOptaas, fedadam, open_session  # noqa: E402

from tests.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


def layers(size: int) -> list[tuple[int, ...]]:
    """A model of about `size` parameters: a square-ish matrix and a bias."""
    width = max(1, int(np.sqrt(size)))
    return [(width, size // width), (size // width,)]


def fit_results(model: list[np.ndarray], clients: int, rng: np.random.Generator) -> list[Any]:
    """K clients' models near the global one, as Flower's FitRes (the proxy slot unused)."""
    results = []
    for k in range(clients):
        moved = [x + rng.normal(0, 1e-2, x.shape).astype(np.float32) for x in model]
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(moved), 100 + k, {"loss": 1.0})
        results.append((None, res))
    return results


def measure(url: str, size: int, clients: int, rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(size)
    start = [rng.normal(0, 1, shape).astype(np.float32) for shape in layers(size)]
    flower = FedAdam(initial_parameters=ndarrays_to_parameters(start))
    with Client(url, trust_env=False) as client:
        session = open_session(client, start, name=f"bench {size}", **fedadam(rounds))
        ours = FedOptaas(session)
        times: dict[str, list[float]] = {"flower": [], "optaas": []}
        for server_round in range(1, rounds + 1):
            results = fit_results(start, clients, rng)
            for label, strategy in (("flower", flower), ("optaas", ours)):
                began = time.perf_counter()
                strategy.aggregate_fit(server_round, results, [])
                times[label].append(time.perf_counter() - began)
        session.delete()
    flower_ms, optaas_ms = (1000 * float(np.median(times[k][1:])) for k in ("flower", "optaas"))
    return {
        "parameters": sum(int(np.prod(shape)) for shape in layers(size)),
        "clients": clients,
        "rounds": rounds,
        "flower_fedadam_ms": round(flower_ms, 1),
        "fedoptaas_ms": round(optaas_ms, 1),
        "difference_ms": round(optaas_ms - flower_ms, 1),
    }


def load_average() -> float:
    return os.getloadavg()[0]


def write(name: str, document: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = [
        "# A federated round's server update: Flower's FedAdam against FedOptaas",
        "",
        f"{document['at']}, code {document['code']}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; 1-minute load average {document['load_before']:.2f} before, "
        f"{document['load_after']:.2f} after. `optaas serve` (one worker) on "
        f"{document['database']}; float32 models; medians over the rounds after the first.",
        "",
        "| parameters | clients | Flower FedAdam ms | FedOptaas ms | difference ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in document["rows"]:
        lines.append(
            f"| {row['parameters']:.0e} | {row['clients']} | {row['flower_fedadam_ms']} | "
            f"{row['fedoptaas_ms']} | {row['difference_ms']} |"
        )
    lines += [
        "",
        "Both columns include FedAvg's weighted mean of the clients' models (decoding K "
        "`FitRes`, the sums); the difference is what durability costs a round: the "
        "pseudo-gradient to the server and θ back (safetensors above 65 536 parameters), the "
        "step, its log and checkpoint in the database.",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def git(*arguments: str) -> str:
    result = subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True)
    return result.stdout.strip()


def code_version() -> str:
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--name", default="flower_round")
    args = parser.parse_args()
    FLOWER_LOGGER.setLevel("ERROR")  # its warning about fit metrics, once per strategy

    load_before = load_average()
    rows = []
    with ExitStack() as stack:
        if args.database == "sqlite":
            directory = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{directory}/optaas.sqlite3"
        else:
            url = create_postgres_database()
            stack.callback(drop_postgres_database, url)
        log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "server.log"
        server = stack.enter_context(LiveServer(url, log))
        for size in args.sizes:
            row = measure(server.url, int(size), args.clients, args.rounds)
            print(json.dumps(row))
            rows.append(row)
    document = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code_version(),
        "database": args.database,
        "load_before": load_before,
        "load_after": load_average(),
        "rows": rows,
    }
    write(args.name, document)
    print(f"load average {load_before:.2f} → {document['load_after']:.2f}; "
          f"benchmarks/results/{args.name}.md")  # fmt: skip


if __name__ == "__main__":
    main()
