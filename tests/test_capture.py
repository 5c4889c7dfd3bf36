"""texter_jax.capture: one way to read named activations of a Linen module, an NNX
model or a plain function; the values are the layers' own, and a wrong name lists the
layers there are."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import texter_jax as tj

X = jnp.asarray(np.random.default_rng(0).random((2, 4)), jnp.float32)


class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(3, name="hidden")(x))
        return nn.Dense(2, name="out")(h)


class NnxMlp(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(4, 3, rngs=rngs)
        self.out = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def test_linen_outputs_and_inputs_are_the_layers_own():
    module = Mlp()
    v = module.init(jax.random.key(0), X)
    p = v["params"]
    hidden = X @ p["hidden"]["kernel"] + p["hidden"]["bias"]
    acts = jax.jit(tj.capture_linen(module, ["hidden"]))(v, X)
    np.testing.assert_allclose(acts["hidden"], hidden, rtol=1e-6)
    received = tj.capture_linen(module, ["out"], inputs=True)(v, X)["out"]
    np.testing.assert_allclose(received, jax.nn.relu(hidden), rtol=1e-6)
    with pytest.raises(tj.LayerNotFound, match="no layer 'hiden'; its layers: hidden, out"):
        tj.capture_linen(module, ["hiden"])(v, X)


def test_nnx_and_function_captures():
    model = NnxMlp(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    acts = tj.capture_nnx(graphdef, ["hidden"])(state, X)
    np.testing.assert_allclose(acts["hidden"], model.hidden(X), rtol=1e-6)
    with pytest.raises(tj.LayerNotFound, match="its layers: .*hidden"):
        tj.capture_nnx(graphdef, ["fc"])(state, X)
    fn = lambda p, x: (x * p, {"block": {"a": x + p}})  # noqa: E731
    got = tj.capture_function(fn, ["block/a"])(2.0, X)
    np.testing.assert_allclose(got["block/a"], X + 2.0)
