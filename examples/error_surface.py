"""The lecture's figure, every run through optaas: five optimizers on an elongated quadratic.

    E(x, y) = ½·(100·x² + y²)      x the steep direction, y the flat one; minimum at (0, 0)

from (1, 1). Gradient descent with η = 2/100 — as large as the steep direction allows — flips x
from +1 to −1 forever while y creeps in; Adagrad (σ the root mean square of every past gradient,
the lecture's form) reaches the minimum at once, but as its σ shrinks its steps grow until they
burst out again; the decay η_t = η/√(t+1) tames the bursts; RMSProp and Adam for comparison.

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


def error(theta: np.ndarray) -> float:
    return 0.5 * (STEEP * theta[0] ** 2 + FLAT * theta[1] ** 2)


def gradient(theta: np.ndarray) -> np.ndarray:
    return np.array([STEEP, FLAT]) * theta


def descend(
    client: Client, optimizer: dict[str, Any], schedule: dict[str, Any] | None, steps: int
) -> dict[str, list]:
    """θ_0 … θ_steps on E, each step posted to a session of its own (deleted afterwards)."""
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
    finally:
        session.delete()
    return {"path": path, "grad_norms": grad_norms, "lr": rates}


def draw(runs: dict[str, dict[str, Any]], output: Path) -> None:
    figure, (surface, distance, steep) = plt.subplots(
        1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [1.15, 1.2, 1]}
    )
    figure.suptitle(
        "Five optimizers on E(x, y) = ½(100x² + y²) from (1, 1), every step posted to optaas",
        fontsize=13,
    )
    span = 1.6
    grid = np.linspace(-span, span, 400)
    xs, ys = np.meshgrid(grid, grid)
    surface.contour(
        xs,
        ys,
        0.5 * (STEEP * xs**2 + FLAT * ys**2),
        levels=np.geomspace(0.01, 130, 14),
        colors="#bbbbbb",
        linewidths=0.7,
    )
    surface.plot(0, 0, marker="*", color="black", markersize=12, zorder=5)
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
        xlim=(-span, span),
        ylim=(-span, span),
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
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)


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
    draw(runs, args.output)
    print(f"figure: {args.output}")
    if args.data:
        args.data.write_text(json.dumps({"steps": steps, "runs": runs}))
        print(f"trajectories: {args.data}")


if __name__ == "__main__":
    main()
