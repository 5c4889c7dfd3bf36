"""What the adapters share: one traced image gives a wrapped model's D and C."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from texter_jax.types import Variables


def traced_dims(features: Callable, head: Callable, variables: Variables, image_size: int,
                caller: str) -> tuple[int, int]:
    """``(D, C)``: ``features`` on one image [1, S, S, 3] -> [1, D], ``head`` -> [1, C].

    Traced with ``jax.eval_shape`` (no compile, no FLOP). Raises a one-line ValueError
    naming ``caller`` when the shapes are not [1, D] and [1, C].
    """
    image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    try:
        z = jax.eval_shape(features, variables, image)
    except Exception as e:  # noqa: BLE001 -- the model's own error, in one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{caller}: features fail on one [1, {image_size}, {image_size}, 3]"
                         f" image ({type(e).__name__}: {first}): check image_size and the "
                         "layout the model takes") from e
    if z.ndim != 2 or z.shape[0] != 1:
        raise ValueError(f"{caller}: features give {tuple(z.shape)} for one "
                         f"[1, {image_size}, {image_size}, 3] image; they must be [B, D]")
    logits = jax.eval_shape(head, variables, z)
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ValueError(f"{caller}: head gives {tuple(logits.shape)} for features "
                         f"{tuple(z.shape)}; it must give logits [B, C]")
    return int(z.shape[1]), int(logits.shape[1])
