"""Fused single-pass kernels: each named optimizer's whole step, one element at a time, in one
pass over θ, g and the slots (numba). `fused.py` says which configurations they cover; the
chains of `optimizers.py` stay the definition these kernels are tested against.

Each kernel updates θ and the slots in place, for one optimizer, and writes ‖u‖² of every block
of BLOCK elements into `partials`, so that the update norm does not depend on how a step is cut
among threads. The blocks are claimed one at a time from a shared counter (`claims`, see
`claims_for`), so any number of threads may run the same kernel call at once: each block is
computed exactly once, by whichever thread claims it first, and a thread that wakes late finds
less (or nothing) left to do instead of holding the others up. A kernel returns True when one of
the blocks it finished was the last of the whole run (every task's): exactly one thread learns
that the run is complete.

The arguments are 1-D C-contiguous arrays (`fused.py` hands over flat views, copies where
needed) of one dtype, an optional slot is an empty array when the configuration has
none, and `f` holds the step's factors — numbers already in the arrays' dtype, so that every
operation rounds in that dtype as the chain's numpy passes do (NEP 50), and flags. No fastmath:
each operation rounds as the formula says, in the chain's order, except where the docstring says
torch's order is used instead. The sums of squares alone may be reassociated (`_add_square`):
the order of a sum is no formula's, and a running sum left in order would keep the loop from
being vectorized.

Loop-invariant options are flags tested inside the loop: the compiler turns them into selects
(or masked loads and stores) and the loop stays vectorized (AVX-512 / AVX2; checked with
`inspect_asm` in tests/optim/test_kernels.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# The loop vectorizer's width follows a loop's widest type unless told to maximize bandwidth:
# a float32 kernel with its float64 sum of squares ran 4 float32 lanes (xmm) beside 4 float64
# (ymm); with this option, 8 float32 lanes and the float64 sum in two ymm registers. Adam
# float32 on one thread: 0.63 -> 0.58 ms at 1e6, 10.8 -> 9.5 ms at 1e7; SGD with momentum 7.1
# -> 6.1 ms at 1e7; float64 unchanged (docs/performance.md). A compiler setting for this
# process's numba code, set before the kernels below compile; it changes no operation's
# rounding, only how many elements a vector instruction holds (and, for the sums of squares,
# the only reassociated operation, how many partial sums they keep).
llvm.set_option("", "-vectorizer-maximize-bandwidth")

BLOCK = 1 << 14
"""Elements per partial sum of ‖u‖²: a step cut among threads is cut at multiples of it."""

KERNEL_OPTIONS = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}
"""Released GIL (threads run kernels side by side), compiled once and kept on disk (see
`NUMBA_CACHE_DIR`), numpy's semantics for x/0 (±inf, nan: no exception), no fastmath."""


DONE, BLOCKS, GATE_DONE, GATE_BLOCKS, NOT_FINITE, FIRST_TASK = range(6)
"""The slots of a run's `claims` array: blocks finished and blocks in the run; the gate's blocks
finished and blocks in all, and the count of them whose sum of squares was not finite; from
FIRST_TASK on, each task's claims (the kernel calls of one run, in order).

The gate lets one run hold a whole step: the gradient's sums of squares first (`sum_of_squares`
calls, the gate's blocks), then the updates, which start only once every sum is done and only
if all are finite, so that a step with a non-finite gradient writes nothing."""


def claims_for(blocks: Sequence[int], gate: int = 0) -> np.ndarray:
    """The counters of a run of tasks holding these numbers of blocks, none claimed yet; its
    first `gate` tasks are the gate's (`sum_of_squares` calls)."""
    claims = np.zeros(FIRST_TASK + len(blocks), np.int64)
    claims[BLOCKS] = sum(blocks)
    claims[GATE_BLOCKS] = sum(blocks[:gate])
    return claims


