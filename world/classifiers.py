"""Small ResNet classifiers of the world with different decision rules (Optax AdamW).

Run (well under a minute per classifier on 2 CPU cores)::

    python -m texter_jax.world.classifiers --cache runs/world_cache

Classifiers (:data:`TASKS`):

* ``shape``: label = shape, attributes independent;
* ``shape_shortcut``: label = shape, but in training background k always appears with
  shape k (a planted shortcut); evaluated on independent attributes;
* ``colour``: label = colour;
* ``badge``: label = the colour of the badge, a small ringed disc beside the object
  (~1.5 % of the pixels) while the object and the background fill the image: a
  classifier whose decisive cue is not what the image mostly shows.

Like real classifiers trained on random resized crops, each sees whole images and
close-ups, wide shots and partial views (:mod:`texter_jax.world.views`), each view
drawn so that it still shows the attribute its label is read from; and, like models that
have seen many objects and repeated motifs, mosaics (:mod:`texter_jax.world.mosaics`)
whose tiles all share the label's value, labelled with it (a mosaic of stars is a "star"
for the shape classifier).

Each is a :class:`texter_jax.models.resnet.ResNet` (basic blocks, one per stage) wrapped in
:class:`texter_jax.classifier.Classifier`, so every TEXTER stage uses it exactly like a
converted torchvision model. Our ResNet runs BatchNorm in inference mode only; we keep
the running statistics at mean 0 / variance 1 and train the BN scale and bias, so each
BN is a learned per-channel affine map (a normalisation-free ResNet, which trains fine
at this depth) and the saved folder is an ordinary ``resnet`` model folder.

After training, each classifier's decision-critical attribute is *measured* by
intervention (:func:`texter_jax.world.interventions.measure_interventions`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax

from texter_jax.batching import map_in_batches
from texter_jax.classifier import Classifier
from texter_jax.io.atomic import write_json_atomic
from texter_jax.io.checkpoints import load_model, save_model
from texter_jax.models.registry import config_to_dict
from texter_jax.models.resnet import ResNetConfig, make_classifier
from texter_jax.world.attributes import DISCRETE, sample_attributes
from texter_jax.world.classifier_data import (
    TASKS,
    ClassifierTrainConfig,
    Task,
    training_attrs,
    training_mosaics,
    training_views,
)
from texter_jax.world.classifier_step import init_aux_heads, init_variables, make_train_step
from texter_jax.world.generator import render
from texter_jax.world.interventions import measure_interventions
from texter_jax.world.views import visible_attributes

__all__ = ["TASKS", "ClassifierTrainConfig", "Task", "accuracy", "get_or_train_classifiers",
           "logits_fn", "padded_logits", "train_all", "train_classifier", "training_attrs",
           "training_mosaics", "training_views"]

METRICS_NAME = "metrics.json"


def resnet_config(cfg: ClassifierTrainConfig, num_classes: int) -> ResNetConfig:
    return ResNetConfig(block="basic", depths=cfg.depths, widths=cfg.widths,
                        stem_width=cfg.stem_width, num_classes=num_classes,
                        image_size=cfg.image_size)


def logits_fn(clf: Classifier, variables) -> Callable[[np.ndarray], jax.Array]:
    """A jitted images [B, S, S, 3] in [0, 1] -> logits [B, C]."""
    return jax.jit(lambda x: clf.logits(variables, x))


def padded_logits(fn: Callable, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """``fn`` over fixed-size chunks (``map_in_batches``), so a jitted ``fn`` compiles
    once. images: [N, S, S, 3] uint8 or float in [0, 1] -> logits [N, C]."""
    def as_float(x):
        return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)

    return map_in_batches(lambda x: fn(as_float(x)), images, batch)


def accuracy(fn: Callable, images_u8: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of logits function ``fn`` on uint8 images [N, S, S, 3]."""
    return float(np.mean(padded_logits(fn, images_u8).argmax(1) == labels))


