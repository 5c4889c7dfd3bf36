"""A session: every part TEXTER needs to explain images, checked to fit together once.

``texter explain``, ``texter eval`` and ``texter demo`` all build one, from files
(:func:`load`) or from models already in memory (:class:`Session` directly), and explain
through it, so the three cannot drift apart in how the parts are wired.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from texter_jax import aligner as aligner_io
from texter_jax import sae as sae_io
from texter_jax.aligner import Aligner
from texter_jax.classifier_check import ClassifierMismatch, check_classifier
from texter_jax.concepts.banks import ConceptBankError, load_concepts, resolve_bank
from texter_jax.explain import (
    ExplainConfig,
    Explanation,
    explain_batch,
    text_to_concept_embed_batch,
)
from texter_jax.io.checkpoints import load_model
from texter_jax.io.class_names import ClassNamesError, read_class_index
from texter_jax.plan import BatchChoice, ExplainSpec, auto_batch
from texter_jax.sae import Sae, SaeConfig
from texter_jax.text.encoder import text_encoder
from texter_jax.text_cache import TextEmbeddingCache, TextMemo, checkpoint_identity
from texter_jax.types import ClassifierLike, ImageTextModel, Variables


class SessionError(ValueError):
    """The parts of a session do not fit together; the message says which and how."""


@dataclasses.dataclass(frozen=True)
class Banks:
    """Where each prediction's concept texts come from (see
    :func:`texter_jax.concepts.banks.resolve_bank`)."""

    root: str | None = None
    files: tuple[str, ...] = ()
    use_generic: bool | None = None


class _Checked(type):
    """How ``Session(...)`` builds one: :meth:`Session._checked` checks the parts and
    fills in the defaults that depend on other parts (class names from the classifier,
    the text encoder from the CLIP) *before* the frozen dataclass stores anything, so
    nothing is assigned after construction. ``dataclasses.replace`` checks anew."""

    def __call__(cls, *args, **kwargs):
        return super().__call__(**cls._checked(*args, **kwargs))


@dataclasses.dataclass(frozen=True, eq=False)
class Session(metaclass=_Checked):
    """A classifier, a CLIP, the aligner between them, an optional TopK SAE, class names,
    concept banks and the text-embedding cache. Immutable (a frozen dataclass: assigning
    a field raises); the only state that changes is :attr:`memo`, a cache.

    Built as ``Session(classifier, variables, clip, clip_variables, aligner, sae=None,
    class_names=None, encode_texts=None, text_cache=None, banks=Banks(), names={})``
    (checked once, see :class:`_Checked`) or from files by :func:`load`.

    Attributes:
      classifier, variables: the classifier to explain (features D, classes C).
      clip, clip_variables: the image-text model (embedding E).
      aligner: w [E, D], b [E].
      sae: a TopK SAE over the D features, or None.
      class_names: C names in index order (a tuple; given None: ``class_<i>``).
      encode_texts: ``texts -> [N, E]`` (given None: the CLIP's text tower, with its own
        tokenizer or the one in the folder ``names["clip"]``; None if it has neither).
      text_cache: an on-disk cache for ``encode_texts``, or None.
      banks: concept-bank sources.
      names: where each part came from (paths, or descriptions), for messages
        (read-only).
      memo: the in-memory text-embedding memo (mutable: a cache, not an argument).
    """

    classifier: ClassifierLike
    variables: Variables
    clip: ImageTextModel
    clip_variables: Variables
    aligner: Aligner
    sae: Sae | None = None
    class_names: tuple[str, ...] | None = None
    encode_texts: Callable[[list[str]], np.ndarray] | None = None
    text_cache: TextEmbeddingCache | None = None
    banks: Banks = Banks()
    names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    memo: TextMemo = dataclasses.field(default_factory=TextMemo, init=False, repr=False)

    @staticmethod
    def _checked(classifier, variables, clip, clip_variables, aligner, sae=None,
                 class_names=None, encode_texts=None, text_cache=None, banks=Banks(),
                 names=None) -> dict:
        """The fields to store: the parts checked to fit, the defaults resolved."""
        names = types.MappingProxyType(dict(names or {}))
        name = names.get
        if not isinstance(classifier, ClassifierLike):
            raise SessionError(f"{name('classifier', 'the classifier')} is not a classifier "
                               "(it needs features, head, image_size, feature_dim, num_classes)")
        if not isinstance(clip, ImageTextModel):
            raise SessionError(f"{name('clip', 'the CLIP')} is not an image-text model "
                               "(it needs encode_image, encode_text, embed_dim)")
        try:  # traced once on one image: features [1, D] and logits [1, C] as declared
            check_classifier(classifier, variables, caller="Session")
        except ClassifierMismatch as err:
            raise SessionError(f"{name('classifier', 'the classifier')}: {err}") from err
        d, e = classifier.feature_dim, clip.embed_dim
        if tuple(aligner.w.shape) != (e, d):
            raise SessionError(
                f"aligner {name('aligner', '')}: W is {tuple(aligner.w.shape)}, but the "
                f"classifier has {d} features and the CLIP embeds in {e} (expected W [{e}, {d}])")
        if sae is not None:
            d_sae = sae.params["encoder"]["kernel"].shape[0]
            if d_sae != d:
                raise SessionError(f"SAE {name('sae', '')} takes {d_sae}-d inputs, but the "
                                   f"classifier has {d} features")
        if class_names is None:
            class_names = [f"class_{i}" for i in range(classifier.num_classes)]
        if len(class_names) != classifier.num_classes:
            raise SessionError(f"{len(class_names)} class names for a classifier with "
                               f"{classifier.num_classes} classes")
        for f in banks.files:  # read now: a bad file fails before any output
            try:
                concepts = load_concepts(f)
            except (ConceptBankError, UnicodeDecodeError, OSError) as err:
                raise SessionError(f"concept bank {f}: {err}") from err
            if not concepts:
                raise SessionError(f"concept bank {f} holds no concepts (one per line, or "
                                   "a JSON list of strings)")
        clip_dir = names.get("clip")
        if encode_texts is None and (hasattr(clip, "tokenize") or clip_dir):
            encode_texts = text_encoder(clip, clip_variables, clip_dir)
        return dict(classifier=classifier, variables=variables, clip=clip,
                    clip_variables=clip_variables, aligner=aligner, sae=sae,
                    class_names=tuple(class_names), encode_texts=encode_texts,
                    text_cache=text_cache, banks=banks, names=names)

    # -- text side --------------------------------------------------------------------

    def bank_for(self, class_name: str, image_name: str | None = None) -> list[str]:
        """The concept texts for one prediction."""
        b = self.banks
        return resolve_bank(class_name, root=b.root, image_name=image_name, files=b.files,
                            use_generic=b.use_generic)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [T, E] CLIP text embeddings, through the on-disk cache and an
        in-memory memo (each distinct text is encoded once per session)."""
        missing = self.memo.missing(texts)
        if missing and self.encode_texts is None:
            raise SessionError("this session cannot encode texts: its CLIP has no tokenizer "
                               "of its own; pass encode_texts= (or names={'clip': folder "
                               "with the tokenizer files})")
        if missing:
            self.memo.add(missing, self.text_cache.get(missing, self.encode_texts)
                          if self.text_cache else self.encode_texts(missing))
        if not texts:
            return np.zeros((0, self.clip.embed_dim), np.float32)
        return self.memo.stack(texts)

    # -- image side -------------------------------------------------------------------

    def explain(self, images, keys, config: ExplainConfig, *, text_emb=None, magnitude=None,
                variables: Variables | None = None, class_idx=None, units: str = "ig",
                reader_variables: Variables | None = None,
                progress: Callable[[int], None] | None = None,
                batch_size: int | str | None = None) -> Explanation:
        """:func:`texter_jax.explain.explain_batch` with this session's parts (the SAE
        when ``config.use_sae``). ``variables`` replaces the classifier's weights (e.g. a
        randomised model); ``batch_size`` (an int, or ``"auto"``: :meth:`batch_for`)
        explains the images in batches of that many (None: all at once); the other
        arguments are ``explain_batch``'s."""
        if config.use_sae and self.sae is None:
            raise SessionError("TEXTER with the SAE needs one: load the session with an SAE "
                               "(or use use_sae=False)")
        n = len(images)
        if batch_size == "auto":
            batch_size = self.batch_for(config, images=n).batch
        step = n if batch_size is None else int(batch_size)
        if step < 1:
            raise SessionError(f"batch_size must be >= 1 or 'auto', got {batch_size!r}")
        parts = []
        for s in range(0, n, step):
            rows = slice(s, s + step)
            parts.append(explain_batch(
                self.classifier, self.variables if variables is None else variables,
                self.aligner, text_emb, images[rows], keys[rows], config,
                sae=self.sae if config.use_sae else None, magnitude=magnitude,
                class_idx=None if class_idx is None else class_idx[rows], units=units,
                reader_variables=reader_variables, progress=progress))
        return parts[0] if len(parts) == 1 else Explanation(*(
            None if f[0] is None else _concat_ragged(f) for f in zip(*parts, strict=True)))

    def batch_for(self, config: ExplainConfig, *, images: int | None = None,
                  margin: float = 0.8) -> BatchChoice:
        """The largest batch whose compiled programs fit ``margin`` of the local devices'
        memory (:func:`texter_jax.plan.auto_batch`); raises
        :class:`~texter_jax.plan.BatchTooLarge` when one image per device does not."""
        sae = None
        if config.use_sae and self.sae is not None:
            d, n = self.sae.params["encoder"]["kernel"].shape
            sae = SaeConfig(input_dim=int(d), nb_concepts=int(n), top_k=self.sae.top_k)
        spec = ExplainSpec(self.classifier, self.variables, config, sae,
                           int(self.aligner.w.shape[0]))
        return auto_batch(spec, images=images, margin=margin)

    def text_to_concept(self, images, variables: Variables | None = None):
        """The Text-to-Concept baseline's image side: ``(label [B], prob [B],
        embeddings [B, 1, E])``, one classifier pass."""
        return text_to_concept_embed_batch(
            self.classifier, self.variables if variables is None else variables,
            self.aligner, images)


