"""A convolution whose input gradient XLA:CPU keeps fast inside loops.

Autodiff of ``lax.conv_general_dilated`` writes the input gradient as a convolution
whose kernel has its in/out feature axes swapped (an ``HWOI`` kernel layout). XLA:CPU
rewrites that form into its fast convolution only at the top level of a program; in
the body of a while loop (``lax.scan``: MACO's 512 steps) it stays on a slow path.
Measured on ResNet-50 inside the MACO scan (one core): 3.27 s per step with plain
autodiff, 1.68 s with this function (ENV_FACTS, 2026-11-30).

:func:`conv_general_dilated` has the signature of ``lax.conv_general_dilated`` (so
``flax.linen.Conv(conv_general_dilated=...)`` takes it) and the same forward value.
Its custom VJP writes the input gradient explicitly as an ordinary NHWC/HWIO
convolution of the output cotangent (dilated by the stride) with the kernel flipped in
space and its in/out axes swapped, materialised in HWIO order. The kernel's gradient
still comes from ``jax.vjp`` of the forward convolution; when only the input is
differentiated (MACO, IG), XLA drops that branch. Convolutions outside the common case
(other layouts, dilations, grouped but not depthwise) fall back to the plain
primitive.

Depthwise convolutions (one group per channel, multiplier 1) take a different road:
:func:`depthwise_conv` writes them as ``k * k`` strided slices of the padded input, each
scaled by its tap's per-channel weights and summed, which XLA fuses into elementwise
loops; autodiff then gives pads and adds, no convolution at all. XLA:CPU's grouped
convolution is far slower: EfficientNet-Lite0, 6 crops forward + input gradient inside
a scan, one core shared with another process: 4.55 s per step with the grouped
convolution, 1.12 s with this form (2026-11-30, ``bench/real_weights_maco.py`` era).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from texter_jax.types import Array

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        want = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
        return dimension_numbers == want
    return tuple(dimension_numbers) == _NHWC


def _explicit_padding(padding, x_shape, w_shape, strides) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _forward(x, w, strides, padding, groups, precision):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC,
                                    feature_group_count=groups, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, padding, groups, precision):
    return _forward(x, w, strides, padding, groups, precision)


def _conv_fwd(x, w, strides, padding, groups, precision):
    return _forward(x, w, strides, padding, groups, precision), (x, w)


def input_gradient(g: Array, w: Array, x_shape: Sequence[int], strides, padding,
                   groups: int = 1, precision=None) -> Array:
    """d(conv)/d(input) applied to the output cotangent, as one ordinary convolution.

    Args:
      g: output cotangent [B, Ho, Wo, O].
      w: forward kernel [kh, kw, I / groups, O] (HWIO).
      x_shape: the forward input's shape [B, H, W, I].
      strides, padding: the forward convolution's (explicit ``(lo, hi)`` pairs).
      groups: the forward ``feature_group_count``: 1, or I for a depthwise convolution
        (multiplier 1).

    Returns:
      [B, H, W, I], equal to what autodiff of the forward convolution gives.
    """
    kh, kw = w.shape[:2]
    w_t = jnp.flip(w, (0, 1))
    if groups == 1:
        w_t = jnp.swapaxes(w_t, 2, 3)  # [kh, kw, O, I]: in/out swapped, HWIO order
    # Depthwise (multiplier 1, kernel [kh, kw, 1, I]): each channel is its own 1x1
    # group, so the flipped kernel is already the transpose.
    pads = []
    for d, k in enumerate((kh, kw)):
        lo, _ = padding[d]
        n_in, n_out, s = x_shape[1 + d], g.shape[1 + d], strides[d]
        # Convolving the stride-dilated cotangent (length (n_out - 1) * s + 1) must give
        # n_in outputs: before = k - 1 - lo, after = n_in - (n_out - 1) * s + lo - 1.
        pads.append((k - 1 - lo, n_in - (n_out - 1) * s + lo - 1))
    return lax.conv_general_dilated(g, w_t.astype(g.dtype), (1, 1), pads,
                                    lhs_dilation=tuple(strides), dimension_numbers=_NHWC,
                                    feature_group_count=groups, precision=precision)


def _conv_bwd(strides, padding, groups, precision, res, g):
    x, w = res
    gx = input_gradient(g, w, x.shape, strides, padding, groups, precision)
    _, pull = jax.vjp(lambda w_: _forward(x, w_, strides, padding, groups, precision), w)
    (gw,) = pull(g)
    return gx.astype(x.dtype), gw


_conv.defvjp(_conv_fwd, _conv_bwd)


def depthwise_conv(x: Array, w: Array, strides: Sequence[int],
                   padding: Sequence[tuple[int, int]]) -> Array:
    """Depthwise convolution (multiplier 1) as a sum of ``kh * kw`` shifted products.

    Args:
      x: [B, H, W, C] (NHWC).
      w: [kh, kw, 1, C] (HWIO with one input feature per group).
      strides: (sh, sw).
      padding: explicit ``((lo, hi), (lo, hi))`` for H and W.

    Returns:
      [B, Ho, Wo, C], ``lax.conv_general_dilated(..., feature_group_count=C)``'s value up
      to float32 summation order.
    """
    kh, kw = w.shape[:2]
    sh, sw = strides
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = lax.slice(xp, (0, i, j, 0),
                            (xp.shape[0], i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1,
                             xp.shape[3]), (1, sh, sw, 1)) * w[i, j, 0].astype(x.dtype)
            out = tap if out is None else out + tap
    return out


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` with a loop-friendly input gradient (see module doc).

    Same arguments and value (depthwise: up to summation order); the fast paths cover
    NHWC/HWIO convolutions without dilation, ungrouped (custom input gradient) or
    depthwise with multiplier 1 (:func:`depthwise_conv`), in the inputs' dtype.
    """
    plain = (lhs_dilation not in (None, (1, 1)) or rhs_dilation not in (None, (1, 1))
             or batch_group_count != 1 or preferred_element_type is not None
             or not _is_nhwc(dimension_numbers) or lhs.ndim != 4
             or feature_group_count not in (1, lhs.shape[-1])
             or (feature_group_count > 1 and rhs.shape[-1] != feature_group_count))
    if plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    strides = tuple(int(s) for s in window_strides)
    pads = _explicit_padding(padding, lhs.shape, rhs.shape, strides)
    if feature_group_count > 1:
        return depthwise_conv(lhs, rhs, strides, pads)
    return _conv(lhs, rhs, strides, pads, int(feature_group_count), precision)


def conv_layer(features: int, kernel: int, stride: int, name: str, *, padding,
               groups: int = 1) -> nn.Conv:
    """A bias-free square Linen convolution that runs through :func:`conv_general_dilated`
    (the CNN zoo's convolutions: ResNet pads like torch, EfficientNet like TF)."""
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   feature_group_count=groups, use_bias=False, name=name,
                   conv_general_dilated=conv_general_dilated)


def frozen_batch_norm(name: str, epsilon: float) -> nn.BatchNorm:
    """Inference-mode BatchNorm (running statistics from ``batch_stats``)."""
    return nn.BatchNorm(use_running_average=True, epsilon=epsilon, name=name)
