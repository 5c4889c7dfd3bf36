"""The loop-friendly convolution: same values and gradients as autodiff, bit for bit, and
no swapped-kernel convolution left in the compiled MACO loop."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from texter_jax.emphasis import MacoConfig, default_spectrum, features_objective, with_units
from texter_jax.emphasis.render import _as_pytree, _maco_jit
from texter_jax.models.conv import conv_general_dilated
from texter_jax.models.efficientnet_lite import EfficientNetLiteConfig
from texter_jax.models.efficientnet_lite import make_classifier as make_lite
from texter_jax.models.resnet import ResNetConfig, make_classifier, random_variables

NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("n,k,stride,padding,cin,cout,groups", [
    (9, 3, 1, ((1, 1), (1, 1)), 4, 5, 1),
    (9, 3, 2, ((1, 1), (1, 1)), 4, 5, 1),
    (10, 7, 2, ((3, 3), (3, 3)), 3, 6, 1),   # ResNet stem
    (8, 1, 2, ((0, 0), (0, 0)), 4, 6, 1),    # projection shortcut
    (11, 3, 2, "SAME", 4, 4, 1),
    (10, 5, 2, "VALID", 3, 2, 1),
    (9, 3, 2, ((1, 1), (1, 1)), 4, 4, 4),    # depthwise
    (10, 5, 1, "SAME", 6, 6, 6),
    (12, 3, 2, "SAME", 4, 4, 4),             # EfficientNet: TF padding (0, 1)
    (12, 5, 2, "SAME", 4, 4, 4),             # EfficientNet: TF padding (1, 2)
])
def test_values_and_gradients_equal_autodiff(n, k, stride, padding, cin, cout, groups):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, n, n, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin // groups, cout)), jnp.float32)

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, (stride, stride), padding,
                                         dimension_numbers=NHWC,
                                         feature_group_count=groups) ** 2)

    want = jax.value_and_grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
    got = jax.value_and_grad(loss(conv_general_dilated), (0, 1))(x, w)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        if groups == 1:  # the same convolutions, written differently: bitwise
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:  # depthwise as shifted products: the same sums in another order
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-4)


def test_other_layouts_fall_back_to_the_primitive():
    x = jnp.ones((1, 3, 8, 8))
    w = jnp.ones((4, 3, 3, 3))
    out = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    ref = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    np.testing.assert_array_equal(out, ref)


def _tiny_lite():
    cfg = EfficientNetLiteConfig(stages=((1, 3, 1, 1, 8, 8), (1, 5, 2, 2, 8, 16)),
                                 stem_width=8, head_width=24, num_classes=5, image_size=32)
    return make_lite(cfg)


@pytest.mark.parametrize("family", ["resnet", "efficientnet_lite"])
def test_maco_loop_has_no_swapped_kernel_convolution(family):
    # XLA:CPU keeps a convolution whose kernel is read in/out-swapped ("01oi") on a slow
    # path inside while loops; the compiled loop must contain only the plain form. The
    # EfficientNet case covers depthwise convolutions with TF "SAME" padding.
    if family == "resnet":
        clf = make_classifier(ResNetConfig(block="basic", depths=(1, 1), widths=(8, 16),
                                           stem_width=8, num_classes=5, image_size=32))
    else:
        clf = _tiny_lite()
    v = jax.tree.map(jnp.asarray, random_variables(clf, 0))
    mc = MacoConfig(canvas=48, steps=3, crop_size=32, n_crops=2)
    obj = with_units(features_objective(clf, v), jnp.arange(3))
    hlo = _maco_jit.lower(_as_pytree(obj), jax.random.key(0),
                          jnp.asarray(default_spectrum(48)), jnp.int32(0), config=mc,
                          every=0).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([a-z0-9_>-]+)", hlo)
    # Forward and input-gradient convolutions of every layer (XLA turns some 1x1 ones
    # into dots): ResNet has 5 spatial convolutions; the tiny Lite's depthwise ones are
    # shifted products (no convolution, none grouped), which leaves its stem.
    assert len(labels) >= (10 if family == "resnet" else 2)
    assert "feature_group_count" not in hlo
    assert set(labels) == {"b01f_01io->b01f"}, sorted(set(labels))
