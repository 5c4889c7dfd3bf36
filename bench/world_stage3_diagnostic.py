"""Why TEXTER misses in the procedural world: where stage 3 loses the truth.

For two demo classifiers, explains 16 held-out images (no SAE, 64 MACO steps) and scores
hit@k three ways: the concept image through classifier -> aligner (TEXTER's stage 3),
the concept image seen directly by the world's CLIP (an oracle for the aligner), and the
input image through the aligner (Text-to-Concept). Also prints the feature norms of
natural images vs concept-image crops. Needs a finished demo cache::

    .venv/bin/python bench/world_stage3_diagnostic.py texter_demo
"""
import sys
import json
import numpy as np, jax, jax.numpy as jnp
from texter_jax.io.checkpoints import load_model
from texter_jax.world.attributes import sample_attributes
from texter_jax.world.generator import render
from texter_jax.world.captions import concept_bank
from texter_jax.world.interventions import truth_values
from texter_jax.world.scoring import hit_table
from texter_jax.explain import ExplainConfig, explain_batch, image_keys, Aligner, Sae
from texter_jax.emphasis import MacoConfig
from texter_jax import mapping
from train.aligner import load_aligner
from train.sae_train import load_sae
import pathlib
cache = pathlib.Path(sys.argv[1]) / "cache"
clip, cv = load_model(cache / "world_clip"); cv = jax.tree.map(jnp.asarray, cv)
phrases, meaning = concept_bank()
temb = np.asarray(clip.encode_text(cv, clip.tokenize(phrases)))
n = 16
attrs = sample_attributes(9_000_011, n); imgs = render(attrs, 9_000_011, image_size=64).astype(np.float32) / 255
for name in ["colour", "shape_shortcut"]:
    clf, v = load_model(cache / "classifiers" / name); v = jax.tree.map(jnp.asarray, v)
    crit = json.loads((cache / "classifiers" / name / "metrics.json").read_text())["critical"]
    stack = next((cache / "stack" / name).iterdir())
    al = load_aligner(stack / "aligner"); sc, sp = load_sae(stack / "sae_run" / "sae")
    aligner = Aligner(al.W, al.b)
    cfg = ExplainConfig(use_sae=False, maco=MacoConfig(canvas=256, steps=64, crop_size=64), ig_steps=50)
    out = explain_batch(clf, v, aligner, temb, imgs, image_keys(0, range(n)), cfg)
    truths = truth_values(crit, attrs)
    def hits(scores):
        order = np.argsort(-scores, 1)
        return {k: round(v["rate"], 2) for k, v in hit_table([[phrases[j] for j in r] for r in order], truths, meaning).items()}
    print(name, crit, "texter-nosae via aligner:", hits(out.concept_scores))
    # oracle: world CLIP looks at the blended concept image directly
    keys = jax.random.split(jax.random.key(1), n)
    crops = jnp.stack([mapping.random_crops(k, mapping.postprocess_concept_image(i, t), 6, 64)
                       for k, i, t in zip(keys, out.concept_image, out.transparency)])
    e = clip.encode_image(cv, crops.reshape(-1, 64, 64, 3)).reshape(n, 6, -1)
    print(name, "  CLIP on concept-image crops:", hits(np.asarray(mapping.retrieve(e, jnp.asarray(temb)))))
    # aligner on the input image (T2C) and CLIP on the input image
    z = clf.features(v, jnp.asarray(imgs)); h = mapping.align(aligner.w, aligner.b, z)
    print(name, "  aligner on input (T2C):", hits(np.asarray(mapping.retrieve(h, jnp.asarray(temb)))))
    # feature norms: concept crops vs natural images
    zc = clf.features(v, crops.reshape(-1, 64, 64, 3))
    print(name, "  feature norm natural %.2f vs concept crops %.2f" % (float(jnp.linalg.norm(z, axis=1).mean()), float(jnp.linalg.norm(zc, axis=1).mean())))
