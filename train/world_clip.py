"""Contrastive training of the world's CLIP (InfoNCE, learned temperature, Optax AdamW).

Run (about 1-2 minutes on 2 CPU cores)::

    python -m train.world_clip --cache runs/world_cache

Data is rendered on the fly, so every step sees new images. Two remedies make shape
(the attribute a small contrastive model learns last, WORLD_NOTES) reach the zero-shot
bar within a CPU budget:

* *Twins groups*: part of every batch is groups of images that differ in exactly one
  attribute (mostly shape); inside such a group only that attribute separates the
  captions, so the image tower cannot get by on colour and background alone.
* *Hard-negative captions* (NegCLIP-style word swaps, Yuksekgonul et al. 2023,
  https://arxiv.org/abs/2210.01936): each image also meets copies of its caption with
  one named value swapped ("a red *circle*" for a red star), mostly the shape; the
  image->text loss then asks the image tower to tell shapes apart on every image.
* *Label prompts* (UniCL, Yang et al. 2022, https://arxiv.org/abs/2204.03610): every
  step, each image is also classified per attribute among one concept-bank phrase per
  value ("circle", "a star", "heart shape", ...), through the same text tower and
  temperature. Captions alone leave shape at chance after 600 steps here: the
  shape word is one of ~6 words of a sentence, so caption embeddings barely move with
  it, and colour / background / pattern already separate the batch. With prompts every
  image gets a full-strength shape signal.
* *Consistent-caption targets*: captions drop attribute words at random, so several
  images in a batch can match one caption ("a red object"). Instead of calling those
  negatives, the loss spreads each caption's target over every image whose attributes
  agree with it (and each image's over every caption it satisfies). This is exact
  here because the world knows every caption's meaning; it removes the label noise that
  otherwise grows with the drop rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from texter_jax.models.world_clip import WorldClip, WorldClipConfig, make_world_clip
from texter_jax.world.attributes import DISCRETE, WorldAttrs, sample_attributes, sample_twins
from texter_jax.world.captions import ATTR_ORDER, captions, value_phrases
from texter_jax.world.generator import render

CACHE_NAME = "world_clip"
METRICS_NAME = "metrics.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClipTrainConfig:
    """Hyperparameters of one world-CLIP training run.

    Attributes:
      image_size: S of the rendered images.
      steps: optimiser steps.
      batch: images (and captions) per step.
      twin_fraction: share of each batch made of twins groups.
      twin_weights: relative frequency of the attribute varied inside a twins group.
      group_size: images per twins group (capped by the attribute's number of values).
      lr, weight_decay, warmup: AdamW with linear warm-up then cosine decay to 5%.
      p_drop: probability of leaving each attribute word out of a caption.
      p_phrase: probability that a caption is a single concept-bank phrase.
      phrase_weights: relative odds of the attribute such a phrase names.
      n_neg: hard-negative captions per image: its caption with one named attribute
        swapped to another value (NegCLIP-style word swaps).
      neg_weights: relative odds of each attribute being the swapped one (among those
        the caption names).
      prompt_weight: weight of the label-prompt loss (0 disables it): every image is also
        classified, per attribute, among one concept-bank phrase per value.
      seed: root seed (model init, data stream).
      eval_images: held-out images for zero-shot accuracy.
      model: architecture overrides for :class:`WorldClipConfig` (JSON-able dict).
    """

    image_size: int = 64
    steps: int = 1200
    batch: int = 64
    twin_fraction: float = 0.5
    twin_weights: tuple[tuple[str, float], ...] = (
        ("shape", 0.6), ("pattern", 0.2), ("colour", 0.1), ("background", 0.1))
    group_size: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    p_drop: float = 0.3
    p_phrase: float = 0.35
    phrase_weights: tuple[tuple[str, float], ...] = (
        ("shape", 0.5), ("size", 0.2), ("pattern", 0.1), ("colour", 0.1), ("background", 0.1))
    n_neg: int = 3
    neg_weights: tuple[tuple[str, float], ...] = (
        ("shape", 3.0), ("size", 2.0), ("pattern", 1.0), ("colour", 1.0), ("background", 1.0))
    prompt_weight: float = 1.0
    seed: int = 0
    eval_images: int = 600
    model: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        for name in ("twin_weights", "neg_weights", "phrase_weights"):
            object.__setattr__(self, name,
                               tuple((str(a), float(w)) for a, w in getattr(self, name)))
        object.__setattr__(self, "model", tuple((str(k), v) for k, v in dict(self.model).items()))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["twin_weights"] = [list(x) for x in self.twin_weights]
        d["neg_weights"] = [list(x) for x in self.neg_weights]
        d["phrase_weights"] = [list(x) for x in self.phrase_weights]
        d["model"] = dict(self.model)
        return d


def _batch_attrs(rng: np.random.Generator, cfg: ClipTrainConfig):
    """Attributes of one batch and the bool [B, 5] mask of attributes forced into captions."""
    names = [a for a, _ in cfg.twin_weights]
    w = np.array([w for _, w in cfg.twin_weights], np.float64)
    twin_budget = int(round(cfg.batch * cfg.twin_fraction))
    chosen, used = [], 0
    while True:
        a = names[rng.choice(len(names), p=w / w.sum())]
        k = min(cfg.group_size, len(DISCRETE[a]))
        if used + k > twin_budget:
            break
        chosen.append(a)
        used += k
    twins = sample_twins(rng, chosen, cfg.group_size)
    rest = sample_attributes(rng, cfg.batch - len(twins))
    force = np.zeros((cfg.batch, len(ATTR_ORDER)), bool)
    pos = 0
    for a in chosen:  # the varied attribute of each group is always named
        k = min(cfg.group_size, len(DISCRETE[a]))
        force[pos:pos + k, ATTR_ORDER.index(a)] = True
        pos += k
    return WorldAttrs.concatenate([twins, rest]), force


def _values(attrs: WorldAttrs) -> np.ndarray:
    return np.stack([getattr(attrs, a) for a in ATTR_ORDER], axis=1)  # int [N, 5]


def consistency(text_values: np.ndarray, mentioned: np.ndarray,
                image_values: np.ndarray) -> np.ndarray:
    """float32 [T, B]: 1 where image j has every value that text i names.

    Args:
      text_values: int [T, 5] attribute values each text was written from.
      mentioned: bool [T, 5] which of them the text names.
      image_values: int [B, 5] the images' attribute values.
    """
    agree = text_values[:, None, :] == image_values[None, :, :]  # [text, image, attr]
    return np.all(agree | ~mentioned[:, None, :], axis=-1).astype(np.float32)


def hard_negatives(rng: np.random.Generator, attrs: WorldAttrs, mentioned: np.ndarray,
                   cfg: ClipTrainConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``cfg.n_neg`` captions per image naming the same attributes, one value swapped.

    Returns:
      ``(texts [N * n_neg], values int [N * n_neg, 5], mentioned bool [N * n_neg, 5])``;
      the negatives of image i are rows ``i * n_neg`` to ``(i + 1) * n_neg - 1``.
    """
    w = dict(cfg.neg_weights)
    weights = np.array([w.get(a, 0.0) for a in ATTR_ORDER])
    reps = np.repeat(np.arange(len(attrs)), cfg.n_neg)
    base, ment = attrs.take(reps), mentioned[reps]
    vals = _values(base)
    p = ment * weights[None, :]
    p[p.sum(1) == 0] = 1.0  # a caption naming nothing: any swap (it stays uninformative)
    cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
    which = np.minimum((rng.random(len(p))[:, None] > cdf).sum(1), len(ATTR_ORDER) - 1)
    sizes = np.array([len(DISCRETE[a]) for a in ATTR_ORDER])
    shift = 1 + (rng.random(len(p)) * (sizes[which] - 1)).astype(int)  # never 0
    rows = np.arange(len(p))
    vals[rows, which] = (vals[rows, which] + shift) % sizes[which]
    swapped = base.replace(**{a: vals[:, j].astype(np.int32) for j, a in enumerate(ATTR_ORDER)})
    texts, _ = captions(rng, swapped, keep=ment)
    return texts, vals, ment


def make_batch(rng: np.random.Generator, cfg: ClipTrainConfig, model: WorldClip):
    """One training batch.

    Returns:
      images float32 [B, S, S, 3] in [0, 1]; tokens int32 [T, L] with T = B (1 + n_neg):
      the B captions first, then the hard negatives; targets float32 [T, B], 1 where
      text i names only values image j has.
    """
    attrs, force = _batch_attrs(rng, cfg)
    pw = dict(cfg.phrase_weights)
    texts, mentioned = captions(rng, attrs, p_drop=cfg.p_drop, p_phrase=cfg.p_phrase,
                                phrase_weights=[pw.get(a, 0.0) for a in ATTR_ORDER],
                                force=force)
    values = _values(attrs)
    t_values, t_mentioned = values, mentioned
    if cfg.n_neg:
        neg_texts, neg_values, neg_mentioned = hard_negatives(rng, attrs, mentioned, cfg)
        texts = texts + neg_texts
        t_values = np.concatenate([values, neg_values])
        t_mentioned = np.concatenate([mentioned, neg_mentioned])
    images = render(attrs, int(rng.integers(2**31)), image_size=cfg.image_size)
    return (images.astype(np.float32) / 255.0, model.tokenize(texts),
            consistency(t_values, t_mentioned, values),
            model.tokenize(label_prompts(rng)), values.astype(np.int32))


def label_prompts(rng: np.random.Generator) -> list[str]:
    """One concept-bank phrase per attribute value (template drawn at random), P texts in
    :data:`ATTR_ORDER` then value order; P = 23 in the default world."""
    out = []
    for a in ATTR_ORDER:
        for phrases in value_phrases(a):
            out.append(phrases[rng.integers(len(phrases))])
    return out


def _prompt_slices() -> list[tuple[int, int]]:
    bounds = np.cumsum([0] + [len(DISCRETE[a]) for a in ATTR_ORDER])
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def prompt_loss(img: jax.Array, prompts: jax.Array, log_scale: jax.Array,
                labels: jax.Array) -> jax.Array:
    """Label-prompt loss: per attribute, cross-entropy of each image over its value prompts.

    Args:
      img: image embeddings [B, E]; prompts: prompt embeddings [P, E] in the order of
        :func:`label_prompts`; log_scale: the shared log logit scale [].
      labels: int [B, 5] attribute values in :data:`ATTR_ORDER`.

    Returns:
      Scalar, mean over attributes and images.
    """
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    prompts = prompts / jnp.linalg.norm(prompts, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(log_scale, math.log(100.0))) * img @ prompts.T  # [B, P]
    losses = [optax.softmax_cross_entropy_with_integer_labels(logits[:, lo:hi], labels[:, j])
              for j, (lo, hi) in enumerate(_prompt_slices())]
    return jnp.mean(jnp.stack(losses))


def clip_loss(img: jax.Array, txt: jax.Array, log_scale: jax.Array,
              targets: jax.Array) -> jax.Array:
    """Symmetric InfoNCE with multi-positive targets and extra (negative) texts.

    Args:
      img: image embeddings [B, E]; txt: text embeddings [T, E], T >= B, the first B
        being the images' own captions (any norm).
      log_scale: learned log logit scale [], capped at log(100) as in CLIP.
      targets: float [T, B], 1 where text i matches image j; ``targets[i, i] = 1``.

    Returns:
      Scalar: mean of the text->image cross-entropy over the B captions and the
      image->text cross-entropy over all T texts, against row-normalised targets.
    """
    b = img.shape[0]
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(log_scale, math.log(100.0))) * txt @ img.T  # [T, B]
    pos = targets[:b]
    t2i = optax.softmax_cross_entropy(logits[:b], pos / pos.sum(1, keepdims=True))
    i2t = optax.softmax_cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdims=True))
    return 0.5 * (t2i.mean() + i2t.mean())


