"""Concept banks from any OpenAI-compatible chat endpoint (standard library only).

Configuration, from arguments or the environment:

* ``TEXTER_LLM_BASE_URL``: endpoint root including the version, e.g.
  ``http://127.0.0.1:8000/v1`` (vLLM, llama.cpp, Ollama) or ``https://api.openai.com/v1``
  (the default when unset);
* ``TEXTER_LLM_MODEL`` (default ``gpt-4o-mini``) and ``TEXTER_VLM_MODEL`` (default: the
  LLM model) for the per-image requests that include the photo;
* ``TEXTER_LLM_API_KEY``, else ``OPENAI_API_KEY``; may be unset for local servers.

Generation follows the release's procedure with our own prompts: a few-shot prompt asks
for about 10 short (1-3 word) visual features of the object and its context, never the
class name; replies are parsed into 1-3 word phrases; the request is repeated with an
"already listed" section until ``n`` distinct concepts exist, near-duplicates (difflib
ratio > 0.8) being dropped after every round. Results are cached as JSON in the release
layout (:mod:`texter_jax.concepts.banks`), so a second call makes no request.

The release used ``gpt-3.5-turbo`` at temperature 1.0 for the class lists and a local
Qwen2.5-VL-7B at temperature 0.7-1.0 for the image lists.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from texter_jax.concepts import banks

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
_RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx


class LLMError(RuntimeError):
    """The endpoint refused the request or kept failing after all retries."""


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Where and how to ask.

    Attributes:
      base_url: endpoint root with the API version (``.../v1``).
      model: chat model for the per-class lists.
      vlm_model: model for the per-image lists (must accept ``image_url`` parts).
      api_key: bearer token, or None for servers without authentication.
      timeout: seconds per HTTP request.
      max_retries: retries after the first try on 429 / 5xx / connection errors.
      backoff: first wait in seconds; doubled after each retry, capped at ``max_backoff``.
      temperature / vlm_temperature: sampling temperatures (release: 1.0 and 0.7).
      max_tokens: reply length cap per request.
    """

    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    vlm_model: str | None = None
    api_key: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    temperature: float = 1.0
    vlm_temperature: float = 0.7
    max_tokens: int = 1024

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> LLMConfig:
        """Reads the ``TEXTER_LLM_*`` / ``OPENAI_API_KEY`` variables; ``overrides`` whose
        value is not None win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "base_url": env.get("TEXTER_LLM_BASE_URL") or DEFAULT_BASE_URL,
            "model": env.get("TEXTER_LLM_MODEL") or DEFAULT_MODEL,
            "vlm_model": env.get("TEXTER_VLM_MODEL") or None,
            "api_key": env.get("TEXTER_LLM_API_KEY") or env.get("OPENAI_API_KEY") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def image_model(self) -> str:
        return self.vlm_model or self.model


def llm_configured(env: dict[str, str] | None = None) -> bool:
    """True when an endpoint or a key is set in the environment."""
    env = os.environ if env is None else env
    return any(env.get(k) for k in ("TEXTER_LLM_BASE_URL", "TEXTER_LLM_API_KEY",
                                    "OPENAI_API_KEY"))


class ChatClient:
    """Minimal ``POST {base_url}/chat/completions`` client with retries.

    Args:
      config: endpoint settings.
      sleep: the wait function (tests pass a no-op).
    """

    def __init__(self, config: LLMConfig | None = None, *,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config or LLMConfig.from_env()
        self._sleep = sleep
        self.requests = 0  # HTTP requests sent, retries included

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode("utf-8"),
                                     headers=headers, method="POST")
        self.requests += 1
        with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.config.max_backoff, self.config.backoff * (2 ** attempt))
        if retry_after:
            try:  # the server knows best, within our cap
                delay = min(self.config.max_backoff, max(delay, float(retry_after)))
            except ValueError:
                pass
        self._sleep(delay)

    def chat(self, messages: list[dict], *, model: str | None = None,
             temperature: float | None = None, max_tokens: int | None = None) -> str:
        """Sends one chat request and returns the first choice's text."""
        payload = {"model": model or self.config.model, "messages": messages,
                   "temperature": self.config.temperature if temperature is None else temperature,
                   "max_tokens": max_tokens or self.config.max_tokens}
        last: Exception | None = None
        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            try:
                return _reply_text(self._post(payload), self.url)
            except urllib.error.HTTPError as e:
                body = e.read().decode("utf-8", "replace")[:500] if e.fp else ""
                if e.code not in _RETRY_STATUS and e.code < 500:
                    raise LLMError(f"{self.url} answered HTTP {e.code}: {body}") from e
                last, retry_after = LLMError(f"HTTP {e.code}: {body}"), e.headers.get("Retry-After")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = e
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                last = LLMError(f"{self.url} sent a reply that is not JSON: {e}")
            if attempt < self.config.max_retries:
                log.warning("LLM request failed (%s); retry %d/%d", last, attempt + 1,
                            self.config.max_retries)
                self._wait(attempt, retry_after)
        raise LLMError(f"{self.url}: no answer after {self.config.max_retries + 1} tries: "
                       f"{last}") from last


