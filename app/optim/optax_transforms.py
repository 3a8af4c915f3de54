"""optax's elementwise blocks, in optax's arithmetic and with its state names (`mu`, `nu`, …):
the moments of LAMB (`scale_by_adam`, with `eps_root`), Yogi (`scale_by_yogi`), AdaBelief
(`scale_by_belief`), Adan (`scale_by_adan`), and `add_scaled_params` (optax's
`add_decayed_weights`: λ·θ added to the update before the learning rate).

optax's moments are `(1 − β)·g + β·m` (its `update_moment`), bias-corrected copies divide by
`1 − β^t` with t the tensor's step count, as the engine keeps it.
"""

from __future__ import annotations

import numpy as np

from app.optim.base import GradientTransformation, Slots, TensorStep
from app.optim.transforms import _no_slots


def update_moment_(moment: np.ndarray, value: np.ndarray, decay: float, temp: np.ndarray) -> None:
    """m ← (1 − β)·x + β·m in place (optax's `update_moment`, order 1)."""
    scaled = np.multiply(value, 1.0 - decay, out=temp)
    moment *= decay
    moment += scaled


def update_square_moment_(
    moment: np.ndarray, value: np.ndarray, decay: float, temp: np.ndarray
) -> None:
    """v ← (1 − β)·x² + β·v in place (optax's `update_moment_per_elem_norm`, order 2)."""
    squared = np.multiply(value, value, out=temp)
    squared *= 1.0 - decay
    moment *= decay
    moment += squared


