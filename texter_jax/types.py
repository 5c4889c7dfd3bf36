"""Types shared across the library (one place, as in optax `base.py`).

Besides the array aliases, two protocols say what the stages need from models, so that
any JAX model that satisfies them works, not only our Linen zoo:

* :class:`ClassifierLike`: ``features(variables, images) -> z`` and
  ``head(variables, z) -> logits``, pure functions of a variables pytree, plus the input
  side ``image_size``. Instances are static arguments of jitted functions, so they must
  be hashable (a frozen dataclass is). :class:`texter_jax.classifier.Classifier` wraps
  a Linen module; :class:`texter_jax.classifier.FunctionClassifier` wraps two plain
  functions (a Flax NNX model, Equinox, Haiku, ``jax.numpy``).
* :class:`ImageTextModel`: CLIP's side, ``encode_image`` and ``encode_text``.
"""

from typing import Any, Protocol, runtime_checkable

import jax

Array = jax.Array
PRNGKey = jax.Array
# A model's variables pytree: for Linen {"params": ..., optionally "batch_stats": ...}.
Variables = Any
PyTree = Any


@runtime_checkable
class ClassifierLike(Protocol):
    """What every TEXTER stage calls on a classifier.

    ``features``: images float32 [B, S, S, 3] in [0, 1] (NHWC; normalisation is the
    classifier's business) -> features [B, D]. ``head``: [B, D] -> logits [B, C], the
    function integrated gradients differentiate. ``image_size``: S; ``feature_dim``: D;
    ``num_classes``: C.
    """

    image_size: int
    feature_dim: int
    num_classes: int

    def features(self, variables: Variables, images: Array) -> Array: ...

    def head(self, variables: Variables, z: Array) -> Array: ...


@runtime_checkable
class ImageTextModel(Protocol):
    """CLIP's interface: images in [0, 1] and token ids -> embeddings (not normalised)."""

    image_size: int
    embed_dim: int

    def encode_image(self, variables: Variables, images: Array) -> Array: ...

    def encode_text(self, variables: Variables, token_ids: Array) -> Array: ...
