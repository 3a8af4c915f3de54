"""Every optimizer type the server offers, at its default settings, on the digits MLP of
`train_digits.py`: the same initial weights and mini-batches for each, every step through optaas.

The types are read from the server's OpenAPI document (the create body's `optimizer`), so a
new type joins the comparison by itself. Muon takes 2-D tensors only, so it runs as torch
recommends it: Muon for the weight matrices beside the session's AdamW for the biases (a group
with its own optimizer). The test accuracy is measured on the weights to evaluate
(`GET …/params?for=eval`: schedule-free's x, ASGD's average; θ itself for the others).

Writes a page (a table and a figure of the training loss against the step) and the numbers:

    python examples/compare_optimizers.py [--url http://127.0.0.1:8000] [--epochs 5 | --quick]
        [--types adam,prodigy,...] [--output-dir docs] [--data runs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from optaas_client import Client, RemoteOptimizer
from optaas_client.errors import ApiError
from train_digits import digits, epoch_batches, mlp

QUICK_STEPS = 25
MUON_BESIDE_ADAMW = "muon + adamw"
FAMILIES = {
    "torch.optim's classics": (
        "sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta",
    ),
    "the rest of torch.optim, and the lecture's general form": (
        "adafactor", MUON_BESIDE_ADAMW, "rprop", "asgd", "sparse_adam", "custom",
    ),
    "optax's classics, and Lion": (
        "lion", "yogi", "lamb", "lars", "adabelief", "novograd", "adan",
    ),
    "learning-rate-free": (
        "schedule_free_adamw", "schedule_free_sgd", "prodigy",
        "dadapt_adam", "dadapt_sgd", "dadapt_adagrad", "dog", "ldog",
    ),
}  # fmt: skip
"""The figure's panels; a type not listed here goes to the last one."""


def optimizer_types(client: Client) -> list[str]:
    """The optimizer types the server accepts at creation, from its OpenAPI document."""
    document = client.request("GET", "/openapi.json").json()
    body = document["paths"]["/v1/sessions"]["post"]["requestBody"]["content"]
    schemas = document["components"]["schemas"]
    create = _resolve(body["application/json"]["schema"], schemas)
    optimizer = _resolve(create["properties"]["optimizer"], schemas)
    if "discriminator" in optimizer and "mapping" in optimizer["discriminator"]:
        return sorted(optimizer["discriminator"]["mapping"])
    types = set()
    for choice in optimizer.get("oneOf", optimizer.get("anyOf", [])):
        field = _resolve(choice, schemas)["properties"]["type"]
        types.update([field["const"]] if "const" in field else field.get("enum", []))
    return sorted(types)


