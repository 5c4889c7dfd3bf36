"""The face every CNN of the zoo shows TEXTER: ``features`` (the pooled last activation),
``head`` (the linear classifier IG differentiates) and ``__call__`` (logits and every
stage's activations, for parity tests and the sanity checks)."""

from __future__ import annotations

from flax import linen as nn

from texter_jax.types import Array


class PooledCnn(nn.Module):
    """Base of :class:`~texter_jax.models.resnet.ResNet` and
    :class:`~texter_jax.models.efficientnet_lite.EfficientNetLite`.

    A subclass defines ``fc`` (an ``nn.Dense``) in ``setup`` and
    ``_forward(x) -> acts``, a dict of NHWC activations by stage name plus
    ``features`` [B, D], the global average pool of the last one.
    """

    def _forward(self, x: Array) -> dict[str, Array]:
        raise NotImplementedError

    def features(self, x: Array) -> Array:
        """Normalised images float32 [B, H, W, 3] -> pooled features [B, D]."""
        return self._forward(x)["features"]

    def head(self, z: Array) -> Array:
        """Features [B, D] -> logits [B, num_classes] (dropout, if any, is train-only)."""
        return self.fc(z)

    def __call__(self, x: Array) -> tuple[Array, dict[str, Array]]:
        """Normalised images [B, H, W, 3] -> ``(logits [B, C], acts)``."""
        acts = self._forward(x)
        return self.head(acts["features"]), acts
