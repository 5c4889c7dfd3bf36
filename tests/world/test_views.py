"""Views of the world: rendering through a camera window, what a view shows, and captions
that never name an attribute outside the view."""

import numpy as np
import pytest

from texter_jax.world import ATTR_ORDER, DISCRETE, render, resample_attribute, sample_attributes
from texter_jax.world.attributes import BADGE_RADIUS, SIZE_RADIUS
from texter_jax.world.captions import captions
from texter_jax.world.generator import badge_coverage, coverage, whole_views
from texter_jax.world.views import KINDS, sample_views, visible_attributes

COL = {a: i for i, a in enumerate(ATTR_ORDER)}


@pytest.fixture(scope="module")
def attrs():
    return sample_attributes(4, 400)


def test_whole_view_is_the_default_render(attrs):
    a = attrs.take(slice(0, 12))
    np.testing.assert_array_equal(render(a, 3, views=whole_views(12)), render(a, 3))


def test_views_render_purely_and_zoom(attrs):
    a = attrs.take(slice(0, 16))
    views = sample_views(1, a)
    full = render(a, 2, views=views, chunk=5)
    idx = np.array([9, 0, 3])
    np.testing.assert_array_equal(render(a.take(idx), 2, views=views[idx]), full[idx])
    # A close-up of the object centre shows only the object: its share of pixels grows.
    close = np.stack([a.x, a.y, SIZE_RADIUS[a.size] * 0.8], axis=1)
    assert coverage(a, 64, close).mean() > 0.9 > coverage(a, 64).mean()
    # A wide view shrinks it.
    wide = np.tile([0.5, 0.5, 1.8], (16, 1)).astype(np.float32)
    assert coverage(a, 64, wide).mean() < 0.5 * coverage(a, 64).mean()
    with pytest.raises(ValueError, match="views"):
        render(a, 0, views=np.ones((3, 3)))


def test_badge_sits_beside_the_object_and_its_intervention_is_local(attrs):
    cov = coverage(attrs, 64)
    badge = badge_coverage(attrs, 64)
    assert badge.sum(axis=(1, 2)).min() > 0.5 * np.pi * (BADGE_RADIUS * 64) ** 2
    overlap = ((cov > 0) & (badge > 0)).sum(axis=(1, 2))
    assert np.mean(overlap == 0) > 0.98  # rejection sampling keeps them apart
    base = render(attrs, 1).astype(int)
    moved = resample_attribute(5, attrs, "badge")
    diff = np.any(render(moved, 1).astype(int) != base, axis=-1)
    assert not np.any(diff & (badge == 0))
    assert diff.any(axis=(1, 2)).all()


def test_sample_views_kinds(attrs):
    for kind in KINDS:
        v = sample_views(0, attrs, {kind: 1.0})
        assert v.shape == (len(attrs), 3) and v.dtype == np.float32
        w = v[:, 2]
        if kind == "whole":
            np.testing.assert_array_equal(v, whole_views(len(attrs)))
        elif kind == "close":  # the object fills the frame
            np.testing.assert_allclose(w / (2 * SIZE_RADIUS[attrs.size]), 1.35, atol=0.26)
        elif kind == "partial":  # on the badge from 0.05, elsewhere from 0.2
            assert w.min() >= 0.05 and w.max() <= 0.5 and np.mean(w < 0.2) > 0.1
        else:
            assert w.min() >= 1.2 and w.max() <= 1.8
    with pytest.raises(ValueError, match="unknown view kinds"):
        sample_views(0, attrs, {"fisheye": 1.0})


def test_visibility_rules_on_constructed_views(attrs):
    a = attrs.take(np.flatnonzero(attrs.size == 1)[:20])  # large objects
    n = len(a)
    vis = visible_attributes(a, None)
    assert vis.all()  # whole images show everything
    inside = np.stack([a.x, a.y, np.full(n, 0.1, np.float32)], axis=1)  # within the object
    vis = visible_attributes(a, inside)
    assert vis[:, COL["colour"]].all() and not vis[:, COL["shape"]].any()
    assert not vis[:, COL["background"]].any() and not vis[:, COL["size"]].any()
    on_badge = np.stack([a.bx, a.by, np.full(n, 0.3, np.float32)], axis=1)
    vis = visible_attributes(a, on_badge)
    assert vis[:, COL["badge"]].all() and not vis[:, COL["shape"]].any()
    # inside the badge's disc: a close-up of its colour, named like an object's colour
    in_badge = np.stack([a.bx, a.by, np.full(n, 0.05, np.float32)], axis=1)
    vis = visible_attributes(a, in_badge)
    assert vis[:, COL["badge"]].all() and vis.sum() == n
    # The scene's far corner of a wide shot: no object, no badge there.
    far = np.tile([4.0, 4.0, 1.0], (n, 1)).astype(np.float32)
    vis = visible_attributes(a, far)
    assert vis[:, COL["background"]].all() and vis.sum() == n


def test_zoom_captions_name_only_what_the_view_shows():
    a = sample_attributes(8, 1500)
    views = sample_views(9, a)
    vis = visible_attributes(a, views)
    assert 0.2 < vis[:, COL["shape"]].mean() < 0.9  # the mix really hides things
    texts, mentioned = captions(10, a, p_drop=0.2, p_phrase=0.3, visible=vis)
    assert not np.any(mentioned & ~vis)
    for j, attr in enumerate(ATTR_ORDER):
        values = a.values(attr)
        for i, t in enumerate(texts):
            words = set(t.replace(",", " ").split())
            # no value word of an attribute the view hides, named or not
            if not vis[i, j]:
                assert not (set(DISCRETE[attr]) & words), (t, attr, views[i])
            assert (values[i] in words) == mentioned[i, j], (t, attr)