def _reply_text(reply: dict, url: str) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise LLMError(f"{url}: unexpected reply shape {str(reply)[:300]}") from e
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


# ----------------------------------------------------------------------------- prompts
_RULES = """Rules:
- Each feature is 1 to 3 words.
- Cover the object itself (colour, shape, texture, parts) and its usual surroundings \
(background, setting, things often seen with it).
- Prefer features that many different photos would show, and that can be seen, not known.
- Never write the category name or a word for the object itself; describe what is \
visible instead (for a beehive: "hexagonal cells", not "beehive frame").
- Answer with a list only, one feature per line, each line starting with "- "."""

_EXAMPLES = """Example, category: zebra
- striped coat
- short upright mane
- hooves
- dry grassland
- herd
- dusty ground

Example, category: espresso machine
- chrome body
- pressure gauge
- steam wand
- small cup
- coffee counter
- black buttons"""

_CLASS_PROMPT = """You name visual features that help recognise a kind of object in photos.
{rules}

{examples}

Category: {class_name}
{already}List about 10 new features."""

_IMAGE_PROMPT = """Look at this photo. A classifier recognised it as: {class_name}.
Name visual features that you can actually see in this particular image and that support \
that recognition: details of the object and of its surroundings.
{rules}

{already}List about 10 new features."""


def _already(concepts: Sequence[str]) -> str:
    if not concepts:
        return ""
    lines = "\n".join(f"- {c}" for c in concepts)
    return f"Already listed (do not repeat these or close variants of them):\n{lines}\n\n"


def class_prompt(class_name: str, already: Sequence[str] = ()) -> str:
    return _CLASS_PROMPT.format(rules=_RULES, examples=_EXAMPLES, class_name=class_name,
                                already=_already(already))


def image_prompt(class_name: str, already: Sequence[str] = ()) -> str:
    return _IMAGE_PROMPT.format(rules=_RULES, class_name=class_name,
                                already=_already(already))


# ----------------------------------------------------------------------------- parsing
# The release splits replies on these separators too (so "x and y" gives two concepts).
_SPLIT = re.compile(r"[;\n,]|\s+and\s+|\s+or\s+|\s+-\s+")


def parse_concepts(reply: str) -> list[str]:
    """Reply text -> lower-case 1-3 word phrases, in order, without exact repeats.

    >>> parse_concepts("- Long tail\\n2. the gray fur; trees and branches")
    ['long tail', 'gray fur', 'trees', 'branches']
    """
    out: list[str] = []
    for part in _SPLIT.split(reply.strip()):
        c = part.strip().lower()
        if c.endswith(":"):  # a preamble such as "here are the features:"
            continue
        c = re.sub(r"^(?:[-*\u2022]+\s*)?(?:\d+[.)])?\s*", "", c)  # bullets, numbering
        c = c.rstrip(".!").strip().strip("\"'`").strip()
        c = re.sub(r"^(?:a|an|the)\s+", "", c)
        c = re.sub(r"\s+", " ", c).strip()
        if 1 <= len(c.split()) <= 3 and len(c) > 2:
            out.append(c)
    return banks.dedupe_exact(out)


# ----------------------------------------------------------------------------- images
def image_to_data_url(image: Any, *, fmt: str = "JPEG", quality: int = 90) -> str:
    """A ``data:`` URL for an image: float [H, W, 3] in [0, 1], uint8 [H, W, 3], a file
    path, or already encoded bytes."""
    if isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
        mime = "image/png" if Path(image).suffix.lower() == ".png" else "image/jpeg"
    elif isinstance(image, (bytes, bytearray)):
        data, mime = bytes(image), "image/jpeg"
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"image must be [H, W, 3], got {arr.shape}")
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, quality=quality)
        data, mime = buf.getvalue(), f"image/{fmt.lower()}"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# ----------------------------------------------------------------------------- generator
