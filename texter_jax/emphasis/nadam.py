"""NAdam with PyTorch's semantics, as an Optax transformation.

The release optimises the phase with ``torch.optim.NAdam([phase], lr=1.0)`` and
otherwise default settings: betas (0.9, 0.999), eps 1e-8, weight decay 0,
``momentum_decay`` psi = 4e-3. torch's NAdam (Dozat 2016 as implemented in Keras)
schedules the momentum coefficient:

    mu_t = b1 * (1 - 0.5 * 0.96 ** (t * psi)),   prod_t = mu_1 * ... * mu_t
    m_t  = b1 m_{t-1} + (1 - b1) g_t,            v_t = b2 v_{t-1} + (1 - b2) g_t^2
    d_t  = sqrt(v_t / (1 - b2^t)) + eps
    p_t  = p_{t-1} - lr [ (1 - mu_t) / (1 - prod_t) * g_t
                          + mu_{t+1} / (1 - prod_t mu_{t+1}) * m_t ] / d_t

With psi = 4e-3, mu_t only grows from 0.45 (t = 1) to 0.49 (t = 512): the effective
Nesterov momentum is about half of b1. ``optax.nadam`` instead uses the constant b1
(its update is ``(b1 m_t / (1 - b1^{t+1}) + (1 - b1) g_t / (1 - b1^t)) / d_t``), a
different, more strongly damped trajectory; the first step already differs (1.47 vs
1.06 times sign(g) at lr 1). So MACO uses this transformation, not ``optax.nadam``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from texter_jax.types import Array


class ScaleByTorchNadamState(NamedTuple):
    count: Array  # shape=(), int32: steps taken.
    mu_product: Array  # shape=(), float32: prod_{s <= t} mu_s.
    exp_avg: optax.Updates  # m_t, like params.
    exp_avg_sq: optax.Updates  # v_t, like params.


def scale_by_torch_nadam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                         momentum_decay: float = 4e-3) -> optax.GradientTransformation:
    """The NAdam direction of ``torch.optim.NAdam`` (no learning rate, no sign flip).

    Returns ``[(1-mu_t)/(1-prod_t) g + mu_{t+1}/(1-prod_t mu_{t+1}) m_t] / d_t``; chain
    with ``optax.scale(-lr)`` (see :func:`torch_nadam`).
    """

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return ScaleByTorchNadamState(count=jnp.zeros([], jnp.int32),
                                      mu_product=jnp.ones([], jnp.float32),
                                      exp_avg=zeros, exp_avg_sq=zeros)

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * momentum_decay))
        mu_product = state.mu_product * mu
        c_grad = (1.0 - mu) / (1.0 - mu_product)
        c_avg = mu_next / (1.0 - mu_product * mu_next)
        bias2 = 1.0 - b2 ** t
        exp_avg = jax.tree.map(lambda m, g: m + (1.0 - b1) * (g - m), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g,
                                  state.exp_avg_sq, updates)
        direction = jax.tree.map(
            lambda g, m, v: (c_grad * g + c_avg * m) / (jnp.sqrt(v / bias2) + eps),
            updates, exp_avg, exp_avg_sq)
        return direction, ScaleByTorchNadamState(count, mu_product, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def torch_nadam(learning_rate: float = 2e-3, b1: float = 0.9, b2: float = 0.999,
                eps: float = 1e-8, momentum_decay: float = 4e-3
                ) -> optax.GradientTransformation:
    """``torch.optim.NAdam`` (weight_decay=0) as an Optax optimiser; torch's defaults."""
    return optax.chain(scale_by_torch_nadam(b1, b2, eps, momentum_decay),
                       optax.scale(-learning_rate))
