"""What a learning rate costs: Adam swept over a grid of seven rates against one run each of
Prodigy, schedule-free AdamW and DoG at their defaults, on the digits MLP of `train_digits.py`.

Finding Adam's rate takes a run per candidate — seven runs here, seven times the steps — and
only then is the best known; the learning-rate-free types take one run. Every run starts from
the same weights and sees the same mini-batches; every step goes through optaas. The test
accuracy is that of the weights to evaluate (schedule-free's x).

Writes a page (a table and a figure) and the numbers:

    python examples/tuning_cost.py [--url http://127.0.0.1:8000] [--epochs 5 | --quick]
        [--output-dir docs] [--data runs.json]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from compare_optimizers import (
    final_loss,
    rate_text,
    smoothed,
    train,
    training_arguments,
    training_plan,
)
from optaas_client import Client

ADAM_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""Adam's grid: seven rates, half a decade apart, around torch's default 1e-3."""
LEARNING_RATE_FREE = ("prodigy", "schedule_free_adamw", "dog")
COLOURS = {"prodigy": "#d62728", "schedule_free_adamw": "#2ca02c", "dog": "#9467bd"}


def adam_label(rate: float) -> str:
    return f"adam, lr={rate:g}"


def sweep(
    client: Client, batches: Sequence[Any], data: tuple[Any, ...], seed: int
) -> dict[str, dict[str, Any]]:
    """Adam at every rate of the grid, then each learning-rate-free type at its defaults."""
    runs = {}
    plans = [(adam_label(rate), {"type": "adam", "lr": rate}) for rate in ADAM_RATES]
    plans += [(kind, {"type": kind}) for kind in LEARNING_RATE_FREE]
    for label, optimizer in plans:
        run = train(client, label, optimizer, None, batches, data, seed)
        runs[label] = run
        shown = (
            f"stopped: {run['error'].splitlines()[0]}"
            if "error" in run
            else f"test accuracy {run['test_accuracy']:.4f}   last lr {rate_text(run['last_lr'])}"
        )
        print(f"{label:22s} {shown}", flush=True)
    return runs


def accuracy(run: Mapping[str, Any]) -> float:
    """A run's test accuracy; a run that stopped counts as 0."""
    return float(run.get("test_accuracy", 0.0))


