"""Drive the learning-rate-free family's reference packages and the core side by side."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dadaptation
import dog
import numpy as np
import prodigyopt
import schedulefree
import torch

from app.optim import Optimizer, optimizer_defaults
from tests.optim.reference import SHAPES, torch_default_dtype

REFERENCES = {
    "schedule_free_adamw": schedulefree.AdamWScheduleFree,
    "schedule_free_sgd": schedulefree.SGDScheduleFree,
    "prodigy": prodigyopt.Prodigy,
    "dadapt_adam": dadaptation.DAdaptAdam,
    "dadapt_sgd": dadaptation.DAdaptSGD,
    "dadapt_adagrad": dadaptation.DAdaptAdaGrad,
    "dog": dog.DoG,
    "ldog": dog.LDoG,
}
"""Every type of the family and its authors' class."""

LEFT_OUT = {"foreach", "log_every", "fsdp_in_use"}
"""Reference arguments the core leaves out: they switch implementations or logging, or serve
distributed training, and change no number."""

GROUP_ONLY = {"layer_scale"}
"""Fields that the reference takes only in param groups (its default lives in `defaults`)."""

SESSION_GLOBALS = {
    "prodigy": ("d", "d_max", "d_numerator", "k"),
    "dadapt_adam": ("d", "numerator_weighted", "k"),
    "dadapt_sgd": ("d", "numerator_weighted", "g0_norm"),
    "dadapt_adagrad": ("d", "gsq_weighted", "sksq_weighted", "skl1"),
}
"""The quantities each type keeps for the whole session, by the reference's names."""

GROUP_GLOBALS = {
    "schedule_free_adamw": ("k", "lr_max", "weight_sum"),
    "schedule_free_sgd": ("k", "lr_max", "weight_sum"),
    "dog": ("rbar", "G"),
    "ldog": ("rbar", "G"),
}
"""The quantities each type keeps per param group, by the reference's names."""

CORE_ONLY = {"maximize"}
"""Fields the references do not have; runs with them negate the reference's gradients."""


