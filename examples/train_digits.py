"""An MLP on scikit-learn's digits, trained with optaas through `RemoteOptimizer`, beside the same
training with a local `torch.optim.Adam`: same initial weights, same batches, same test set.

The digits (1797 8×8 images, bundled with scikit-learn: nothing is downloaded) are split 75/25;
the network is 64 → 64 → 10 with ReLU, cross-entropy, Adam. Both runs print their test accuracy;
the session's float32 numbers follow torch's, so the two should agree to a few digits.

Run a server (`optaas serve`), then:

    python examples/train_digits.py [--url http://127.0.0.1:8000] [--epochs 15 | --quick]
        [--output digits.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optaas_client import Client, RemoteOptimizer
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

QUICK_EPOCHS = 3


def digits(seed: int) -> tuple[torch.Tensor, ...]:
    data = load_digits()
    inputs = (data.data / 16.0).astype(np.float32)
    train_x, test_x, train_y, test_y = train_test_split(
        inputs, data.target, test_size=0.25, stratify=data.target, random_state=seed
    )
    return tuple(torch.from_numpy(array) for array in (train_x, test_x, train_y, test_y))


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[torch.Tensor],
    data: tuple[torch.Tensor, ...],
    label: str,
    progress: bool,
) -> dict[str, Any]:
    train_x, test_x, train_y, test_y = data
    started = time.perf_counter()
    bar = tqdm(batches, desc=f"{label:>12s}", unit="step", disable=not progress)
    for batch in bar:

        def closure(batch: torch.Tensor = batch) -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        accuracy = (model(test_x).argmax(dim=1) == test_y).double().mean().item()
    return {
        "test_accuracy": accuracy,
        "final_loss": loss.item(),
        "steps": len(batches),
        "seconds": seconds,
    }


def epoch_batches(size: int, epochs: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The same shuffled mini-batches for both runs."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(epochs):
        order = torch.randperm(size, generator=generator)
        batches.extend(order[start : start + batch_size] for start in range(0, size, batch_size))
    return batches


def largest_difference(first: torch.nn.Module, second: torch.nn.Module) -> float:
    pairs = zip(first.parameters(), second.parameters(), strict=True)
    return max((ours - theirs).abs().max().item() for ours, theirs in pairs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the optaas server")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs (for CI)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("digits.json"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else args.epochs

    data = digits(args.seed)
    batches = epoch_batches(len(data[0]), epochs, args.batch_size, args.seed)
    remote_model = mlp(args.seed)
    local_model = copy.deepcopy(remote_model)
    progress = not args.no_progress

    with Client(args.url) as client:
        remote = RemoteOptimizer(
            remote_model.named_parameters(),
            client=client,
            optimizer={"type": "adam", "lr": args.lr},
            name="digits-mlp",
        )
        local = torch.optim.Adam(local_model.parameters(), lr=args.lr)
        results: dict[str, Any] = {
            "optaas": train(remote_model, remote, batches, data, "optaas", progress),
            "torch.optim": train(local_model, local, batches, data, "torch.optim", progress),
        }
        results["session"] = {"id": remote.session.id, "step": remote.session.info()["step"]}
        remote.session.delete()

    results["largest_weight_difference"] = largest_difference(remote_model, local_model)
    print(
        f"\n{len(batches)} steps of Adam (lr {args.lr}), batch {args.batch_size}, {epochs} epochs"
    )
    for label in ("optaas", "torch.optim"):
        outcome = results[label]
        print(
            f"  {label:12s} test accuracy {outcome['test_accuracy']:.4f}   "
            f"final loss {outcome['final_loss']:.4f}   {outcome['seconds']:.1f} s"
        )
    print(f"  largest |Δw| between the two: {results['largest_weight_difference']:.2e}")
    args.output.write_text(json.dumps(results, indent=2))
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
