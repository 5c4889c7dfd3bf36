"""texter_jax: TEXTER's stages as pure JAX functions, and the models they run on.

The names users call, in one place (the optax pattern)::

    import texter_jax as tj
    ex = tj.explain_batch(classifier, variables, aligner, text_emb, images,
                          tj.image_keys(0, range(len(images))), tj.ExplainConfig())
    # or every part from files, checked to fit together once:
    session = tj.load_session("classifier/", "clip/", "aligner/", "sae_run/")
    ex = session.explain(images, tj.image_keys(0, range(len(images))), tj.ExplainConfig())

They are resolved on first use (PEP 562) rather than imported here, because the command
line's ``texter --help`` imports small modules of this package and must not pay for
JAX; ``import texter_jax.explain`` and the like work as usual. Type checkers and IDEs
read the same names from the ``if TYPE_CHECKING:`` imports below, one import path each.
"""

from typing import TYPE_CHECKING

from texter_jax.lazy_exports import lazy_exports

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

# The same table written out for type checkers and IDEs, which do not run __getattr__
# (never executed; tests/test_static_api.py checks the two agree).
if TYPE_CHECKING:
    from texter_jax.adapters.equinox_model import from_equinox as from_equinox
    from texter_jax.adapters.keras_model import capture_keras as capture_keras
    from texter_jax.adapters.keras_model import from_keras as from_keras
    from texter_jax.adapters.linen_model import from_linen as from_linen
    from texter_jax.adapters.nnx_model import nnx_classifier as nnx_classifier
    from texter_jax.aligner import Aligner as Aligner
    from texter_jax.aligner import align as align
    from texter_jax.capture import Capture as Capture
    from texter_jax.capture import LayerNotFound as LayerNotFound
    from texter_jax.capture import capture_function as capture_function
    from texter_jax.capture import capture_linen as capture_linen
    from texter_jax.capture import capture_nnx as capture_nnx
    from texter_jax.classifier import Classifier as Classifier
    from texter_jax.classifier import FunctionClassifier as FunctionClassifier
    from texter_jax.classifier_check import ClassifierMismatch as ClassifierMismatch
    from texter_jax.classifier_check import ComputeDtypeWarning as ComputeDtypeWarning
    from texter_jax.classifier_check import check_classifier as check_classifier
    from texter_jax.config import PRESETS as PRESETS
    from texter_jax.config import ExplainConfig as ExplainConfig
    from texter_jax.config import MacoConfig as MacoConfig
    from texter_jax.contributions import ig_features as ig_features
    from texter_jax.contributions import ig_sae_codes as ig_sae_codes
    from texter_jax.contributions import integrated_gradients as integrated_gradients
    from texter_jax.contributions import top_units as top_units
    from texter_jax.emphasis import default_spectrum as default_spectrum
    from texter_jax.emphasis import maco as maco
    from texter_jax.emphasis import maco_batch as maco_batch
    from texter_jax.emphasis import spectrum_from_images as spectrum_from_images
    from texter_jax.explain import KEY_TAGS as KEY_TAGS
    from texter_jax.explain import Explanation as Explanation
    from texter_jax.explain import contributions as contributions_of  # noqa: F401 - in __all__
    from texter_jax.explain import embed_concept_images as embed_concept_images
    from texter_jax.explain import explain_batch as explain_batch
    from texter_jax.explain import fold_keys as fold_keys
    from texter_jax.explain import image_keys as image_keys
    from texter_jax.explain import predict as predict
    from texter_jax.explain import select_units as select_units
    from texter_jax.explain import text_to_concept as text_to_concept
    from texter_jax.explain import text_to_concept_batch as text_to_concept_batch
    from texter_jax.io.checkpoints import load_model as load_model
    from texter_jax.io.checkpoints import save_model as save_model
    from texter_jax.mapping import rank_concepts as rank_concepts
    from texter_jax.mapping import retrieve as retrieve
    from texter_jax.models.registry import build_model as build_model
    from texter_jax.sae import Sae as Sae
    from texter_jax.sae import SaeConfig as SaeConfig
    from texter_jax.sae import init_sae as init_sae
    from texter_jax.sae import load_sae as load_sae
    from texter_jax.sae import sae_decode as sae_decode
    from texter_jax.sae import sae_encode as sae_encode
    from texter_jax.session import Banks as Banks
    from texter_jax.session import Session as Session
    from texter_jax.session import SessionError as SessionError
    from texter_jax.session import load as load_session  # noqa: F401 - in __all__
    from texter_jax.text.encoder import text_encoder as text_encoder
    from texter_jax.types import ClassifierLike as ClassifierLike
    from texter_jax.types import ImageTextModel as ImageTextModel
    from texter_jax.unit_scores import UnitContributions as UnitContributions
    from texter_jax.unit_scores import unit_contributions as unit_contributions


__getattr__, __dir__ = lazy_exports(__name__, globals(), _WHERE)
