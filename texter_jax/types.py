"""Type aliases shared across the library (one place, as in optax `base.py`)."""

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
# A Linen variables dict: {"params": ..., optionally "batch_stats": ...}.
Variables = Any
PyTree = Any
