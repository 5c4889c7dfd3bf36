"""Reader-control canvases show the value they claim, and only it, at stage-3 crop scale."""

import numpy as np
import pytest

from texter_jax.world import DISCRETE, upsampled_inputs, value_canvases
from texter_jax.world.attributes import BADGE_RGB, COLOUR_RGB

S = 128


def _near(canvas, rgb, tol=0.12):
    return np.all(np.abs(canvas - np.asarray(rgb)) < tol, axis=-1)


def test_upsampled_inputs_is_bilinear_resize():
    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 16, 3), dtype=np.float32)
    up = upsampled_inputs(x, 64)
    assert up.shape == (2, 64, 64, 3) and up.dtype == np.float32
    np.testing.assert_allclose(up.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=0.02)
    # each 4x4 block's centre lies between neighbouring source pixels
    assert np.all(up >= x.min() - 1e-6) and np.all(up <= x.max() + 1e-6)


@pytest.mark.parametrize("value", range(len(DISCRETE["colour"])))
def test_colour_canvas_is_the_colour_with_mixed_patterns(value):
    c = value_canvases("colour", value, 2, S, seed=0)
    assert c.shape == (2, S, S, 3) and c.dtype == np.float32

    def share(rgb):  # the colour or its pattern shade (stripes, dots: 0.35 x the colour)
        return (_near(c, rgb) | _near(c, 0.35 * np.asarray(rgb), 0.08)).mean()

    assert share(COLOUR_RGB[value]) > 0.75
    assert all(share(rgb) < 0.03 for u, rgb in enumerate(COLOUR_RGB) if u != value)
    # no flat field: the pattern is not constant (shaded stripes and dots on some cells)
    assert 0.05 < _near(c, 0.35 * np.asarray(COLOUR_RGB[value]), 0.08).mean() < 0.5


def test_background_canvas_has_no_object_or_badge():
    c = value_canvases("background", "sky", 2, S, seed=1)
    for rgb in list(COLOUR_RGB) + list(BADGE_RGB):
        assert _near(c, rgb, 0.05).mean() < 0.01
    assert np.mean(c[..., 2] > c[..., 0]) > 0.95  # sky: blue above red (clouds aside)


def test_badge_and_shape_grids_repeat_the_value_at_crop_scale():
    crop = 0.275 * S
    c = value_canvases("badge", "pink", 2, S, seed=2)
    pink = _near(c, BADGE_RGB[0], 0.15)
    # one badge per cell of 0.8 crop, its pink disc ~1 % of the cell
    assert 0.004 < pink.mean() < 0.03
    k = int(crop)
    for y in range(0, S - k, k // 2):
        for x in range(0, S - k, k // 2):
            assert pink[:, y:y + k, x:x + k].any(axis=(1, 2)).all()
    c = value_canvases("shape", "star", 2, S, seed=3)
    objects = np.zeros(c.shape[:3], bool)
    for rgb in COLOUR_RGB:
        objects |= _near(c, rgb, 0.1) | _near(c, 0.35 * rgb, 0.08)
    # every crop-sized window holds object pixels
    for y in range(0, S - k, k // 2):
        for x in range(0, S - k, k // 2):
            assert objects[:, y:y + k, x:x + k].mean(axis=(1, 2)).min() > 0.02


def test_value_canvas_errors():
    with pytest.raises(ValueError, match="no value canvas"):
        value_canvases("size", "large", 1, S, seed=0)
    with pytest.raises(ValueError, match="not in"):
        value_canvases("shape", 9, 1, S, seed=0)
    with pytest.raises(ValueError):
        value_canvases("colour", "teal", 1, S, seed=0)
