"""Stage 1 of TEXTER: which units drive the predicted logit (integrated gradients).

For a scalar function ``F_c`` of a feature vector ``z`` and a baseline ``z'`` (zero here),

    s_j = (z_j - z'_j) * sum_m w_m * dF_c(z' + a_m (z - z'))/dz_j

with quadrature nodes ``a_m`` and weights ``w_m`` on [0, 1]. The paper writes the right
Riemann sum (``a_m = m/M``, ``w_m = 1/M``). The release calls captum's
``IntegratedGradients.attribute(..., n_steps=100)`` without ``method``, so what it
actually runs is captum's default, **Gauss-Legendre** with 100 nodes; that is our default.
All five captum rules are offered with captum's exact nodes and weights (note captum's
``riemann_trapezoid`` weights sum to 1 - 1/M, not 1).

Units are then ranked by |s_j| (release: ``abs(attribution)``, sorted descending, ties
kept in index order), over all features, or over the *active* SAE codes only.

References:
  Sundararajan et al., "Axiomatic Attribution for Deep Networks", https://arxiv.org/abs/1703.01365
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.sae import SaeParams, sae_decode
from texter_jax.types import Array, PRNGKey

METHODS = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
           "riemann_trapezoid")
# Release: captum default method, n_steps=100.
DEFAULT_METHOD = "gausslegendre"
DEFAULT_STEPS = 100
# Interpolated points evaluated per scan step are capped at this many floats
# (16 Mi floats = 64 MiB per buffer), so B * M * n never materialises at once.
_MAX_ELEMENTS_PER_STEP = 1 << 24


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``a`` and weights ``w`` (float64 [steps]) of captum's IG rules on [0, 1].

    >>> a, w = quadrature("riemann_right", 4)
    >>> a.tolist(), w.tolist()
    ([0.25, 0.5, 0.75, 1.0], [0.25, 0.25, 0.25, 0.25])
    """
    if method == "gausslegendre":
        if steps < 1:
            raise ValueError("gausslegendre needs steps >= 1")
        x, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (1.0 + x), 0.5 * w
    if method not in METHODS:
        raise ValueError(f"unknown IG method {method!r}; choose one of {METHODS}")
    if steps < 2:
        raise ValueError(f"{method} needs steps >= 2 (as captum)")
    n = steps
    w = np.full(n, 1.0 / n)
    if method == "riemann_right":
        a = np.linspace(1.0 / n, 1.0, n)
    elif method == "riemann_left":
        a = np.linspace(0.0, 1.0 - 1.0 / n, n)
    elif method == "riemann_middle":
        a = np.linspace(0.5 / n, 1.0 - 0.5 / n, n)
    else:  # riemann_trapezoid, captum's variant: end weights halved, spacing 1/(n-1)
        a = np.linspace(0.0, 1.0, n)
        w[0] /= 2
        w[-1] /= 2
    return a, w


