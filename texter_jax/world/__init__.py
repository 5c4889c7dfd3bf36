"""The procedural ground-truth world: attributes, rendering, views, captions, truth, scores
and reader controls.

Images of one object (shape, colour, pattern, size, position, rotation) and a small badge
on a background, rendered as a pure function of their attributes, a seed and a camera
view, so any attribute can be intervened on while everything else stays fixed, and any
part of the scene can be seen up close, and scenes can be mosaics of several renders
sharing one value. See TEXTER issues 5, 9 and 21.
"""

from texter_jax.world.attributes import (BACKGROUNDS, BADGES, COLOURS, CONTINUOUS, DISCRETE,
                                         INTERVENABLE, PATTERNS, SHAPES, SIZES, WorldAttrs,
                                         resample_attribute, sample_attributes, sample_twins)
from texter_jax.world.captions import (ATTR_ORDER, WorldTokenizer, captions, concept_bank,
                                       full_captions, value_phrases, world_vocab)
from texter_jax.world.controls import tiled_inputs, upsampled_inputs, value_canvases
from texter_jax.world.generator import (badge_coverage, coverage, object_mask, render,
                                        render_float, whole_views)
from texter_jax.world.interventions import (InterventionRow, InterventionTable,
                                            measure_interventions, truth_values)
from texter_jax.world.mosaics import (Mosaics, mosaic_visible, render_mosaics,
                                      sample_mosaics)
from texter_jax.world.scoring import bootstrap_ci, hit_table, hits_at_k
from texter_jax.world.views import sample_views, visible_attributes

__all__ = [
    "ATTR_ORDER", "BACKGROUNDS", "BADGES", "COLOURS", "CONTINUOUS", "DISCRETE",
    "INTERVENABLE", "Mosaics", "PATTERNS", "SHAPES", "SIZES", "InterventionRow",
    "InterventionTable", "WorldAttrs", "WorldTokenizer", "badge_coverage",
    "bootstrap_ci", "captions", "concept_bank", "coverage", "full_captions",
    "hit_table", "hits_at_k", "measure_interventions", "mosaic_visible", "object_mask",
    "render", "render_float", "render_mosaics", "resample_attribute",
    "sample_attributes", "sample_mosaics", "sample_twins", "sample_views",
    "tiled_inputs", "truth_values", "upsampled_inputs", "value_canvases",
    "value_phrases", "visible_attributes", "whole_views", "world_vocab",
]
