"""`texter eval` end to end on a procedural-world set with tiny real model folders:
interrupt and resume, a truncated last line, unreadable images, the cache, the tables and
plots, and sanity checks that hold by construction."""

import csv
import json

import numpy as np
import pytest

from tests.eval.conftest import N_IMAGES
from texter_jax.cli.main import main

TINY = ["--steps", "2", "--canvas", "32", "--crops", "2", "--map-crops", "2",
        "--ig-steps", "4", "--k-neu", "2", "--batch-size", "4", "--n-boot", "100",
        "--top-k", "3", "--preprocess", "resize"]


def _eval(world, out, *extra, cache=None):
    root, data, models = world
    args = ["eval", str(data), "--out", str(out), "--class-names",
            str(data / "class_names.txt"), "--bank", str(data / "bank.txt"), "--no-generic",
            "--truth", str(data / "truth.json"), *TINY, *extra]
    for k, v in models.items():
        args += [f"--{k}", str(v)]
    if cache is not None:
        args += ["--cache", str(cache)]
    return main(args)


def _records(out):
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]


def test_eval_resume_tables_plots_and_sanity(world, capsys):
    root, data, _ = world
    out = root / "run_a"
    assert _eval(world, out, "--limit", "5") == 0
    assert len(_records(out)) == 5
    with open(out / "records.jsonl", "a") as f:
        f.write('{"image": "class_0')  # killed mid-write
    assert _eval(world, out) == 0
    err = capsys.readouterr().err
    assert "truncated" in err and "broken.png" in err
    recs = _records(out)
    methods = ["texter", "texter-nosae", "text2concept", "random"]
    pairs = [(r["image"], r["method"]) for r in recs]
    assert len(pairs) == len(set(pairs)) == N_IMAGES * len(methods)
    run = json.loads((out / "run.json").read_text())
    assert [s["image"] for s in run["skipped"]] == ["class_00/broken.png"]
    assert run["sanity_randomised"]["head"]["modules"] == "fc"

    truth = json.loads((data / "truth.json").read_text())["images"]
    for r in recs:
        m = r["metrics"]
        assert -1 <= m["clip_top1"] <= 1 and 0 <= m["insertion_auc"] <= 1
        assert -1 - 1e-6 <= m["directional_cos_top1"] <= 1 + 1e-6
        assert m["hit@1"] in (0.0, 1.0) and m["hit@1"] <= m["hit@3"]
        assert len(r["curves"]["insertion"]) == 4  # top-k 3 -> 4 points
        # deletion starts at the image itself: p(pred) of the classifier
        assert abs(r["curves"]["deletion"][0] - r["prob"]) < 1e-4
        named = {tuple(p) for p in truth[r["image"]]}
        meaning = json.loads((data / "truth.json").read_text())["meaning"]
        top1_hit = tuple(meaning.get(r["top_concepts"][0][0], ())) in named
        assert m["hit@1"] == float(top1_hit)
        if r["method"] == "text2concept":
            # Text-to-Concept reads global features only: a random head changes nothing
            assert m["sanity_head_rho"] == pytest.approx(1.0, abs=1e-6)
            assert "sanity_units_rho" not in m
        if r["method"].startswith("texter"):
            assert {"sanity_head_rho", "sanity_top_rho", "sanity_units_rho",
                    "sanity_seed_rho"} <= m.keys()
            assert r["units"] and r["maco_retries"] >= 0
    for name in ("summary.md", "summary.csv", "curves.png", "distributions.png"):
        assert (out / name).stat().st_size > 100, name
    md = (out / "summary.md").read_text()
    assert all(f"| {m} " in md or f" {m} |" in md for m in methods)
    assert "## misclassified" in md or "## correct" in md
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["metric"] for r in rows} >= {"clip_top1", "insertion_auc", "deletion_auc",
                                           "hit@1", "sanity_head_rho"}
    for r in rows:
        assert float(r["ci_low"]) - 1e-9 <= float(r["mean"]) <= float(r["ci_high"]) + 1e-9

    # An uninterrupted run on the same concept images writes the same table, without
    # re-running MACO (every artefact comes from the cache).
    out_b = root / "run_b"
    assert _eval(world, out_b, cache=out / "cache") == 0
    assert (out_b / "summary.csv").read_text() == (out / "summary.csv").read_text()
    run_b = json.loads((out_b / "run.json").read_text())
    assert run_b["cache"]["misses"] == 0 and run_b["cache"]["hits"] > 0
    # ... and a fresh computation of the main explanations (other batching than the
    # interrupted run) gives the same records.
    out_c = root / "run_c"
    assert _eval(world, out_c, "--methods", "texter-nosae", "--sanity", "none",
                 "--batch-size", "4") == 0
    a = {r["image"]: r for r in recs if r["method"] == "texter-nosae"}
    for r in _records(out_c):
        assert r["top_concepts"] == a[r["image"]]["top_concepts"]
        np.testing.assert_allclose(r["metrics"]["insertion_auc"],
                                   a[r["image"]]["metrics"]["insertion_auc"], atol=1e-6)