class ConceptGenerator:
    """Builds and caches concept banks with an LLM / VLM.

    Args:
      cache_root: folder of the release layout (``per_class/``, ``per_image/``); None
        disables caching.
      client: a :class:`ChatClient`; created from the environment on first use, so a
        fully cached run needs no endpoint at all.
      threshold: near-duplicate similarity threshold (release 0.8).
      max_rounds: request limit per bank (the release loops without a limit).
      max_stalls: stop after this many consecutive rounds that add nothing new.
    """

    def __init__(self, cache_root: str | os.PathLike | None = None, *,
                 client: ChatClient | None = None,
                 threshold: float = banks.SIMILARITY_THRESHOLD,
                 max_rounds: int = 30, max_stalls: int = 3):
        self.cache_root = None if cache_root is None else Path(cache_root)
        self._client = client
        self.threshold = threshold
        self.max_rounds = max_rounds
        self.max_stalls = max_stalls

    @property
    def client(self) -> ChatClient:
        if self._client is None:
            self._client = ChatClient(LLMConfig.from_env())
        return self._client

    def _collect(self, n: int, class_name: str, ask: Callable[[list[str]], str]) -> list[str]:
        concepts: list[str] = []
        stalls = 0
        for _ in range(self.max_rounds):
            if len(concepts) >= n:
                break
            new = [c for c in parse_concepts(ask(concepts))
                   if not banks.mentions_class(c, [class_name])]
            before = len(concepts)
            concepts = banks.dedupe_similar(concepts + new, self.threshold)
            stalls = stalls + 1 if len(concepts) == before else 0
            if stalls >= self.max_stalls:
                break
        if len(concepts) < n:
            log.warning("only %d of %d concepts for %r", len(concepts), n, class_name)
        return concepts[:n]

    def class_concepts(self, class_name: str, n: int = banks.DEFAULT_N_LLM, *,
                       refresh: bool = False) -> list[str]:
        """Per-class LLM bank (cached at ``per_class/<class>/concepts_<n>.json``)."""
        path = None if self.cache_root is None else banks.class_bank_path(
            self.cache_root, class_name, n)
        if path is not None and path.is_file() and not refresh:
            return banks.load_concepts(path)
        cfg = self.client.config

        def ask(already):
            prompt = class_prompt(class_name, already)
            return self.client.chat([{"role": "user", "content": prompt}],
                                    model=cfg.model, temperature=cfg.temperature)

        concepts = self._collect(n, class_name, ask)
        if path is not None:
            banks.save_concepts(path, concepts)
        return concepts

    def image_concepts(self, image: Any, image_name: str, class_name: str,
                       n: int = banks.DEFAULT_N_VLM, *, refresh: bool = False) -> list[str]:
        """Per-image VLM bank (cached at ``per_image/<image>/<class>/concepts_vlm_<n>.json``).

        Args:
          image: float [H, W, 3] in [0, 1], uint8 [H, W, 3], a file path or JPEG bytes.
          image_name: the image file name (cache key, as in the release).
        """
        path = None if self.cache_root is None else banks.image_vlm_path(
            self.cache_root, image_name, class_name, n)
        if path is not None and path.is_file() and not refresh:
            return banks.load_concepts(path)
        url = image_to_data_url(image)
        cfg = self.client.config

        def ask(already):
            content = [{"type": "text", "text": image_prompt(class_name, already)},
                       {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]
            return self.client.chat([{"role": "user", "content": content}],
                                    model=cfg.image_model, temperature=cfg.vlm_temperature)

        concepts = self._collect(n, class_name, ask)
        if path is not None:
            banks.save_concepts(path, concepts)
        return concepts

    def image_bank(self, image: Any, image_name: str, class_name: str, *,
                   n_llm: int = banks.DEFAULT_N_LLM, n_vlm: int = banks.DEFAULT_N_VLM,
                   true_class: str | None = None, refresh: bool = False) -> list[str]:
        """The merged bank for one prediction (``concepts_all.json``): the class list
        then the image list, exact repeats and class-name mentions removed."""
        path = None if self.cache_root is None else banks.image_bank_path(
            self.cache_root, image_name, class_name)
        if path is not None and path.is_file() and not refresh:
            return banks.load_concepts(path)
        llm = self.class_concepts(class_name, n_llm, refresh=refresh)
        vlm = self.image_concepts(image, image_name, class_name, n_vlm,
                                  refresh=refresh) if n_vlm > 0 else []
        merged = banks.merge_banks(llm, vlm, exclude_names=[class_name, true_class or ""])
        if path is not None:
            banks.save_concepts(path, merged)
        return merged
