"""Does a classifier fit the parts it is explained with? Checked once, on shapes only.

:func:`check_classifier` traces the classifier on one image with ``jax.eval_shape`` (no
compile, no FLOP) before any stage runs, so a wrong declaration fails in a second with a
one-line :class:`ClassifierMismatch` that names the classifier's function and the fix,
instead of after stage 1 and MACO in an unrelated place. It checks:

* the variables are arrays (an Equinox module passed whole is not);
* ``features`` gives [1, D] with D = ``feature_dim``; ``head`` gives [1, C] with
  C = ``num_classes``;
* the aligner's W [E, D] and the SAE's encoder [D, n] read D features;
* MACO's crops: ``features`` takes [n_crops, crop, crop, 3] (``MacoConfig.crop_size``
  None is resolved to ``image_size`` here);
* ``compute_dtype``: features that stay float32 under it give one
  :class:`ComputeDtypeWarning` (the model casts to its own dtype policy).

A passing combination is remembered by its shapes, so a session explaining many batches
traces once.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.config import ExplainConfig
from texter_jax.emphasis.objectives import cast_floats
from texter_jax.types import ClassifierLike, Variables

# (classifier, shapes, parts) -> the dtype warning's text ("" for none), per passing check.
_PASSED: dict = {}
_MAX_REMEMBERED = 256


class ClassifierMismatch(ValueError):
    """A classifier does not fit its declaration or the parts explained with it."""


class ComputeDtypeWarning(UserWarning):
    """``compute_dtype`` asked for, but the classifier computes in another dtype."""


def classifier_name(classifier: ClassifierLike) -> str:
    """How messages name a classifier: its type, family and features function."""
    fn = getattr(classifier, "features_fn", None)
    module = getattr(classifier, "module", None)
    if fn is not None:
        what = getattr(fn, "label", None) or getattr(fn, "__qualname__", type(fn).__name__)
    elif module is not None:
        what = f"{type(module).__name__}.features"
    else:
        what = f"{type(classifier).__name__}.features"
    family = getattr(classifier, "family", None)
    family = "" if family is None else f" {family!r}"
    return f"{type(classifier).__name__}{family} (features: {what})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _non_array_leaf(variables: Variables):
    ok = (jax.Array, np.ndarray, np.generic, int, float, bool, complex)
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        if not isinstance(leaf, ok):
            return jax.tree_util.keystr(path), leaf
    return None


def _shapes(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__)))
                          for x in leaves)


def check_classifier(classifier: ClassifierLike, variables: Variables, *, aligner=None,
                     sae=None, config: ExplainConfig | None = None,
                     caller: str = "explain_batch") -> ExplainConfig | None:
    """Traces ``classifier`` once on one image and checks it against the other parts.

    Args:
      classifier, variables: the classifier (``ClassifierLike``) and its variables.
      aligner: an :class:`~texter_jax.aligner.Aligner` (W [E, D], b [E]) or None.
      sae: a :class:`~texter_jax.sae.Sae` (encoder kernel [D, n]) or None.
      config: the explanation settings (MACO's crops and ``compute_dtype``) or None.
      caller: the public function named in messages.

    Returns:
      ``config`` with ``maco.crop_size`` resolved to ``classifier.image_size`` when it
      was None (None when no config was given).

    Raises:
      ClassifierMismatch: the first misfit, in one line, with the fix.
    """
    name = classifier_name(classifier)
    size = int(classifier.image_size)
    if config is not None:
        config = config.for_image_size(size)
    bad = _non_array_leaf(variables)
    if bad is not None:
        where, leaf = bad
        shown = (repr(leaf).splitlines() or [""])[0][:60]
        raise ClassifierMismatch(
            f"{caller}: variables{where} of {name} is {type(leaf).__name__} {shown}, not "
            "an array: variables must hold arrays only (an Equinox model: "
            "tj.from_equinox(model, ...) splits its arrays from its static parts)")
    parts = (None if aligner is None else tuple(np.shape(aligner.w)),
             None if sae is None else tuple(np.shape(sae.params["encoder"]["kernel"])),
             None if config is None else (config.maco.crop_size, config.maco.n_crops,
                                          config.compute_dtype))
    try:
        key = (classifier, _shapes(variables), parts)
        hash(key)
    except TypeError:  # an unhashable classifier: jit will say so; check every time
        key = None
    if key is not None and key in _PASSED:
        _warn(_PASSED[key])
        return config
    d = _check_traced(classifier, variables, name, size, caller)
    if aligner is not None and tuple(np.shape(aligner.w))[1:] != (d,):
        raise ClassifierMismatch(
            f"{caller}: the aligner's W is {tuple(np.shape(aligner.w))} but {name} gives "
            f"{d} features: fit the aligner on this classifier's features (W [E, {d}])")
    if sae is not None and np.shape(sae.params["encoder"]["kernel"])[0] != d:
        raise ClassifierMismatch(
            f"{caller}: the SAE reads {np.shape(sae.params['encoder']['kernel'])[0]}-d "
            f"inputs but {name} gives {d} features: use an SAE trained on this "
            "classifier's features")
    message = "" if config is None else _check_maco(classifier, variables, name, size,
                                                    config, caller)
    if key is not None:
        if len(_PASSED) >= _MAX_REMEMBERED:
            _PASSED.clear()
        _PASSED[key] = message
    _warn(message)
    return config


def _warn(message: str) -> None:
    if message:
        warnings.warn(message, ComputeDtypeWarning, stacklevel=4)


def _trace(fn, *args):
    """``jax.eval_shape(fn, *args)``, or the exception it raised."""
    try:
        return jax.eval_shape(fn, *args), None
    except Exception as e:  # noqa: BLE001 -- any failure is reported, with its first line
        return None, e


def _check_traced(classifier, variables, name, size, caller) -> int:
    """Features [1, D] and logits [1, C] against the declaration; returns D."""
    d, c = int(classifier.feature_dim), int(classifier.num_classes)
    image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    z, e = _trace(classifier.features, variables, image)
    if e is not None:
        raise ClassifierMismatch(
            f"{caller}: {name} fails on one image [1, {size}, {size}, 3] ({_first_line(e)}):"
            f" check image_size={size} and that features takes NHWC images in [0, 1]") from e
    shape = tuple(z.shape)
    if len(shape) == 4 and shape[1:3] == (1, 1):
        raise ClassifierMismatch(
            f"{caller}: {name} gives features {shape}, pooled with keepdims: TEXTER needs "
            f"[B, D]; drop the two unit axes in features (or use tj.from_keras / tj.from_linen)")
    if len(shape) != 2 or shape[0] != 1:
        raise ClassifierMismatch(
            f"{caller}: {name} gives features {shape} for one image; TEXTER needs [B, D]: "
            "pool or flatten them inside features")
    if shape[1] != d:
        raise ClassifierMismatch(
            f"{caller}: {name} gives {shape[1]} features but the classifier declares "
            f"feature_dim={d}: declare feature_dim={shape[1]}")
    logits, e = _trace(classifier.head, variables, jax.ShapeDtypeStruct((1, d), z.dtype))
    if e is not None:
        raise ClassifierMismatch(f"{caller}: the head of {name} fails on features [1, {d}] "
                                 f"({_first_line(e)})") from e
    if tuple(logits.shape) != (1, c):
        fix = (f"declare num_classes={logits.shape[1]}" if logits.ndim == 2
               else "return logits [B, C] from head")
        raise ClassifierMismatch(f"{caller}: the head of {name} gives logits "
                                 f"{tuple(logits.shape)} for [1, {d}] features, expected "
                                 f"[1, num_classes={c}]: {fix}")
    return d


def _check_maco(classifier, variables, name, size, config, caller) -> str:
    """MACO's crops and compute dtype; returns the dtype warning's text ("" for none)."""
    crop, n = config.maco.crop_size, config.maco.n_crops
    if crop != size:
        crops = jax.ShapeDtypeStruct((n, crop, crop, 3), jnp.float32)
        z, e = _trace(classifier.features, variables, crops)
        if e is not None or tuple(z.shape) != (n, classifier.feature_dim):
            got = _first_line(e) if e is not None else f"features {tuple(z.shape)}"
            raise ClassifierMismatch(
                f"{caller}: MacoConfig.crop_size={crop} but {name} takes {size} px images "
                f"({got}): leave crop_size=None (the classifier's image_size)") from e
    if config.compute_dtype is None:
        return ""
    dtype = jnp.dtype(config.compute_dtype)
    crops = jax.ShapeDtypeStruct((n, crop, crop, 3), dtype)
    z, e = _trace(lambda v, x: classifier.features(cast_floats(v, dtype), x),
                  variables, crops)
    if e is not None:
        raise ClassifierMismatch(f"{caller}: {name} fails in compute_dtype="
                                 f"{config.compute_dtype!r} ({_first_line(e)}): use "
                                 "compute_dtype=None") from e
    if z.dtype == jnp.float32 and dtype != jnp.float32:
        return (f"{caller}: compute_dtype={config.compute_dtype!r}, but {name} still gives "
                "float32 features under it, so MACO runs in float32: the model casts to its "
                "own dtype policy (Keras: keras.config.set_dtype_policy('mixed_bfloat16') "
                "before building the model; Flax: the modules' dtype=)")
    return ""
