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

The rest of torch.optim (Adafactor, Muon, Rprop, ASGD, SparseAdam) keeps torch's field names
and defaults; optax's classics (Yogi, LAMB, LARS, AdaBelief, NovoGrad, Adan) keep optax's
(`b1`, `b2`, `eps_root`, masks as booleans), with `learning_rate` as `lr`. Every type takes
`maximize`. The signatures are typed (`Literal` choices, `tuple` pairs, `X | None` options):
they are the one description of a type's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from app.optim import checks, optax_transforms, tensorwise
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
    add_shrinkage,
    average_iterates,
    ema,
    lion_interpolation,
    muon_momentum,
    nadam_momentum,
    negate,
    scale,
    scale_by_adam_step_size,
    scale_by_asgd_rate,
    scale_by_bias_correction,
    scale_by_delta_rms,
    scale_by_inf_norm,
    scale_by_learning_rate,
    scale_by_rectified_rms,
    scale_by_rms,
    scale_by_rprop,
    scale_by_rss,
    scale_by_sign,
    scale_by_sparse_adam,
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


# --------------------------------------------------------------------------------------------
# The rest of torch.optim 2.13
# --------------------------------------------------------------------------------------------


def adafactor(
    lr: float = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """Adafactor (torch's variant): σ from a factored second moment (row and column factors for
    tensors of 2+ dims), updates clipped to RMS ≤ d, a step relative to θ's scale:

    u_t = g_t / max(sqrt(V̂_t), eps1),  û_t = u_t / max(1, RMS(u_t)/d)
    θ ← θ·(1 − η_t·λ) − max(eps2, RMS(θ))·min(η_t, 1/sqrt(t))·û_t     (see `tensorwise`)."""
    checks.non_negative("lr", lr)
    checks.real("beta2_decay", beta2_decay, high=0.0)
    pair = checks.sequence("eps", eps)
    if len(pair) != 2:
        raise HyperParameterError("eps", f"expected [eps1 or null, eps2], got {eps!r}")
    eps1 = None if pair[0] is None else checks.non_negative("eps", pair[0])
    eps2 = checks.non_negative("eps", pair[1])
    checks.real("d", d, low=1.0)
    return chain(
        *_preprocessing(maximize, 0.0),
        tensorwise.scale_by_factored_rms(beta2_decay, eps1),
        tensorwise.clip_by_block_rms(d),
        tensorwise.scale_by_relative_step_size(eps2),
        _torch_decoupled_decay(weight_decay),
    )


def muon(
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: Literal["original", "match_rms_adamw"] | None = None,
    maximize: bool = False,
) -> GradientTransformation:
    """Muon, for 2-D tensors: momentum B_t = lerp(B_{t−1}, g_t, 1 − μ) (nesterov: lerp(g_t, B_t,
    μ)), orthogonalised by `ns_steps` Newton–Schulz iterations in the session's dtype, then

    θ ← θ·(1 − η_t·λ) − η_t·r(shape)·NS(B̃_t)     (r: `adjust_lr_fn`, see `tensorwise`)."""
    checks.non_negative("lr", lr)
    momentum = checks.fraction("momentum", momentum)
    nesterov = checks.flag("nesterov", nesterov)
    a, b, c = checks.reals("ns_coefficients", ns_coefficients, 3)
    eps = checks.positive("eps", eps)
    steps = checks.integer("ns_steps", ns_steps, low=0)
    if steps >= 100:
        raise HyperParameterError("ns_steps", f"must be < 100 (torch's limit), got {steps}")
    if adjust_lr_fn is not None:
        checks.choice("adjust_lr_fn", adjust_lr_fn, ("original", "match_rms_adamw"))
    return chain(
        *_preprocessing(maximize, 0.0),
        muon_momentum(momentum, nesterov),
        tensorwise.orthogonalize_by_newton_schulz((a, b, c), steps, eps),
        tensorwise.scale_by_shape_adjusted_rate(adjust_lr_fn),
        _torch_decoupled_decay(weight_decay),
    )


def rprop(
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50.0),
    maximize: bool = False,
) -> GradientTransformation:
    """Rprop: σ_t·η_t replaced by a step size per element that grows by η+ while the gradient
    keeps its sign and shrinks by η− when it flips: θ ← θ − sign(g_t)·Δ_t, Δ_1 = lr
    (see `scale_by_rprop`)."""
    lr = checks.non_negative("lr", lr)
    eta_minus, eta_plus = checks.reals("etas", etas, 2)
    if not 0.0 < eta_minus < 1.0 < eta_plus:
        raise HyperParameterError("etas", f"need 0 < etaminus < 1 < etaplus, got {etas!r}")
    smallest, largest = checks.reals("step_sizes", step_sizes, 2)
    if not 0.0 <= smallest <= largest:
        raise HyperParameterError("step_sizes", f"need 0 <= min <= max, got {step_sizes!r}")
    return chain(
        *_preprocessing(maximize, 0.0),
        scale_by_rprop((eta_minus, eta_plus), (smallest, largest), lr),
        scale(-1.0),
    )