def train_classifier(task: Task, images_u8: np.ndarray, labels: np.ndarray,
                     cfg: ClassifierTrainConfig, *, key: jax.Array,
                     aux_labels: np.ndarray | None = None, aux_weights: np.ndarray | None = None,
                     log: Callable[[str], None] | None = print, name: str = "",
                     progress=None):
    """Trains one classifier.

    Args:
      task: its decision rule (for the number of classes).
      images_u8: uint8 [N, S, S, 3] training images; labels: int [N].
      cfg: hyperparameters.
      key: PRNG key for init and the data order.
      aux_labels: int [N, A] every discrete attribute's value (DISCRETE order), for the
        auxiliary heads (``cfg.aux_weight``); aux_weights: float [N, A], 0 where the
        attribute is not to be predicted.

    Returns:
      ``(classifier, variables, info)`` with numpy variables and
      ``info = {"train_seconds", "final_loss", "loss_every_50"}``.
    """
    clf = make_classifier(resnet_config(cfg, len(DISCRETE[task.label])))
    k_init, k_data = jax.random.split(key)
    variables = init_variables(clf, k_init)
    params = {"clf": variables["params"],
              "aux": init_aux_heads(clf.feature_dim, jax.random.fold_in(k_init, 1))}
    batch_stats = variables["batch_stats"]
    n_attr = len(DISCRETE)
    if aux_labels is None:
        aux_labels = np.zeros((len(images_u8), n_attr), np.int32)
        aux_weights = np.zeros((len(images_u8), n_attr), np.float32)
    epochs = cfg.epochs * task.epoch_scale
    steps = max(1, int(epochs * len(images_u8) / cfg.batch))
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, min(50, steps // 5),
                                               max(steps, min(50, steps // 5) + 1),
                                               end_value=0.05 * cfg.lr)
    opt = optax.adamw(sched, weight_decay=cfg.weight_decay)
    opt_state = opt.init(params)
    step_fn = make_train_step(clf, opt, cfg.aux_weight)
    order_rng = np.random.default_rng(np.asarray(jax.random.bits(k_data, (2,), np.uint32)))
    order = np.concatenate([order_rng.permutation(len(images_u8))
                            for _ in range(int(np.ceil(epochs)) + 1)])
    t0, losses = time.time(), []
    for s in range(steps):
        idx = order[s * cfg.batch:(s + 1) * cfg.batch]
        x = images_u8[idx].astype(np.float32) / 255.0
        if cfg.noise_std:  # pixel-noise augmentation (drawn from the data-order stream)
            x = x + cfg.noise_std * order_rng.standard_normal(x.shape, np.float32)
        params, opt_state, loss = step_fn(params, opt_state, batch_stats, x,
                                          labels[idx].astype(np.int32),
                                          aux_labels[idx].astype(np.int32),
                                          aux_weights[idx].astype(np.float32))
        if progress is not None:
            progress(s, steps, loss)
        if (s + 1) % 50 == 0 or s == steps - 1:
            losses.append(float(loss))
    seconds = time.time() - t0
    # The auxiliary heads are dropped: the classifier is its backbone and task head.
    variables = jax.tree.map(np.asarray, {"params": params["clf"], "batch_stats": batch_stats})
    if log:
        log(f"[world_classifiers] {name}: {steps} steps in {seconds:.0f}s, "
            f"final loss {losses[-1]:.3f}")
    return clf, variables, {"train_seconds": round(seconds, 1), "final_loss": losses[-1],
                            "steps": steps, "loss_every_50": losses}


def train_all(cfg: ClassifierTrainConfig, tasks: dict[str, Task] | None = None, *,
              log: Callable[[str], None] | None = print, progress=None):
    """Renders the data, trains every task's classifier and measures its truth.

    Returns:
      ``{name: (classifier, variables, metrics)}``; metrics hold ``test_accuracy`` (on
      independent attributes), ``mosaic_test_accuracy`` (held-out mosaics drawn like the
      training ones), ``train_task_accuracy`` (held-out images drawn like the
      training set), the intervention table and the measured ``critical`` attribute.
    """
    tasks = tasks or TASKS
    t0 = time.time()
    test_attrs = sample_attributes(cfg.seed + 2_000_003, cfg.test_images)
    test_u8 = render(test_attrs, cfg.seed + 2_000_003, image_size=cfg.image_size)
    int_attrs = sample_attributes(cfg.seed + 3_000_017, cfg.intervention_images)
    out = {}
    root = jax.random.key(cfg.seed)
    for i, (name, task) in enumerate(tasks.items()):
        seed = cfg.seed + (1_000_001 if task.tie_background else 0)
        attrs = training_attrs(task, seed, cfg.train_images)
        views = training_views(task, attrs, cfg, seed + 17)
        images = render(attrs, seed, image_size=cfg.image_size, views=views)
        aux_labels = np.stack([getattr(attrs, a) for a in DISCRETE], axis=1)
        aux_weights = visible_attributes(attrs, views, cfg.image_size).astype(np.float32)
        aux_weights[:, list(DISCRETE).index(task.label)] = 0.0  # the task's own head
        labels = getattr(attrs, task.label)
        n_mos = int(round(cfg.extra_mosaics * len(attrs)))
        if n_mos:  # mosaics added to the ordinary images, labelled like the first n_mos
            mos = training_mosaics(task, labels[:n_mos], cfg, seed + 29)
            images, labels, aux_labels, aux_weights = (
                np.concatenate([x, m]) for x, m in zip(
                    (images, labels, aux_labels, aux_weights), mos, strict=True))
        if log:
            log(f"[world_classifiers] data ready after {time.time() - t0:.0f}s")
        clf, variables, info = train_classifier(
            task, images, labels, cfg, key=jax.random.fold_in(root, i), aux_labels=aux_labels,
            aux_weights=aux_weights, log=log, name=name, progress=progress)
        fn = logits_fn(clf, variables)
        info["test_accuracy"] = accuracy(fn, test_u8, getattr(test_attrs, task.label))
        mos_labels = getattr(test_attrs, task.label)[:cfg.test_images // 4]
        mos_u8, mos_labels, _, _ = training_mosaics(task, mos_labels, cfg, cfg.seed + 2_000_029)
        info["mosaic_test_accuracy"] = accuracy(fn, mos_u8, mos_labels)
        if task.tie_background:
            iid = training_attrs(task, cfg.seed + 4_000_037, cfg.test_images)
            iid_u8 = render(iid, cfg.seed + 4_000_037, image_size=cfg.image_size)
            info["train_task_accuracy"] = accuracy(fn, iid_u8, getattr(iid, task.label))
        t1 = time.time()
        table = measure_interventions(
            functools.partial(padded_logits, fn), int_attrs, jax.random.fold_in(root, 100 + i),
            render_seed=cfg.seed + 3_000_017, image_size=cfg.image_size,
            labels=getattr(int_attrs, task.label))
        info["interventions"] = table.to_dict()
        info["critical"] = table.critical
        info["intervention_seconds"] = round(time.time() - t1, 1)
        info["task"] = dataclasses.asdict(task)
        if log:
            log(f"[world_classifiers] {name}: test acc {info['test_accuracy']:.3f} "
                f"(mosaics {info['mosaic_test_accuracy']:.3f}), "
                f"critical attribute {table.critical}\n{table.to_markdown()}")
        out[name] = (clf, variables, info)
    return out


def get_or_train_classifiers(cache_dir: str | Path, cfg: ClassifierTrainConfig | None = None,
                             tasks: dict[str, Task] | None = None, *,
                             log: Callable[[str], None] | None = print, **kw):
    """Loads cached classifiers trained with ``cfg`` or trains and caches them.

    Each classifier is an ordinary ``resnet`` model folder
    ``<cache_dir>/classifiers/<name>`` (Orbax variables + ``texter_config.json``) with
    a ``metrics.json`` beside; reused only if the recorded config matches.

    Returns:
      ``{name: (classifier, variables, metrics)}``.
    """
    cfg = cfg or ClassifierTrainConfig()
    tasks = tasks or TASKS
    root = Path(cache_dir) / "classifiers"
    want = {"train_config": cfg.to_json()}
    out, missing = {}, {}
    for name, task in tasks.items():
        mpath = root / name / METRICS_NAME
        if mpath.is_file():
            metrics = json.loads(mpath.read_text())
            if (metrics.get("train_config") == want["train_config"]
                    and metrics.get("task") == json.loads(json.dumps(dataclasses.asdict(task)))):
                clf, variables = load_model(root / name)
                out[name] = (clf, variables, metrics)
                if log:
                    log(f"[world_classifiers] {name} loaded from {root / name}")
                continue
        missing[name] = task
    if missing:
        for name, (clf, variables, info) in train_all(cfg, missing, log=log, **kw).items():
            info["train_config"] = want["train_config"]
            save_model(root / name, clf.family, config_to_dict(clf.config), variables,
                       source={"trained_by": "texter_jax.world.classifiers", "task": name},
                       overwrite=True)
            write_json_atomic(root / name / METRICS_NAME, info)  # last: marks completion
            out[name] = (clf, variables, json.loads((root / name / METRICS_NAME).read_text()))
    return {name: out[name] for name in tasks}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="runs/world_cache")
    p.add_argument("--epochs", type=float, default=ClassifierTrainConfig.epochs)
    p.add_argument("--train-images", type=int, default=ClassifierTrainConfig.train_images)
    p.add_argument("--image-size", type=int, default=ClassifierTrainConfig.image_size)
    p.add_argument("--tasks", nargs="*", default=list(TASKS))
    p.add_argument("--no-cache", action="store_true")
    a = p.parse_args(argv)
    cfg = ClassifierTrainConfig(epochs=a.epochs, train_images=a.train_images,
                                image_size=a.image_size)
    tasks = {t: TASKS[t] for t in a.tasks}
    res = (train_all(cfg, tasks) if a.no_cache
           else get_or_train_classifiers(a.cache, cfg, tasks))
    print(json.dumps({n: {k: m[k] for k in ("test_accuracy", "train_seconds", "critical")}
                      for n, (_, _, m) in res.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
