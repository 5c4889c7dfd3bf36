"""Dead latents and the AuxK loss (Gao et al. 2024, section A.2) for TopK SAE training.

A latent is *dead* when it has not fired (code > 0) on any of the last ``dead_after``
training rows. The auxiliary loss asks the dead latents to explain what the live ones
left: with the residual ``e = x - x_hat`` (no gradient through it) and the ``k_aux``
largest ReLU pre-activations among dead latents only,

    e_hat    = TopK_{k_aux}(ReLU(pre) * dead) @ D          # [B, d]
    L_aux    = mean_rows( ||e - e_hat||^2 / ||e||^2 )       # normalised per row
    loss     = MSE(x, x_hat) + aux_coef * L_aux             # aux_coef = 1/32 by default

so dead latents receive gradient again. With no dead latent ``L_aux`` is 0 (and has no
gradient). The normalisation per row follows the paper's released code (normalised MSE
against an all-zero prediction); it keeps ``aux_coef`` independent of the features'
scale.

Pure functions of arrays; the training loop (``train/sae_train.py``) keeps the
``rows_since_fired`` counter [n] in its state.

References:
  Gao et al., "Scaling and evaluating sparse autoencoders", https://arxiv.org/abs/2406.04093
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from texter_jax.sae import topk_mask
from texter_jax.types import Array

AUX_COEF = 1.0 / 32.0  # the paper's alpha
# The counter saturates here instead of wrapping around in int32.
_SINCE_MAX = 2 ** 30


def update_rows_since_fired(since: Array, fired: Array, rows: int) -> Array:
    """``since`` int32 [n] (rows since each latent last fired), ``fired`` bool [n] (fired
    on this batch of ``rows`` rows) -> the counter after the batch."""
    grown = jnp.minimum(since + rows, _SINCE_MAX)
    return jnp.where(fired, jnp.zeros_like(since), grown)


def dead_latents(since: Array, dead_after: int) -> Array:
    """bool [n]: latents silent for at least ``dead_after`` rows."""
    return since >= dead_after


def auxk_row_losses(pre: Array, residual: Array, dictionary: Array, dead: Array,
                    k_aux: int) -> Array:
    """Per-row normalised AuxK error, float32 [B].

    Args:
      pre: pre-activations [B, n] (before ReLU).
      residual: ``x - x_hat`` [B, d]; treated as a constant (gradient stopped).
      dictionary: the decoder matrix [n, d] the training forward uses.
      dead: bool [n].
      k_aux: static int, 1 <= k_aux <= n.

    Returns:
      ``||e - e_hat||^2 / ||e||^2`` per row, 0 for every row when no latent is dead.
    """
    e = jax.lax.stop_gradient(residual)
    aux_codes = topk_mask(jax.nn.relu(pre) * dead.astype(pre.dtype), k_aux)
    e_hat = aux_codes @ dictionary
    err = jnp.sum(jnp.square(e - e_hat), axis=-1) / (jnp.sum(jnp.square(e), axis=-1) + 1e-12)
    return jnp.where(jnp.any(dead), err, jnp.zeros_like(err))


def auxk_loss(pre: Array, residual: Array, dictionary: Array, dead: Array,
              k_aux: int) -> Array:
    """Mean over rows of :func:`auxk_row_losses`: float32 []."""
    return jnp.mean(auxk_row_losses(pre, residual, dictionary, dead, k_aux))