def _resolve(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def run_settings(kind: str) -> tuple[str, dict[str, Any], list[dict[str, Any]] | None]:
    """(label, the session's optimizer, its groups) for a type at its defaults."""
    if kind == "muon":
        return (
            MUON_BESIDE_ADAMW,
            {"type": "adamw"},
            [{"match": ["*.weight"], "optimizer": {"type": "muon"}}],
        )
    return kind, {"type": kind}, None


def train(
    client: Client,
    label: str,
    optimizer: Mapping[str, Any],
    groups: Sequence[Mapping[str, Any]] | None,
    batches: Sequence[torch.Tensor],
    data: tuple[torch.Tensor, ...],
    seed: int,
) -> dict[str, Any]:
    """One run of the MLP from `mlp(seed)` over `batches`, every step through a session of its
    own (deleted afterwards): the loss of every step, the test accuracy of the weights to
    evaluate, the rate the last step used, and the time; or the error that stopped it."""
    train_x, test_x, train_y, test_y = data
    model = mlp(seed)
    losses: list[float] = []
    started = time.perf_counter()
    outcome: dict[str, Any] = {"label": label, "optimizer": dict(optimizer), "groups": groups}
    try:
        remote = RemoteOptimizer(
            model.named_parameters(),
            client=client,
            optimizer=optimizer,
            groups=groups,
            name=f"digits-{label}",
        )
    except ApiError as error:
        return {**outcome, "error": str(error), "losses": losses}
    try:
        for batch in batches:

            def closure(batch: torch.Tensor = batch) -> torch.Tensor:
                remote.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
                loss.backward()
                return loss

            losses.append(remote.step(closure).item())
        weights = remote.session.params(for_eval=True)
        last_lr = remote.session.last_step.lr if remote.session.last_step else None
    except ApiError as error:  # e.g. a type whose defaults diverge here: said, not hidden
        return {**outcome, "error": str(error), "losses": losses}
    finally:
        remote.session.delete()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            tensor.copy_(torch.from_numpy(np.array(weights[name], copy=True)))
        accuracy = (model(test_x).argmax(dim=1) == test_y).double().mean().item()
    return {
        **outcome,
        "losses": losses,
        "test_accuracy": accuracy,
        "last_lr": last_lr,
        "seconds": time.perf_counter() - started,
    }


def rate_text(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:.3g}"


def final_loss(losses: Sequence[float], window: int) -> float:
    """The mean training loss over the last `window` steps (one mini-batch is noisy)."""
    return float(np.mean(losses[-window:])) if losses else float("nan")


def smoothed(losses: Sequence[float], window: int) -> np.ndarray:
    """The running mean of the loss over `window` steps, from the first step on."""
    values = np.asarray(losses, dtype=np.float64)
    sums = np.cumsum(values)
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    shifted = np.concatenate([np.zeros(window), sums])[: len(values)]
    return (sums - shifted) / counts


def draw(runs: Mapping[str, dict[str, Any]], window: int, title: str, output: Path) -> None:
    """One panel per family: the training loss (running mean) against the step, log scale."""
    figure, axes = plt.subplots(2, 2, figsize=(15, 10), sharex=True, sharey=True)
    listed = {label for labels in FAMILIES.values() for label in labels}
    panels = [(family, list(labels)) for family, labels in FAMILIES.items()]
    panels[-1][1].extend(label for label in runs if label not in listed)
    for axis, (family, labels) in zip(axes.flat, panels, strict=True):
        colours = plt.cm.tab10(np.linspace(0, 1, 10))
        for index, label in enumerate(label for label in labels if label in runs):
            losses = runs[label]["losses"]
            if not losses:
                continue
            failed = " (stopped)" if "error" in runs[label] else ""
            axis.plot(
                np.arange(1, len(losses) + 1),
                smoothed(losses, window),
                color=colours[index % 10],
                linewidth=1.4,
                label=f"{label}{failed}",
            )
        axis.set_yscale("log")
        axis.set_title(family, fontsize=11)
        axis.grid(True, which="both", alpha=0.25)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8, ncol=2, loc="upper right")
    for axis in axes[1]:
        axis.set_xlabel("step")
    for axis in axes[:, 0]:
        axis.set_ylabel(f"training loss (mean of the last {window} steps)")
    figure.suptitle(title, fontsize=13)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)


def table(runs: Mapping[str, dict[str, Any]], window: int) -> str:
    """The runs as a Markdown table, best test accuracy first; runs that stopped last."""
    lines = [
        f"| optimizer (defaults) | test accuracy | training loss, last {window} steps "
        "| last step's lr | wall seconds (noisy: a loaded machine) |",
        "|---|---:|---:|---:|---:|",
    ]
    order = sorted(runs.values(), key=lambda run: -run.get("test_accuracy", -1.0))
    for run in order:
        if "error" in run:
            reason = run["error"].splitlines()[0][:90]
            lines.append(f"| {run['label']} | stopped after {len(run['losses'])} steps: {reason} "
                         "| | | |")  # fmt: skip
            continue
        lines.append(
            f"| {run['label']} | {run['test_accuracy']:.4f} "
            f"| {final_loss(run['losses'], window):.4f} | {rate_text(run['last_lr'])} "
            f"| {run['seconds']:.1f} |"
        )
    return "\n".join(lines)