def asgd(
    lr: float = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """ASGD: SGD with its own decaying rate η_t = lr/(1 + λ·lr·t)^α and a decay θ·(1 − λ·η_t),
    averaging the iterates after step t0 (`ax`, the weights to evaluate):

    θ ← θ·(1 − λ·η) − η·g_t,   ax ← ax + μ·(θ − ax),   μ = 1/max(1, t − t0)."""
    lr = checks.non_negative("lr", lr)
    lambd = checks.non_negative("lambd", lambd)
    alpha = checks.non_negative("alpha", alpha)
    t0 = checks.non_negative("t0", t0)
    return chain(
        *_preprocessing(maximize, weight_decay),
        scale_by_asgd_rate(lambd, alpha, lr),
        average_iterates(t0),
    )


def sparse_adam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    maximize: bool = False,
) -> GradientTransformation:
    """SparseAdam: Adam over the rows a sparse gradient touches (the moments of the others stay
    as they are): m ← m + (g − m)(1 − β1), v ← v + (g² − v)(1 − β2),

    θ ← θ − η_t·sqrt(1 − β2^t)/(1 − β1^t) · m/(sqrt(v) + eps)     (t: the tensor's steps).
    A dense gradient is every row touched."""
    checks.positive("lr", lr)
    beta1, beta2 = checks.betas("betas", betas)
    eps = checks.positive("eps", eps)
    return chain(
        *_preprocessing(maximize, 0.0),
        scale_by_sparse_adam((beta1, beta2), eps),
        scale_by_adam_step_size((beta1, beta2)),
    )


# --------------------------------------------------------------------------------------------
# optax's classics (`learning_rate` is `lr`; optax has no default for it: ours is the paper's)
# --------------------------------------------------------------------------------------------


def yogi(
    lr: float = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    maximize: bool = False,
) -> GradientTransformation:
    """Yogi (optax.yogi): Adam whose σ² moves by −(1 − β2)·sign(v − g²)·g², from moments
    started at 1e-6 and bias-corrected (see `scale_by_yogi`). Not Flower's FedYogi, whose
    moments start at 0 uncorrected: no optaas type is that rule (docs/federated.md)."""
    _optax_basics(lr, b1, b2, eps)
    return chain(
        *_preprocessing(maximize, 0.0),
        optax_transforms.scale_by_yogi(b1, b2, eps),
        scale_by_learning_rate(),
    )


def lamb(
    lr: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: bool | None = None,
    maximize: bool = False,
) -> GradientTransformation:
    """LAMB (optax.lamb): Adam's ratio plus λ·θ, scaled per tensor by the trust ratio
    ‖θ‖/‖u‖, then by −η_t. `mask` false leaves the weight decay out (optax's mask, for all the
    group's tensors; null or true: decay them)."""
    _optax_basics(lr, b1, b2, eps)
    checks.non_negative("eps_root", eps_root)
    decay = _masked_decay(weight_decay, checks.optional_flag("mask", mask))
    return chain(
        *_preprocessing(maximize, 0.0),
        optax_transforms.scale_by_adam(b1, b2, eps, eps_root),
        decay,
        tensorwise.scale_by_trust_ratio(),
        scale_by_learning_rate(),
    )


