"""texter_jax.session: one object, built from files or memory, that explain / eval / demo
share; its checks name the part that does not fit."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.helpers import aligner_folder, sae_folder, tiny_classifier_folder, tiny_clip_folder
from texter_jax import session as session_lib
from texter_jax.emphasis import MacoConfig
from texter_jax.explain import ExplainConfig, explain_batch, image_keys


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("session")
    clf = tiny_classifier_folder(root / "clf")  # 16 features, 5 classes
    clip = tiny_clip_folder(root / "clip", root)  # embeds in 12
    return {"root": root, "classifier": clf, "clip": clip,
            "aligner": aligner_folder(root / "aligner", 16, 12),
            "sae": sae_folder(root / "sae", 16),
            "bad_aligner": aligner_folder(root / "aligner_bad", 8, 12),
            "bad_sae": sae_folder(root / "sae_bad", 8)}


def test_session_explains_as_explain_batch_does(parts, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"thing {i}" for i in range(5)))
    s = session_lib.load(parts["classifier"], parts["clip"], parts["aligner"], parts["sae"],
                         class_names=names, text_cache=tmp_path / "cache")
    assert s.class_names == tuple(f"thing {i}" for i in range(5))
    x = np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    cfg = ExplainConfig(k_neu=2, ig_steps=4, map_crops=2,
                        maco=MacoConfig(canvas=32, steps=2, n_crops=2, crop_size=32))
    keys = image_keys(0, range(3))
    got = s.explain(x, keys, cfg)
    want = explain_batch(s.classifier, s.variables, s.aligner, None, x, keys, cfg, sae=s.sae)
    np.testing.assert_array_equal(got.crop_embeddings, want.crop_embeddings)
    np.testing.assert_array_equal(got.unit_ids, want.unit_ids)
    # the README's lines: rank the bank of the first image's prediction
    import texter_jax as tj

    texts = s.bank_for(s.class_names[got.label[0]])
    ranked = tj.rank_concepts(
        tj.retrieve(got.crop_embeddings[:1], s.text_embeddings(texts))[0], texts)
    assert len(texts) > 10 and sorted(t for t, _ in ranked) == sorted(texts)
    scores = [v for _, v in ranked]
    assert scores == sorted(scores, reverse=True)
    label, prob, emb = s.text_to_concept(x)
    np.testing.assert_array_equal(label, want.label)
    np.testing.assert_allclose(prob, want.prob, rtol=1e-6)
    assert emb.shape == (3, 1, 12)


def test_text_embeddings_encode_each_text_once(parts, tmp_path):
    s = session_lib.load(parts["classifier"], parts["clip"], parts["aligner"],
                         text_cache=tmp_path / "cache")
    calls = []
    encode = s.encode_texts

    def counting(texts):
        calls.append(list(texts))
        return encode(texts)

    s2 = session_lib.Session(s.classifier, s.variables, s.clip, s.clip_variables, s.aligner,
                             encode_texts=counting, text_cache=s.text_cache)
    a = s2.text_embeddings(["a red disc", "a blue square", "a red disc"])
    b = s2.text_embeddings(["a blue square", "stripes"])
    assert a.shape == (3, 12) and b.shape == (2, 12)
    np.testing.assert_array_equal(a[1], b[0])
    np.testing.assert_array_equal(a[0], a[2])
    assert calls == [["a red disc", "a blue square"], ["stripes"]]
    # a fresh session reads them back from the disk cache: no encoding at all
    fresh = session_lib.Session(s.classifier, s.variables, s.clip, s.clip_variables,
                                s.aligner, encode_texts=counting, text_cache=s.text_cache)
    np.testing.assert_allclose(fresh.text_embeddings(["stripes"]), b[1:], rtol=1e-6)
    assert len(calls) == 2
    assert fresh.text_embeddings([]).shape == (0, 12)


@pytest.mark.parametrize("case, needle", [
    ("aligner", "expected W [12, 16]"),
    ("sae", "takes 8-d inputs, but the classifier has 16 features"),
    ("names", "3 class names for a classifier with 5 classes"),
    ("swapped", "not a classifier"),
])
def test_parts_that_do_not_fit_are_named(parts, tmp_path, case, needle):
    kw = dict(classifier=parts["classifier"], clip=parts["clip"], aligner=parts["aligner"])
    if case == "aligner":
        kw["aligner"] = parts["bad_aligner"]
    elif case == "sae":
        kw["sae"] = parts["bad_sae"]
    elif case == "names":
        (tmp_path / "n.txt").write_text("a\nb\nc\n")
        kw["class_names"] = tmp_path / "n.txt"
    else:
        kw["classifier"], kw["clip"] = parts["clip"], parts["classifier"]
    with pytest.raises(session_lib.SessionError, match=re.escape(needle)) as e:
        session_lib.load(**kw)
    if case in ("aligner", "sae"):
        assert str(kw[case]) in str(e.value)  # the file at fault is named


def test_a_session_from_memory_needs_a_tokenizer_only_to_encode_texts(parts):
    s = session_lib.load(parts["classifier"], parts["clip"], parts["aligner"])
    bare = session_lib.Session(s.classifier, s.variables, s.clip, s.clip_variables, s.aligner)
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    assert bare.text_to_concept(x)[2].shape == (2, 1, 12)  # the image side needs none
    with pytest.raises(session_lib.SessionError, match="cannot encode texts"):
        bare.text_embeddings(["a red disc"])
    named = session_lib.Session(s.classifier, s.variables, s.clip, s.clip_variables,
                                s.aligner, names={"clip": str(parts["clip"])})
    np.testing.assert_allclose(named.text_embeddings(["a red disc"]),
                               s.text_embeddings(["a red disc"]), rtol=1e-6)


def test_session_explains_in_batches(parts):
    s = session_lib.load(parts["classifier"], parts["clip"], parts["aligner"], parts["sae"])
    x = np.random.default_rng(2).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    cfg = ExplainConfig(k_neu=2, ig_steps=4, map_crops=2,
                        maco=MacoConfig(canvas=32, steps=2, n_crops=2, crop_size=32))
    keys = image_keys(0, range(3))
    whole = s.explain(x, keys, cfg)
    split = s.explain(x, keys, cfg, batch_size=2)
    np.testing.assert_array_equal(split.unit_ids[:, :2], whole.unit_ids[:, :2])
    np.testing.assert_allclose(split.crop_embeddings, whole.crop_embeddings, atol=1e-4)
    # "auto": the largest batch whose compiled programs fit the devices (here all 3)
    assert s.batch_for(cfg, images=3).batch == 3
    auto = s.explain(x, keys, cfg, batch_size="auto")
    np.testing.assert_allclose(auto.crop_embeddings, whole.crop_embeddings, atol=1e-4)
    with pytest.raises(session_lib.SessionError, match="batch_size"):
        s.explain(x, keys, cfg, batch_size=0)


def test_a_session_is_immutable_and_its_memo_a_separate_cache(parts):
    """Assigning a field raises; the memo (the only state) still encodes each text once,
    and a session made from another by ``dataclasses.replace`` is checked anew and starts
    its own memo (it may hold another CLIP)."""
    import dataclasses
    import inspect

    s = session_lib.load(parts["classifier"], parts["clip"], parts["aligner"])
    calls = []

    def fake(texts):
        calls.append(list(texts))
        return np.stack([np.full(12, len(t), np.float32) for t in texts])

    s2 = session_lib.Session(s.classifier, s.variables, s.clip, s.clip_variables, s.aligner,
                             None, None, fake, names={"aligner": "mine"})
    for field, value in (("aligner", None), ("class_names", ()), ("encode_texts", None),
                         ("memo", None)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(s2, field, value)
    with pytest.raises(TypeError):
        s2.names["aligner"] = "yours"  # read-only too
    assert s2.class_names == tuple(f"class_{i}" for i in range(5))
    np.testing.assert_array_equal(s2.text_embeddings(["ab", "c", "ab"])[:, 0], [2, 1, 2])
    s2.text_embeddings(["c", "def"])
    assert calls == [["ab", "c"], ["def"]] and len(s2.memo) == 3
    s3 = dataclasses.replace(s2, class_names=[f"n{i}" for i in range(5)])
    assert s3.class_names == tuple(f"n{i}" for i in range(5)) and len(s3.memo) == 0
    with pytest.raises(session_lib.SessionError, match="3 class names"):
        dataclasses.replace(s2, class_names=["a", "b", "c"])
    assert "object.__setattr__" not in inspect.getsource(session_lib)


def test_explain_passes_every_hook_of_explain_batch_by_name(parts, monkeypatch):
    """Session.explain spells out explain_batch's keyword arguments (no **hooks) and
    hands each one on under its own name."""
    import inspect

    batch_kw = {n for n, p in inspect.signature(explain_batch).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    session_kw = set(inspect.signature(session_lib.Session.explain).parameters)
    assert batch_kw - {"sae"} <= session_kw
    assert not any(p.kind is p.VAR_KEYWORD for p in
                   inspect.signature(session_lib.Session.explain).parameters.values())
    seen = {}

    def recording(*args, **kw):
        seen.update(kw)
        return "explanation"

    monkeypatch.setattr(session_lib, "explain_batch", recording)
    s = session_lib.load(parts["classifier"], parts["clip"], parts["aligner"], parts["sae"])
    hooks = dict(magnitude=object(), units="random", reader_variables=object(),
                 progress=print)
    cfg = ExplainConfig()
    assert s.explain(np.zeros((2, 32, 32, 3)), np.arange(2), cfg, class_idx=np.arange(2),
                     **hooks) == "explanation"
    assert {k: seen[k] for k in hooks} == hooks and seen["sae"] is s.sae
    np.testing.assert_array_equal(seen["class_idx"], [0, 1])
    assert set(seen) == batch_kw