@intrinsic
def _fetch_add(typingctx, array, index, value):  # noqa: ANN001, ANN202
    """array[index] += value atomically (sequentially consistent); the value before. The other
    threads' writes before their additions are visible after it (the partial sums read once
    the run is done)."""
    signature = types.int64(array, types.intp, types.int64)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        array_type = sig.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        return builder.atomic_rmw("add", pointer, args[2], "seq_cst")

    return signature, codegen


@intrinsic
def _load(typingctx, array, index):  # noqa: ANN001, ANN202
    """array[index], read atomically (acquire): a value another thread is changing."""
    signature = types.int64(array, types.intp)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        array_type = sig.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)

    return signature, codegen


@njit(nogil=True, cache=True)
def wait_above(counter: np.ndarray, index: int, value: int, reads: int) -> bool:
    """Whether counter[index] rose above `value` within `reads` reads of it (a spin, with the
    GIL released): waking a sleeping thread costs tens of µs on a virtual machine, more than
    the waits this serves."""
    for _ in range(reads):  # noqa: SIM110 (numba compiles no generator in any())
        if _load(counter, index) > value:
            return True
    return False


FROM_FRONT, FROM_BACK = 1, 1 << 32
"""A task's counter holds its claims from the front in its low 32 bits, those from the back
above them."""


@njit(inline="always")
def _claim(claims: np.ndarray, task: int, blocks: int, backward: bool) -> int:
    """The next unclaimed block of task `task`: the first from the front, or the last from the
    back (`backward`), or −1 when every block is claimed. A claim is granted when the claims
    made before it, from both ends, number fewer than the blocks: the ends meet without a
    block claimed twice or left out, and each thread streams through a consecutive run of
    blocks (the calling thread from the front, the helpers from the back)."""
    before = _fetch_add(claims, FIRST_TASK + task, FROM_BACK if backward else FROM_FRONT)
    front, back = before & (FROM_BACK - 1), before >> 32
    if front + back >= blocks:
        return -1
    return blocks - 1 - back if backward else front


@njit(inline="always")
def _count_done(claims: np.ndarray) -> bool:
    """Count one finished block; True for the run's last."""
    return _fetch_add(claims, DONE, 1) + 1 == claims[BLOCKS]


@njit(inline="always")
def _through_gate(claims: np.ndarray) -> bool:
    """Wait (spinning: the gate's last blocks are being summed, a few µs) until every sum of
    squares of the gate is done; whether all were finite. Open at once in a run without one."""
    while _load(claims, GATE_DONE) < claims[GATE_BLOCKS]:
        pass
    return _load(claims, NOT_FINITE) == 0


@njit(fastmath={"reassoc"}, error_model="numpy", cache=True)
def _add_square(total: float, x: float) -> float:
    """total + x² in float64; the only operation allowed to reassociate (a sum's order)."""
    value = np.float64(x)
    return total + value * value


@njit(inline="always")
def _block_bounds(block: int, size: int) -> tuple[int, int]:
    start = block * BLOCK
    return start, min(size, start + BLOCK)


@njit(inline="always")
def _maximum(a: float, b: float) -> float:
    """`np.maximum`: the larger, NaN if either is NaN."""
    return a if (a >= b or a != a) else b


@njit(inline="always")
def _preprocess(g: float, p: float, maximize: bool, coupled: bool, weight_decay: float) -> float:
    """g ← −g (maximize), then g ← g + θ·λ (coupled weight decay), torch's order."""
    g = -g if maximize else g
    return g + p * weight_decay if coupled else g


@njit(inline="always")
def _lerp(start: float, end: float, weight: float, weight_complement: float, near: bool) -> float:
    """torch's two-sided lerp (`transforms.lerp_`): from the start when weight < ½ (`near`),
    else back from the end with the rounded complement 1 − weight."""
    return start + (end - start) * weight if near else end - (end - start) * weight_complement


@njit(inline="always")
def _average_square(average: float, g: float, decay: float, weight: float) -> float:
    """α·v + ((1 − α)·g)·g: torch's `mul_(α).addcmul_(g, g, value=1 − α)`, in its order."""
    return average * decay + (g * weight) * g