def page(
    runs: Mapping[str, dict[str, Any]], settings: Mapping[str, Any], window: int, figure: str
) -> str:
    """The docs page: what ran, the table, the figure, and what they show."""
    finished = [run for run in runs.values() if "error" not in run]
    best = max(finished, key=lambda run: run["test_accuracy"]) if finished else None
    poor = [
        f"{run['label']} (lr {rate_text(run['last_lr'])})"
        for run in sorted(finished, key=lambda run: run["label"])
        if run["test_accuracy"] < 0.5
    ]
    stopped = sorted(run["label"] for run in runs.values() if "error" in run)
    facts = []
    if best is not None:
        facts.append(f"Best at its defaults: **{best['label']}** ({best['test_accuracy']:.4f}).")
    if poor:
        facts.append(
            f"Below 50 % after {settings['steps']} steps at their defaults: {', '.join(poor)} "
            "— the step size of the last step in brackets: defaults made for other problems "
            "that move too little (or too much) for this one in this budget."
        )
    if stopped:
        facts.append(f"Stopped by an error: {', '.join(stopped)}.")
    reading = "\n\n".join(facts)
    return f"""# Every optimizer on the digits MLP, at its defaults

`examples/compare_optimizers.py` trains the digits MLP of `examples/train_digits.py` (64 → 64 →
10, ReLU, cross-entropy; scikit-learn's 1797 digits split 75/25) through optaas once per
optimizer type the server offers, each at its **default settings** — no tuning at all — from
the same initial weights over the same mini-batches. Muon runs beside AdamW (Muon for the
weight matrices, AdamW for the biases: a group with its own optimizer). Test accuracy is taken
on the weights to evaluate (`GET …/params?for=eval`: schedule-free's x, ASGD's average).

This run: {settings["epochs"]} epoch(s), {settings["steps"]} steps of batch
{settings["batch_size"]}, seed {settings["seed"]}, float32 — **a short run**, kept short because
it was made on a shared, loaded machine (load average {settings["load"]}); defaults that start
slowly would look better over more epochs. Regenerate this page with
`python examples/compare_optimizers.py --epochs N` against a running server.

{reading}

{table(runs, window)}

![training loss against the step, one panel per family]({figure})

"Defaults" are each reference's own (torch.optim's, optax's, the authors' packages'), which were
chosen for other problems: this table ranks how well each default happens to fit a small MLP
at this budget, not the optimizers. For what tuning one rate costs against the
learning-rate-free family, see [tuning_cost.md](tuning_cost.md).
"""


def training_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options every comparison run takes: the server, the data's epochs, batch size and
    seed, where the page goes, and `--quick` for CI."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the optaas server")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps (for CI)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("docs"))
    parser.add_argument("--data", type=Path, help="also write every run's numbers as JSON here")
    return parser


def training_plan(args: argparse.Namespace) -> tuple[Any, list[Any], int]:
    """The digits data, the batches every run sees in the same order (the first QUICK_STEPS
    with `--quick`), and the window the losses are smoothed over (a tenth of the run, ≤ 50)."""
    data = digits(args.seed)
    batches = epoch_batches(len(data[0]), args.epochs, args.batch_size, args.seed)
    if args.quick:
        batches = batches[:QUICK_STEPS]
    return data, batches, max(1, min(len(batches) // 10, 50))


def main(argv: list[str] | None = None) -> None:
    parser = training_arguments(__doc__)
    parser.add_argument("--types", help="comma-separated types (default: every type offered)")
    args = parser.parse_args(argv)
    data, batches, window = training_plan(args)
    runs: dict[str, dict[str, Any]] = {}
    with Client(args.url) as client:
        kinds = args.types.split(",") if args.types else optimizer_types(client)
        for kind in kinds:
            run = train(client, *run_settings(kind), batches, data, args.seed)
            runs[run["label"]] = run
            shown = (
                f"stopped: {run['error'].splitlines()[0]}"
                if "error" in run
                else f"test accuracy {run['test_accuracy']:.4f}   "
                f"loss {final_loss(run['losses'], window):.4f}   {run['seconds']:.1f} s"
            )
            print(f"{run['label']:22s} {shown}", flush=True)

    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    settings = {
        "epochs": "a part of 1" if args.quick else args.epochs,
        "steps": len(batches),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "load": load,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    figure = args.output_dir / "compare_optimizers.png"
    draw(
        runs,
        window,
        f"The digits MLP through optaas, every optimizer at its defaults "
        f"({len(batches)} steps, batch {args.batch_size})",
        figure,
    )
    (args.output_dir / "compare_optimizers.md").write_text(
        page(runs, settings, window, figure.name)
    )
    if args.data:
        args.data.write_text(json.dumps({"settings": settings, "runs": runs}) + "\n")
    print(f"\n{table(runs, window)}\n\npage: {args.output_dir / 'compare_optimizers.md'}")


if __name__ == "__main__":
    main()
