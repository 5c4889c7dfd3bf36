"""Mosaic views: tiles share the value, the window cuts across tiles, captions name only
what every tile shares and the mosaic shows, a classifier's mosaic is labelled with the
shared value; and control (a)'s tiling geometry."""

import jax
import numpy as np
import pytest

from texter_jax import mapping
from texter_jax.explain import image_keys
from texter_jax.world import (
    ATTR_ORDER,
    DISCRETE,
    mosaic_visible,
    render,
    render_mosaics,
    sample_mosaics,
    tiled_inputs,
)
from texter_jax.world.attributes import sample_attributes
from texter_jax.world.captions import captions
from texter_jax.world.classifier_data import TASKS, ClassifierTrainConfig, training_mosaics
from texter_jax.world.controls import tile_px, tiled_crop_visible
from texter_jax.world.generator import badge_coverage, coverage
from texter_jax.world.mosaics import max_tiles, touched_tiles

S = 64
COL = {a: i for i, a in enumerate(ATTR_ORDER)}


@pytest.mark.parametrize("attr", ["shape", "colour", "badge", "pattern", "background"])
def test_tiles_share_the_value_and_the_rest_varies(attr):
    values = np.arange(24) % len(DISCRETE[attr])
    m = sample_mosaics(0, 24, S, shared=attr, values=values)
    assert np.all(m.shared == COL[attr])
    np.testing.assert_array_equal(m.shared_values(), values)
    varied = 0
    for i in range(len(m)):
        t = m.tiles_of(i)
        assert len(t) == m.per_side[i] ** 2
        np.testing.assert_array_equal(getattr(t, attr), values[i])
        others = [a for a in ATTR_ORDER if a != attr]
        varied += all(len(set(getattr(t, a))) > 1 for a in others if a != "size")
    assert varied >= 12  # every other attribute varies across the tiles of most mosaics
    # tiles per window side in [1, max_tiles]: the window touches 2x2 to 4x4 tiles
    t = S / m.tile_px
    assert t.min() >= 0.97 and t.max() <= max_tiles(attr, S) + 0.1
    assert np.all((m.offset >= 0) & (m.offset < m.tile_px[:, None]))
    # the grid always covers the window
    assert np.all(m.per_side * m.tile_px >= S + m.offset.max(axis=1))


def test_max_tiles_follows_the_pixel_scale_rules():
    assert max_tiles("shape", 64) == pytest.approx(0.21 * 64 / 5.0)
    assert max_tiles("badge", 64) == pytest.approx(0.075 * 64 / 2.5)
    assert max_tiles("colour", 64) == 3.0 and max_tiles("badge", 512) == 3.0


