"""The lecture's figure, every run through optaas: five optimizers on an elongated quadratic.

    E(x, y) = ½·(100·x² + y²)      x the steep direction, y the flat one; minimum at (0, 0)

from (1, 1). Gradient descent with η = 2/100 — as large as the steep direction allows — flips x
from +1 to −1 forever while y creeps in; Adagrad (σ the root mean square of every past gradient,
the lecture's form) reaches the minimum at once, but as its σ shrinks its steps grow until they
burst out again; the decay η_t = η/√(t+1) tames the bursts; RMSProp and Adam for comparison.

The lecture asks how to set η automatically; the figure's second row is the modern answer: the
learning-rate-free types at their defaults, no η chosen for this surface — Prodigy and
D-Adaptation estimate the step size from the distance travelled, DoG takes distance over
gradients, schedule-free AdamW needs no schedule — each posted the same number of steps, with
the step size each chose and the point where it lands (the weights to evaluate: schedule-free's
x, θ for the others).

Run a server (`optaas serve`), then:

    python examples/error_surface.py [--url http://127.0.0.1:8000] [--steps 300 | --quick]
        [--output error_surface.png] [--data trajectories.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from optaas_client import Client

STEEP, FLAT = 100.0, 1.0  # the surface of tests/optim/test_lecture.py
START = (1.0, 1.0)
QUICK_STEPS = 120  # enough for Adagrad's first burst (near step 60)

RUNS: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("gradient descent, η = 0.02", {"type": "sgd", "lr": 2.0 / STEEP}, None),
    ("Adagrad (lecture's σ), η = 0.5", {"type": "adagrad", "lr": 0.5, "accumulator": "mean"}, None),
    (
        "Adagrad, η_t = 0.5/√(t+1)",
        {"type": "adagrad", "lr": 0.5, "accumulator": "mean"},
        {"type": "inverse_sqrt"},
    ),
    (
        "RMSProp (σ₀ = |g₀|), η = 0.01",
        {"type": "rmsprop", "lr": 0.01, "alpha": 0.9, "init": "first_grad"},
        None,
    ),
    ("Adam, η = 0.05", {"type": "adam", "lr": 0.05}, None),
]
COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
LEARNING_RATE_FREE: list[tuple[str, dict[str, Any]]] = [
    ("Prodigy", {"type": "prodigy"}),
    ("D-Adaptation Adam", {"type": "dadapt_adam"}),
    ("DoG", {"type": "dog"}),
    ("schedule-free AdamW", {"type": "schedule_free_adamw"}),
]
"""The second row: each at its defaults — nothing chosen for this surface."""
LEARNING_RATE_FREE_COLOURS = ["#e377c2", "#8c564b", "#17becf", "#bcbd22"]


def error(theta: np.ndarray) -> float:
    return 0.5 * (STEEP * theta[0] ** 2 + FLAT * theta[1] ** 2)


def gradient(theta: np.ndarray) -> np.ndarray:
    return np.array([STEEP, FLAT]) * theta


def descend(
    client: Client,
    optimizer: dict[str, Any],
    schedule: dict[str, Any] | None,
    steps: int,
    *,
    landing: bool = False,
) -> dict[str, list]:
    """θ_0 … θ_steps on E, each step posted to a session of its own (deleted afterwards), the
    gradient's norm and the step's `lr`; with `landing`, also the weights to evaluate after the
    last step (where the run lands)."""
    session = client.create_session(
        np.array(START), optimizer=optimizer, schedule=schedule, name="error-surface"
    )
    theta = np.array(START)
    path, grad_norms, rates = [theta.tolist()], [], []
    try:
        for _ in range(steps):
            grad = gradient(theta)
            grad_norms.append(float(np.linalg.norm(grad)))
            theta = session.step(grad, loss=error(theta))
            rates.append(session.last_step.lr)
            path.append(theta.tolist())
        run = {"path": path, "grad_norms": grad_norms, "lr": rates}
        if landing:  # the weights to evaluate: schedule-free's x, θ for the others
            run["landed"] = np.asarray(session.params(for_eval=True)).tolist()
    finally:
        session.delete()
    return run


SPAN = 1.6


def contours(axes: plt.Axes) -> None:
    """The error surface's level sets and its minimum."""
    grid = np.linspace(-SPAN, SPAN, 400)
    xs, ys = np.meshgrid(grid, grid)
    axes.contour(
        xs,
        ys,
        0.5 * (STEEP * xs**2 + FLAT * ys**2),
        levels=np.geomspace(0.01, 130, 14),
        colors="#bbbbbb",
        linewidths=0.7,
    )
    axes.plot(0, 0, marker="*", color="black", markersize=12, zorder=5)