def _decay_mask(params):
    # Decay kernels and embeddings only; biases and the temperature stay free.
    return jax.tree_util.tree_map_with_path(
        lambda p, _: str(getattr(p[-1], "key", "")) in ("kernel", "embedding"), params)


def make_optimizer(cfg: ClipTrainConfig) -> optax.GradientTransformation:
    warmup = min(cfg.warmup, cfg.steps // 5)  # short smoke runs still decay
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(cfg.steps, warmup + 1),
                                               end_value=0.05 * cfg.lr)
    return optax.adamw(sched, weight_decay=cfg.weight_decay, mask=_decay_mask)


def make_train_step(model: WorldClip, opt: optax.GradientTransformation,
                    prompt_weight: float = 1.0) -> Callable:
    """A jitted ``(params, opt_state, *batch) -> (params, opt_state, loss)``.

    ``batch`` is what :func:`make_batch` returns: images, tokens, targets, prompt tokens
    and labels.
    """

    def loss_fn(params, images, tokens, targets, prompt_tokens, labels):
        v = {"params": params}
        img = model.encode_image(v, images)
        loss = clip_loss(img, model.encode_text(v, tokens), params["logit_scale"], targets)
        if prompt_weight:
            loss += prompt_weight * prompt_loss(img, model.encode_text(v, prompt_tokens),
                                                params["logit_scale"], labels)
        return loss

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, *batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def eval_set(cfg: ClipTrainConfig, n: int | None = None) -> tuple[WorldAttrs, np.ndarray]:
    """Held-out attributes and float32 images [N, S, S, 3]; seeded apart from training."""
    attrs = sample_attributes(cfg.seed + 1_000_003, n or cfg.eval_images)
    return attrs, render(attrs, cfg.seed + 1_000_003, image_size=cfg.image_size) / np.float32(255)


