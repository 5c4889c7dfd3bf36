"""Concept banks: candidate texts per class / per image, from disk, an LLM or our list.

On-disk layout (the release's ``generate_concepts.py``; every file is a JSON list of
strings, ``{"concept": str}`` items are accepted too)::

    <root>/per_class/<class name>/concepts_<n_llm>.json          LLM, one per class
    <root>/per_image/<image file>/<class name>/concepts_vlm_<n>.json   VLM, per image
    <root>/per_image/<image file>/<class name>/concepts_all.json  the merged bank

``<image file>`` is the file name with its extension (``ILSVRC2012_val_00000001.JPEG``).
The merged bank is the LLM list then the VLM list, exact duplicates (case-insensitive)
dropped, and every concept containing the predicted (or true) class name dropped.

Near-duplicate removal (``dedupe_similar``) is the release's generation-time rule: a
concept is dropped if ``difflib.SequenceMatcher`` ratio to an already kept one, both
lower-cased and stripped, is > 0.8.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from texter_jax.io.atomic import write_json_atomic

SIMILARITY_THRESHOLD = 0.8  # release: ConceptExtractor.similarity_threshold
DEFAULT_N_LLM = 100  # release generate_concepts.py --num_concepts_llm
DEFAULT_N_VLM = 30  # release generate_concepts.py --num_concepts_vlm
GENERIC_BANK = "generic_concepts.txt"


class ConceptBankError(ValueError):
    """A concept file is missing or malformed; the message names the file."""


# ----------------------------------------------------------------------------- paths
def class_bank_path(root: str | os.PathLike, class_name: str, n: int = DEFAULT_N_LLM) -> Path:
    return Path(root) / "per_class" / class_name / f"concepts_{n}.json"


def image_vlm_path(root: str | os.PathLike, image_name: str, class_name: str,
                   n: int = DEFAULT_N_VLM) -> Path:
    return Path(root) / "per_image" / image_name / class_name / f"concepts_vlm_{n}.json"


def image_bank_path(root: str | os.PathLike, image_name: str, class_name: str) -> Path:
    return Path(root) / "per_image" / image_name / class_name / "concepts_all.json"


# ----------------------------------------------------------------------------- files
def _item_text(item, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("concept"), str):
        return item["concept"]
    raise ConceptBankError(f"{where}: entries must be strings or {{\"concept\": str}}, "
                           f"got {item!r}")


def parse_concept_json(text: str, where: str = "<json>") -> list[str]:
    """A JSON list of strings (or ``{"concept": ...}`` dicts) -> stripped, non-empty list."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConceptBankError(f"{where}: not valid JSON: {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("concepts"), list):
        obj = obj["concepts"]
    if not isinstance(obj, list):
        raise ConceptBankError(f"{where}: expected a JSON list of concepts, got "
                               f"{type(obj).__name__}")
    out = [_item_text(x, where).strip() for x in obj]
    return [c for c in out if c]


