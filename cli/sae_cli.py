"""`texter train-sae`: train (or resume) an SAE on extracted features, then report it
(:mod:`texter_jax.train.sae_report`) on the training rows or held-out ones. The parser is in
:mod:`texter_jax.cli.train_cli`."""

from __future__ import annotations


def run_train_sae(args, _error) -> int:
    """`texter train-sae` (``_error(command, exception)`` prints the one-line error)."""
    from texter_jax.io.checkpoints import CheckpointError
    from texter_jax.sae import SaeConfig
    from texter_jax.train.features import FeatureShards, FeatureShardsError
    from texter_jax.train.sae_train import SaeTrainConfig, train_sae

    try:
        shards = FeatureShards(args.features)
    except FeatureShardsError as e:
        return _error("train-sae", e)
    d = int(shards.dim)
    sae_cfg = SaeConfig.release_default(d, expansion=args.expansion)
    try:
        sae_cfg = SaeConfig(input_dim=d, nb_concepts=sae_cfg.nb_concepts,
                            top_k=sae_cfg.top_k if args.top_k is None else args.top_k,
                            activation=args.activation)
    except ValueError as e:
        return _error("train-sae", e)
    if args.export_release and sae_cfg.activation != "topk":
        return _error("train-sae", ValueError(
            "--export-release writes the release's TopK .pth, which has no place for a "
            "BatchTopK threshold; drop --export-release or use --activation topk"))
    optional = {name: getattr(args, name) for name in ("aux_k", "aux_coef", "dead_after")
                if getattr(args, name) is not None}
    try:
        train_cfg = SaeTrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                   lr=args.lr, clip_norm=args.clip_norm, seed=args.seed,
                                   checkpoint_every=args.checkpoint_every,
                                   tied_init=args.tied_init, **optional)
    except ValueError as e:
        return _error("train-sae", e)
    try:  # the report's inputs are checked before training
        held_out = FeatureShards(args.eval_features) if args.eval_features else shards
        head = _splice_head(args.classifier, d)
    except (FeatureShardsError, CheckpointError, ValueError) as e:
        return _error("train-sae", e)
    if held_out.dim != d:
        return _error("train-sae", ValueError(
            f"--eval-features {args.eval_features} has {held_out.dim}-d rows, the training "
            f"features {d}-d"))
    print(f"SAE {d} -> {sae_cfg.nb_concepts} (top {sae_cfg.top_k}) on {len(shards)} rows")
    try:
        result = train_sae(shards, args.out, sae_config=sae_cfg, train_config=train_cfg,
                           progress=not args.no_progress)
    except (CheckpointError, ValueError) as e:
        return _error("train-sae", e)
    print(f"wrote {args.out}/sae")
    from texter_jax.train.sae_report import format_report, write_sae_report

    what = (f"{len(held_out)} held-out rows" if args.eval_features
            else f"the {len(held_out)} training rows")
    metrics = write_sae_report(args.out, result.params, held_out, sae_cfg.top_k, head=head,
                               labels=held_out.labels, what=what)
    print(f"on {what}: {format_report(metrics)}")
    print(f"wrote {args.out}/sae_report.json, {args.out}/firing_frequency.png")
    if args.export_release:
        from texter_jax.converters.release import export_release_sae

        print(f"wrote {export_release_sae(args.export_release, result.config, result.params)}")
    return 0


def _splice_head(folder: str | None, d: int):
    """The classifier's head (features [B, d] -> logits) from a model folder, or None."""
    if folder is None:
        return None
    from texter_jax.io.checkpoints import load_model

    model, variables = load_model(folder)
    if not hasattr(model, "head") or getattr(model, "feature_dim", d) != d:
        raise ValueError(f"--classifier {folder}: not a classifier with {d} features "
                         f"(the features' size)")
    return lambda z: model.head(variables, z)