@njit(inline="always")
def _decoupled_decay(u: float, p: float, shrink_minus_one: float, decoupled: bool) -> float:
    """u + (f − 1)·θ with f = 1 − η·λ (`add_decayed_weights`); u when the decay is coupled."""
    return u + p * shrink_minus_one if decoupled else u


@njit(**KERNEL_OPTIONS)
def sum_of_squares(
    x: np.ndarray, partials: np.ndarray, claims: np.ndarray, task: int, backward: bool
) -> bool:
    """partials[b] = Σ x² over block b, in float64."""
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        start, stop = _block_bounds(block, x.size)
        partial = _sum_of_squares(x[start:stop])
        partials[block] = partial
        if not np.isfinite(partial):
            _fetch_add(claims, NOT_FINITE, 1)
        _fetch_add(claims, GATE_DONE, 1)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _sum_of_squares(x: np.ndarray) -> float:
    total = 0.0
    for i in range(x.size):
        total = _add_square(total, x[i])
    return total


# --------------------------------------------------------------------------------------------
# SGD
# --------------------------------------------------------------------------------------------


class SgdFactors(NamedTuple):
    negative_lr: float  # −η_t
    momentum: float  # μ
    undamped: float  # 1 − dampening
    weight_decay: float
    maximize: bool
    coupled: bool  # λ ≠ 0
    has_momentum: bool  # μ ≠ 0: the slot momentum_buffer exists
    first: bool  # the tensor's first update: m_1 = g_1 (torch's copy)
    dampened: bool  # dampening ≠ 0
    nesterov: bool


@njit(**KERNEL_OPTIONS)
def sgd(theta, grad, momentum_buffer, f, partials, claims, task, backward) -> bool:  # noqa: ANN001
    """m_t = μ·m_{t−1} + (1 − dampening)·g_t (m_1 = g_1), u = −η·m_t (nesterov: −η·(g_t +
    μ·m_t); no momentum: −η·g_t), θ ← θ + u."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _sgd(theta[a:b], grad[a:b], momentum_buffer[a:b], f)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _sgd(theta, grad, buffer, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        u = g
        if f.has_momentum:
            m = g if f.first else buffer[i] * f.momentum + (g * f.undamped if f.dampened else g)
            buffer[i] = m
            u = g + m * f.momentum if f.nesterov else m
        u = u * f.negative_lr
        theta[i] = p + u
        total = _add_square(total, u)
    return total


# --------------------------------------------------------------------------------------------
# Adagrad
# --------------------------------------------------------------------------------------------


class AdagradFactors(NamedTuple):
    negative_lr: float  # −η_t / (1 + (t − 1)·lr_decay)
    eps: float
    count: float  # t, the divisor of the mean
    weight_decay: float
    maximize: bool
    coupled: bool
    mean: bool  # accumulator "mean": σ² = s/t


@njit(**KERNEL_OPTIONS)
def adagrad(theta, grad, total_sq, f, partials, claims, task, backward) -> bool:  # noqa: ANN001
    """s_t = s_{t−1} + g², σ = sqrt(s_t) (mean: sqrt(s_t/t)), u = −η'·g/(σ + eps)."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _adagrad(theta[a:b], grad[a:b], total_sq[a:b], f)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _adagrad(theta, grad, total_sq, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        s = total_sq[i] + g * g
        total_sq[i] = s
        sigma = np.sqrt(s / f.count) if f.mean else np.sqrt(s)
        u = (g / (sigma + f.eps)) * f.negative_lr
        theta[i] = p + u
        total = _add_square(total, u)
    return total


# --------------------------------------------------------------------------------------------
# RMSprop
# --------------------------------------------------------------------------------------------


class RmspropFactors(NamedTuple):
    negative_lr: float
    alpha: float
    one_minus_alpha: float  # 1 − α, the weight of g² (and of g in the centered average)
    alpha_again: float  # 1 − (1 − α): lerp's complement for the centered average
    near: bool  # 1 − α < ½: the centered average lerps from its start
    eps: float
    momentum: float
    weight_decay: float
    maximize: bool
    coupled: bool
    first_square: bool  # init "first_grad" at the first update: v_1 = g_1²
    centered: bool
    has_momentum: bool
    first: bool  # the first update: the momentum buffer starts as u


