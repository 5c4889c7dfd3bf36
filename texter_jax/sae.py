"""TopK sparse autoencoder (Gao et al. 2024) as the TEXTER release instantiates it.

The release builds ``overcomplete.sae.TopKSAE(input_dim, nb_concepts, top_k)`` with the
default encoder (factory name ``"linear"``: one ``Linear(d -> n)`` followed by an
identity "norm" layer, then ReLU; no BatchNorm) and the default ``DictionaryLayer``
(``normalization="l2"``, no trainable multiplier). At inference the decoder matrix is

    D = W / (||W_i||_2 + 1e-8) * exp(multiplier)        # [n, d], rows ~unit norm

where ``multiplier`` is a fixed buffer equal to 0 (so the factor is 1). Encoding is

    pre_codes = x @ A + a                                # [B, n]
    codes     = TopK_k(ReLU(pre_codes))                  # others set to 0
    x_hat     = codes @ D                                # [B, d]

Params are a plain dict pytree (see :data:`SaeParams`); :class:`Sae` pairs them with k.
Folder format (:func:`save` / :func:`load`): ``<path>/sae.json`` ({"format", "config"})
and Orbax ``<path>/params``. Training lives in ``train/sae_train.py``; the release's
``sae_model.pth`` in ``converters/release.py``; the choice by path in ``converters/artifacts.py``.

References:
  Gao et al., "Scaling and evaluating sparse autoencoders", https://arxiv.org/abs/2406.04093
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.io.atomic import atomic_directory, write_json_atomic
from texter_jax.io.checkpoints import CheckpointError, restore_pytree, save_pytree
from texter_jax.types import Array, PRNGKey

FORMAT = "texter_jax/sae/v1"

# SaeParams layout (all float32):
#   {"encoder": {"kernel": [d, n], "bias": [n]},
#    "dictionary": {"weights": [n, d], "multiplier": []}}
# ``multiplier`` mirrors the release's non-trainable buffer; it is read through
# ``stop_gradient`` so optimisers see a zero gradient for it. Optional, for SAEs from
# other libraries and BatchTopK: "dictionary": {"bias": [d], "scale": [n]} (decoder bias,
# row norms) and "threshold": [] or [n] (codes = ReLU(pre) where above it, no TopK).
SaeParams = dict[str, Any]

ACTIVATIONS = ("topk", "batchtopk")

# The release adds this to the row norm before dividing (overcomplete normalize_l2).
DICT_NORM_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class SaeConfig:
    """Shape of a TopK SAE.

    Attributes:
      input_dim: d, size of the classifier features the SAE reads.
      nb_concepts: n, number of dictionary atoms (codes per input).
      top_k: k, number of codes kept per input row (on average over a batch for
        "batchtopk").
      activation: "topk" (the release) or "batchtopk" (trained with top-k over the
        batch, encodes with a stored threshold: :mod:`texter_jax.sae_batchtopk`).
    """

    input_dim: int
    nb_concepts: int
    top_k: int
    activation: str = "topk"

    def __post_init__(self):
        if self.input_dim < 1 or self.nb_concepts < 1:
            raise ValueError(f"SaeConfig needs positive sizes, got {self}")
        if not 1 <= self.top_k <= self.nb_concepts:
            raise ValueError(f"top_k must be in [1, nb_concepts], got {self}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"SaeConfig activation {self.activation!r}: expected one of "
                             f"{', '.join(ACTIVATIONS)}")

    @classmethod
    def release_default(cls, input_dim: int, expansion: int = 8) -> SaeConfig:
        """The release's recipe: n = 8 * d, k = n // 10 (``train_sae.py``)."""
        n = expansion * input_dim
        return cls(input_dim=input_dim, nb_concepts=n, top_k=max(n // 10, 1))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["activation"] == "topk":  # folders written before BatchTopK read the same
            d.pop("activation")
        return d


def init_sae(key: PRNGKey, config: SaeConfig) -> SaeParams:
    """Random params with the release's (torch default) initialisers.

    Encoder: torch ``nn.Linear`` default, weight and bias ~ U(-1/sqrt(d), 1/sqrt(d)).
    Dictionary: Xavier-uniform on [n, d], bound sqrt(6 / (n + d)).

    Returns:
      SaeParams dict of float32 arrays (see module docstring for the layout).
    """
    d, n = config.input_dim, config.nb_concepts
    k_w, k_b, k_d = jax.random.split(key, 3)
    enc_bound = 1.0 / math.sqrt(d)
    dict_bound = math.sqrt(6.0 / (n + d))
    return {
        "encoder": {
            "kernel": jax.random.uniform(k_w, (d, n), jnp.float32, -enc_bound, enc_bound),
            "bias": jax.random.uniform(k_b, (n,), jnp.float32, -enc_bound, enc_bound),
        },
        "dictionary": {
            "weights": jax.random.uniform(k_d, (n, d), jnp.float32, -dict_bound, dict_bound),
            "multiplier": jnp.zeros((), jnp.float32),
        },
    }


def sae_pre_codes(params: SaeParams, x: Array) -> Array:
    """Affine encoder: features float32 [B, d] -> pre-activations [B, n]."""
    enc = params["encoder"]
    return x @ enc["kernel"] + enc["bias"]


def topk_mask(values: Array, top_k: int) -> Array:
    """Keeps the ``top_k`` largest entries of each row, zeroes the rest.

    Args:
      values: float [..., n].
      top_k: static int, 1 <= top_k <= n.

    Returns:
      Same shape as ``values``. Exactly ``top_k`` entries per row are copied (ties are
      broken by index, as ``jax.lax.top_k`` does); gradients flow to those entries only.
    """
    vals, idx = jax.lax.top_k(values, top_k)
    # A row-local mask, not a scatter of the top-k values: a scatter is partitioned
    # poorly (the compiler gathers the whole batch for it when the batch is sharded).
    # lax.top_k takes tied entries lowest index first, so the kept ties at the k-th
    # value are exactly those at or below the k-th entry's index.
    kth, kth_idx = vals[..., -1:], idx[..., -1:]
    position = jax.lax.broadcasted_iota(jnp.int32, values.shape, values.ndim - 1)
    keep = (values > kth) | ((values == kth) & (position <= kth_idx))
    return jnp.where(keep, values, jnp.zeros_like(values))


def sae_encode(params: SaeParams, x: Array, top_k: int) -> tuple[Array, Array]:
    """Encodes features into sparse codes.

    Args:
      params: SaeParams.
      x: float32 [B, d] classifier features.
      top_k: static int, codes kept per row.

    Returns:
      ``(pre_codes, codes)``: both float32 [B, n]; ``pre_codes`` is the affine output
      before ReLU (the release's ``pre_codes``), ``codes`` = TopK(ReLU(pre_codes)), or
      for params holding a BatchTopK ``"threshold"`` the ReLU'd entries above it.
    """
    if x.ndim != 2:
        raise ValueError(f"sae_encode expects x of shape [B, d], got {x.shape}")
    d = params["encoder"]["kernel"].shape[0]
    if x.shape[-1] != d:
        raise ValueError(f"sae_encode: features have {x.shape[-1]} dims, SAE expects {d}")
    pre = sae_pre_codes(params, x)
    acts = jax.nn.relu(pre)
    if "threshold" in params:  # BatchTopK at inference: rows do not see each other
        return pre, jnp.where(acts > params["threshold"], acts, jnp.zeros_like(acts))
    return pre, topk_mask(acts, top_k)


def normalized_dictionary(params: SaeParams) -> Array:
    """Decoder matrix D float32 [n, d]: rows L2-normalised (release eps 1e-8) and
    scaled by exp(multiplier), which is a fixed buffer (gradient stopped); an imported
    SAE's ``dictionary["scale"]`` [n] gives each row its own norm back."""
    dic = params["dictionary"]
    w = dic["weights"]
    mult = jax.lax.stop_gradient(dic["multiplier"])
    norm = jnp.linalg.norm(w, axis=-1, keepdims=True)
    d = w / (norm + DICT_NORM_EPS) * jnp.exp(mult)
    return d * dic["scale"][:, None] if "scale" in dic else d


def sae_decode(params: SaeParams, codes: Array) -> Array:
    """Codes float32 [B, n] -> reconstructed features x_hat float32 [B, d] (plus an
    imported SAE's decoder bias ``dictionary["bias"]`` [d])."""
    dic = params["dictionary"]
    if codes.shape[-1] != dic["weights"].shape[0]:
        raise ValueError(
            f"sae_decode: codes have {codes.shape[-1]} units, dictionary has "
            f"{dic['weights'].shape[0]}")
    x_hat = codes @ normalized_dictionary(params)
    return x_hat + dic["bias"] if "bias" in dic else x_hat


def sae_apply(params: SaeParams, x: Array, top_k: int) -> tuple[Array, Array, Array]:
    """The release's ``forward``: ``(pre_codes [B, n], codes [B, n], x_hat [B, d])``."""
    pre, codes = sae_encode(params, x, top_k)
    return pre, codes, sae_decode(params, codes)


def project_dictionary(params: SaeParams) -> SaeParams:
    """Renormalises the dictionary rows in the params (no gradient involved).

    The release's training re-projects the raw weights onto the unit sphere before every
    forward pass and differentiates the *unnormalised* product; a training loop that
    wants that exact scheme calls this before each step. :func:`normalized_dictionary`
    is idempotent on projected weights (up to the 1e-8 eps), so inference agrees either way.
    """
    w = params["dictionary"]["weights"]
    w = w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + DICT_NORM_EPS)
    return {**params, "dictionary": {**params["dictionary"], "weights": w}}


def tie_decoder_to_encoder(params: SaeParams) -> SaeParams:
    """The dictionary set to the encoder's transpose with unit rows (D_i = A[:, i] /
    ||A[:, i]||): an initialisation that starts every latent's decoder direction on its
    encoder direction (Gao et al. 2024 found it keeps latents alive)."""
    w = params["encoder"]["kernel"].T
    w = w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + DICT_NORM_EPS)
    return {**params, "dictionary": {**params["dictionary"], "weights": w}}


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params"],
                   meta_fields=["top_k"])
