"""Intervention tables find the attribute a (hand-made) classifier really reads."""

import numpy as np

from texter_jax.world import COLOURS, measure_interventions, sample_attributes, truth_values
from texter_jax.world.attributes import COLOUR_RGB


def colour_detector(images):
    """Logits [B, 6]: minus the distance of the closest pixel to each object colour."""
    d = np.linalg.norm(images[:, :, :, None, :] - COLOUR_RGB[None, None, None], axis=-1)
    return -20.0 * d.reshape(len(images), -1, len(COLOURS)).min(axis=1)


def test_colour_detector_is_found_by_intervention():
    attrs = sample_attributes(0, 40)
    table = measure_interventions(colour_detector, attrs, 1, labels=attrs.colour, batch=16)
    assert table.critical == "colour"
    assert table.base_accuracy > 0.95
    assert table.row("colour").mean_drop > 0.8 and table.row("colour").flip_rate > 0.9
    for r in table.rows[1:]:
        assert r.mean_drop < 0.1, r
    assert table.drops["colour"].shape == (40,)
    md = table.to_markdown()
    assert md.splitlines()[2].startswith("| colour |")
    assert table.to_dict()["critical"] == "colour"


def test_truth_values():
    attrs = sample_attributes(3, 5)
    t = truth_values("background", attrs)
    assert t == [(("background", v),) for v in attrs.values("background")]
    both = truth_values(["shape", "background", "position"], attrs)
    assert all(len(x) == 2 for x in both)
