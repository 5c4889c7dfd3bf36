"""Captions, the world vocabulary, a word-level tokenizer and the world's concept bank.

Captions describe the discrete attributes with varied templates ("a small striped red
star on a grass background", "star shape, red, striped pattern, grass background", ...).
During training attribute words are dropped at random; :func:`captions` returns which
attributes each caption still names, so a contrastive loss can treat every image that
agrees with a caption as a positive (see ``world/clip_train.py``).

The concept bank is a list of short phrases derived from attribute values ("red",
"red object", "star shape", "grass background", ...) with the mapping
phrase -> (attribute, value) that scoring uses to decide hits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from texter_jax.world.attributes import DISCRETE, WorldAttrs, as_numpy_rng

ATTR_ORDER = tuple(DISCRETE)  # column order of the `mentioned` masks

# Bank phrases per attribute; "{}" is the value word. The bank phrases also appear as
# whole training captions (probability `p_phrase`), so retrieval queries are in-domain.
BANK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "shape": ("{}", "{} shape", "a {}"),
    "colour": ("{}", "{} object", "{} colour"),
    "pattern": ("{} pattern", "{} surface"),
    "background": ("{} background", "on a {} background"),
    "size": ("{} object", "{} size"),
    "badge": ("{} badge", "a {} badge"),
}
_NOUNS = ("object", "shape", "thing")  # stand-ins when the shape word is dropped
# Every non-value word the templates above and in `_caption` use (vocab order).
_TEMPLATE_WORDS = ("a", "an", "of", "on", "in", "with", "photo", "image", "background",
                   "pattern", "shape", "object", "thing", "colour", "size", "surface",
                   "badge", "and")

PAD, UNK = "<pad>", "<unk>"


def concept_bank() -> tuple[list[str], dict[str, tuple[str, str]]]:
    """The world's concept phrases and what each names.

    Returns:
      ``(phrases, meaning)``: phrases in a fixed order, and
      ``meaning[phrase] = (attribute, value)``, e.g. ``"grass background" ->
      ("background", "grass")``.
    """
    phrases, meaning = [], {}
    for attr, templates in BANK_TEMPLATES.items():
        for value in DISCRETE[attr]:
            for t in templates:
                p = t.format(value)
                if p in meaning:
                    raise ValueError(f"concept phrase {p!r} is ambiguous")
                phrases.append(p)
                meaning[p] = (attr, value)
    return phrases, meaning


def value_phrases(attribute: str) -> list[list[str]]:
    """Bank phrases of each value of ``attribute`` (zero-shot prompt ensembles)."""
    return [[t.format(v) for t in BANK_TEMPLATES[attribute]] for v in DISCRETE[attribute]]


def _caption(rng: np.random.Generator, words: dict[str, str], keep: dict[str, bool]) -> str:
    """One caption of one image from its value words and which of them to name."""
    if not any(keep[a] for a in ("shape", "colour", "pattern", "size")):
        # Nothing of the object is named: the view shows (or names) only the rest.
        parts = [f"{words['background']} background" if keep["background"] else None,
                 f"a {words['badge']} badge" if keep["badge"] else None]
        parts = [p for p in parts if p]
        if not parts:
            return "an image"
        return (" with ", ", ")[int(rng.integers(2))].join(parts)
    noun = words["shape"] if keep["shape"] else _NOUNS[rng.integers(len(_NOUNS))]
    size = words["size"] + " " if keep["size"] else ""
    colour = words["colour"] + " " if keep["colour"] else ""
    pattern = words["pattern"] + " " if keep["pattern"] else ""
    on_bg = f" on a {words['background']} background" if keep["background"] else ""
    badge = f" with a {words['badge']} badge" if keep["badge"] else ""
    t = rng.integers(5)
    if t == 0:
        return f"a {size}{pattern}{colour}{noun}{on_bg}{badge}"
    if t == 1:
        with_pat = f" with a {words['pattern']} pattern" if keep["pattern"] else ""
        return f"a photo of a {size}{colour}{noun}{with_pat}{on_bg}{badge}"
    if t == 2:
        lead = f"{words['background']} background with " if keep["background"] else ""
        and_badge = f" and a {words['badge']} badge" if keep["badge"] else ""
        return f"{lead}a {size}{colour}{pattern}{noun}{and_badge}"
    if t == 3:  # a list of attributes, in random order
        parts = [f"{noun} shape" if keep["shape"] else None,
                 words["colour"] if keep["colour"] else None,
                 f"{words['pattern']} pattern" if keep["pattern"] else None,
                 f"{words['size']} size" if keep["size"] else None,
                 f"{words['background']} background" if keep["background"] else None,
                 f"{words['badge']} badge" if keep["badge"] else None]
        parts = [p for p in parts if p]
        rng.shuffle(parts)
        return ", ".join(parts) if parts else f"a {noun}"
    in_colour = f" in {words['colour']}" if keep["colour"] else ""
    return f"an image of a {size}{pattern}{noun}{in_colour}{on_bg}{badge}"


def captions(seed_or_key, attrs: WorldAttrs, *, p_drop: float = 0.0, p_phrase: float = 0.0,
             phrase_weights: Sequence[float] | None = None,
             keep: np.ndarray | None = None,
             visible: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """Captions of N images and which attributes each names.

    Args:
      seed_or_key: int seed, JAX key or numpy Generator.
      attrs: N records.
      p_drop: probability that each attribute word is left out (training augmentation).
      p_phrase: probability that a caption is a single concept-bank phrase about one
        attribute instead of a sentence.
      phrase_weights: relative odds of each attribute (:data:`ATTR_ORDER`) being the one
        a phrase caption names (default uniform).
      keep: optional bool [N, A] (columns :data:`ATTR_ORDER`): exactly the attributes
        each sentence names (overrides ``p_drop``).
      visible: optional bool [N, A], what each image's view shows
        (:func:`texter_jax.world.views.visible_attributes`): a caption never names an
        attribute its view does not show. None: everything is visible (whole images).

    Returns:
      ``(texts, mentioned)``: N strings and bool [N, A], True where the caption names the
      attribute's value (so any image with the same values there matches it).
    """
    rng = as_numpy_rng(seed_or_key)
    n = len(attrs)
    values = {a: attrs.values(a) for a in ATTR_ORDER}
    drawn = rng.random((n, len(ATTR_ORDER))) >= p_drop
    keep = drawn if keep is None else np.asarray(keep, bool)
    vis = np.ones((n, len(ATTR_ORDER)), bool) if visible is None else np.asarray(visible, bool)
    keep = keep & vis
    phrase = rng.random(n) < p_phrase
    pw = np.ones(len(ATTR_ORDER)) if phrase_weights is None else np.asarray(phrase_weights, float)
    texts, mentioned = [], np.zeros((n, len(ATTR_ORDER)), bool)
    for i in range(n):
        words = {a: values[a][i] for a in ATTR_ORDER}
        w = pw * vis[i]
        if phrase[i] and w.sum() > 0:
            j = int(rng.choice(len(ATTR_ORDER), p=w / w.sum()))  # the one attribute it names
            attr = ATTR_ORDER[j]
            tmpl = BANK_TEMPLATES[attr]
            texts.append(tmpl[rng.integers(len(tmpl))].format(words[attr]))
            mentioned[i, j] = True
        else:
            k = dict(zip(ATTR_ORDER, keep[i], strict=True))
            texts.append(_caption(rng, words, k))
            mentioned[i] = keep[i]
    return texts, mentioned


def full_captions(attrs: WorldAttrs, seed: int = 0) -> list[str]:
    """One caption per image naming every attribute (for figures and data cards)."""
    return captions(seed, attrs)[0]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def world_vocab() -> tuple[str, ...]:
    """Every word the captions and the concept bank can produce, after PAD and UNK.

    Fixed order (ids are stable): ``<pad>``, ``<unk>``, template words, then value
    words attribute by attribute.
    """
    words: list[str] = [PAD, UNK]
    for w in _TEMPLATE_WORDS + _NOUNS:
        if w not in words:
            words.append(w)
    for attr in ATTR_ORDER:
        for v in DISCRETE[attr]:
            for w in _words(v):
                if w not in words:
                    words.append(w)
    return tuple(words)


class WorldTokenizer:
    """Word-level tokenizer over the world vocabulary: texts -> int32 [N, L].

    Lower-cases, splits on non-letters, maps unknown words to ``<unk>`` (id 1), pads with
    ``<pad>`` (id 0) and truncates to ``context_length``.
    """

    def __init__(self, vocab: Sequence[str], context_length: int = 24):
        self.vocab = tuple(vocab)
        if self.vocab[:2] != (PAD, UNK):
            raise ValueError(f"world vocab must start with {PAD!r}, {UNK!r}")
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = int(context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_token_id(self) -> int:
        return 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> int32 [N, context_length]; rows are word ids then zeros."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        out = np.zeros((len(texts), self.context_length), np.int32)
        for i, t in enumerate(texts):
            ids = [self.index.get(w, 1) for w in _words(t)][: self.context_length]
            out[i, : len(ids)] = ids
        return out

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return " ".join(self.vocab[int(i)] for i in ids if int(i) != 0)

    def __repr__(self) -> str:
        return f"WorldTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"
