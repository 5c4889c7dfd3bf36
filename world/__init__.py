"""The procedural ground-truth world and the demo that runs in it, in one home.

Its floors, each importing only those before it (``tests/test_architecture.py``):

* the world itself: attributes, rendering, views, mosaics, captions, interventions,
  truth and reader-control canvases (:mod:`.attributes` ... :mod:`.controls`; hit@k
  itself is a metric, :mod:`texter_jax.eval.metrics.hits`);
* its models: the world CLIP (:mod:`.clip_model`) and the training of that CLIP and of
  the four classifiers (:mod:`.clip_train`, :mod:`.classifiers`, :mod:`.models`);
* the demo: the per-classifier stack, explanations, reader controls, report and page
  (:mod:`.demo` and the modules it names).

The world depends on the library, ``texter_jax.train`` and ``texter_jax.eval``; nothing
below it imports it. ``texter demo`` (``texter_jax.cli.demo_cli``) is its command.

Images of one object (shape, colour, pattern, size, position, rotation) and a small badge
on a background, rendered as a pure function of their attributes, a seed and a camera
view, so any attribute can be intervened on while everything else stays fixed, and any
part of the scene can be seen up close, and scenes can be mosaics of several renders
sharing one value.
"""

from texter_jax.lazy_exports import lazy_exports

# module -> the public names it defines (resolved on first use, so `texter demo --help`
# and the demo's settings import without JAX). No name is also a submodule's: importing
# the submodule would replace it (the function ``captions`` is
# ``texter_jax.world.captions.captions``).
_EXPORTS = {
    "attributes": ("BACKGROUNDS", "BADGES", "COLOURS", "CONTINUOUS", "DISCRETE", "INTERVENABLE",
                   "PATTERNS", "SHAPES", "SIZES", "WorldAttrs", "resample_attribute",
                   "sample_attributes", "sample_twins"),
    "captions": ("ATTR_ORDER", "WorldTokenizer", "concept_bank", "full_captions", "value_phrases",
                 "world_vocab"),
    "controls": ("tiled_crop_visible", "tiled_inputs", "upsampled_inputs", "value_canvases"),
    "generator": ("badge_coverage", "coverage", "object_mask", "render", "render_float",
                  "whole_views"),
    "interventions": ("InterventionRow", "InterventionTable", "measure_interventions",
                      "truth_values"),
    "mosaics": ("Mosaics", "mosaic_visible", "render_mosaics", "sample_mosaics"),
    "views": ("sample_views", "visible_attributes"),
}
_WHERE = {name: (module, name) for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _WHERE)
