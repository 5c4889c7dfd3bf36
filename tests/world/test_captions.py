"""Captions, vocabulary, tokenizer and the concept bank stay consistent."""

import numpy as np

from texter_jax.world import (
    ATTR_ORDER,
    DISCRETE,
    WorldTokenizer,
    concept_bank,
    sample_attributes,
    value_phrases,
    world_vocab,
)
from texter_jax.world.captions import captions


def test_every_caption_and_phrase_word_is_in_vocab():
    tok = WorldTokenizer(world_vocab(), context_length=24)
    texts, _ = captions(0, sample_attributes(0, 3000), p_drop=0.3, p_phrase=0.2)
    phrases, _ = concept_bank()
    ids = tok(texts + phrases)
    assert not np.any(ids == 1), "unknown word"
    # Nothing is truncated: every row keeps at least one padding slot.
    assert np.all(ids[:, -1] == 0)


def test_mentioned_mask_matches_caption_words():
    attrs = sample_attributes(1, 2000)
    texts, mentioned = captions(2, attrs, p_drop=0.4, p_phrase=0.2)
    for j, a in enumerate(ATTR_ORDER):
        values = attrs.values(a)
        for i, t in enumerate(texts):
            words = set(t.replace(",", " ").split())
            assert (values[i] in words) == mentioned[i, j], (t, a)
            others = set(DISCRETE[a]) - {values[i]}
            assert not (others & words), (t, a)  # never names a wrong value


def test_keep_and_phrase_weights():
    attrs = sample_attributes(3, 200)
    keep = np.zeros((200, len(ATTR_ORDER)), bool)
    keep[:, ATTR_ORDER.index("colour")] = True
    texts, m = captions(0, attrs, keep=keep)
    np.testing.assert_array_equal(m, keep)
    assert all(c in t for t, c in zip(texts, attrs.values("colour"), strict=True))
    w = np.zeros(len(ATTR_ORDER))
    w[ATTR_ORDER.index("shape")] = 1.0
    texts, m = captions(1, attrs, p_phrase=1.0, phrase_weights=w)
    assert m[:, ATTR_ORDER.index("shape")].all() and m.sum() == 200
    _, meaning = concept_bank()
    shapes = attrs.values("shape")
    assert all(meaning[t] == ("shape", s) for t, s in zip(texts, shapes, strict=True))


def test_concept_bank_mapping():
    phrases, meaning = concept_bank()
    assert len(phrases) == len(set(phrases)) == len(meaning)
    assert meaning["grass background"] == ("background", "grass")
    assert meaning["star shape"] == ("shape", "star")
    assert meaning["red"] == ("colour", "red")
    for p, (a, v) in meaning.items():
        assert v in p and v in DISCRETE[a]
    for a in ATTR_ORDER:
        assert [len(x) > 0 for x in value_phrases(a)] == [True] * len(DISCRETE[a])


def test_tokenizer_pads_truncates_and_decodes():
    tok = WorldTokenizer(world_vocab(), context_length=4)
    ids = tok(["a red star", "a small striped red star on grass", ""])
    assert ids.shape == (3, 4) and ids.dtype == np.int32
    assert tok.decode(ids[0]) == "a red star"
    assert tok.decode(ids[1]) == "a small striped red"
    assert np.all(ids[2] == 0)
    assert tok(["zebra"])[0, 0] == 1  # unknown