@njit(**KERNEL_OPTIONS)
def rmsprop(theta, grad, square_avg, grad_avg, momentum_buffer, f, partials, claims, task, backward) -> bool:  # noqa: ANN001, E501  # fmt: skip
    """v_t = α·v + (1 − α)·g², c_t = lerp(c, g, 1 − α) (centered), σ = sqrt(v_t − c_t²) or
    sqrt(v_t), u = g/(σ + eps); momentum: m_t = μ·m + u; θ ← θ − η·u."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _rmsprop(
            theta[a:b], grad[a:b], square_avg[a:b], grad_avg[a:b], momentum_buffer[a:b], f
        )
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _rmsprop(theta, grad, square_avg, grad_avg, buffer, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        v = _average_square(square_avg[i], g, f.alpha, f.one_minus_alpha)
        v = g * g if f.first_square else v
        square_avg[i] = v
        if f.centered:
            c = _lerp(grad_avg[i], g, f.one_minus_alpha, f.alpha_again, f.near)
            grad_avg[i] = c
            v = v - c * c
        u = g / (np.sqrt(v) + f.eps)
        if f.has_momentum:
            u = u if f.first else buffer[i] * f.momentum + u
            buffer[i] = u
        u = u * f.negative_lr
        theta[i] = p + u
        total = _add_square(total, u)
    return total


# --------------------------------------------------------------------------------------------
# Adam, AdamW
# --------------------------------------------------------------------------------------------


class AdamFactors(NamedTuple):
    negative_step: float  # −η_t/(1 − β1^t), torch's step size
    beta1_weight: float  # 1 − β1
    beta1_complement: float  # 1 − (1 − β1)
    near: bool  # 1 − β1 < ½
    beta2: float
    one_minus_beta2: float
    root_correction2: float  # sqrt(1 − β2^t)
    eps: float
    weight_decay: float
    shrink: float  # f = 1 − η_t·λ, decoupled decay's factor
    shrink_minus_one: float  # f − 1 (exact): the decay's part of u, for ‖u‖
    maximize: bool
    coupled: bool
    decoupled: bool
    amsgrad: bool


@njit(**KERNEL_OPTIONS)
def adam(theta, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, f, partials, claims, task, backward) -> bool:  # noqa: ANN001, E501  # fmt: skip
    """m_t = lerp(m, g, 1 − β1), v_t = β2·v + (1 − β2)·g² (amsgrad: v̂ = max(v̂, v_t)),
    θ ← θ·(1 − η·λ) (decoupled) + (−η/(1 − β1^t))·m_t / (sqrt(v̂)/sqrt(1 − β2^t) + eps).

    The last line in torch's order (`param.mul_(1 − lr·λ)`, then `addcdiv_` with the step size
    −η/(1 − β1^t)): one division fewer than the chain's blocks, which divide m by (1 − β1^t)
    first, so θ agrees with the chain within rounding rather than bit for bit."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _adam(
            theta[a:b], grad[a:b], exp_avg[a:b], exp_avg_sq[a:b], max_exp_avg_sq[a:b], f
        )
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _adam(theta, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        m = _lerp(exp_avg[i], g, f.beta1_weight, f.beta1_complement, f.near)
        exp_avg[i] = m
        v = _average_square(exp_avg_sq[i], g, f.beta2, f.one_minus_beta2)
        exp_avg_sq[i] = v
        if f.amsgrad:
            v = _maximum(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        step = (f.negative_step * m) / (np.sqrt(v) / f.root_correction2 + f.eps)
        theta[i] = (p * f.shrink if f.decoupled else p) + step
        total = _add_square(total, step + p * f.shrink_minus_one if f.decoupled else step)
    return total


# --------------------------------------------------------------------------------------------
# Adamax
# --------------------------------------------------------------------------------------------


class AdamaxFactors(NamedTuple):
    negative_lr: float
    beta1_weight: float
    beta1_complement: float
    near: bool
    correction1: float  # 1 − β1^t
    beta2: float
    eps: float
    weight_decay: float
    maximize: bool
    coupled: bool


@njit(**KERNEL_OPTIONS)
def adamax(theta, grad, exp_avg, exp_inf, f, partials, claims, task, backward) -> bool:  # noqa: ANN001
    """m_t = lerp(m, g, 1 − β1), σ_t = max(β2·σ, |g| + eps), u = −η·(m_t/(1 − β1^t))/σ_t."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _adamax(theta[a:b], grad[a:b], exp_avg[a:b], exp_inf[a:b], f)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _adamax(theta, grad, exp_avg, exp_inf, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        m = _lerp(exp_avg[i], g, f.beta1_weight, f.beta1_complement, f.near)
        exp_avg[i] = m
        sigma = _maximum(exp_inf[i] * f.beta2, abs(g) + f.eps)
        exp_inf[i] = sigma
        u = ((m / f.correction1) / sigma) * f.negative_lr
        theta[i] = p + u
        total = _add_square(total, u)
    return total


# --------------------------------------------------------------------------------------------
# NAdam
# --------------------------------------------------------------------------------------------


class NadamFactors(NamedTuple):
    negative_lr: float
    beta1_weight: float
    beta1_complement: float
    near: bool
    gradient_weight: float  # (1 − μ_t)/(1 − Π_t)
    momentum_weight: float  # μ_{t+1}/(1 − Π_t·μ_{t+1})
    beta2: float
    one_minus_beta2: float
    root_correction2: float
    eps: float
    weight_decay: float
    shrink_minus_one: float  # (1 − η·λ) − 1, rounded as `add_decayed_weights` does
    maximize: bool
    coupled: bool
    decoupled: bool


@njit(**KERNEL_OPTIONS)
def nadam(theta, grad, exp_avg, exp_avg_sq, f, partials, claims, task, backward) -> bool:  # noqa: ANN001
    """m_t = lerp(m, g, 1 − β1), u = (1 − μ_t)/(1 − Π_t)·g + μ_{t+1}/(1 − Π_t·μ_{t+1})·m_t,
    σ = sqrt(v_t)/sqrt(1 − β2^t) + eps, θ ← θ − η·u/σ (+ (f − 1)·θ decoupled)."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _nadam(theta[a:b], grad[a:b], exp_avg[a:b], exp_avg_sq[a:b], f)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _nadam(theta, grad, exp_avg, exp_avg_sq, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        m = _lerp(exp_avg[i], g, f.beta1_weight, f.beta1_complement, f.near)
        exp_avg[i] = m
        u = g * f.gradient_weight + m * f.momentum_weight
        v = _average_square(exp_avg_sq[i], g, f.beta2, f.one_minus_beta2)
        exp_avg_sq[i] = v
        u = (u / (np.sqrt(v) / f.root_correction2 + f.eps)) * f.negative_lr
        u = _decoupled_decay(u, p, f.shrink_minus_one, f.decoupled)
        theta[i] = p + u
        total = _add_square(total, u)
    return total


# --------------------------------------------------------------------------------------------
# RAdam
# --------------------------------------------------------------------------------------------


class RadamFactors(NamedTuple):
    negative_lr: float
    beta1_weight: float
    beta1_complement: float
    near: bool
    correction1: float  # 1 − β1^t
    beta2: float
    one_minus_beta2: float
    rectified: bool  # ρ_t > 5
    rectification: float  # r_t·sqrt(1 − β2^t)
    eps: float
    weight_decay: float
    shrink_minus_one: float
    maximize: bool
    coupled: bool
    decoupled: bool


@njit(**KERNEL_OPTIONS)
def radam(theta, grad, exp_avg, exp_avg_sq, f, partials, claims, task, backward) -> bool:  # noqa: ANN001
    """m̂ = lerp(m, g, 1 − β1)/(1 − β1^t); ρ_t > 5: u = m̂/(sqrt(v_t) + eps)·r_t·sqrt(1 − β2^t),
    else u = m̂; θ ← θ − η·u (+ (f − 1)·θ decoupled)."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _radam(theta[a:b], grad[a:b], exp_avg[a:b], exp_avg_sq[a:b], f)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _radam(theta, grad, exp_avg, exp_avg_sq, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        m = _lerp(exp_avg[i], g, f.beta1_weight, f.beta1_complement, f.near)
        exp_avg[i] = m
        v = _average_square(exp_avg_sq[i], g, f.beta2, f.one_minus_beta2)
        exp_avg_sq[i] = v
        u = m / f.correction1
        u = (u / (np.sqrt(v) + f.eps)) * f.rectification if f.rectified else u
        u = u * f.negative_lr
        u = _decoupled_decay(u, p, f.shrink_minus_one, f.decoupled)
        theta[i] = p + u
        total = _add_square(total, u)
    return total


# --------------------------------------------------------------------------------------------
# Adadelta
# --------------------------------------------------------------------------------------------


class AdadeltaFactors(NamedTuple):
    negative_lr: float
    rho: float
    one_minus_rho: float
    eps: float
    weight_decay: float
    maximize: bool
    coupled: bool


@njit(**KERNEL_OPTIONS)
def adadelta(theta, grad, square_avg, acc_delta, f, partials, claims, task, backward) -> bool:  # noqa: ANN001
    """v_t = ρ·v + (1 − ρ)·g², Δ = g/sqrt(v_t + eps)·sqrt(d + eps), d_t = ρ·d + (1 − ρ)·Δ²,
    θ ← θ − η·Δ."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _adadelta(theta[a:b], grad[a:b], square_avg[a:b], acc_delta[a:b], f)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _adadelta(theta, grad, square_avg, acc_delta, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = _preprocess(grad[i], p, f.maximize, f.coupled, f.weight_decay)
        v = _average_square(square_avg[i], g, f.rho, f.one_minus_rho)
        square_avg[i] = v
        d = acc_delta[i]
        delta = (g / np.sqrt(v + f.eps)) * np.sqrt(d + f.eps)
        acc_delta[i] = _average_square(d, delta, f.rho, f.one_minus_rho)
        u = delta * f.negative_lr
        theta[i] = p + u
        total = _add_square(total, u)
    return total


# --------------------------------------------------------------------------------------------
# Lion
# --------------------------------------------------------------------------------------------


class LionFactors(NamedTuple):
    negative_lr: float
    beta1_weight: float
    beta1_complement: float
    near1: bool
    beta2_weight: float
    beta2_complement: float
    near2: bool
    shrink_minus_one: float
    maximize: bool
    decoupled: bool


@njit(**KERNEL_OPTIONS)
def lion(theta, grad, exp_avg, f, partials, claims, task, backward) -> bool:  # noqa: ANN001
    """c = lerp(m, g, 1 − β1), m_t = lerp(m, g, 1 − β2), θ ← θ − η·sign(c) (+ (f − 1)·θ)."""
    if not _through_gate(claims):
        return False
    last = False
    block = _claim(claims, task, partials.size, backward)
    while block >= 0:
        a, b = _block_bounds(block, theta.size)
        partials[block] = _lion(theta[a:b], grad[a:b], exp_avg[a:b], f)
        last = _count_done(claims) or last
        block = _claim(claims, task, partials.size, backward)
    return last


@njit(**KERNEL_OPTIONS)
def _lion(theta, grad, exp_avg, f) -> float:  # noqa: ANN001
    total = 0.0
    for i in range(theta.size):
        p = theta[i]
        g = -grad[i] if f.maximize else grad[i]
        m = exp_avg[i]
        c = _lerp(m, g, f.beta1_weight, f.beta1_complement, f.near1)
        exp_avg[i] = _lerp(m, g, f.beta2_weight, f.beta2_complement, f.near2)
        u = np.sign(c) * f.negative_lr
        u = _decoupled_decay(u, p, f.shrink_minus_one, f.decoupled)
        theta[i] = p + u
        total = _add_square(total, u)
    return total
