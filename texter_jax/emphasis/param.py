"""MACO image parameterisation: a Fourier phase under a fixed magnitude template.

The image is never optimised in pixel space. Its latent is the phase of a real 2-D
spectrum, one plane per decorrelated colour channel, float32 ``[3, S, S // 2 + 1]``
(the ``rfft2`` half-plane of an ``S x S`` canvas); the magnitude is a fixed template
of the same shape (see :mod:`texter_jax.emphasis.spectrum`). ``phase_to_image`` maps a
phase to pixels in the order the release uses (``src/horama/maco_fv.py:
maco_preconditioner``; helpers in ``src/horama/common.py``):

1. standardise the phase over all its entries;
2. spectrum = magnitude * (cos(phase) + i sin(phase));
3. inverse real FFT per channel -> ``[3, S, S]``;
4. standardise the spatial image over all its entries (all channels together);
5. recolour: each pixel's 3-vector times the fixed ImageNet colour-correlation square
   root (decorrelated space -> RGB);
6. sigmoid, giving pixels in (0, 1).

NOTE: the phase starts N(0, 1) and is standardised, not uniform on the circle, so
E[cos(phase)] = exp(-1/2) = 0.61: every frequency shares a coherent real part, and the
initial image holds a bright peak at pixel (0, 0) (the inverse FFT of the magnitude
itself; ~95 std at S = 256 with the power law) on top of the random texture. The
release has the same property; we keep it. Crops centred at 0.5 +- 0.15 rarely reach
that corner, and stage 3 clips pixels to their 1st/99th percentiles. In float32 the
sigmoid there rounds to exactly 1.0.

References:
  Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude
  Constrained Optimization", NeurIPS 2023, https://arxiv.org/abs/2306.06805
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.emphasis.dft import irfft2
from texter_jax.types import Array, PRNGKey

# Square root of the ImageNet RGB colour-correlation matrix, as horama ships it
# (src/horama/common.py:get_color_correlation_svd_sqrt). Rows are indexed by the
# decorrelated channel and columns by RGB, and a pixel row vector is multiplied on
# the left (rgb = x @ M). Row 0 has unit norm: it is lucid's U*sqrt(S) divided by its
# largest column norm and transposed. Row 0 carries luminance; rows 1 and 2 carry
# the two opponent-colour axes at 0.28 and 0.13 of its scale.
COLOR_CORRELATION_SQRT = np.array(
    [[0.56282854, 0.58447580, 0.58447580],
     [0.19482528, 0.00000000, -0.19482528],
     [0.04329450, -0.10823626, 0.06494176]],
    dtype=np.float32)

# Added to the standard deviation in every standardisation (release: common.py:12).
STANDARDIZE_EPS = 1e-4


def spectrum_shape(canvas: int) -> tuple[int, int, int]:
    """Shape of phase and magnitude for an ``canvas x canvas`` image: (3, S, S//2 + 1)."""
    return (3, canvas, canvas // 2 + 1)


def standardize(x: Array, eps: float = STANDARDIZE_EPS) -> Array:
    """(x - mean) / (std + eps) over *all* entries of ``x``.

    The standard deviation is the unbiased one (ddof=1), as ``torch.std`` computes it.
    """
    x = x - jnp.mean(x)
    return x / (jnp.std(x, ddof=1) + eps)


def init_phase(key: PRNGKey, canvas: int, std: float = 1.0) -> Array:
    """A random starting phase, float32 [3, canvas, canvas // 2 + 1] ~ N(0, std^2).

    The release draws ``randn * 1.0`` (maco_fv.py:init_maco_buffer).
    """
    return std * jax.random.normal(key, spectrum_shape(canvas), jnp.float32)


def recorrelate_colors(image: Array) -> Array:
    """Decorrelated-space pixels [..., 3] -> RGB-correlated pixels [..., 3] (x @ M)."""
    return _mix_channels(image, COLOR_CORRELATION_SQRT)


def _mix_channels(image: Array, matrix: np.ndarray) -> Array:
    # x @ M as three broadcast multiply-adds: a K=3 matmul is far slower on CPU
    # (~12x at 1280^2) and gains nothing on GPU, and this is exact fp32 everywhere.
    m = jnp.asarray(matrix, image.dtype)
    return image[..., 0:1] * m[0] + image[..., 1:2] * m[1] + image[..., 2:3] * m[2]


def decorrelate_colors(image: Array) -> Array:
    """Inverse of :func:`recorrelate_colors`: RGB pixels [..., 3] -> decorrelated [..., 3].

    numpy or JAX input; used to measure image spectra in the space the phase lives in.
    """
    inv = np.linalg.inv(COLOR_CORRELATION_SQRT.astype(np.float64))
    if isinstance(image, np.ndarray):
        return image @ inv.astype(image.dtype)
    return _mix_channels(image, inv)


def phase_to_image(phase: Array, magnitude: Array) -> Array:
    """Phase -> image, the MACO preconditioner.

    Args:
      phase: float32 [3, S, S // 2 + 1], the latent being optimised.
      magnitude: float32 [3, S, S // 2 + 1], the fixed template (any positive scale;
        the spatial standardisation removes a global factor).

    Returns:
      float32 [S, S, 3], NHWC without batch, values in (0, 1).
    """
    if phase.shape != magnitude.shape or phase.ndim != 3 or phase.shape[0] != 3:
        raise ValueError(f"phase {phase.shape} and magnitude {magnitude.shape} must both "
                         "be [3, S, S // 2 + 1]")
    canvas = phase.shape[1]
    if magnitude.shape[2] != canvas // 2 + 1:
        raise ValueError(f"last axis {magnitude.shape[2]} != S // 2 + 1 for S = {canvas}")
    p = standardize(phase)
    # cos/sin spelled out like the release (its comment notes r*exp(i*theta) differed
    # slightly in torch); in exact arithmetic they are the same spectrum.
    # s=(S, S) inside makes odd canvases round-trip too; for even S it equals the
    # release's default. Per backend: dense DFT products on TPU (:mod:`.dft`).
    spatial = irfft2(jnp.cos(p) * magnitude, jnp.sin(p) * magnitude)
    spatial = standardize(spatial)
    # Mix colours on the planar [3, S, S] layout, then move channels last: the same
    # sums, but under vmap the [..., S, S, 3] form was 4.7x slower on CPU (ENV_FACTS).
    m = jnp.asarray(COLOR_CORRELATION_SQRT, spatial.dtype)
    rgb = jnp.stack([spatial[0] * m[0, c] + spatial[1] * m[1, c] + spatial[2] * m[2, c]
                     for c in range(3)])
    return jnp.transpose(jax.nn.sigmoid(rgb), (1, 2, 0))
