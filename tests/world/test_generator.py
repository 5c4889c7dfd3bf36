"""The world's generator: determinism, purity, independence, localised interventions."""

import numpy as np
import pytest

from texter_jax.world import (
    DISCRETE,
    INTERVENABLE,
    WorldAttrs,
    coverage,
    object_mask,
    render,
    resample_attribute,
    sample_attributes,
    sample_twins,
)


@pytest.fixture(scope="module")
def attrs():
    return sample_attributes(0, 48)


def test_render_shape_dtype_and_determinism(attrs):
    a = render(attrs, 7)
    assert a.shape == (48, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render(attrs, 7))
    assert np.mean(a != render(attrs, 8)) > 0.5  # the seed drives the pixel noise


def test_render_is_per_image_pure(attrs):
    # Rendering a subset, in another order and chunking, gives the same pixels.
    full = render(attrs, 3, chunk=16)
    idx = np.array([5, 0, 33, 47])
    np.testing.assert_array_equal(render(attrs.take(idx), 3, chunk=3), full[idx])


def test_sample_attributes_seeded_and_jax_key():
    import jax

    a, b = sample_attributes(5, 10), sample_attributes(5, 10)
    for name, v in a.as_dict().items():
        np.testing.assert_array_equal(v, getattr(b, name))
    k1 = sample_attributes(jax.random.key(1), 10)
    k2 = sample_attributes(jax.random.key(1), 10)
    np.testing.assert_array_equal(k1.shape, k2.shape)
    np.testing.assert_array_equal(k1.x, k2.x)


def test_size_96_renders():
    x = render(sample_attributes(1, 4, max_distractors=2), 0, image_size=96)
    assert x.shape == (4, 96, 96, 3)


def test_attributes_are_independent():
    a = sample_attributes(11, 12000)
    for name, values in DISCRETE.items():
        freq = np.bincount(getattr(a, name), minlength=len(values)) / len(a)
        np.testing.assert_allclose(freq, 1 / len(values), atol=0.02)
    # Joint shape x background frequencies factorise (max deviation ~ 3 sigma).
    joint = np.zeros((6, 6))
    np.add.at(joint, (a.shape, a.background), 1)
    joint /= len(a)
    expected = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    assert np.abs(joint - expected).max() < 0.01


def test_constraints_tie_and_fix():
    a = sample_attributes(2, 500, constraints={"background": lambda v: v["shape"],
                                               "colour": "red", "size": ["small"]})
    np.testing.assert_array_equal(a.background, a.shape)
    assert set(a.values("colour")) == {"red"} and set(a.values("size")) == {"small"}
    with pytest.raises(ValueError):
        sample_attributes(0, 3, constraints={"position": 1})


@pytest.mark.parametrize("attribute", INTERVENABLE)
def test_resample_changes_only_that_attribute(attrs, attribute):
    moved = resample_attribute(123, attrs, attribute)
    owned = {"position": {"x", "y"}}.get(attribute, {attribute})
    for name, v in attrs.as_dict().items():
        same = np.array_equal(v, getattr(moved, name))
        assert same == (name not in owned), name
    if attribute in DISCRETE:  # always a different value
        assert np.all(getattr(moved, attribute) != getattr(attrs, attribute))


def test_object_interventions_change_only_object_pixels(attrs):
    base = render(attrs, 1).astype(int)
    inside_before = object_mask(attrs)
    for attribute in ("colour", "pattern", "shape", "size", "position", "rotation"):
        moved = resample_attribute(9, attrs, attribute)
        diff = np.any(render(moved, 1).astype(int) != base, axis=-1)
        allowed = inside_before | object_mask(moved)
        assert not np.any(diff & ~allowed), attribute
        assert diff.mean() > 0.01, attribute


def test_background_intervention_leaves_object_interior(attrs):
    base = render(attrs, 1)
    moved = resample_attribute(4, attrs, "background")
    diff = np.any(render(moved, 1) != base, axis=-1)
    # Fully covered pixels (not the anti-aliased rim) keep the object's colour.
    assert not np.any(diff & (coverage(attrs) == 1.0))
    assert diff.mean() > 0.3


def test_twins_differ_in_one_attribute():
    t = sample_twins(0, ["shape", "size", "pattern"], group_size=6)
    assert len(t) == 6 + 2 + 3
    groups = {"shape": slice(0, 6), "size": slice(6, 8), "pattern": slice(8, 11)}
    for varied, sl in groups.items():
        g = t.take(sl)
        for name in DISCRETE:
            vals = getattr(g, name)
            if name == varied:
                assert len(set(vals)) == len(vals)
            else:
                assert len(set(vals)) == 1


def test_concatenate_and_take_roundtrip(attrs):
    both = WorldAttrs.concatenate([attrs.take(slice(0, 10)), attrs.take(slice(10, None))])
    for name, v in attrs.as_dict().items():
        np.testing.assert_array_equal(v, getattr(both, name))