def test_eval_setup_errors(world, tmp_path, capsys):
    root, data, models = world
    args = ["eval", str(data), "--out", str(tmp_path / "o"), "--classifier",
            str(models["classifier"]), "--clip", str(models["clip"]), "--aligner",
            str(models["aligner"])]
    assert main(args) == 2 and "--sae" in capsys.readouterr().err
    assert main(args + ["--methods", "texter,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    # folders that are not the classifier's classes and no names to map them
    assert main(args + ["--methods", "random"]) == 2
    assert "cannot map" in capsys.readouterr().err
    # ... unless the set is declared unlabelled (CLIP score etc. need no labels)
    assert main(args + ["--methods", "random", "--no-labels", "--no-plots", "--top-k", "3",
                        "--n-boot", "50", "--preprocess", "resize"]) == 0
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "## all" in md and "## misclassified" not in md and "clip_top1" in md


def test_sanity_hooks_reproduce_the_runner_cache(world):
    """explain_batch with the sanity hooks at their real values (the real model selecting
    and reading, the predicted class, IG units) reproduces the crop embeddings the runner
    cached for TEXTER; random units, another seed and a randomised model change them."""
    import jax

    from texter_jax.converters.artifacts import load_aligner, load_sae
    from texter_jax.emphasis import MacoConfig, default_spectrum
    from texter_jax.eval.data import file_digest, image_id, load_for_classifier
    from texter_jax.eval.methods import config_dict
    from texter_jax.eval.records import ArtifactCache
    from texter_jax.eval.sanity import randomized_variables
    from texter_jax.explain import ExplainConfig, explain_batch, fold_keys, image_keys
    from texter_jax.io.checkpoints import load_model

    root, data, models = world
    run = json.loads((root / "run_a" / "run.json").read_text())
    spec = next(m for m in run["methods"] if m["label"] == "texter")
    clf, v = load_model(models["classifier"])
    aligner, sae = load_aligner(models["aligner"]), load_sae(models["sae"])
    config = ExplainConfig(k_neu=2, ig_steps=4, ranked_units=16, map_crops=2,
                           maco=MacoConfig(canvas=32, steps=2, n_crops=2, crop_size=32))
    assert json.loads(json.dumps(spec["config"]["maco"])) == json.loads(json.dumps(
        config_dict(config)["maco"]))
    rels = [r["image"] for r in _records(root / "run_a") if r["method"] == "texter"][:4]
    cache = ArtifactCache(root / "run_a" / "cache")
    cached = [cache.load(cache.key(spec["explain_hash"], "main", file_digest(data / rel),
                                   image_id(rel))) for rel in rels]
    want = np.stack([c["crop_embeddings"] for c in cached])
    x = np.stack([load_for_classifier(data / rel, 32, "resize") for rel in rels])
    keys = image_keys(0, [image_id(r) for r in rels])
    cls = np.array([int(c["label"]) for c in cached])

    def run_with(**hooks):
        return explain_batch(clf, hooks.pop("variables", v), aligner, None, x,
                             hooks.pop("keys", keys), config, sae=sae,
                             magnitude=default_spectrum(32), **hooks)

    got = run_with(class_idx=cls, units="ig", reader_variables=v)
    np.testing.assert_allclose(got.crop_embeddings, want, rtol=1e-5, atol=1e-5)
    random = run_with(class_idx=cls, units="random")
    # random units are active codes, all zero-scored, and not IG's choice for every image
    assert np.all(random.unit_scores == 0) and np.all(random.unit_ids[:, 0] >= 0)
    assert not np.array_equal(random.unit_ids, got.unit_ids)
    other_seed = run_with(class_idx=cls, keys=fold_keys(keys, "another_seed"))
    np.testing.assert_array_equal(other_seed.unit_ids, got.unit_ids)  # same units...
    assert np.abs(other_seed.crop_embeddings - want).max() > 1e-3  # ...other images
    vr, _ = randomized_variables(jax.random.key(1), clf, v, "head")
    swapped = run_with(variables=vr, class_idx=cls, reader_variables=v)
    assert not np.allclose(swapped.crop_embeddings, want, atol=1e-4)


def test_presets_side_by_side(world, capsys):
    """--preset release,fast: two labelled methods; below the fast preset's minimum
    number of steps its stopping rule cannot fire, so the records equal the release's."""
    root = world[0]
    out = root / "presets"
    assert _eval(world, out, "--methods", "texter-nosae", "--sanity", "none",
                 "--preset", "release,fast", "--steps", "32", "--total", "4") == 0
    recs = {(r["image"], r["method"]): r for r in _records(out)}
    labels = {m for _, m in recs}
    assert labels == {"texter-nosae[preset=release]", "texter-nosae[preset=fast]"}
    for (image, m), r in recs.items():
        if m.endswith("fast]"):
            twin = recs[image, "texter-nosae[preset=release]"]
            assert r["top_concepts"] == twin["top_concepts"]
    assert _eval(world, root / "bad_preset", "--preset", "fast", "--steps", "2") == 2
    assert "multiple of stop_window" in capsys.readouterr().err
    assert _eval(world, root / "bad_preset", "--preset", "quick") == 2
    assert "unknown preset" in capsys.readouterr().err
