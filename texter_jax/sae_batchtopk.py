"""BatchTopK SAEs (Bussmann et al. 2024): top-k over the whole batch while training, a
fixed threshold at inference.

Training keeps the ``k * B`` largest ReLU pre-activations of a batch of B rows, wherever
they fall, so some rows use more than k latents and others fewer (L0 = k on average).
Inference cannot depend on the other rows of a batch, so it keeps every ReLU
pre-activation above a threshold ``theta`` estimated during training: the mean over the
last epoch's batches of each batch's smallest kept activation (a slow running mean would
still remember the first epochs' larger minima in short runs). The SAE
then stores ``theta`` as ``params["threshold"]`` (float32 []), and
:func:`texter_jax.sae.sae_encode` encodes ``ReLU(pre) * (ReLU(pre) > theta)`` for params
that hold it (``SaeConfig(activation="batchtopk")``).

References:
  Bussmann, Leask, Nanda, "BatchTopK Sparse Autoencoders", https://arxiv.org/abs/2412.06410
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from texter_jax.sae import topk_mask
from texter_jax.types import Array


def batch_topk_mask(acts: Array, top_k: int) -> Array:
    """Keeps the ``top_k * B`` largest entries of ``acts`` [B, n] over the whole batch
    (ties broken by flat index, as ``jax.lax.top_k``), zeroes the rest; same shape."""
    b, n = acts.shape
    return topk_mask(acts.reshape(1, b * n), min(top_k * b, b * n)).reshape(b, n)


def global_batch_threshold(acts: Array, top_k: int, rows: int, axis_name: str) -> Array:
    """The ``top_k * rows``-th largest entry over every device's ``acts`` [B_local, n]
    (inside ``shard_map`` over ``axis_name``; ``rows`` the whole batch's rows).

    Each device sends at most its own ``top_k * rows`` largest entries (all the global
    top can hold from it), so the result is exact.
    """
    count = top_k * rows
    local = jax.lax.top_k(acts.reshape(-1), min(count, acts.size))[0]
    everyone = jax.lax.all_gather(local, axis_name).reshape(-1)
    return jax.lax.top_k(everyone, count)[0][-1]


def smallest_kept(codes: Array) -> Array:
    """The smallest positive entry of ``codes`` (float32 []); +inf when none is."""
    return jnp.min(jnp.where(codes > 0, codes, jnp.inf))
