"""texter_jax: TEXTER's stages as pure JAX functions, and the models they run on.

The names users call, in one place (the optax pattern)::

    import texter_jax as tj
    ex = tj.explain_batch(classifier, variables, aligner, text_emb, images,
                          tj.image_keys(0, range(len(images))), tj.ExplainConfig())
    # or every part from files, checked to fit together once:
    session = tj.load_session("classifier/", "clip/", "aligner/", "sae_run/")
    ex = session.explain(images, tj.image_keys(0, range(len(images))), tj.ExplainConfig())

They are resolved on first use (PEP 562) rather than imported here, because the apps
floor's ``texter --help`` imports small modules of this package and must not pay for
JAX; ``import texter_jax.explain`` and the like work as usual.
"""

import importlib

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

# module -> the public names it defines.
_EXPORTS = {
    "adapters.equinox_model": ("from_equinox",),
    "adapters.keras_model": ("capture_keras", "from_keras"),
    "adapters.linen_model": ("from_linen",),
    "adapters.nnx_model": ("nnx_classifier",),
    "aligner": ("Aligner", "align"),
    "capture": ("Capture", "LayerNotFound", "capture_function", "capture_linen",
                "capture_nnx"),
    "classifier": ("Classifier", "FunctionClassifier"),
    "classifier_check": ("ClassifierMismatch", "ComputeDtypeWarning", "check_classifier"),
    "contributions": ("ig_features", "ig_sae_codes", "integrated_gradients", "top_units"),
    "config": ("ExplainConfig", "MacoConfig", "PRESETS"),
    "emphasis": ("default_spectrum", "maco", "maco_batch", "spectrum_from_images"),
    "explain": ("Explanation", "KEY_TAGS", "contributions_of", "embed_concept_images",
                "explain_batch", "fold_keys", "image_keys", "predict", "select_units",
                "text_to_concept", "text_to_concept_batch"),
    "io.checkpoints": ("load_model", "save_model"),
    "mapping": ("rank_concepts", "retrieve"),
    "models.registry": ("build_model",),
    "sae": ("Sae", "SaeConfig", "init_sae", "load_sae", "sae_decode", "sae_encode"),
    "session": ("Banks", "Session", "SessionError", "load_session"),
    "text.encoder": ("text_encoder",),
    "types": ("ClassifierLike", "ImageTextModel"),
    "unit_scores": ("UnitContributions", "unit_contributions"),
}
# Public name -> (module, attribute) where the attribute's name differs.
_RENAMED = {"contributions_of": ("explain", "contributions"),
            "load_session": ("session", "load")}
_WHERE = {name: (module, _RENAMED.get(name, (module, name))[1])
          for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        module, attr = _WHERE[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