@dataclasses.dataclass(frozen=True)
class Sae:
    """A TopK SAE ready to encode: its params (:data:`SaeParams`) and its k. A pytree
    (params are its leaves, k is static), so it passes through ``jit``, ``vmap`` and
    ``device_put`` whole."""

    params: Any
    top_k: int


def save(path: str | os.PathLike, config: SaeConfig, params: SaeParams, *,
         overwrite: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Writes the folder format at ``path`` atomically; returns the absolute path."""
    path = Path(path).absolute()
    optional = {k: list(np.shape(v)) for k, v in _optional_leaves(params).items()}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_pytree(tmp / "params", params)
        meta = {"format": FORMAT, "config": config.to_dict(), **(extra or {})}
        if optional:
            meta["optional_params"] = optional
        write_json_atomic(tmp / "sae.json", meta)
    return path


# Params beyond the release's layout: an imported SAE's decoder bias and row norms, a
# BatchTopK / JumpReLU threshold ([] or [n]).
_OPTIONAL = ("dictionary/bias", "dictionary/scale", "threshold")


def _optional_leaves(params: SaeParams) -> dict[str, Any]:
    out = {}
    for key in _OPTIONAL:
        node = params
        for part in key.split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out[key] = node
    return out


def load(path: str | os.PathLike) -> tuple[SaeConfig, SaeParams]:
    """Reads a folder written by :func:`save`; raises CheckpointError otherwise."""
    path = Path(path)
    meta_path = path / "sae.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not an SAE folder: cannot read {meta_path}: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        config = SaeConfig(**meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: bad config {meta.get('config')!r}: {e}") from e
    target = jax.eval_shape(functools.partial(init_sae, config=config), jax.random.key(0))
    optional = meta.get("optional_params", {})
    if config.activation == "batchtopk":
        optional.setdefault("threshold", [])
    for key, shape in optional.items():
        if key not in _OPTIONAL:
            raise CheckpointError(f"{meta_path}: unknown optional parameter {key!r}")
        node, *rest = key.split("/")
        parent = target if not rest else target[node]
        parent[rest[0] if rest else node] = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    return config, restore_pytree(path / "params", target)


def load_sae(path: str | os.PathLike) -> Sae:
    """A :class:`Sae` from a folder written by :func:`save`, or from a ``texter train-sae``
    run folder holding one in ``sae/``."""
    path = Path(path)
    folder = path / "sae" if (path / "sae" / "sae.json").is_file() else path
    config, params = load(folder)
    return Sae(params, int(config.top_k))