def parse_concept_lines(text: str) -> list[str]:
    """Plain text, one concept per line; blank lines and ``#`` comments skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def load_concepts(path: str | os.PathLike) -> list[str]:
    """Reads a ``.json`` bank (release layout) or a text file (one concept per line)."""
    path = Path(path)
    if not path.is_file():
        raise ConceptBankError(f"concept file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return parse_concept_json(text, str(path))
    return parse_concept_lines(text)


def save_concepts(path: str | os.PathLike, concepts: Sequence[str]) -> Path:
    """Writes a JSON list of strings atomically (the release's format)."""
    write_json_atomic(path, list(concepts))
    return Path(path)


def generic_bank() -> list[str]:
    """The shipped generic visual-concept bank (texter_jax/data/generic_concepts.txt)."""
    text = resources.files("texter_jax").joinpath("data", GENERIC_BANK).read_text("utf-8")
    return dedupe_exact(parse_concept_lines(text))


def load_class_bank(root, class_name: str, n: int = DEFAULT_N_LLM) -> list[str] | None:
    """The cached per-class LLM bank, or None when absent."""
    p = class_bank_path(root, class_name, n)
    return load_concepts(p) if p.is_file() else None


def load_image_bank(root, image_name: str, class_name: str) -> list[str] | None:
    """The merged per-image bank (``concepts_all.json``), or None when absent."""
    p = image_bank_path(root, image_name, class_name)
    return load_concepts(p) if p.is_file() else None


# ----------------------------------------------------------------------------- merging
def _clean(text: str) -> str:
    return text.strip().lower()


def dedupe_exact(concepts: Iterable[str]) -> list[str]:
    """Drops case-insensitive exact repeats, keeping first occurrences in order."""
    seen, out = set(), []
    for c in concepts:
        k = _clean(c)
        if k and k not in seen:
            seen.add(k)
            out.append(c)
    return out


def similarity(a: str, b: str) -> float:
    """``difflib.SequenceMatcher`` ratio of the lower-cased, stripped strings."""
    return difflib.SequenceMatcher(None, _clean(a), _clean(b)).ratio()


def dedupe_similar(concepts: Iterable[str],
                   threshold: float = SIMILARITY_THRESHOLD) -> list[str]:
    """Greedy near-duplicate removal, in order: a concept whose similarity to any kept
    one is ``> threshold`` is dropped (the release's rule; O(n^2) ratio calls).

    >>> dedupe_similar(["long tail", "long tails", "fur"])
    ['long tail', 'fur']
    """
    kept: list[str] = []
    seen: set[str] = set()
    for c in concepts:
        k = _clean(c)
        if not k or k in seen:
            continue
        if any(similarity(c, u) > threshold for u in kept):
            continue
        kept.append(c)
        seen.add(k)
    return kept


def mentions_class(concept: str, class_names: Iterable[str]) -> bool:
    """True if any class name occurs (case-insensitive substring, as the release)."""
    c = _clean(concept)
    return any(n and _clean(n) in c for n in class_names)


def merge_banks(*banks: Sequence[str], exclude_names: Iterable[str] = (),
                near_duplicates: bool = False,
                threshold: float = SIMILARITY_THRESHOLD) -> list[str]:
    """Concatenates banks in order, drops exact repeats and concepts naming a class.

    Args:
      banks: concept lists, earlier ones first (release: LLM list then VLM list).
      exclude_names: class names that must not appear in a concept (release: the
        predicted and the true class).
      near_duplicates: also apply :func:`dedupe_similar` (the release does not at merge
        time; it does while generating each list).
    """
    names = [n for n in exclude_names if n]
    merged = [c.strip() for bank in banks for c in bank if not mentions_class(c, names)]
    merged = dedupe_exact(merged)
    return dedupe_similar(merged, threshold) if near_duplicates else merged


def resolve_bank(class_name: str, *, root: str | os.PathLike | None = None,
                 image_name: str | None = None, files: Sequence[str | os.PathLike] = (),
                 use_generic: bool | None = None, n_llm: int = DEFAULT_N_LLM,
                 n_vlm: int = DEFAULT_N_VLM) -> list[str]:
    """The candidate texts for one prediction, from whatever exists on disk.

    Order of sources: the per-image merged bank if cached; else the per-class LLM bank
    and the per-image VLM bank if cached; then user ``files``; then the shipped generic
    bank when ``use_generic`` is True, or when it is None (default) and nothing else was
    found. Concepts naming ``class_name`` are dropped and exact repeats removed.
    """
    found: list[list[str]] = []
    if root is not None:
        merged = load_image_bank(root, image_name, class_name) if image_name else None
        if merged is not None:
            found.append(merged)
        else:
            cls = load_class_bank(root, class_name, n_llm)
            if cls is not None:
                found.append(cls)
            if image_name:
                p = image_vlm_path(root, image_name, class_name, n_vlm)
                if p.is_file():
                    found.append(load_concepts(p))
    for f in files:
        found.append(load_concepts(f))
    if use_generic or (use_generic is None and not found):
        found.append(generic_bank())
    if not found:
        raise ConceptBankError(
            f"no concepts for class {class_name!r}: nothing cached under {root}, no files "
            "given and the generic bank disabled")
    return merge_banks(*found, exclude_names=[class_name])
