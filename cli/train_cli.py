"""`texter extract-features`, `texter train-aligner`, `texter train-sae`.

Only argparse at top level; JAX, Orbax and the model families load inside each ``run``.
``register`` adds all three subcommands and is idempotent, so ``texter_jax/cli.py`` may
list this module once or under each name. ``python -m texter_jax.cli.train_cli ...`` works too.
"""

from __future__ import annotations

import argparse
import sys

from texter_jax.cli.process_args import add_process_args, process_group

COMMANDS = ("extract-features", "train-aligner", "train-sae")


def register(subparsers) -> None:
    if COMMANDS[0] in subparsers.choices:
        return  # already registered through another SUBCOMMANDS entry

    p = subparsers.add_parser(
        "extract-features",
        help="run a converted classifier or CLIP image tower over images into feature shards",
        description=(
            "Extract features of every image under --images (ImageFolder layout "
            "<root>/<class>/<img>, or a flat folder) or listed in --file-list into "
            "memory-mappable shards (features_NNNNN.npy, labels_NNNNN.npy, files_NNNNN.json "
            "+ manifest.json). Unreadable images are listed and skipped. Rerunning the same "
            "command resumes at the first unwritten shard."))
    p.add_argument("--model", required=True, help="converted model folder (texter convert)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="image folder")
    src.add_argument("--file-list", help="text file: one 'path [label]' per line")
    p.add_argument("--out", required=True, help="output features folder")
    p.add_argument("--clip", action="store_true",
                   help="the model is CLIP: extract image embeddings (encode_image)")
    p.add_argument("--preprocess", choices=("aligner", "sae", "clip"), default=None,
                   help="for a model of input side S (224 for the release's): aligner: "
                        "Resize S + CenterCrop S; sae: Resize S*256/224 + CenterCrop S; "
                        "clip: bicubic Resize S + CenterCrop S "
                        "(default: clip with --clip, else aligner)")
    p.add_argument("--layer", default=None,
                   help="extract this named layer's output instead of the classifier's "
                        "penultimate features (a submodule path, '/'-joined, e.g. "
                        "'layer3' or 'layer3/1'; a wrong name lists the layers there are)")
    p.add_argument("--layer-reduce", choices=("mean", "first", "flatten"), default="mean",
                   help="one row per image from the layer's [B, ..., C] output: mean over "
                        "positions/tokens, the first token (a ViT's class token), or all "
                        "values flattened (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=4096, help="images per shard")
    p.add_argument("--workers", type=int, default=None, help="decoding threads")
    p.add_argument("--shard-devices", action="store_true",
                   help="split each batch over all JAX devices")
    p.add_argument("--no-progress", action="store_true")
    add_process_args(p)
    p.set_defaults(func=run_extract)

    p = subparsers.add_parser(
        "train-aligner",
        help="fit the linear aligner: classifier features -> CLIP image embeddings",
        description=(
            "Fit h = z W^T + b from classifier features (--features) to CLIP image "
            "embeddings of the same images (--targets); rows are paired by image path. "
            "Writes an aligner folder (aligner.json + Orbax params)."))
    p.add_argument("--features", required=True, help="classifier features folder")
    p.add_argument("--targets", required=True, help="CLIP image-embedding features folder")
    p.add_argument("--out", required=True, help="output aligner folder")
    p.add_argument("--method", choices=("auto", "closed_form", "sgd"), default="auto",
                   help="auto: exact ridge when the d x d system fits memory, else the "
                        "release's SGD recipe")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction held out for metrics")
    p.add_argument("--ridge", type=float, default=1e-6, help="relative ridge (closed form)")
    p.add_argument("--epochs", type=int, default=6, help="SGD epochs")
    p.add_argument("--schedule", choices=("release", "cosine", "constant"), default="release",
                   help="SGD lr schedule (release: per-epoch cosine with T_max=200 epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-release", metavar="PATH.pth", default=None,
                   help="also write the release's torch file {'W', 'b'} (needs torch)")
    p.add_argument("--zero-shot-clip", metavar="CLIP_DIR", default=None,
                   help="converted CLIP folder: report zero-shot accuracy through the aligner "
                        "on the held-out rows (Text-to-Concept's sanity check), class names "
                        "from --class-names or the features' ImageFolder classes")
    p.add_argument("--class-names", default=None,
                   help="class names file (.txt one per line, or .json) for --zero-shot-clip")
    p.add_argument("--prompt", default="a photo of {}.",
                   help="zero-shot prompt template (Text-to-Concept's default)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_train_aligner)

    p = subparsers.add_parser(
        "train-sae",
        help="train a TopK sparse autoencoder on extracted features (resumable)",
        description=(
            "Train a TopK SAE (release recipe: n = expansion * d, k = n // 10, Adam 5e-4, "
            "batch 1024, 10 epochs, gradient-norm clip 1). Checkpoints go to "
            "OUT/checkpoints; rerunning the same command resumes exactly where it stopped. "
            "The final SAE is written to OUT/sae."))
    p.add_argument("--features", required=True, help="features folder or a .npy [N, d] file")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--expansion", type=int, default=8, help="n = expansion * d")
    p.add_argument("--top-k", type=int, default=None, help="codes kept (default n // 10)")
    p.add_argument("--clip-norm", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=1000,
                   help="steps between checkpoints (and one at every epoch end)")
    p.add_argument("--export-release", metavar="PATH.pth", default=None,
                   help="also write the release's sae_model.pth (needs torch)")
    # None: SaeTrainConfig's default (AuxK off: the release's training)
    p.add_argument("--aux-k", type=int, default=None, metavar="K",
                   help="AuxK loss (Gao et al. 2024): the K most active dead latents "
                        "reconstruct the residual (e.g. d / 2; default off)")
    p.add_argument("--aux-coef", type=float, default=None,
                   help="weight of the AuxK loss (default 1/32)")
    p.add_argument("--dead-after", type=int, default=None, metavar="ROWS",
                   help="rows without firing after which a latent is dead for AuxK "
                        "(default: one epoch's rows)")
    p.add_argument("--activation", choices=("topk", "batchtopk"), default="topk",
                   help="topk: the release's TopK per row; batchtopk: top k * batch over "
                        "the batch while training, a learnt threshold at inference")
    p.add_argument("--eval-features", default=None, metavar="FOLDER",
                   help="held-out features for the final report (default: the training "
                        "rows)")
    p.add_argument("--classifier", default=None, metavar="FOLDER",
                   help="the classifier the features come from: the report adds the cost "
                        "of splicing the SAE in (prediction agreement, KL, accuracy)")
    p.add_argument("--tied-init", action="store_true",
                   help="start the dictionary as the encoder's transpose")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train_sae)


def _error(cmd: str, e: Exception) -> int:
    print(f"texter {cmd}: error: {e}", file=sys.stderr)
    return 2


def run_extract(args) -> int:
    from texter_jax.io.checkpoints import CheckpointError, load_model
    from texter_jax.train.features import (
        PREPROCESS,
        FeatureShardsError,
        extract_features,
        list_image_folder,
        read_file_list,
    )

    group = process_group(args, "extract-features")  # before any other JAX work
    if group is None:
        return 2
    try:
        if args.images:
            items, classes = list_image_folder(args.images)
        else:
            items, classes = read_file_list(args.file_list), []
        model, variables = load_model(args.model)
    except (FileNotFoundError, CheckpointError) as e:
        return _error("extract-features", e)
    is_clip = args.clip or (hasattr(model, "encode_image") and not hasattr(model, "features"))
    if is_clip:
        if not hasattr(model, "encode_image"):
            return _error("extract-features", ValueError(
                f"--clip given but {args.model} is not a CLIP model"))
        fn = model.encode_image
    else:
        fn = model.features
    preprocess = args.preprocess or ("clip" if is_clip else "aligner")
    size = getattr(model, "image_size", PREPROCESS[preprocess][1])
    layer = {}
    if args.layer is not None:
        from texter_jax.capture import LayerNotFound
        from texter_jax.train.layer_features import check_layer, classifier_layer

        if is_clip or not hasattr(model, "module"):
            return _error("extract-features", ValueError(
                f"--layer reads a converted classifier's layers; {args.model} is not one"))
        fn = classifier_layer(model, args.layer, reduce=args.layer_reduce)
        try:  # before any image is read: a wrong name lists the model's layers
            check_layer(fn, variables, size)
        except LayerNotFound as e:
            return _error("extract-features", ValueError(f"{args.model}: {e}"))
        layer = {"layer": args.layer, "layer_reduce": args.layer_reduce}
    try:
        out = extract_features(
            items, fn, args.out, variables=variables, preprocess=preprocess, image_size=size,
            batch_size=args.batch_size, shard_size=args.shard_size,
            num_workers=args.workers, shard=args.shard_devices, classes=classes,
            extra_meta={"model": str(args.model), "kind": "clip_image" if is_clip
                        else "classifier_layer" if layer else "classifier_features",
                        "source": str(args.images or args.file_list)},
            extra_settings=layer or None,
            progress=not args.no_progress, group=group)
    except (FeatureShardsError, ValueError) as e:
        return _error("extract-features", e)
    if group.is_main:
        print(f"wrote {out}")
    return 0


def _paired(features, targets):
    """Rows of both folders matched by image path (intersection, features order)."""
    import numpy as np

    f_files, t_files = features.files, targets.files
    if f_files == t_files:
        return features.read_all(), targets.read_all(), len(f_files)
    if "" in f_files or "" in t_files:
        raise ValueError("cannot pair rows: one side has no file list and the row counts "
                         f"differ ({len(features)} vs {len(targets)})")
    t_index = {p: i for i, p in enumerate(t_files)}
    fi = np.asarray([i for i, p in enumerate(f_files) if p in t_index], np.int64)
    ti = np.asarray([t_index[f_files[i]] for i in fi], np.int64)
    if fi.size == 0:
        raise ValueError("features and targets share no image path")
    return features.take(fi), targets.take(ti), int(fi.size)


def run_train_aligner(args) -> int:
    import jax

    from texter_jax import aligner as aligner_io
    from texter_jax.io.checkpoints import CheckpointError
    from texter_jax.train.aligner import fit_aligner
    from texter_jax.train.features import FeatureShards, FeatureShardsError

    try:
        feats, targs = FeatureShards(args.features), FeatureShards(args.targets)
        x, y, n = _paired(feats, targs)
    except (FeatureShardsError, ValueError) as e:
        return _error("train-aligner", e)
    print(f"aligner: {n} pairs, {x.shape[1]} -> {y.shape[1]}")
    result = fit_aligner(x, y, key=jax.random.key(args.seed), method=args.method,
                         holdout=args.holdout, ridge=args.ridge, epochs=args.epochs,
                         schedule=args.schedule, verbose=True)
    m = result.metrics
    print(f"method: {result.method}")
    for split in ("train", "holdout"):
        if f"{split}_mse" in m:
            print(f"{split}: MSE {m[f'{split}_mse']:.5g}  R2 {m[f'{split}_r2']:.4f}  "
                  f"R2(centred) {m[f'{split}_r2_centred']:.4f}  cos {m[f'{split}_cosine']:.4f}")
    extra = {"features": str(args.features), "targets": str(args.targets)}
    if args.zero_shot_clip:
        try:
            acc, n_eval, n_cls = _zero_shot(args, feats, x, result)
        except (ValueError, OSError) as e:
            return _error("train-aligner", e)
        print(f"zero-shot accuracy through the aligner: {acc:.4f} on {n_eval} held-out "
              f"images, {n_cls} classes (chance {1 / n_cls:.4f})")
        extra["zero_shot"] = {"accuracy": acc, "n": n_eval, "classes": n_cls,
                              "prompt": args.prompt}
    try:
        aligner_io.save(args.out, result, overwrite=args.overwrite, extra=extra)
    except (FileExistsError, CheckpointError) as e:
        return _error("train-aligner", e)
    print(f"wrote {args.out}")
    if args.export_release:
        from texter_jax.converters.release import export_release_aligner

        print(f"wrote {export_release_aligner(args.export_release, result.w, result.b)}")
    return 0


def _zero_shot(args, feats, x, result):
    """Held-out zero-shot accuracy: argmax_c cos(z W^T + b, CLIP text of class c)."""
    import jax
    import numpy as np

    from texter_jax.io.checkpoints import load_model
    from texter_jax.io.class_names import read_class_index
    from texter_jax.text.encoder import text_encoder
    from texter_jax.train.aligner import aligner_zero_shot_accuracy, holdout_split

    labels = np.asarray(feats.labels)
    if len(labels) != x.shape[0] or np.all(labels < 0):
        raise ValueError(f"{args.features} has no class labels (extract from an ImageFolder "
                         "layout) or its rows could not be paired one to one")
    classes = feats.manifest.get("classes") or []
    n_cls = int(labels.max()) + 1
    names = (read_class_index(args.class_names, n_cls)[0] if args.class_names
             else list(classes))
    if len(names) < n_cls:
        raise ValueError(f"{len(names)} class names for labels up to {n_cls - 1}: pass "
                         "--class-names")
    clip, clip_vars = load_model(args.zero_shot_clip)
    encode = text_encoder(clip, jax.tree.map(jax.numpy.asarray, clip_vars),
                          args.zero_shot_clip)
    text = encode([args.prompt.format(n.replace("_", " ")) for n in names])
    _, hold = holdout_split(x.shape[0], args.holdout, jax.random.key(args.seed))
    rows = hold if hold.size else np.arange(x.shape[0])
    keep = rows[labels[rows] >= 0]
    acc = aligner_zero_shot_accuracy(result.w, result.b, x[keep], labels[keep], text)
    return float(acc), int(keep.size), len(names)


def run_train_sae(args) -> int:
    from texter_jax.cli.sae_cli import run_train_sae as run

    return run(args, _error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m texter_jax.cli.train_cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