def embed_images(model: WorldClip, variables, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """L2-normalised image embeddings float32 [N, E]."""
    fn = jax.jit(lambda x: model.encode_image(variables, x))
    out = np.concatenate([np.asarray(fn(images[i:i + batch]))
                          for i in range(0, len(images), batch)])
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def embed_texts(model: WorldClip, variables, texts: list[str]) -> np.ndarray:
    """L2-normalised text embeddings float32 [N, E]."""
    out = np.asarray(model.encode_text(variables, model.tokenize(texts)))
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def zero_shot_accuracy(model: WorldClip, variables, attrs: WorldAttrs,
                       images: np.ndarray) -> dict[str, float]:
    """Zero-shot accuracy per discrete attribute on held-out images.

    Each value is represented by the mean of its concept-bank phrase embeddings (a
    prompt ensemble), the same phrases TEXTER later retrieves; an image's predicted value
    is the nearest one by cosine.

    Returns:
      ``{attribute: accuracy in [0, 1]}``.
    """
    img = embed_images(model, variables, images)
    acc = {}
    for a in ATTR_ORDER:
        protos = []
        for phrases in value_phrases(a):
            e = embed_texts(model, variables, phrases).mean(0)
            protos.append(e / np.linalg.norm(e))
        pred = np.argmax(img @ np.stack(protos).T, axis=1)
        acc[a] = float(np.mean(pred == getattr(attrs, a)))
    return acc


def train_world_clip(cfg: ClipTrainConfig, *, log: Callable[[str], None] | None = print,
                     eval_every: int = 0, progress=None):
    """Trains the world CLIP from scratch.

    Args:
      cfg: the run's hyperparameters.
      log: line logger (``None`` for silence).
      eval_every: report zero-shot accuracy every this many steps (0: only at the end).
      progress: optional callable ``(step, steps, loss)`` (e.g. a tqdm update).

    Returns:
      ``(model, variables, metrics)`` with numpy variables and a JSON-ready metrics dict
      (``zero_shot`` per attribute, ``final_loss``, ``train_seconds``, ``logit_scale``).
    """
    model = make_world_clip(WorldClipConfig(image_size=cfg.image_size, **dict(cfg.model)))
    key = jax.random.key(cfg.seed)
    params = model.module.init(key, *model.dummy_inputs())["params"]
    opt = make_optimizer(cfg)
    opt_state = opt.init(params)
    step_fn = make_train_step(model, opt, cfg.prompt_weight)
    rng = np.random.default_rng(cfg.seed)
    ev_attrs, ev_images = eval_set(cfg)
    t0, losses, history = time.time(), [], []
    for step in range(cfg.steps):
        params, opt_state, loss = step_fn(params, opt_state, *make_batch(rng, cfg, model))
        if progress is not None:
            progress(step, cfg.steps, loss)
        if (step + 1) % 50 == 0 or step == cfg.steps - 1:
            losses.append(float(loss))
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < cfg.steps:
            zs = zero_shot_accuracy(model, {"params": params}, ev_attrs, ev_images)
            history.append({"step": step + 1, "seconds": round(time.time() - t0, 1), **zs})
            if log:
                log(f"[world_clip] step {step + 1} loss {float(loss):.3f} "
                    f"{time.time() - t0:.0f}s zero-shot " +
                    " ".join(f"{a}={v:.2f}" for a, v in zs.items()))
    train_seconds = time.time() - t0
    variables = jax.tree.map(np.asarray, {"params": params})
    zs = zero_shot_accuracy(model, variables, ev_attrs, ev_images)
    metrics = {"zero_shot": zs, "eval_images": len(ev_attrs), "final_loss": losses[-1],
               "loss_every_50": losses, "train_seconds": round(train_seconds, 1),
               "logit_scale": float(np.exp(variables["params"]["logit_scale"])),
               "history": history, "train_config": cfg.to_json()}
    if log:
        log(f"[world_clip] done in {train_seconds:.0f}s, final loss {losses[-1]:.3f}, "
            "zero-shot " + " ".join(f"{a}={v:.3f}" for a, v in zs.items()))
    return model, variables, metrics


def get_or_train_world_clip(cache_dir: str | Path, cfg: ClipTrainConfig | None = None, *,
                            log: Callable[[str], None] | None = print, **kw):
    """Loads the cached world CLIP trained with ``cfg``, or trains and caches it.

    The cache folder ``<cache_dir>/world_clip`` is an ordinary model folder
    (``texter_config.json`` + Orbax ``variables/``, loadable with
    :func:`texter_jax.io.checkpoints.load_model`) plus ``metrics.json``; it is reused
    only if its recorded training config equals ``cfg``.

    Returns:
      ``(model, variables, metrics)``.
    """
    from texter_jax.io.atomic import write_json_atomic
    from texter_jax.io.checkpoints import load_model, save_model
    from texter_jax.models.registry import config_to_dict

    cfg = cfg or ClipTrainConfig()
    out = Path(cache_dir) / CACHE_NAME
    metrics_path = out / METRICS_NAME
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("train_config") == json.loads(json.dumps(cfg.to_json())):
            model, variables = load_model(out)
            if log:
                log(f"[world_clip] loaded from {out}")
            return model, variables, metrics
    model, variables, metrics = train_world_clip(cfg, log=log, **kw)
    save_model(out, model.family, config_to_dict(model.config), variables,
               source={"trained_by": "train.world_clip"}, overwrite=True)
    # Written last: a folder without metrics.json is never trusted as a cache hit.
    write_json_atomic(metrics_path, metrics)
    return model, variables, metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="runs/world_cache", help="cache folder")
    p.add_argument("--steps", type=int, default=ClipTrainConfig.steps)
    p.add_argument("--batch", type=int, default=ClipTrainConfig.batch)
    p.add_argument("--twin-fraction", type=float, default=ClipTrainConfig.twin_fraction)
    p.add_argument("--image-size", type=int, default=ClipTrainConfig.image_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="train without reading/writing")
    a = p.parse_args(argv)
    cfg = ClipTrainConfig(steps=a.steps, batch=a.batch, twin_fraction=a.twin_fraction,
                          image_size=a.image_size, seed=a.seed)
    if a.no_cache:
        _, _, m = train_world_clip(cfg, eval_every=a.eval_every)
    else:
        _, _, m = get_or_train_world_clip(a.cache, cfg, eval_every=a.eval_every)
    print(json.dumps({k: m[k] for k in ("zero_shot", "train_seconds", "final_loss")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
