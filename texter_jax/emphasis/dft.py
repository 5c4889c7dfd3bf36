"""The inverse real 2-D FFT of MACO's parameterisation, written per backend.

On TPU, XLA expands an FFT of a 1280 x 1280 canvas into many small dot and transpose
fusions; the compiler's cost model charged that pair (forward and its gradient) 3.1 GB of
memory traffic per image and step, half of a ResNet-50 MACO step. Written as dense DFT
matrix products at ``precision=HIGHEST`` (fp32 numerics: six bf16 passes on the MXU) the
same transform costs 1.2 GB there (measured with the TPU compiler; docs/devices.md). On
CPU and GPU the FFT stays: the dense form has ~6x its flops.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.types import Array


@functools.lru_cache(maxsize=8)
def dft_matrices(size: int) -> tuple[np.ndarray, ...]:
    """``(c0, s0, c1, s1)``: cos / sin of the inverse DFT along the rows [S, S], and the
    half-spectrum-to-real DFT along the columns [S // 2 + 1, S] with its Hermitian weights
    and both 1/S factors folded in. Angles reduced exactly (integer ``k n mod S``) and
    evaluated in float64."""
    half = size // 2 + 1

    def angles(n_in, n_out):
        k, n = np.arange(n_in)[:, None], np.arange(n_out)[None, :]
        return 2.0 * np.pi * ((k * n) % size) / size

    a0, a1 = angles(size, size), angles(half, size)
    w = np.full((half, 1), 2.0)
    w[0] = 1.0
    if size % 2 == 0:
        w[-1] = 1.0  # the Nyquist bin counts once
    scale = w / (size * size)
    return tuple(m.astype(np.float32) for m in
                 (np.cos(a0), np.sin(a0), np.cos(a1) * scale, np.sin(a1) * scale))


def irfft2_dense(re: Array, im: Array) -> Array:
    """``irfft2(re + i im, s=(S, S))`` as matrix products: re, im [..., S, S // 2 + 1] ->
    [..., S, S], float32 at ``precision=HIGHEST``."""
    c0, s0, c1, s1 = (jnp.asarray(m) for m in dft_matrices(re.shape[-2]))
    dot = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)
    yr = dot("...kj,kn->...nj", re, c0) - dot("...kj,kn->...nj", im, s0)
    yi = dot("...kj,kn->...nj", re, s0) + dot("...kj,kn->...nj", im, c0)
    return dot("...nk,km->...nm", yr, c1) - dot("...nk,km->...nm", yi, s1)


def irfft2_fft(re: Array, im: Array) -> Array:
    """The same through ``jnp.fft`` (CPU, GPU)."""
    size = re.shape[-2]
    return jnp.fft.irfft2(jax.lax.complex(re, im), s=(size, size), axes=(-2, -1))


def irfft2(re: Array, im: Array) -> Array:
    """Inverse real 2-D FFT of ``re + i im`` [..., S, S // 2 + 1] -> [..., S, S]: dense DFT
    products when compiled for TPU, ``jnp.fft`` elsewhere (chosen when lowering)."""
    return jax.lax.platform_dependent(re, im, tpu=irfft2_dense, default=irfft2_fft)