def default_chunk(rows: int, width: int, steps: int) -> int:
    """Quadrature nodes per scan step for ``rows`` rows of ``width`` units: as many as keep
    ``chunk * rows * width`` under 16 Mi floats. With the batch sharded, ``rows`` is the
    per-device batch, so adding devices does not shrink each device's chunk."""
    return max(1, min(steps, _MAX_ELEMENTS_PER_STEP // max(1, rows * width)))


def integrated_gradients(fn: Callable[[Array], Array], x: Array, baseline: Array | None = None,
                         *, steps: int = DEFAULT_STEPS, method: str = DEFAULT_METHOD,
                         chunk: int | None = None, unroll: bool = False) -> Array:
    """Integrated gradients of a row-wise scalar function, batched over rows.

    Args:
      fn: maps points float [N, D] to one scalar per row [N]; rows must not interact
        (true of classifier heads and SAE decoders), since the gradient of the sum is
        taken. It is called on ``B * chunk`` rows at a time: input row ``i`` at node
        ``c`` is row ``i * chunk + c`` (batch-major, so a batch split over devices
        stays split).
      x: float [B, D] inputs.
      baseline: float [B, D] or None (zeros, as the release).
      steps: number of quadrature nodes M.
      method: one of :data:`METHODS`.
      chunk: nodes evaluated per scan step; by default :func:`default_chunk` of the
        B rows. Padding nodes carry weight 0.
      unroll: write the scan over chunks out (the compiler's cost model counts a loop's
        body once; :mod:`texter_jax.plan` compiles this form for its figures).

    Returns:
      Attributions float [B, D], same dtype as ``x``.
    """
    if x.ndim != 2:
        raise ValueError(f"integrated_gradients expects x [B, D], got {x.shape}")
    baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
    alphas, weights = quadrature(method, steps)
    b, d = x.shape
    if chunk is None:
        chunk = default_chunk(b, d, steps)
    n_chunks = math.ceil(steps / chunk)
    pad = n_chunks * chunk - steps
    alphas = np.concatenate([alphas, np.ones(pad)]).reshape(n_chunks, chunk)
    weights = np.concatenate([weights, np.zeros(pad)]).reshape(n_chunks, chunk)
    delta = x - baseline
    grad_sum = jax.grad(lambda pts: jnp.sum(fn(pts)))

    def body(acc, aw):
        a, w = aw
        pts = baseline[:, None] + a[None, :, None] * delta[:, None]  # [B, chunk, D]
        g = grad_sum(pts.reshape(b * chunk, d)).reshape(b, chunk, d)
        return acc + jnp.einsum("c,bcd->bd", w, g), None

    acc, _ = jax.lax.scan(body, jnp.zeros_like(x),
                          (jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype)),
                          unroll=n_chunks if unroll else 1)
    return delta * acc


def _target_logit(head_fn: Callable[[Array], Array], class_idx: Array, b: int):
    """Row-wise F_c for points laid out batch-major, ``chunk`` nodes per row."""
    class_idx = jnp.asarray(class_idx, jnp.int32).reshape(b)

    def f(points):
        logits = head_fn(points)  # [B * chunk, C]
        reps = logits.shape[0] // b
        tgt = jnp.repeat(class_idx, reps)
        return jnp.take_along_axis(logits, tgt[:, None], axis=-1)[:, 0]

    return f


def ig_features(head_fn: Callable[[Array], Array], z: Array, class_idx: Array, *,
                steps: int = DEFAULT_STEPS, method: str = DEFAULT_METHOD,
                chunk: int | None = None, unroll: bool = False) -> Array:
    """IG of logit ``class_idx`` w.r.t. classifier features, baseline 0.

    Args:
      head_fn: features float [N, D] -> logits [N, C] (e.g.
        ``functools.partial(classifier.head, variables)``).
      z: float32 [B, D] penultimate features.
      class_idx: int [B] target class per row (the predicted class in TEXTER).

    Returns:
      Attributions float32 [B, D].
    """
    return integrated_gradients(_target_logit(head_fn, class_idx, z.shape[0]), z,
                                steps=steps, method=method, chunk=chunk, unroll=unroll)


def ig_sae_codes(head_fn: Callable[[Array], Array], sae_params: SaeParams, codes: Array,
                 class_idx: Array, *, steps: int = DEFAULT_STEPS,
                 method: str = DEFAULT_METHOD, chunk: int | None = None,
                 unroll: bool = False) -> Array:
    """IG of ``head(decode(codes))[class_idx]`` w.r.t. the TopK SAE codes, baseline 0.

    Args:
      head_fn: features [N, d] -> logits [N, C].
      sae_params: the SAE whose dictionary decodes the codes.
      codes: float32 [B, n] TopK codes of the image features.
      class_idx: int [B].

    Returns:
      Attributions float32 [B, n]; inactive codes (0) get exactly 0.
    """
    f = _target_logit(lambda c: head_fn(sae_decode(sae_params, c)), class_idx, codes.shape[0])
    return integrated_gradients(f, codes, steps=steps, method=method, chunk=chunk,
                                unroll=unroll)


def top_units(scores: Array, k: int = 6, active: Array | None = None, *,
              by: str = "abs") -> tuple[Array, Array]:
    """The ``k`` most contributing units per row.

    Release rule: rank by ``|score|`` descending (ties: lower index first), over the active
    SAE codes only when scoring codes (``active = codes != 0``), over all units otherwise.

    Args:
      scores: float [B, n] attributions.
      k: static number of units.
      active: optional bool [B, n]; inactive units are never selected.
      by: ``"abs"`` (release) or ``"signed"`` (largest positive contribution first).

    Returns:
      ``(indices, values)``: int32 [B, k] and the signed scores [B, k], ordered by rank.
      Where a row has fewer than ``k`` active units, the trailing slots hold index -1
      and value 0.
    """
    if by not in ("abs", "signed"):
        raise ValueError(f"by must be 'abs' or 'signed', got {by!r}")
    key = jnp.abs(scores) if by == "abs" else scores
    if active is not None:
        key = jnp.where(active, key, -jnp.inf)
    k_eff = min(k, scores.shape[-1])
    top, idx = jax.lax.top_k(key, k_eff)
    valid = top > -jnp.inf
    values = jnp.where(valid, jnp.take_along_axis(scores, idx, axis=-1), 0)
    idx = jnp.where(valid, idx, -1).astype(jnp.int32)
    if k_eff < k:
        fill = k - k_eff
        idx = jnp.pad(idx, ((0, 0), (0, fill)), constant_values=-1)
        values = jnp.pad(values, ((0, 0), (0, fill)))
    return idx, values


def random_units(key: PRNGKey, active: Array, ranked: int) -> tuple[Array, Array]:
    """Random unit rankings drawn uniformly from each row's pool.

    Args:
      key: PRNG key.
      active: bool [B, U], the pool (active SAE codes, or all True for features).
      ranked: R, units per row (the retry rule may use more than k_neu of them).

    Returns:
      ``(ids int32 [B, R], valid bool [B, R])``: a uniformly random ordering of the pool
      (valid entries form a prefix; rows with fewer than R active units are padded with
      id 0 / valid False).
    """
    u = jax.random.uniform(key, active.shape)
    score = jnp.where(active, u, -1.0)
    vals, ids = jax.lax.top_k(score, min(ranked, active.shape[1]))
    valid = vals >= 0
    ids = jnp.where(valid, ids, 0).astype(jnp.int32)
    pad = ranked - ids.shape[1]
    if pad > 0:
        ids = jnp.pad(ids, ((0, 0), (0, pad)))
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
    return ids, valid