def reference_kwargs(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's fields as the reference's keyword arguments: pairs as tuples,
    `growth_rate` None as the reference's inf."""
    kwargs = {}
    for name, value in fields.items():
        if name in CORE_ONLY or name == "type":
            continue
        if name == "growth_rate" and value is None:
            value = math.inf
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    return kwargs


@dataclass
class NoisyQuadratic:
    """f(θ) = ½ Σ h·(θ − θ*)² with noisy gradients g_t = h·(θ_t − θ*) + ½·ξ_t: a problem with a
    solution at a distance of a few units, so that the family's estimates of that distance
    (d, DoG's rbar) settle rather than grow without end. Each run takes its gradients at its
    own θ_t; the noise ξ_t is the same for all."""

    seed: int
    dtype: type[np.floating]
    steps: int
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: dict(SHAPES))

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        shapes = self.shapes
        self.start = {n: rng.standard_normal(s).astype(self.dtype) for n, s in shapes.items()}
        self.solution = {n: 3 * rng.standard_normal(s) for n, s in shapes.items()}
        self.curvature = {n: rng.uniform(0.5, 2.0, s) for n, s in shapes.items()}
        self.noise = [
            {n: rng.standard_normal(s) for n, s in shapes.items()} for _ in range(self.steps)
        ]

    def gradients(self, theta: Mapping[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
        return {
            name: (
                self.curvature[name] * (theta[name] - self.solution[name])
                + 0.5 * self.noise[t][name]
            ).astype(self.dtype)
            for name in self.shapes
        }


@dataclass
class ReferenceRun:
    """A reference optimizer over torch copies of θ: steps, its weights to evaluate, and its
    param groups (where its global quantities live)."""

    kind: str
    fields: Mapping[str, Any]
    params: Mapping[str, np.ndarray]
    groups: Sequence[tuple[Sequence[str], Mapping[str, Any]]] = ()
    tensors: dict[str, torch.Tensor] = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.dtype = next(iter(self.params.values())).dtype
        self.tensors = {
            name: torch.tensor(value.copy(), requires_grad=True)
            for name, value in self.params.items()
        }
        merged = {**optimizer_defaults(self.kind), **self.fields}
        grouped = {name for names, _ in self.groups for name in names}
        base_group_only = {k: v for k, v in merged.items() if k in GROUP_ONLY}
        param_groups = [
            {
                "params": [t for n, t in self.tensors.items() if n not in grouped],
                **base_group_only,
            }
        ]
        param_groups += [
            {
                "params": [self.tensors[n] for n in names],
                **base_group_only,
                **reference_kwargs(overrides),
            }
            for names, overrides in self.groups
        ]
        labels = ["optimizer"] + [f"groups.{i}" for i in range(len(self.groups))]
        self.labels = [label for label, g in zip(labels, param_groups, strict=True) if g["params"]]
        kwargs = reference_kwargs({k: v for k, v in merged.items() if k not in GROUP_ONLY})
        with torch_default_dtype(self.dtype):
            self.optimizer = REFERENCES[self.kind](
                [g for g in param_groups if g["params"]], **kwargs
            )
        if hasattr(self.optimizer, "train"):
            self.optimizer.train()
        self.negate = bool(merged.get("maximize"))

    def step(self, grads: Mapping[str, np.ndarray | None]) -> float:
        """One step; a None (or missing) gradient is `grad is None`. Returns the step size the
        reference chose, as its own variables hold it (see `step_size`)."""
        for name, tensor in self.tensors.items():
            grad = grads.get(name)
            if grad is None:
                tensor.grad = None
            else:
                tensor.grad = torch.tensor(-grad if self.negate else grad.copy())
        before = dict(self.first_group)
        with torch_default_dtype(self.dtype):
            self.optimizer.step()
        return self.step_size(before)

    def step_size(self, before: Mapping[str, Any]) -> float:
        """The reference's step size of the step just taken: schedule-free's `scheduled_lr`,
        DoG's η (LDoG: its mean over the first group's elements), and the `dlr` that Prodigy's
        and D-Adaptation's log lines print, from d (and k) before the step."""
        group = self.first_group
        if self.kind.startswith("schedule_free"):
            return group["scheduled_lr"]
        if self.kind in ("dog", "ldog"):
            sizes = [p.numel() for p in group["params"]]
            etas = [float(eta) for eta in group["eta"]]
            return sum(n * eta for n, eta in zip(sizes, etas, strict=True)) / sum(sizes)
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        if self.kind == "dadapt_adagrad":
            lr = group["lr"]
        dlr = before["d"] * lr
        if self.kind == "dadapt_sgd":
            return dlr / group["g0_norm"]
        if before.get("use_bias_correction"):
            beta1, beta2 = before["betas"]
            k = before["k"]
            dlr *= ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
        return dlr

    def theta(self) -> dict[str, np.ndarray]:
        return {name: tensor.detach().numpy().copy() for name, tensor in self.tensors.items()}

    def eval_theta(self) -> dict[str, np.ndarray]:
        """The weights the reference evaluates at (its `eval()`), leaving it in train mode."""
        self.optimizer.eval()
        try:
            return self.theta()
        finally:
            self.optimizer.train()

    @property
    def first_group(self) -> dict[str, Any]:
        return self.optimizer.param_groups[0]

    def globals(self) -> dict[str, np.ndarray]:
        """The reference's global quantities under the core's names (`SESSION_GLOBALS` from
        its first param group, `GROUP_GLOBALS` from each group, `<group>.<quantity>`)."""
        found = {
            name: np.asarray(self.first_group[name]) for name in SESSION_GLOBALS.get(self.kind, ())
        }
        for label, group in zip(self.labels, self.optimizer.param_groups, strict=True):
            for name in GROUP_GLOBALS.get(self.kind, ()):
                value = group[name]
                found[f"{label}.{name}"] = (
                    value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
                )
        return found


@dataclass
class CoreRun:
    """The core over numpy copies of θ: the same steps through `Optimizer`."""

    config: Mapping[str, Any]
    params: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        self.optimizer = Optimizer(self.config, list(self.params))
        self.theta = {name: value.copy() for name, value in self.params.items()}
        self.state = self.optimizer.init(self.theta)
        self.results = []

    def step(self, grads: Mapping[str, np.ndarray | None]) -> None:
        present = {n: g.copy() for n, g in grads.items() if g is not None}
        partial = len(present) < len(self.theta)
        self.results.append(self.optimizer.step(self.theta, self.state, present, partial=partial))

    def eval_theta(self) -> dict[str, np.ndarray]:
        return self.optimizer.eval_params(self.theta, self.state)

    def restart(self) -> None:
        """What a server restart does: the state through its stored form (read-only bytes),
        and a new Optimizer."""
        stored = {
            k: np.frombuffer(v.tobytes(), v.dtype).reshape(v.shape)
            for k, v in self.state.to_arrays().items()
        }
        self.state = type(self.state).from_arrays(self.state.step, stored, self.state.schedule)
        self.theta = {name: value.copy() for name, value in self.theta.items()}
        self.optimizer = Optimizer(self.config, list(self.params))


def displacement_tolerance(dtype: np.dtype) -> float:
    """Relative agreement of θ − θ₀ with the references: the contract's 1e-7 in float64
    (measured: 1e-13 at worst); in float32 the references' sums over tensors, run in another
    order, move d by ~1e-7 a step, and the run feeds that back (measured: 1e-5 at worst,
    DAdaptAdam with groups; docs/design.md)."""
    return 1e-7 if dtype == np.float64 else 5e-5


def quantity_tolerance(dtype: np.dtype) -> float:
    """Relative agreement of the global quantities and the reported step sizes (Python floats
    in the references; measured in float64: 3e-15, in float32: 2.5e-5 for DAdaptAdam's
    `numerator_weighted`, a sum whose terms nearly cancel)."""
    return 1e-12 if dtype == np.float64 else 1e-4


def assert_displacement_close(
    ours: Mapping[str, np.ndarray],
    theirs: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    dtype: np.dtype,
) -> None:
    """θ − θ₀ agrees per tensor to the relative tolerance, with an absolute floor of the same
    size relative to the tensor's largest displacement (for entries that barely moved); a
    tensor the reference left where it was must not have moved at all."""
    rtol = displacement_tolerance(dtype)
    for name, value in theirs.items():
        assert ours[name].dtype == dtype, name
        expected = value.astype(np.float64) - start[name]
        got = ours[name].astype(np.float64) - start[name]
        if not expected.any():
            np.testing.assert_array_equal(ours[name], start[name], err_msg=name)
            continue
        np.testing.assert_allclose(
            got, expected, rtol=rtol, atol=rtol * np.abs(expected).max(), err_msg=name
        )