def test_render_is_the_window_of_the_tile_grid():
    m = sample_mosaics(1, 6, S)
    out = render_mosaics(m, 5)
    assert out.shape == (6, S, S, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(render_mosaics(m, 5), out)  # pure
    for i in range(len(m)):
        px, n_side = int(m.tile_px[i]), int(m.per_side[i])
        cells = render(m.tiles_of(i), 5, image_size=px)
        grid = cells.reshape(n_side, n_side, px, px, 3).swapaxes(1, 2).reshape(
            n_side * px, n_side * px, 3)
        oy, ox = m.offset[i]
        np.testing.assert_array_equal(out[i], grid[oy:oy + S, ox:ox + S])
        hit = touched_tiles(m, i)
        assert 4 <= hit.sum() <= 16  # 2x2 to 4x4 tiles in view


def test_visibility_names_only_shared_values():
    m = sample_mosaics(2, 300, S)
    vis = mosaic_visible(m)
    assert not vis[:, COL["size"]].any()
    rec = m.records()
    for i in range(len(m)):
        t = m.tiles.take(m.start[i] + np.flatnonzero(touched_tiles(m, i)))
        for a in ATTR_ORDER:
            if vis[i, COL[a]]:
                assert len(set(getattr(t, a))) == 1 and getattr(t, a)[0] == getattr(rec, a)[i]
    # the shared attribute is shown in most mosaics (its scale is drawn so it resolves)
    shown = vis[np.arange(len(m)), m.shared]
    assert shown.mean() > 0.7
    # colour is always shown when shared; shape not when only colour is shared
    col = m.shared == COL["colour"]
    assert vis[col, COL["colour"]].all()
    assert vis[col, COL["shape"]].mean() < 0.05


def test_visibility_at_constructed_scales():
    # a badge mosaic of tiles a whole image wide: the badges resolve where the window
    # holds >= 0.5 % of badge disc (it holds one tile's area, 1 % on average, in pieces of
    # 2x2 tiles); 3 tiles wide they are specks (radius 1.6 px)
    big = sample_mosaics(3, 40, S, shared="badge", tiles_range=(1.0, 1.0))
    small = sample_mosaics(3, 20, S, shared="badge", tiles_range=(3.0, 3.0))
    assert mosaic_visible(big)[:, COL["badge"]].mean() > 0.5
    assert not mosaic_visible(small)[:, COL["badge"]].any()
    # shape mosaics two tiles wide show the shape; three wide, small objects (radius
    # 0.21 * 21 px < 5 px) do not
    two = sample_mosaics(4, 20, S, shared="shape", tiles_range=(2.0, 2.0))
    three = sample_mosaics(4, 20, S, shared="shape", tiles_range=(3.0, 3.0),
                           constraints={"size": lambda a: np.zeros_like(a["size"])})
    assert mosaic_visible(two)[:, COL["shape"]].all()
    assert not mosaic_visible(three)[:, COL["shape"]].any()


def test_captions_name_only_what_every_tile_shares():
    m = sample_mosaics(5, 400, S)
    vis = mosaic_visible(m)
    texts, mentioned = captions(6, m.records(), p_drop=0.2, p_phrase=0.3, visible=vis)
    assert not np.any(mentioned & ~vis)
    assert mentioned[np.arange(len(m)), m.shared].mean() > 0.5
    rec = m.records()
    for j, attr in enumerate(ATTR_ORDER):
        values = rec.values(attr)
        for i, text in enumerate(texts):
            words = set(text.replace(",", " ").split())
            if not vis[i, j]:
                assert not (set(DISCRETE[attr]) & words), (text, attr)
            assert (values[i] in words) == mentioned[i, j], (text, attr)


@pytest.mark.parametrize("name", ["badge", "shape_shortcut"])
def test_classifier_mosaics_are_labelled_with_the_shared_value(name):
    task = TASKS[name]
    cfg = ClassifierTrainConfig()
    labels = np.arange(30) % len(DISCRETE[task.label])
    images, got, aux_labels, aux_weights = training_mosaics(task, labels, cfg, seed=7)
    assert images.shape == (30, S, S, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)
    assert not aux_weights[:, COL[task.label]].any()  # the task's own value: the label
    m = sample_mosaics(7, 30, S, shared=task.label, values=labels,
                       constraints={"background": lambda a: a["shape"]}
                       if task.tie_background else None)
    np.testing.assert_array_equal(render_mosaics(m, 7), images)
    for i in range(len(m)):
        t = m.tiles_of(i)
        np.testing.assert_array_equal(getattr(t, task.label), labels[i])
        if task.tie_background:  # the shortcut's training world, tile by tile
            np.testing.assert_array_equal(t.background, t.shape)
    if task.tie_background:  # background is then shared too and named for the heads
        assert aux_weights[:, COL["background"]].mean() > 0.9


def test_tiled_inputs_geometry():
    canvas = 128
    t = tile_px(canvas)
    assert t == round(0.275 * canvas) == 35
    rng = np.random.default_rng(0)
    x = rng.random((3, 16, 16, 3), dtype=np.float32)
    out = tiled_inputs(x, canvas, seed=1)
    assert out.shape == (3, canvas, canvas, 3) and out.dtype == np.float32
    # periodic with the crop's side along both axes
    np.testing.assert_array_equal(out[:, t:], out[:, :-t])
    np.testing.assert_array_equal(out[:, :, t:], out[:, :, :-t])
    # any crop of side T is the image at tile scale, cyclically shifted
    tile = np.clip(np.asarray(jax.image.resize(x, (3, t, t, 3), "linear")), 0, 1)
    offsets = []
    for i in range(3):
        window = out[i, 10:10 + t, 20:20 + t]
        err = {(dy, dx): np.abs(np.roll(tile[i], (-dy, -dx), axis=(0, 1)) - window).max()
               for dy in range(t) for dx in range(t)}
        best = min(err, key=err.get)
        assert err[best] == 0.0
        offsets.append(best)
    assert len(set(offsets)) > 1  # random offsets: crops cut across tiles differently
    np.testing.assert_array_equal(tiled_inputs(x, canvas, seed=1), out)


def test_tiled_crop_visible_counts_the_pixels_of_each_copy():
    """Recomputed from the tiled canvas itself: tiling maps of each pixel's position in
    its tile, the object's and the badge's coverage shows where each copy lies."""
    canvas, n, c = 128, 4, 8
    t = tile_px(canvas)
    attrs = sample_attributes(5, n)
    boxes = np.asarray(mapping.crop_boxes(image_keys(1, range(n)), c))
    vis = tiled_crop_visible(attrs, canvas, boxes, seed=[2, 3])
    assert vis.shape == (n, c, len(DISCRETE)) and vis.dtype == bool
    ramp = np.broadcast_to(np.arange(t, dtype=np.float32) / t, (t, t))
    maps = np.stack([np.broadcast_to(ramp.T, (n, t, t)), np.broadcast_to(ramp, (n, t, t)),
                     coverage(attrs, t), badge_coverage(attrs, t)], axis=-1)
    tiled = tiled_inputs(maps, canvas, seed=[2, 3])  # t -> t px: the maps unchanged
    shape_ok, colour_ok = np.zeros((n, c), bool), np.zeros((n, c), bool)
    for i in range(n):
        # copy index per pixel: one more at each tile start along each axis
        row = np.cumsum(tiled[i, :, 0, 0] == 0)
        col = np.cumsum(tiled[i, 0, :, 1] == 0)
        copy = row[:, None] * 100 + col[None, :]
        obj, badge = tiled[i, ..., 2], tiled[i, ..., 3]
        for j, (cy, cx, side) in enumerate(boxes[i]):
            s = max(1, int(np.rint(side * canvas)))
            y0, x0 = (int(np.rint(v * canvas - 0.5 * s)) for v in (cy, cx))
            win = np.zeros((canvas, canvas), bool)
            win[y0:y0 + s, x0:x0 + s] = True
            total = coverage(attrs.take([i]), t)[0].sum()
            inside = [obj[win & (copy == k)].sum() / total for k in np.unique(copy[win])]
            shape_ok[i, j] = max(inside) >= 0.9  # every object spans >= 5 px at this t
            colour_ok[i, j] = np.clip(obj - badge, 0, 1)[win].sum() / s ** 2 >= 0.015
    np.testing.assert_array_equal(vis[..., COL["shape"]], shape_ok)
    np.testing.assert_array_equal(vis[..., COL["colour"]], colour_ok)
    assert 0 < shape_ok.mean() < 1  # some crops hold a whole copy, some do not
    assert not vis[..., COL["size"]].any()
    with pytest.raises(ValueError, match="4 canvases"):
        tiled_crop_visible(attrs.take([0]), canvas, boxes, seed=0)
