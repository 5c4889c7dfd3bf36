"""Model and unit randomisation for the sanity checks (Adebayo et al. 2018).

"Sanity Checks for Saliency Maps" (arXiv 1810.03292): an explanation that still looks
the same after the model's weights are randomised, or after its inputs to the method are
replaced by noise, does not explain the model. We randomise, then re-run the explanation
and compare its concept scores with the real one by Spearman's rho
(:func:`texter_jax.eval.metrics.spearman`). Three variants:

* ``head``: the classifier head's parameters (those ``head(z)`` depends on, found by
  differentiating it, so any family works) are re-drawn;
* ``top``: cascading randomisation one step further: the head plus the feature
  extractor's last block (found from the parameter tree: the highest-numbered composite
  module, e.g. ResNet ``stage4/block2``, ViT ``blocks_11``; ``--sanity-top REGEX``
  overrides; if no numbered block exists every feature parameter is randomised);
* ``units``: TEXTER's IG-selected units replaced by random units from the same pool
  (active SAE codes with the SAE, all features without).

Re-drawn tensors are Gaussian with each tensor's own mean and standard deviation, so
activations keep their range (Adebayo et al. re-initialise from the initialiser, which a
converted checkpoint does not record). BatchNorm statistics are kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax.types import PRNGKey, Variables

VARIANTS = ("head", "top", "units")
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def head_paths(classifier, variables: Variables) -> set[str]:
    """``"a/b/c"`` paths of the parameters the classifier's head reads.

    A parameter belongs to the head when ``d sum(head(z)) / d param`` is non-zero for a
    generic ``z`` (unused parameters get structural zeros).
    """
    z = jnp.linspace(0.5, 1.5, classifier.feature_dim, dtype=jnp.float32)[None]
    grads = jax.grad(lambda p: jnp.sum(classifier.head({**variables, "params": p}, z)))(
        variables["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    return {_path_str(p) for p, g in flat if bool(jnp.any(g != 0))}


def _is_composite(tree) -> bool:
    """A module made of modules: a dict with at least one dict child."""
    return isinstance(tree, dict) and any(isinstance(v, dict) for v in tree.values())


def _leaf_paths(tree, prefix: str) -> set[str]:
    return {f"{prefix}/{_path_str(p)}" for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}


def last_block_prefix(params: dict, exclude: set[str] = frozenset()) -> str | None:
    """Path prefix of the feature extractor's last block, or None.

    Walks down the tree: at each level, among composite children named
    ``<name><number>`` (``stage4``, ``block2``, ``blocks_11``) that are not all head
    (``exclude``), take the highest number; stop when there is none. At the root a
    numbered group needs at least two members (one ``stage1`` is no sequence).

    >>> p = {"stem": {"conv": {"k": 0}}, "fc": {"k": 0},
    ...      "stage1": {"block0": {"conv1": {"k": 0}}},
    ...      "stage2": {"block0": {"conv1": {"k": 0}}, "block1": {"conv1": {"k": 0}}}}
    >>> last_block_prefix(p)
    'stage2/block1'
    """
    node, path = params, []
    while True:
        groups: dict[str, list[tuple[int, str]]] = {}
        for name, child in node.items():
            m = _NUMBERED.match(str(name))
            prefix = "/".join(path + [str(name)])
            if m and _is_composite(child) and not _leaf_paths(child, prefix) <= exclude:
                groups.setdefault(m.group(1), []).append((int(m.group(2)), str(name)))
        members = [max(g) for g in groups.values() if len(g) >= 2 or path]
        if not members:
            break
        name = max(members)[1]
        path.append(name)
        node = node[name]
    return "/".join(path) or None


def select(params: dict, predicate: Callable[[str], bool]) -> dict:
    """Bool pytree over ``params``: True where ``predicate(path)`` holds."""
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(predicate(_path_str(p))), params)


def randomize(key: PRNGKey, variables: Variables, chosen: dict) -> Variables:
    """Re-draws the chosen ``params`` leaves as N(mean, std) of each leaf.

    One standard-normal vector is drawn from ``key`` for all chosen leaves together
    (in flatten order) and split among them; a constant leaf (e.g. all-ones BatchNorm
    scales) gets a 10% relative spread instead of none.

    Args:
      key: PRNG key.
      variables: ``{"params": ..., ...}``; other collections are returned unchanged.
      chosen: bool pytree over ``variables["params"]`` (see :func:`select`).
    """
    leaves, tree = jax.tree.flatten(variables["params"])
    flags = [bool(f) for f in jax.tree.leaves(chosen)]
    if len(flags) != len(leaves):
        raise ValueError("chosen does not match the params tree")
    sizes = [int(np.size(x)) if on else 0 for x, on in zip(leaves, flags, strict=True)]
    noise = np.asarray(jax.random.normal(key, (max(sum(sizes), 1),), jnp.float32))
    out, offset = [], 0
    for x, on, n in zip(leaves, flags, sizes, strict=True):
        if not on:
            out.append(x)
            continue
        x = np.asarray(x)
        mean, std = float(np.mean(x)), float(np.std(x))
        if std == 0:
            std = max(abs(mean), 1.0) * 0.1
        out.append((mean + std * noise[offset:offset + n].reshape(x.shape)).astype(x.dtype))
        offset += n
    return {**variables, "params": jax.tree.unflatten(tree, out)}


def randomized_variables(key: PRNGKey, classifier, variables: Variables, variant: str, *,
                         top_regex: str | None = None) -> tuple[Variables, list[str]]:
    """Variables with the ``"head"`` or ``"top"`` parameters re-drawn.

    Returns:
      ``(variables, paths)``: the new variables and the sorted randomised leaf paths.
    """
    head = head_paths(classifier, variables)
    if variant == "head":
        pred = head.__contains__
    elif variant == "top":
        if top_regex:
            rx = re.compile(top_regex)
            def pred(p):
                return (p in head or bool(rx.search(p)))
        else:
            prefix = last_block_prefix(variables["params"], head)
            if prefix is None:
                def pred(p):
                    return (True)  # no block structure: randomise everything
            else:
                def pred(p):
                    return (p in head or p == prefix or p.startswith(prefix + "/"))
    else:
        raise ValueError(f"unknown model randomisation {variant!r}; choose head or top")
    chosen = select(variables["params"], pred)
    flat = jax.tree_util.tree_flatten_with_path(chosen)[0]
    paths = sorted(_path_str(p) for p, on in flat if on)
    if not paths:
        raise ValueError(f"sanity {variant!r}: no parameter selected")
    return randomize(key, variables, chosen), paths


def describe(paths: list[str], limit: int = 6) -> str:
    """Short human summary of randomised paths for run.json."""
    heads = sorted({p.rsplit("/", 1)[0] for p in paths})
    more = f" (+{len(heads) - limit} more)" if len(heads) > limit else ""
    return ", ".join(heads[:limit]) + more