def load(classifier: str | os.PathLike, clip: str | os.PathLike,
         aligner: str | os.PathLike, sae: str | os.PathLike | None = None, *,
         class_names: str | os.PathLike | None = None,
         text_cache: str | os.PathLike | None = None, banks: Banks = Banks(),
         load_aligner: Callable[[str | os.PathLike], Aligner] = aligner_io.load,
         load_sae: Callable[[str | os.PathLike], Sae] = sae_io.load_sae) -> Session:
    """A :class:`Session` from files: converted model folders for the classifier and the
    CLIP, an aligner and an SAE (our folders by default; ``load_aligner`` / ``load_sae``
    read other forms, as :func:`texter_jax.converters.artifacts.load_session` does for the
    release's ``.pth``), a class index file and a text-cache folder (None: no on-disk
    cache)."""
    clf, cvars = load_model(classifier)
    if not isinstance(clf, ClassifierLike):
        raise SessionError(f"{classifier} holds a {getattr(clf, 'family', type(clf).__name__)}"
                           " model, not a classifier")
    clip_model, clip_vars = load_model(clip)
    if not isinstance(clip_model, ImageTextModel):
        raise SessionError(f"{clip} holds a {getattr(clip_model, 'family', '?')} model, "
                           "not a CLIP")
    names = {"classifier": str(classifier), "clip": str(clip), "aligner": str(aligner)}
    if sae is not None:
        names["sae"] = str(sae)
    try:
        class_list = None if class_names is None else read_class_index(
            class_names, clf.num_classes)[0]
    except ClassNamesError as e:
        raise SessionError(str(e)) from e
    return Session(
        classifier=clf, variables=jax.tree.map(jnp.asarray, cvars), clip=clip_model,
        clip_variables=jax.tree.map(jnp.asarray, clip_vars), aligner=load_aligner(aligner),
        sae=None if sae is None else load_sae(sae),
        class_names=class_list,
        text_cache=None if text_cache is None else TextEmbeddingCache(
            Path(text_cache), checkpoint_identity(clip)),
        banks=banks, names=names)



def _concat_ragged(arrays) -> np.ndarray:
    """Concatenates per-batch arrays along the batch; a trailing axis that differs between
    batches (``unit_ids``: a batch's widest unit set) is padded with -1 / 0."""
    width = max(a.shape[1] for a in arrays) if arrays[0].ndim > 1 else None
    if width is None or all(a.shape[1] == width for a in arrays):
        return np.concatenate(arrays)
    fill = -1 if np.issubdtype(arrays[0].dtype, np.integer) else 0
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
                           for a in arrays])