def summary(runs: Mapping[str, dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    """Per strategy: the accuracy it ends with and the steps it spent getting there — the
    best of Adam's grid costs every run of the grid; each learning-rate-free type, one run."""
    adam = [runs[adam_label(rate)] for rate in ADAM_RATES]
    best = max(adam, key=accuracy)
    rows = [
        {
            "strategy": f"Adam, best of {len(ADAM_RATES)} rates ({best['label']})",
            "test_accuracy": accuracy(best),
            "steps": steps * len(ADAM_RATES),
        },
        {
            "strategy": "Adam at torch's default lr=0.001, untuned",
            "test_accuracy": accuracy(runs[adam_label(1e-3)]),
            "steps": steps,
        },
    ]
    rows += [
        {
            "strategy": f"{kind} at its defaults",
            "test_accuracy": accuracy(runs[kind]),
            "steps": steps,
        }
        for kind in LEARNING_RATE_FREE
    ]
    return rows


def draw(runs: Mapping[str, dict[str, Any]], rows: Sequence[dict[str, Any]], output: Path) -> None:
    """Left: Adam's accuracy against its rate, the learning-rate-free runs as lines across it.
    Right: each strategy's accuracy against the steps it spent."""
    figure, (by_rate, by_cost) = plt.subplots(1, 2, figsize=(14, 5.5))
    rates = np.array(ADAM_RATES)
    adam = [accuracy(runs[adam_label(rate)]) for rate in ADAM_RATES]
    by_rate.semilogx(rates, adam, marker="o", color="#1f77b4", linewidth=1.6, label="Adam")
    for kind in LEARNING_RATE_FREE:
        by_rate.axhline(
            accuracy(runs[kind]),
            color=COLOURS[kind],
            linestyle="--",
            linewidth=1.4,
            label=f"{kind} at its defaults",
        )
    by_rate.set(
        xlabel="Adam's learning rate",
        ylabel="test accuracy",
        title="Adam needs its rate found; the others run at their defaults",
        ylim=(0, 1.02),
    )
    by_rate.grid(True, which="both", alpha=0.3)
    by_rate.legend(fontsize=9, loc="lower center")

    colours = ["#1f77b4", "#aec7e8"] + [COLOURS[kind] for kind in LEARNING_RATE_FREE]
    positions = np.arange(len(rows))[::-1]
    by_cost.barh(positions, [row["steps"] for row in rows], color=colours, height=0.6)
    for position, row in zip(positions, rows, strict=True):
        by_cost.annotate(
            f"accuracy {row['test_accuracy']:.3f}",
            (row["steps"], position),
            textcoords="offset points",
            xytext=(6, -4),
            fontsize=9,
        )
    by_cost.set_yticks(positions, [row["strategy"] for row in rows], fontsize=8.5)
    by_cost.set(
        xlabel="steps spent (every run it took)",
        title="What each strategy spent, and the accuracy it reached",
        xlim=(0, rows[0]["steps"] * 1.35),
    )
    by_cost.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)


def tables(runs: Mapping[str, dict[str, Any]], rows: Sequence[dict[str, Any]], window: int) -> str:
    lines = ["| strategy | test accuracy | steps spent |", "|---|---:|---:|"]
    lines += [
        f"| {row['strategy']} | {row['test_accuracy']:.4f} | {row['steps']} |" for row in rows
    ]
    lines += [
        "",
        f"| run | test accuracy | training loss, last {window} steps | last step's lr |",
        "|---|---:|---:|---:|",
    ]
    for run in runs.values():
        if "error" in run:
            lines.append(f"| {run['label']} | stopped: {run['error'].splitlines()[0][:80]} | | |")
            continue
        lines.append(
            f"| {run['label']} | {run['test_accuracy']:.4f} "
            f"| {final_loss(run['losses'], window):.4f} | {rate_text(run['last_lr'])} |"
        )
    return "\n".join(lines)


def reading(rows: Sequence[dict[str, Any]]) -> str:
    """What the numbers say, in the run's own terms, where a tuned Adam wins included."""
    tuned, default, *free = rows
    best_free = max(free, key=lambda row: row["test_accuracy"])
    gap = tuned["test_accuracy"] - best_free["test_accuracy"]
    if gap > 0.005:
        verdict = (
            f"A tuned Adam still wins here, by {gap:.4f} over the best learning-rate-free run "
            f"({best_free['strategy']}) — after spending {len(ADAM_RATES)}× the steps to find "
            "its rate."
        )
    elif gap < -0.005:
        verdict = (
            f"{best_free['strategy']} beats even the best of Adam's grid, by {-gap:.4f}, in "
            f"1/{len(ADAM_RATES)} of the steps."
        )
    else:
        verdict = (
            f"{best_free['strategy']} matches the best of Adam's grid (within {abs(gap):.4f}) "
            f"in 1/{len(ADAM_RATES)} of the steps."
        )
    behind = [row["strategy"] for row in free if row["test_accuracy"] < default["test_accuracy"]]
    if behind:
        verdict += f" Behind even the untuned Adam: {', '.join(behind)}."
    return verdict


def late_starts(runs: Mapping[str, dict[str, Any]], window: int) -> str:
    """When each learning-rate-free run's training loss first fell below 1 (its running mean
    over `window` steps): a type that starts from a tiny step (DoG's first movement is 1e-6
    of θ₀'s size) spends its first steps finding its scale, which a short run makes look worse
    than it is."""
    facts = []
    for kind in LEARNING_RATE_FREE:
        losses = runs[kind].get("losses") or []
        below = np.flatnonzero(smoothed(losses, window) < 1.0) if losses else []
        when = f"step {int(below[0]) + 1}" if len(below) else f"not within {len(losses)} steps"
        facts.append(f"{kind}: {when}")
    return "Training loss first below 1 (running mean): " + "; ".join(facts) + "."


def page(
    runs: Mapping[str, dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    settings: Mapping[str, Any],
    window: int,
    figure: str,
) -> str:
    grid = ", ".join(f"{rate:g}" for rate in ADAM_RATES)
    return f"""# What tuning the learning rate costs

`examples/tuning_cost.py` trains the digits MLP of `examples/train_digits.py` through optaas
with Adam at each rate of a grid of seven ({grid}) — the usual way to find a rate: a run per
candidate, keep the best — and once each with the learning-rate-free types at their defaults:
**Prodigy** (estimates the step size d from the distance travelled), **schedule-free AdamW**
(no schedule; its default lr 0.0025 is kept, and its x is what is evaluated) and **DoG**
(distance over gradients, no learning rate at all). Every run starts from the same weights and
sees the same mini-batches.

This run: {settings["epochs"]} epoch(s), {settings["steps"]} steps per run of batch
{settings["batch_size"]}, seed {settings["seed"]}, float32, one seed — **a short run**, kept short
because it was made on a shared, loaded machine (load average {settings["load"]}). One seed and
few steps make the differences noisy; the ranking near the top can change with more epochs.
Regenerate this page with `python examples/tuning_cost.py --epochs N` against a running server.

{reading(rows)} {late_starts(runs, window)}

{tables(runs, rows, window)}

![Adam's accuracy against its rate, and each strategy's accuracy against its steps]({figure})

The honest picture: the grid's best Adam is a rate chosen *after* seeing every run's test
score, which the learning-rate-free runs were not allowed. What they buy is the sweep's cost
(here {len(ADAM_RATES)}× the steps) and the risk of a grid that misses the good rates, not
necessarily a better final model. See also [compare_optimizers.md](compare_optimizers.md).
"""


def main(argv: list[str] | None = None) -> None:
    args = training_arguments(__doc__).parse_args(argv)
    data, batches, window = training_plan(args)
    with Client(args.url) as client:
        runs = sweep(client, batches, data, args.seed)
    rows = summary(runs, len(batches))

    settings = {
        "epochs": "a part of 1" if args.quick else args.epochs,
        "steps": len(batches),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "load": " ".join(f"{value:.1f}" for value in os.getloadavg()),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    figure = args.output_dir / "tuning_cost.png"
    draw(runs, rows, figure)
    (args.output_dir / "tuning_cost.md").write_text(page(runs, rows, settings, window, figure.name))
    if args.data:
        args.data.write_text(json.dumps({"settings": settings, "runs": runs, "rows": rows}) + "\n")
    print(f"\n{tables(runs, rows, window)}\n\n{reading(rows)} {late_starts(runs, window)}")
    print(f"page: {args.output_dir / 'tuning_cost.md'}")


if __name__ == "__main__":
    main()