def lars(
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    weight_decay_mask: bool = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: bool = True,
    momentum: float = 0.9,
    nesterov: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """LARS (optax.lars): g + λ·θ, scaled per tensor by c·‖θ‖/(‖g + λθ‖ + eps), by −η_t, then
    momentum (optax's `trace`, slot `trace`, after the rate). The masks, false, leave the decay
    or the trust ratio out for the group's tensors."""
    checks.non_negative("lr", lr)
    decay = _masked_decay(weight_decay, checks.flag("weight_decay_mask", weight_decay_mask))
    trust_coefficient = checks.non_negative("trust_coefficient", trust_coefficient)
    eps = checks.non_negative("eps", eps)
    with_ratio = checks.flag("trust_ratio_mask", trust_ratio_mask)
    momentum = checks.fraction("momentum", momentum)
    nesterov = checks.flag("nesterov", nesterov)
    return chain(
        *_preprocessing(maximize, 0.0),
        decay,
        tensorwise.scale_by_trust_ratio(trust_coefficient, eps) if with_ratio else None,
        scale_by_learning_rate(),
        trace(momentum, nesterov=nesterov, slot="trace") if momentum else None,
    )


def adabelief(
    lr: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    nesterov: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """AdaBelief (optax.adabelief): Adam whose σ² tracks (g − m)², the gradient's deviation from
    its average (see `scale_by_belief`)."""
    _optax_basics(lr, b1, b2, eps)
    checks.non_negative("eps_root", eps_root)
    return chain(
        *_preprocessing(maximize, 0.0),
        optax_transforms.scale_by_belief(b1, b2, eps, eps_root, checks.flag("nesterov", nesterov)),
        scale_by_learning_rate(),
    )


def novograd(
    lr: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> GradientTransformation:
    """NovoGrad (optax.novograd): σ² one number per tensor, an average of ‖g‖²; momentum of
    g/σ + λ·θ (see `scale_by_novograd`)."""
    _optax_basics(lr, b1, b2, eps)
    checks.non_negative("eps_root", eps_root)
    checks.non_negative("weight_decay", weight_decay)
    return chain(
        *_preprocessing(maximize, 0.0),
        tensorwise.scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        scale_by_learning_rate(),
    )


def adan(
    lr: float = 1e-3,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: float = 0.0,
    mask: bool | None = None,
    maximize: bool = False,
) -> GradientTransformation:
    """Adan (optax.adan): Nesterov momentum from gradient differences (see `scale_by_adan`),
    plus λ·θ, times −η_t. `mask` as LAMB's."""
    _optax_basics(lr, b1, b2, eps)
    checks.fraction("b3", b3)
    checks.non_negative("eps_root", eps_root)
    decay = _masked_decay(weight_decay, checks.optional_flag("mask", mask))
    return chain(
        *_preprocessing(maximize, 0.0),
        optax_transforms.scale_by_adan(b1, b2, b3, eps, eps_root),
        decay,
        scale_by_learning_rate(),
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
    "adafactor": adafactor,
    "muon": muon,
    "rprop": rprop,
    "asgd": asgd,
    "sparse_adam": sparse_adam,
    "yogi": yogi,
    "lamb": lamb,
    "lars": lars,
    "adabelief": adabelief,
    "novograd": novograd,
    "adan": adan,
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


def sparse_rows_refusal(hyperparameters: Mapping[str, Any]) -> str | None:
    """Why a group with these settings cannot step a sparse row gradient, or None if it can:
    torch's sparse support is SparseAdam, Adagrad without weight decay and SGD without momentum
    (and here without weight decay, which would change every row)."""
    kind = hyperparameters["type"]
    if kind == "sparse_adam":
        return None
    if kind not in ("adagrad", "sgd"):
        return f"{kind} takes dense gradients only (sparse_adam, adagrad and sgd take rows)"
    if kind == "sgd" and hyperparameters["momentum"]:
        return "sgd with momentum takes dense gradients only (its buffer moves every row)"
    if hyperparameters["weight_decay"]:
        return f"{kind} with weight_decay takes dense gradients only (the decay moves every row)"
    return None


def _optax_basics(lr: float, b1: float, b2: float, eps: float) -> None:
    """The fields optax's Adam-like types share: lr ≥ 0, b1 and b2 in [0, 1), eps ≥ 0."""
    checks.non_negative("lr", lr)
    checks.fraction("b1", b1)
    checks.fraction("b2", b2)
    checks.non_negative("eps", eps)


def _masked_decay(weight_decay: float, mask: bool | None) -> Block:
    """optax's `add_decayed_weights` (λ·θ added before the rate) unless masked out or λ = 0."""
    checks.non_negative("weight_decay", weight_decay)
    if mask is False or not weight_decay:
        return None
    return optax_transforms.add_scaled_params(weight_decay)


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


def _torch_decoupled_decay(weight_decay: float) -> Block:
    """θ·(1 − η_t·λ) rounded as torch rounds it (none when λ = 0)."""
    checks.non_negative("weight_decay", weight_decay)
    return add_shrinkage(weight_decay) if weight_decay else None


def _call_nested(factory: Callable[..., Any], spec: Any, field: str) -> Any:
    """A nested spec (`custom`'s `momentum`, `sigma`) through its own factory."""
    return checks.call_with_spec(factory, checks.mapping(field, spec), field)
