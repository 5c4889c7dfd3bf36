"""Sanity-check randomisation, the ImageFolder sample and the JSONL record store."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from texter_jax.contributions import random_units
from texter_jax.eval.data import (
    EvalDataError,
    EvalImage,
    folder_labels,
    image_id,
    read_class_index,
    sample,
)
from texter_jax.eval.records import ArtifactCache, RecordStore
from texter_jax.eval.sanity import head_paths, last_block_prefix, randomized_variables
from texter_jax.models import vit
from texter_jax.models.resnet import ResNetConfig, make_classifier
from texter_jax.models.resnet import random_variables as resnet_variables


def _flat(tree):
    return {"/".join(str(k.key) for k in p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_head_and_top_randomisation_resnet_and_vit():
    cfg = ResNetConfig(block="basic", depths=(1, 2), widths=(8, 16), stem_width=8,
                       num_classes=5, image_size=32)
    clf = make_classifier(cfg)
    v = resnet_variables(clf, 0)
    assert head_paths(clf, v) == {"fc/kernel", "fc/bias"}
    assert last_block_prefix(v["params"], {"fc/kernel", "fc/bias"}) == "stage2/block1"
    new, paths = randomized_variables(jax.random.key(0), clf, v, "top")
    assert set(paths) == {"fc/kernel", "fc/bias"} | {
        p for p in _flat(v["params"]) if p.startswith("stage2/block1/")}
    before, after = _flat(v["params"]), _flat(new["params"])
    for p in before:
        changed = not np.array_equal(before[p], after[p])
        assert changed == (p in paths), p
    # scale-matched: the re-drawn kernel keeps its tensor's spread
    k = "stage2/block1/conv1/kernel"
    assert 0.7 < after[k].std() / before[k].std() < 1.3
    assert _flat(new["batch_stats"]).keys() == _flat(v["batch_stats"]).keys()
    head_only, hp = randomized_variables(jax.random.key(0), clf, v, "head")
    assert hp == ["fc/bias", "fc/kernel"]

    vc = vit.ViTConfig(image_size=16, patch_size=8, hidden_size=8, depth=3, num_heads=2,
                       mlp_dim=16, num_classes=3)
    m = vit.build("vit", dataclasses.asdict(vc))
    vv = vit.random_variables(m)
    _, paths = randomized_variables(jax.random.key(1), m, vv, "top")
    assert {p.split("/")[0] for p in paths} == {"classifier", "blocks_2"}
    _, paths = randomized_variables(jax.random.key(1), m, vv, "top", top_regex=r"^norm/")
    assert {p.split("/")[0] for p in paths} == {"classifier", "norm"}


def test_random_units_come_from_the_active_pool():
    active = np.zeros((2, 40), bool)
    active[0, [3, 9, 17, 30]] = True
    active[1] = True
    ids, valid = random_units(jax.random.key(0), jax.numpy.asarray(active), 6)
    ids, valid = np.asarray(ids), np.asarray(valid)
    assert valid[0].tolist() == [True] * 4 + [False] * 2
    assert set(ids[0, :4]) == {3, 9, 17, 30}
    assert valid[1].all() and len(set(ids[1])) == 6


def _images(n_per=(3, 5, 2)):
    out = []
    for c, n in enumerate(n_per):
        for i in range(n):
            rel = f"f{c}/{i}.png"
            out.append(EvalImage(None, rel, f"f{c}", c, image_id(rel)))
    return out


def test_sampling_is_seeded_per_class_and_grows_as_superset():
    ims = _images()
    a = sample(ims, per_class=2, total=None, seed=0)
    assert [im.folder for im in a].count("f1") == 2 and len(a) == 6
    assert [im.rel for im in a] == [im.rel for im in sample(ims, per_class=2, total=None,
                                                            seed=0)]
    small = {im.rel for im in sample(ims, per_class=None, total=4, seed=1)}
    big = {im.rel for im in sample(ims, per_class=None, total=7, seed=1)}
    assert len(small) == 4 and small < big  # a larger --total keeps the earlier images


def test_folder_labels_rules(tmp_path):
    names, ids = read_class_index(None, 3)
    assert folder_labels(["b", "a", "c"], names, ids, 3)[0] == {"a": 0, "b": 1, "c": 2}
    f = tmp_path / "idx.json"
    f.write_text(json.dumps({"0": ["n02", "tench"], "1": ["n01", "goldfish"]}))
    names, ids = read_class_index(f, 2)
    assert names == ["tench", "goldfish"]
    labels, rule = folder_labels(["n01"], names, ids, 2)
    assert labels == {"n01": 1} and rule == "class ids"
    assert folder_labels(["goldfish"], names, ids, 2)[0] == {"goldfish": 1}
    with pytest.raises(EvalDataError, match="cannot map"):
        folder_labels(["x"], names, ids, 2)


def test_record_store_tolerates_a_truncated_last_line(tmp_path):
    p = tmp_path / "records.jsonl"
    s = RecordStore(p)
    s.append({"image": "a", "method": "m"})
    s.append({"image": "b", "method": "m"})
    with open(p, "a") as f:
        f.write('{"image": "c", "meth')  # a crash mid-write
    s2 = RecordStore(p)
    assert s2.dropped_tail and s2.done() == {("a", "m"), ("b", "m")}
    s2.append({"image": "c", "method": "m"})
    assert [json.loads(x)["image"] for x in p.read_text().splitlines()] == ["a", "b", "c"]
    p.write_text('{"image": "a", "method": "m"}\nnot json\n{"image": "b", "method": "m"}\n')
    with pytest.raises(ValueError, match="line 2"):
        RecordStore(p)


def test_artifact_cache_round_trip(tmp_path):
    c = ArtifactCache(tmp_path)
    k = c.key("cfg", "main", "digest", 7)
    assert c.load(k) is None
    c.store(k, {"crop_embeddings": np.ones((2, 3), np.float32), "label": np.int64(4)})
    got = c.load(k)
    assert got["crop_embeddings"].shape == (2, 3) and int(got["label"]) == 4
    assert (c.hits, c.misses) == (1, 1)


def test_eval_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, texter_jax.cli.eval_cli, texter_jax.eval.runner, "
            "texter_jax.eval.metrics, texter_jax.eval.producers, texter_jax.eval.sanity, "
            "texter_jax.eval.summary, texter_jax.eval.plots, texter_jax.eval.data, "
            "texter_jax.eval.records, texter_jax.world.eval_set; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('torch','transformers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
