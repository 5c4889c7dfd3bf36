"""The world CLIP and classifiers: interface, registry round trip, tiny training runs."""

import jax
import numpy as np
import pytest

from texter_jax.io.checkpoints import load_model, save_model
from texter_jax.models.registry import FAMILIES, build_model, config_to_dict, family_module
from texter_jax.world.clip_model import WorldClipConfig, make_world_clip

TINY_ARCH = (("stem_widths", (8, 16)), ("widths", (16, 32)), ("strides", (2, 1)),
             ("image_hidden", 32), ("text_hidden", 32), ("word_dim", 16), ("embed_dim", 16))


def test_world_clip_interface_and_registry_roundtrip(tmp_path):
    # a family of the world's, registered by it (the core's table does not name it)
    assert "world_clip" not in FAMILIES
    assert family_module("world_clip") == "texter_jax.world.clip_model"
    model = make_world_clip(WorldClipConfig(image_size=32, **dict(TINY_ARCH)))
    variables = model.module.init(jax.random.key(0), *model.dummy_inputs())
    images = np.random.default_rng(0).random((3, 32, 32, 3), np.float32)
    tokens = model.tokenize(["a red star", "grass background"])
    assert tokens.shape == (2, model.context_length) and tokens.dtype == np.int32
    img = model.encode_image(variables, images)
    txt = model.encode_text(variables, tokens)
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    assert float(model.logit_scale(variables)) == pytest.approx(1 / 0.07, rel=1e-5)
    with pytest.raises(ValueError):
        model.encode_image(variables, np.zeros((1, 64, 64, 3), np.float32))

    out = save_model(tmp_path / "m", model.family, config_to_dict(model.config), variables)
    loaded, lv = load_model(out)
    assert loaded.config == model.config
    np.testing.assert_allclose(np.asarray(loaded.encode_text(lv, tokens)), np.asarray(txt),
                               atol=1e-6)
    assert build_model("world_clip", config_to_dict(model.config)).vocab_size == model.vocab_size
    # the checkpoint names its builder: a process that never imported the world loads it
    import json
    import subprocess
    import sys

    assert json.loads((out / "texter_config.json").read_text())["module"] == \
        "texter_jax.world.clip_model"
    code = ("import sys; from texter_jax.io.checkpoints import load_model; "
            f"m, _ = load_model({str(out)!r}); assert 'texter_jax.world.demo' not in sys.modules; "
            "print(m.family)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "world_clip", proc.stderr[-2000:]


def test_world_clip_loss_decreases_and_cache(tmp_path):
    from texter_jax.world import clip_train as wc

    cfg = wc.ClipTrainConfig(image_size=32, steps=3, batch=12, eval_images=12,
                             focus_steps=1, model=TINY_ARCH)
    model = make_world_clip(WorldClipConfig(image_size=32, **dict(TINY_ARCH)))
    params = model.module.init(jax.random.key(0), *model.dummy_inputs())["params"]
    opt = wc.make_optimizer(wc.ClipTrainConfig(steps=100, lr=3e-3))
    state = opt.init(params)
    step = wc.make_train_step(model, opt)
    batch = wc.make_batch(np.random.default_rng(0), cfg, model)
    assert batch[1].shape == (12, model.context_length) and batch[2].shape == (12, 12)
    assert np.all(np.diag(batch[2]) == 1)
    focus = wc.make_batch(np.random.default_rng(1), cfg, model, focus=True)
    shape_only = np.zeros((12, 6))
    shape_only[:, 0] = 1  # prompt loss on shape only, every image (whole views)
    np.testing.assert_allclose(focus[5], shape_only)
    # Zoomed views: prompt-loss weights and caption targets only where the view shows it
    vis = batch[5] > 0
    assert vis.sum(1).min() >= 1 and not vis.all()
    losses = []
    for _ in range(25):  # one fixed batch: the loss must fall
        params, state, loss = step(params, state, *batch)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses

    m1, v1, met1 = wc.get_or_train_world_clip(tmp_path, cfg, log=None)
    assert set(met1["zero_shot"]) == set(met1["zero_shot_views"]) == {
        "shape", "colour", "pattern", "background", "size", "badge"}
    m2, v2, met2 = wc.get_or_train_world_clip(tmp_path, cfg, log=None)  # from the cache
    assert met2 == met1
    np.testing.assert_array_equal(v1["params"]["logit_scale"], v2["params"]["logit_scale"])


def test_classifier_loss_decreases_and_cache(tmp_path):
    import optax

    from texter_jax.models.resnet import make_classifier
    from texter_jax.world import classifier_step as step_mod
    from texter_jax.world import classifiers as wcl
    from texter_jax.world import render, sample_attributes

    cfg = wcl.ClassifierTrainConfig(image_size=32, widths=(8, 16), depths=(1, 1),
                                    stem_width=8, train_images=32, test_images=16,
                                    intervention_images=8, epochs=1, batch=16)
    clf = make_classifier(wcl.resnet_config(cfg, 6))
    variables = step_mod.init_variables(clf, jax.random.key(0))
    bn = variables["batch_stats"]
    assert all(float(np.abs(x).max()) in (0.0, 1.0) for x in jax.tree.leaves(bn))
    opt = optax.adam(3e-3)
    params = {"clf": variables["params"], "aux": step_mod.init_aux_heads(16, jax.random.key(1))}
    state = opt.init(params)
    step = step_mod.make_train_step(clf, opt, aux_weight=0.5)
    attrs = sample_attributes(0, 16)
    x = render(attrs, 0, image_size=32).astype(np.float32) / 255
    aux_labels = np.stack([getattr(attrs, a) for a in wcl.DISCRETE], axis=1)
    aux_weights = np.ones(aux_labels.shape, np.float32)
    losses = []
    for _ in range(20):  # one fixed batch: the loss (task + auxiliary heads) must fall
        params, state, loss = step(params, state, bn, x, attrs.colour, aux_labels, aux_weights)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    z = clf.features({"params": params["clf"], "batch_stats": bn}, x[:2])
    assert z.shape == (2, 16)

    tasks = {"colour": wcl.TASKS["colour"]}
    res = wcl.get_or_train_classifiers(tmp_path, cfg, tasks, log=None)
    _, _, m = res["colour"]
    assert m["steps"] == 2 and len(m["interventions"]["rows"]) == 8
    assert m["critical"] == m["interventions"]["rows"][0]["attribute"]
    res2 = wcl.get_or_train_classifiers(tmp_path, cfg, tasks, log=None)  # from the cache
    assert res2["colour"][2] == m
    np.testing.assert_array_equal(res2["colour"][1]["params"]["fc"]["kernel"],
                                  res["colour"][1]["params"]["fc"]["kernel"])
