"""Stage 2 of TEXTER: emphasis by MACO feature visualisation, in pure JAX.

``spectrum`` (magnitude templates), ``param`` (phase -> image), ``crops`` (random
differentiable crops), ``nadam`` (torch-semantics NAdam), ``objectives`` (unit scores
over features or SAE codes), ``render`` (the ``lax.scan`` loop) and ``progress``
(step reports to the host).

Names are re-exported lazily (PEP 562) so that ``texter_jax.emphasis.cli`` can be
imported by ``texter --help`` without loading JAX.
"""

import importlib

_EXPORTS = {
    "crops": ("add_noise", "crop_and_resize", "random_crops", "sample_boxes"),
    "nadam": ("scale_by_torch_nadam", "torch_nadam"),
    "objectives": ("features_objective", "logits_objective", "sae_objective", "unit_score",
                   "with_units"),
    "param": ("COLOR_CORRELATION_SQRT", "init_phase", "phase_to_image", "spectrum_shape",
              "standardize"),
    "progress": ("maco_progress",),
    "render": ("MacoConfig", "MacoResult", "RetryInfo", "final_objective", "maco",
               "maco_batch", "maco_batch_with_retry"),
    "spectrum": ("default_spectrum", "load_spectrum", "power_law_spectrum", "save_spectrum",
                 "spectrum_from_images"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
