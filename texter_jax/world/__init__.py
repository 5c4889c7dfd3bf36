"""The procedural ground-truth world: attributes, rendering, captions, truth and scores.

Images of one object (shape, colour, pattern, size, position, rotation) on a background,
rendered as a pure function of their attributes and a seed, so any attribute can be
intervened on while everything else stays fixed. See TEXTER issue 5.
"""

from texter_jax.world.attributes import (BACKGROUNDS, COLOURS, CONTINUOUS, DISCRETE,
                                         INTERVENABLE, PATTERNS, SHAPES, SIZES, WorldAttrs,
                                         resample_attribute, sample_attributes, sample_twins)
from texter_jax.world.captions import (ATTR_ORDER, WorldTokenizer, captions, concept_bank,
                                       full_captions, value_phrases, world_vocab)
from texter_jax.world.generator import coverage, object_mask, render, render_float
from texter_jax.world.interventions import (InterventionRow, InterventionTable,
                                            measure_interventions, truth_values)
from texter_jax.world.scoring import bootstrap_ci, hit_table, hits_at_k

__all__ = [
    "ATTR_ORDER", "BACKGROUNDS", "COLOURS", "CONTINUOUS", "DISCRETE", "INTERVENABLE",
    "PATTERNS", "SHAPES", "SIZES", "InterventionRow", "InterventionTable", "WorldAttrs",
    "WorldTokenizer", "bootstrap_ci", "captions", "concept_bank", "coverage", "full_captions",
    "hit_table", "hits_at_k", "measure_interventions", "object_mask", "render",
    "render_float", "resample_attribute", "sample_attributes", "sample_twins",
    "truth_values", "value_phrases", "world_vocab",
]
