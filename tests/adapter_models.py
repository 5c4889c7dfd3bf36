"""Tiny random models from four JAX stacks, built offline, each with its package's own
forward (for the adapter tests and tests/adapter_probe.py). Every one ends in a linear
layer over pooled features, takes SIZE px images, and holds BatchNorm statistics or
dropout so that explaining in train mode would differ from eval mode.

``build(kind) -> (wrapped classifier, variables, own_logits(images [B, S, S, 3]) -> [B, C])``.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import texter_jax as tj  # noqa: E402

SIZE, CLASSES = 16, 5
KINDS = ("keras", "equinox", "linen", "nnx")


def keras_model():
    """Conv, BatchNorm, ReLU, global pooling with keepdims, 1x1 conv logits, flatten: the
    tail of keras.applications.MobileNetV3 (features [B, 1, 1, 8])."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    x = keras.layers.Conv2D(CLASSES, 1, name="logits")(x)
    model = keras.Model(inp, keras.layers.Flatten(name="flatten")(x), name="tiny_keras")
    bn = model.get_layer("bn")  # statistics that are not the identity
    bn.moving_mean.assign(np.linspace(-0.2, 0.2, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    return model


def equinox_model():
    """Conv, ReLU, 2x2 average pool, flatten, dropout, linear: a fixed SIZE px input
    (4 * (SIZE/2)^2 = 256 features), the model of the issue that explained silently
    wrong with 224 px crops."""
    import equinox as eqx

    class Cnn(eqx.Module):
        conv: eqx.nn.Conv2d
        pool: eqx.nn.AvgPool2d
        drop: eqx.nn.Dropout
        fc: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.conv = eqx.nn.Conv2d(3, 4, 3, padding=1, key=k1)
            self.pool = eqx.nn.AvgPool2d(2, 2)
            self.drop = eqx.nn.Dropout(0.5)
            self.fc = eqx.nn.Linear(4 * (SIZE // 2) ** 2, CLASSES, key=k2)

        def features(self, x):  # [3, S, S] -> [256]
            return jnp.ravel(self.pool(jax.nn.relu(self.conv(x * 2.0 - 1.0))))

        def __call__(self, x, key=None):
            return self.fc(self.drop(self.features(x), key=key))

    return Cnn(jax.random.key(1))


def linen_resnet():
    """A compact Linen ResNet in flaxmodels' style: blocks named ``block{i}_{j}``, a
    ``train`` flag for BatchNorm, mean pooling and an unnamed ``nn.Dense`` ("Dense_0")."""
    from flax import linen as nn

    class Block(nn.Module):
        features: int
        stride: int = 1

        @nn.compact
        def __call__(self, x, train=True):
            y = nn.Conv(self.features, (3, 3), (self.stride, self.stride))(x)
            y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
            y = nn.Conv(self.features, (3, 3))(y)
            y = nn.BatchNorm(use_running_average=not train)(y)
            if x.shape != y.shape:
                x = nn.Conv(self.features, (1, 1), (self.stride, self.stride))(x)
            return nn.relu(x + y)

    class ResNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=True):
            x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x * 2.0 - 1.0))
            x = Block(8, name="block1_0")(x, train)
            x = Block(16, 2, name="block2_0")(x, train)
            return nn.Dense(CLASSES)(jnp.mean(x, axis=(1, 2)))

    module = ResNet()
    shapes = jax.eval_shape(lambda x: module.init(jax.random.key(2), x, train=False),
                            jnp.zeros((1, SIZE, SIZE, 3)))
    rng = np.random.default_rng(2)  # numpy init: no compile of Flax's initialisers

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            return rng.normal(size=leaf.shape).astype("f4") / np.sqrt(np.prod(leaf.shape[:-1]))
        if "var" in name or "scale" in name:  # not BatchNorm's initial 1s and 0s
            return rng.uniform(0.5, 1.5, leaf.shape).astype("f4")
        return rng.normal(0, 0.1, leaf.shape).astype("f4")
    return module, jax.tree.map(jnp.asarray, jax.tree_util.tree_map_with_path(fill, shapes))


def nnx_model():
    """Conv, BatchNorm, ReLU, mean pool, dropout, linear head; left in train mode (NNX's
    default), as the issue's user did."""
    from flax import nnx

    class Cnn(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.fc = nnx.Linear(8, CLASSES, rngs=rngs)

        def features(self, x):  # [B, S, S, 3] in [0, 1] -> [B, 8]
            return jnp.mean(jax.nn.relu(self.bn(self.conv(x * 2.0 - 1.0))), axis=(1, 2))

        def head(self, z):
            return self.fc(self.drop(z))

        def __call__(self, x):
            return self.head(self.features(x))

    model = Cnn(nnx.Rngs(4))
    model.bn.mean[...] = jnp.linspace(-0.2, 0.2, 8)
    model.bn.var[...] = jnp.linspace(0.5, 2.0, 8)
    return model


def build(kind: str):
    """``(classifier, variables, own_logits)`` for one of :data:`KINDS`."""
    if kind == "keras":
        model = keras_model()
        clf, variables = tj.from_keras(model, features_layer="pool")
        return clf, variables, lambda x: model(x, training=False)
    if kind == "equinox":
        import equinox as eqx

        model = equinox_model()
        clf, variables = tj.from_equinox(model, features="features", head="fc",
                                         image_size=SIZE)
        own = eqx.nn.inference_mode(model)
        return clf, variables, lambda x: jax.vmap(own)(jnp.transpose(x, (0, 3, 1, 2)))
    if kind == "linen":
        module, variables = linen_resnet()
        clf, variables = tj.from_linen(module, variables, head_layer="Dense_0",
                                       image_size=SIZE)
        return clf, variables, lambda x: module.apply(variables, x, train=False)
    if kind == "nnx":
        from flax import nnx

        model = nnx_model()
        clf, state = tj.nnx_classifier(model, image_size=SIZE)
        # built in train mode (batch statistics, dropout on), explained in eval mode;
        # the caller's model is left as it is
        assert model.bn.use_running_average is False and model.drop.deterministic is False

        def own(x):
            copy = nnx.clone(model)
            copy.eval()
            return copy(x)
        return clf, state, own
    raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