def draw(runs: dict[str, dict[str, Any]], free: dict[str, dict[str, Any]], output: Path) -> None:
    """Top row: the lecture's five runs. Bottom row: the learning-rate-free types."""
    figure, axes = plt.subplots(
        2, 3, figsize=(16, 10.6), gridspec_kw={"width_ratios": [1.15, 1.2, 1]}
    )
    (surface, distance, steep), bottom = axes
    figure.suptitle(
        "Optimizers on E(x, y) = ½(100x² + y²) from (1, 1), every step posted to optaas",
        fontsize=13,
    )
    contours(surface)
    for index, ((label, run), colour) in enumerate(zip(runs.items(), COLOURS, strict=True)):
        path = np.array(run["path"])
        oscillating = index == 0  # GD's zig-zag would hide the others
        surface.plot(
            path[:, 0],
            path[:, 1],
            color=colour,
            linewidth=0.6 if oscillating else 1.4,
            marker=".",
            markersize=2 if oscillating else 3,
            alpha=0.45 if oscillating else 0.9,
            label=label,
            zorder=2 if oscillating else 3,
        )
        norms = np.maximum(np.linalg.norm(path, axis=1), 1e-30)
        distance.semilogy(norms, color=colour, linewidth=1.4, label=label)
        steep.plot(path[:40, 0], color=colour, linewidth=1.3, marker="o", markersize=3)
    annotate_burst(distance, np.array(runs[RUNS[1][0]]["path"]))
    surface.set(
        xlim=(-SPAN, SPAN),
        ylim=(-SPAN, SPAN),
        xlabel="x (steep)",
        ylabel="y (flat)",
        title="Trajectories on the error surface",
        aspect="equal",
    )
    surface.legend(loc="lower left", fontsize=7.5, framealpha=0.9)
    distance.set(
        xlabel="step t",
        ylabel="‖θ_t‖ (distance to the minimum)",
        title="GD stuck · Adagrad's bursts · the decay tames them",
        ylim=(1e-14, 1e3),
    )
    distance.grid(True, which="major", alpha=0.3)
    steep.set(xlabel="step t", ylabel="x_t", title="The steep direction, first 40 steps")
    steep.axhline(0, color="black", linewidth=0.6)
    steep.grid(True, alpha=0.3)
    draw_learning_rate_free(free, *bottom)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)


def draw_learning_rate_free(
    free: dict[str, dict[str, Any]], surface: plt.Axes, distance: plt.Axes, rates: plt.Axes
) -> None:
    """Their trajectories and where they land, their distance to the minimum, and the step
    size each chose (the `lr` each step answered)."""
    contours(surface)
    for (label, run), colour in zip(free.items(), LEARNING_RATE_FREE_COLOURS, strict=True):
        path = np.array(run["path"])
        surface.plot(
            path[:, 0], path[:, 1], color=colour, linewidth=1.4, marker=".", markersize=3,
            label=label, zorder=3,
        )  # fmt: skip
        surface.plot(*run["landed"], marker="X", color=colour, markersize=10, zorder=6)
        norms = np.maximum(np.linalg.norm(path, axis=1), 1e-30)
        distance.semilogy(norms, color=colour, linewidth=1.4, label=label)
        rates.semilogy(
            np.arange(len(run["lr"])), np.maximum(run["lr"], 1e-30), color=colour, linewidth=1.4
        )
    surface.set(
        xlim=(-SPAN, SPAN),
        ylim=(-SPAN, SPAN),
        xlabel="x (steep)",
        ylabel="y (flat)",
        title="No η chosen: the learning-rate-free types (X: where each lands)",
        aspect="equal",
    )
    surface.legend(loc="lower left", fontsize=7.5, framealpha=0.9)
    distance.set(
        xlabel="step t",
        ylabel="‖θ_t‖ (distance to the minimum)",
        title="Each at its defaults, the same number of steps",
        ylim=(1e-14, 1e3),
    )
    distance.grid(True, which="major", alpha=0.3)
    rates.set(xlabel="step t", ylabel="step size chosen (the answer's lr)", title="The η they set")
    rates.grid(True, which="major", alpha=0.3)


def annotate_burst(axes: plt.Axes, path: np.ndarray) -> None:
    """Point at Adagrad's first burst: the largest distance after it first came near."""
    norms = np.linalg.norm(path, axis=1)
    arrival = int(np.argmax(norms < 0.05))
    burst = arrival + int(np.argmax(norms[arrival:]))
    axes.annotate(
        "Adagrad bursts out again",
        xy=(burst, norms[burst]),
        xytext=(burst + 15, 60),
        arrowprops={"arrowstyle": "->", "color": COLOURS[1]},
        color=COLOURS[1],
        fontsize=9,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the optaas server")
    parser.add_argument("--steps", type=int, default=300, help="steps per optimizer")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps (for CI)")
    parser.add_argument("--output", type=Path, default=Path("error_surface.png"))
    parser.add_argument("--data", type=Path, help="also write the trajectories as JSON here")
    args = parser.parse_args(argv)
    steps = QUICK_STEPS if args.quick else args.steps

    with Client(args.url) as client:
        runs = {}
        for label, optimizer, schedule in RUNS:
            runs[label] = {
                "optimizer": optimizer,
                "schedule": schedule,
                **descend(client, optimizer, schedule, steps),
            }
            final = np.linalg.norm(runs[label]["path"][-1])
            print(f"{label:34s} ‖θ_{steps}‖ = {final:.3g}")
        free = {}
        for label, optimizer in LEARNING_RATE_FREE:
            free[label] = {
                "optimizer": optimizer,
                **descend(client, optimizer, None, steps, landing=True),
            }
            landed = free[label]["landed"]
            print(
                f"{label:34s} lands at ({landed[0]:.3g}, {landed[1]:.3g}), "
                f"‖·‖ = {np.linalg.norm(landed):.3g}, last step size {free[label]['lr'][-1]:.3g}"
            )
    draw(runs, free, args.output)
    print(f"figure: {args.output}")
    if args.data:
        args.data.write_text(json.dumps({"steps": steps, "runs": runs, "learning_rate_free": free}))
        print(f"trajectories: {args.data}")


if __name__ == "__main__":
    main()
