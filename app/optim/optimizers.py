"""Every named optimizer as ONE `chain(...)` of blocks — the lecture's general form

    θ_{t+1} = θ_t − η_t / (σ_t + eps) · m_t

read left to right: pre-processing of g_t, then m_t (a momentum block), then σ_t (a σ-block
dividing by σ_t + eps), then −η_t (`scale_by_learning_rate`), then decoupled weight decay where
there is one (θ·(1 − η_t·λ)); the engine adds the result to θ.

The factories' signatures carry torch.optim 2.13's defaults (and the contract's names:
`betas` as a pair, `decoupled_weight_decay`, `accumulator`, `init`); `optimizer_defaults(type)`
reads them from here. A factory checks its values and raises `HyperParameterError` naming the
field. Its `lr` is the group's base rate: the engine turns it into η_t with the schedule and
hands η_t to `scale_by_learning_rate` through the step context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from app.optim import checks
from app.optim.base import (
    GradientTransformation,
    HyperParameterError,
    Spec,
    Transformation,
    chain,
)
from app.optim.learning_rate_free import LEARNING_RATE_FREE, SESSION_FIELDS
from app.optim.transforms import (
    add_coupled_weight_decay,
    add_decayed_weights,
    ema,
    lion_interpolation,
    nadam_momentum,
    negate,
    scale_by_bias_correction,
    scale_by_delta_rms,
    scale_by_inf_norm,
    scale_by_learning_rate,
    scale_by_rectified_rms,
    scale_by_rms,
    scale_by_rss,
    scale_by_sign,
    trace,
)

Block = GradientTransformation | None
Accumulator = Literal["sum", "mean"]
Init = Literal["zero", "first_grad"]


def sgd(
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """SGD: σ_t = 1, m_t torch's momentum buffer (momentum 0: the lecture's vanilla descent).

    θ ← θ − η_t·m_t,  m_t = μ·m_{t−1} + (1 − dampening)·g_t  (m_1 = g_1);
    nesterov: θ ← θ − η_t·(g_t + μ·m_t).
    """
    checks.non_negative("lr", lr)
    checks.non_negative("momentum", momentum)
    checks.fraction("dampening", dampening, closed=True)
    if checks.flag("nesterov", nesterov) and (momentum <= 0 or dampening != 0):
        raise HyperParameterError("nesterov", "needs momentum > 0 and dampening = 0")
    return chain(
        *_preprocessing(maximize, weight_decay),
        trace(momentum, dampening, nesterov) if momentum else None,
        scale_by_learning_rate(),
    )


def adagrad(
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    accumulator: Accumulator = "sum",
    maximize: bool = False,
) -> GradientTransformation:
    """Adagrad: m_t = g_t, σ_t = sqrt(Σ g²) (torch) or sqrt(Σ g² / t) (`accumulator: "mean"`,
    the lecture's form); θ ← θ − η_t/(1 + (t−1)·lr_decay) · g_t/(σ_t + eps)."""
    checks.non_negative("lr", lr)
    checks.non_negative("lr_decay", lr_decay)
    checks.non_negative("initial_accumulator_value", initial_accumulator_value)
    checks.non_negative("eps", eps)
    checks.choice("accumulator", accumulator, ("sum", "mean"))
    return chain(
        *_preprocessing(maximize, weight_decay),
        scale_by_rss(eps, accumulator, initial_accumulator_value),
        scale_by_learning_rate(lr_decay),
    )


def rmsprop(
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    init: Init = "zero",
    maximize: bool = False,
) -> GradientTransformation:
    """RMSprop: σ_t² = α·σ_{t−1}² + (1 − α)·g_t² (minus the squared mean of g if centered);
    with momentum, torch's order: σ first, then m_t = μ·m_{t−1} + g_t/(σ_t + eps).
    `init: "first_grad"` is the lecture's σ_1² = g_1²."""
    checks.non_negative("lr", lr)
    checks.fraction("alpha", alpha, closed=True)
    checks.non_negative("eps", eps)
    checks.non_negative("momentum", momentum)
    checks.flag("centered", centered)
    checks.choice("init", init, ("zero", "first_grad"))
    return chain(
        *_preprocessing(maximize, weight_decay),
        scale_by_rms(alpha, eps, init=init, centered=centered),
        trace(momentum) if momentum else None,
        scale_by_learning_rate(),
    )


def adam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """Adam, RMSprop plus momentum with bias correction — momentum first, then σ:

    m̂_t = EMA_β1(g)/(1 − β1^t),  σ_t = sqrt(EMA_β2(g²)) / sqrt(1 − β2^t)  (running max: amsgrad)
    θ ← θ − η_t · m̂_t/(σ_t + eps)  (− η_t·λ·θ when decoupled, else λ·θ is added to g)."""
    checks.non_negative("lr", lr)
    beta1, beta2 = checks.betas("betas", betas)
    checks.non_negative("eps", eps)
    checks.flag("amsgrad", amsgrad)
    decoupled = checks.flag("decoupled_weight_decay", decoupled_weight_decay)
    return chain(
        *_preprocessing(maximize, 0.0 if decoupled else weight_decay),
        ema(beta1),
        scale_by_bias_correction(beta1),
        scale_by_rms(beta2, eps, slot="exp_avg_sq", amsgrad=amsgrad, bias_correction=True),
        scale_by_learning_rate(),
        _decoupled_decay(weight_decay) if decoupled else None,
    )


def adamw(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay, θ ← θ·(1 − η_t·λ) − η_t·m̂_t/(σ_t + eps)."""
    return adam(lr, betas, eps, weight_decay, amsgrad, True, maximize)


def adamax(
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adamax: Adam with σ an exponentially weighted infinity norm (no eps added after it):

    σ_t = max(β2·σ_{t−1}, |g_t| + eps),  θ ← θ − η_t · EMA_β1(g)/(1 − β1^t) / σ_t."""
    checks.non_negative("lr", lr)
    beta1, beta2 = checks.betas("betas", betas)
    checks.non_negative("eps", eps)
    return chain(
        *_preprocessing(maximize, weight_decay),
        ema(beta1),
        scale_by_bias_correction(beta1),
        scale_by_inf_norm(beta2, eps),
        scale_by_learning_rate(),
    )


def nadam(
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """NAdam: Adam with Nesterov momentum and its warming schedule μ_t (see `nadam_momentum`);
    σ_t = sqrt(EMA_β2(g²)/(1 − β2^t)), θ ← θ − η_t · u_t/(σ_t + eps)."""
    checks.non_negative("lr", lr)
    beta1, beta2 = checks.betas("betas", betas)
    checks.non_negative("eps", eps)
    checks.non_negative("momentum_decay", momentum_decay)
    decoupled = checks.flag("decoupled_weight_decay", decoupled_weight_decay)
    return chain(
        *_preprocessing(maximize, 0.0 if decoupled else weight_decay),
        nadam_momentum(beta1, momentum_decay),
        scale_by_rms(beta2, eps, slot="exp_avg_sq", bias_correction=True),
        scale_by_learning_rate(),
        _decoupled_decay(weight_decay) if decoupled else None,
    )


def radam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """RAdam: Adam whose σ is switched on once tractable and rectified (`scale_by_rectified_rms`);
    until then θ ← θ − η_t · m̂_t (σ_t = 1)."""
    checks.non_negative("lr", lr)
    beta1, beta2 = checks.betas("betas", betas)
    checks.non_negative("eps", eps)
    decoupled = checks.flag("decoupled_weight_decay", decoupled_weight_decay)
    return chain(
        *_preprocessing(maximize, 0.0 if decoupled else weight_decay),
        ema(beta1),
        scale_by_bias_correction(beta1),
        scale_by_rectified_rms(beta2, eps),
        scale_by_learning_rate(),
        _decoupled_decay(weight_decay) if decoupled else None,
    )


def adadelta(
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adadelta: σ_t = sqrt(E[g²]_t + eps) / sqrt(E[Δ²]_{t−1} + eps), m_t = g_t, θ ← θ − η_t·Δ_t
    with Δ_t = g_t/σ_t (both averages with decay ρ)."""
    checks.non_negative("lr", lr)
    checks.fraction("rho", rho, closed=True)
    checks.non_negative("eps", eps)
    return chain(
        *_preprocessing(maximize, weight_decay),
        scale_by_rms(rho, eps, eps_inside_root=True),
        scale_by_delta_rms(rho, eps),
        scale_by_learning_rate(),
    )


def lion(
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Lion (Chen et al. 2023, optax's `lion`): σ_t = |c_t|, the sign of an interpolation,

    c_t = β1·m_{t−1} + (1 − β1)·g_t,   θ ← θ − η_t·(sign(c_t) + λ·θ),
    m_t = β2·m_{t−1} + (1 − β2)·g_t.   Weight decay is decoupled, as in the paper."""
    checks.non_negative("lr", lr)
    beta1, beta2 = checks.betas("betas", betas)
    return chain(
        *_preprocessing(maximize, 0.0),
        lion_interpolation(beta1, beta2),
        scale_by_sign(),
        scale_by_learning_rate(),
        _decoupled_decay(weight_decay),
    )


def custom(
    lr: float = 1e-3,
    momentum: Mapping[str, Any] | None = None,
    sigma: Mapping[str, Any] | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """The general form itself, θ ← θ − η_t/(σ_t + eps) · m_t, with m and σ both from the
    (pre-processed) gradient g_t:

    momentum {beta, dampening=0, bias_correction=false}: m_t = β·m_{t−1} + (1 − dampening)·g_t
        from m_0 = 0, divided by (1 − β^t) with bias_correction; null: m_t = g_t.
    sigma {kind, alpha, init="zero", bias_correction=false}: σ_t² = Σ g² ("sum"), Σ g²/t
        ("mean") or v_t = α·v_{t−1} + (1 − α)·g_t² ("ema", init "first_grad": v_1 = g_1²;
        bias_correction: σ_t² = v_t/(1 − α^t)); null: σ_t = 1 and eps is not added.

    So momentum {β1, dampening β1, bias_correction} + sigma {ema, β2, bias_correction} is Adam,
    sigma {ema, α} alone is RMSprop, momentum {μ} alone is SGD with momentum.
    """
    checks.non_negative("lr", lr)
    eps = checks.non_negative("eps", eps)
    momentum_blocks = (
        () if momentum is None else _call_nested(custom_momentum, momentum, "momentum")
    )
    sigma_block = None if sigma is None else _call_nested(custom_sigma, sigma, "sigma")(eps)
    return chain(
        *_preprocessing(maximize, weight_decay),
        *momentum_blocks,
        sigma_block,
        scale_by_learning_rate(),
    )


def custom_momentum(
    beta: float, dampening: float = 0.0, bias_correction: bool = False
) -> tuple[Block, Block]:
    """The blocks of `custom`'s `momentum` field."""
    beta = checks.fraction("beta", beta)
    dampening = checks.fraction("dampening", dampening, closed=True)
    debias = checks.flag("bias_correction", bias_correction)
    return (
        trace(beta, dampening, dampen_first=True),
        scale_by_bias_correction(beta) if debias else None,
    )


def custom_sigma(
    kind: Literal["sum", "mean", "ema"],
    alpha: float | None = None,
    init: Init = "zero",
    bias_correction: bool = False,
) -> Callable[[float], GradientTransformation]:
    """The σ-block of `custom`'s `sigma` field, waiting for `eps`."""
    checks.choice("kind", kind, ("sum", "mean", "ema"))
    checks.choice("init", init, ("zero", "first_grad"))
    debias = checks.flag("bias_correction", bias_correction)
    if kind != "ema":
        if alpha is not None:
            raise HyperParameterError("alpha", f"only for kind 'ema', not {kind!r}")
        if debias:
            raise HyperParameterError("bias_correction", f"only for kind 'ema', not {kind!r}")
        # A sum starts at zero whatever `init` says: its first term is g_1² already.
        accumulator: Accumulator = "mean" if kind == "mean" else "sum"
        return lambda eps: scale_by_rss(eps, accumulator)
    if alpha is None:
        raise HyperParameterError("alpha", "required for kind 'ema'")
    alpha = checks.fraction("alpha", alpha)
    return lambda eps: scale_by_rms(alpha, eps, init=init, bias_correction=debias)


OPTIMIZERS: dict[str, Callable[..., Transformation]] = {
    "sgd": sgd,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
    "adamax": adamax,
    "nadam": nadam,
    "radam": radam,
    "adadelta": adadelta,
    "lion": lion,
    "custom": custom,
}
"""type → factory; the factory's keyword parameters are the type's fields."""

OPTIMIZERS.update(LEARNING_RATE_FREE)

OPTIMIZER_TYPES = frozenset(OPTIMIZERS)


def optimizer_defaults(kind: str) -> dict[str, Any]:
    """Every field of an optimizer type with its default (`betas` as a list, as in JSON)."""
    return checks.defaults_of(OPTIMIZERS[kind])


def optimizer_fields(kind: str) -> frozenset[str]:
    """The fields an optimizer type accepts (its overrides in `groups` too)."""
    return frozenset(checks.fields_of(OPTIMIZERS[kind]))


def optimizer_group_fields(kind: str) -> frozenset[str]:
    """The fields a group may override: all of the type's, but for the fields a
    learning-rate-free type takes once for the whole session."""
    return optimizer_fields(kind) - SESSION_FIELDS.get(kind, frozenset())


def build_optimizer(spec: Spec, path: str = "optimizer") -> tuple[dict[str, Any], Transformation]:
    """`{"type": …, <fields>}` → (every field with defaults filled in, type included; the chain)."""
    kind, fields = checks.spec_type(spec, path, OPTIMIZERS)
    transform = checks.call_with_spec(OPTIMIZERS[kind], fields, path)
    return {"type": kind, **optimizer_defaults(kind), **fields}, transform


def _preprocessing(maximize: bool, weight_decay: float) -> tuple[Block, Block]:
    """The gradient's pre-processing, torch's order: negate for maximize, then add λ·θ."""
    checks.flag("maximize", maximize)
    checks.non_negative("weight_decay", weight_decay)
    return (
        negate() if maximize else None,
        add_coupled_weight_decay(weight_decay) if weight_decay else None,
    )


def _decoupled_decay(weight_decay: float) -> Block:
    """Decoupled decay λ·θ added to the update (none when λ = 0)."""
    return (
        add_decayed_weights(weight_decay)
        if checks.non_negative("weight_decay", weight_decay)
        else None
    )


def _call_nested(factory: Callable[..., Any], spec: Any, field: str) -> Any:
    """A nested spec (`custom`'s `momentum`, `sigma`) through its own factory."""
    return checks.call_with_spec(factory, checks.mapping(field, spec), field)