def scale_by_adam(b1: float, b2: float, eps: float, eps_root: float) -> GradientTransformation:
    """optax's Adam moments (slots `mu`, `nu`), as LAMB uses them:

    m_t = (1 − β1)·g + β1·m,   v_t = (1 − β2)·g² + β2·v
    u ← (m_t/(1 − β1^t)) / (sqrt(v_t/(1 − β2^t) + eps_root) + eps)
    """

    def init(param: np.ndarray) -> Slots:
        return {"mu": np.zeros_like(param), "nu": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        mu, nu, temp = slots["mu"], slots["nu"], ctx.scratch.temp
        update_moment_(mu, updates, b1, temp)
        update_square_moment_(nu, updates, b2, temp)
        return _adam_ratio(mu, nu, b1, b2, eps, eps_root, ctx)

    return GradientTransformation(init, update)


def _adam_ratio(
    mu: np.ndarray,
    nu: np.ndarray,
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    ctx: TensorStep,
) -> np.ndarray:
    """(m/(1 − β1^t)) / (sqrt(v/(1 − β2^t) + eps_root) + eps), into the scratch."""
    sigma = np.divide(nu, 1.0 - b2**ctx.count, out=ctx.scratch.temp)
    if eps_root:
        sigma += eps_root
    np.sqrt(sigma, out=sigma)
    sigma += eps
    out = np.divide(mu, 1.0 - b1**ctx.count, out=ctx.scratch.work)
    return np.divide(out, sigma, out=out)


def scale_by_yogi(
    b1: float, b2: float, eps: float, eps_root: float = 0.0, initial_accumulator_value: float = 1e-6
) -> GradientTransformation:
    """Yogi (slots `mu`, `nu`): Adam whose second moment moves by a sign, so its effective rate
    cannot grow too fast:

        m_t = (1 − β1)·g + β1·m,   v_t = v − (1 − β2)·sign(v − g²)·g²
        u ← (m_t/(1 − β1^t)) / (sqrt(v_t/(1 − β2^t) + eps_root) + eps)

    Both moments start at `initial_accumulator_value` (optax's 1e-6), not zero.
    """

    def init(param: np.ndarray) -> Slots:
        return {
            "mu": np.full_like(param, initial_accumulator_value),
            "nu": np.full_like(param, initial_accumulator_value),
        }

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        mu, nu, temp, work = slots["mu"], slots["nu"], ctx.scratch.temp, ctx.scratch.work
        update_moment_(mu, updates, b1, temp)
        squared = np.multiply(updates, updates, out=temp)
        direction = np.sign(np.subtract(nu, squared, out=work), out=work)
        direction *= 1.0 - b2
        direction *= squared
        nu -= direction
        return _adam_ratio(mu, nu, b1, b2, eps, eps_root, ctx)

    return GradientTransformation(init, update)


def scale_by_belief(
    b1: float, b2: float, eps: float, eps_root: float, nesterov: bool
) -> GradientTransformation:
    """AdaBelief (slots `mu`, `nu`): the second moment of the prediction error g − m — the
    belief in the gradient's deviation from its average:

        m_t = (1 − β1)·g + β1·m,   s_t = (1 − β2)·(g − m_t)² + β2·s + eps_root
        m̂_t = m_t/(1 − β1^t)   (nesterov: β1·m_t/(1 − β1^{t+1}) + (1 − β1)·g/(1 − β1^t))
        u ← m̂_t / (sqrt(s_t/(1 − β2^t)) + eps)
    """

    def init(param: np.ndarray) -> Slots:
        return {"mu": np.zeros_like(param), "nu": np.zeros_like(param)}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        mu, nu, temp, work = slots["mu"], slots["nu"], ctx.scratch.temp, ctx.scratch.work
        update_moment_(mu, updates, b1, temp)
        error = np.subtract(updates, mu, out=work)
        update_square_moment_(nu, error, b2, temp)
        nu += eps_root
        sigma = np.divide(nu, 1.0 - b2**ctx.count, out=temp)
        np.sqrt(sigma, out=sigma)
        sigma += eps
        if nesterov:
            average = np.divide(mu, 1.0 - b1 ** (ctx.count + 1), out=work)
            average *= b1
            # (1 − β1)·(g/(1 − β1^t)), added through the scratch the σ does not use
            average += (1.0 - b1) * np.divide(updates, 1.0 - b1**ctx.count)
        else:
            average = np.divide(mu, 1.0 - b1**ctx.count, out=work)
        return np.divide(average, sigma, out=average)

    return GradientTransformation(init, update)


def scale_by_adan(
    b1: float, b2: float, b3: float, eps: float, eps_root: float
) -> GradientTransformation:
    """Adan (slots `m`, `v`, `n`, `g`, optax's names): Nesterov momentum estimated from the
    gradients' differences d_t = g_t − g_{t−1} (d_1 = 0):

        m_t = (1 − β1)·g + β1·m,   v_t = (1 − β2)·d + β2·v,
        n_t = (1 − β3)·(g + (1 − β2)·d)² + β3·n
        u ← (m_t/(1 − β1^t) + (1 − β2)·v_t/(1 − β2^t)) / (sqrt(n_t/(1 − β3^t) + eps_root) + eps)
    """

    def init(param: np.ndarray) -> Slots:
        return {name: np.zeros_like(param) for name in ("m", "v", "n", "g")}

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        m, v, n, previous = slots["m"], slots["v"], slots["n"], slots["g"]
        temp, work = ctx.scratch.temp, ctx.scratch.work
        difference = work
        if ctx.count == 1:
            difference.fill(0)
        else:
            np.subtract(updates, previous, out=difference)
        update_moment_(m, updates, b1, temp)
        update_moment_(v, difference, b2, temp)
        corrected = np.multiply(difference, 1.0 - b2, out=difference)
        corrected += updates
        update_square_moment_(n, corrected, b3, temp)
        np.copyto(previous, updates)
        sigma = np.divide(n, 1.0 - b3**ctx.count, out=temp)
        sigma += eps_root
        np.sqrt(sigma, out=sigma)
        sigma += eps
        out = np.divide(v, 1.0 - b2**ctx.count, out=work)
        out *= 1.0 - b2
        out += np.divide(m, 1.0 - b1**ctx.count)
        return np.divide(out, sigma, out=out)

    return GradientTransformation(init, update)


def add_scaled_params(weight_decay: float) -> GradientTransformation:
    """u ← u + λ·θ (optax's `add_decayed_weights`): weight decay before the learning rate, so it
    is scaled by η_t and by any trust ratio that follows — unlike torch's decoupled decay
    (`transforms.add_decayed_weights`, θ·(1 − η_t·λ))."""

    def update(updates: np.ndarray, slots: Slots, ctx: TensorStep) -> np.ndarray:
        del slots
        decay = np.multiply(ctx.param, weight_decay, out=ctx.scratch.temp)
        return np.add(updates, decay, out=ctx.scratch.work)

    return GradientTransformation(_no_slots, update)
