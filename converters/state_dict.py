"""Reading PyTorch-side weights from every on-disk form users have.

Sources accepted by :func:`read_source`:

* a torch ``.pth`` / ``.pt`` / ``.bin`` file holding a state dict (optionally wrapped in
  ``{"state_dict": ...}``, ``{"model": ...}`` or ``{"model_state_dict": ...}``);
* a ``.safetensors`` file;
* a Hugging Face model folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``, sharded files with an index too);
* a Hugging Face model id (``org/name``), resolved ONLY through the local HF cache.

Everything comes back as float32 numpy arrays keyed by the torch names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


class SourceError(ValueError):
    """The weights source cannot be read; the message names the file and why."""


@dataclasses.dataclass
class Source:
    """Weights plus what we know about where they came from."""

    state_dict: dict[str, np.ndarray]
    path: str
    hf_config: dict[str, Any] | None = None  # config.json of an HF folder, if any
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # non-tensor entries


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")


def _tensor_to_numpy(t) -> np.ndarray:
    import torch

    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()  # bf16 has no numpy dtype: go through float32 (as HF does).
    return t.detach().cpu().numpy()


def load_torch_file(path: str | os.PathLike, *, allow_pickle: bool = False
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads a torch-saved state dict. Returns ``(tensors, non_tensor_entries)``.

    With ``allow_pickle``, a file that torch's safe loader refuses (a whole pickled
    ``nn.Module``, ``torch.save(model)``) is unpickled, which runs code from the file,
    and the module's ``state_dict()`` is taken; a warning says so on stderr.
    """
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not _is_weights_only_refusal(e):
            why = _first_line(e)
            why = "" if why.startswith("Weights only load failed") else f" ({why})"
            raise SourceError(f"cannot read torch file {path}: not a torch checkpoint, or a "
                              f"damaged one{why}") from e
        if not allow_pickle:
            raise SourceError(
                f"{path} holds pickled Python objects (e.g. a whole model saved with "
                "torch.save(model)), not just tensors; unpickling runs code from the file. "
                "If you trust it, pass --allow-pickle (allow_pickle=True); or re-save it "
                "with torch.save(model.state_dict(), path)") from e
        print(f"warning: unpickling {path} runs code from that file; do this only for "
              "files you trust", file=sys.stderr)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise SourceError(f"cannot unpickle {path}: {_first_line(e2)}") from e2
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise SourceError(f"{path}: expected a state dict, found {type(obj).__name__}")
    extras: dict[str, Any] = {}
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], dict) and not isinstance(obj[key], torch.Tensor):
            extras = {k: v for k, v in obj.items() if k != key}
            obj = obj[key]
            break
    tensors = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            tensors[k] = _tensor_to_numpy(v)
        else:
            extras[k] = v
    if not tensors:
        raise SourceError(f"{path}: no tensors found (keys: {sorted(obj)[:10]})")
    return tensors, extras


def _is_weights_only_refusal(e: Exception) -> bool:
    """torch's safe loader met a pickled class (a whole model), not a broken file."""
    return "Unsupported global" in str(e) or "GLOBAL" in str(e)


def _first_line(e: Exception) -> str:
    """The first sentence of an exception's message (torch's run to a paragraph)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0]
    return line.split(". ")[0].rstrip(".") if len(line) > 120 else line


def nonfinite_tensors(state_dict: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """``(name, count)`` of every floating tensor holding NaN or +-inf values."""
    out = []
    for k, v in state_dict.items():
        if np.issubdtype(v.dtype, np.floating):
            bad = int(v.size - np.count_nonzero(np.isfinite(v)))
            if bad:
                out.append((k, bad))
    return out


def load_safetensors_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover - extra not installed
        raise SourceError("reading .safetensors needs `pip install texter_jax[convert]`") from e
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise SourceError(f"cannot read safetensors file {path}: {e}") from e
    return {k: _tensor_to_numpy(v) for k, v in tensors.items()}


def load_weights_file(path: str | os.PathLike, *, allow_pickle: bool = False
                      ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors_file(path), {}
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return load_torch_file(path, allow_pickle=allow_pickle)
    raise SourceError(
        f"{path}: unknown weights format {path.suffix!r}; expected .pth, .pt, .bin or .safetensors")


def _hf_folder_weights(folder: Path) -> dict[str, np.ndarray]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, np.ndarray] = {}
            for shard in shards:
                out.update(load_weights_file(folder / shard)[0])
            return out
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load_weights_file(folder / name)[0]
    raise SourceError(
        f"{folder}: HF model folder without weights (looked for model.safetensors, "
        "pytorch_model.bin and their sharded index files)")


def _resolve_hf_id(model_id: str) -> Path:
    """Resolves an HF model id in the local cache only; never downloads."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover
        raise SourceError("resolving HF ids needs `pip install texter_jax[convert]`") from e
    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception as e:
        cache = (os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME")
                 or "~/.cache/huggingface")
        raise SourceError(
            f"{model_id!r} is not in the local Hugging Face cache ({cache}). "
            f"texter_jax never downloads: on a machine with network run "
            f"`huggingface-cli download {model_id}` (or copy the model folder here) and pass "
            f"the folder path instead.") from e


def read_source(source: str | os.PathLike, *, allow_pickle: bool = False) -> Source:
    """Reads weights from a file, an HF folder or a cached HF id (see module doc);
    ``allow_pickle``: see :func:`load_torch_file`."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        cfg = path / "config.json"
        hf_config = json.loads(cfg.read_text()) if cfg.is_file() else None
        return Source(_hf_folder_weights(path), str(path), hf_config)
    if path.is_file():
        tensors, extras = load_weights_file(path, allow_pickle=allow_pickle)
        return Source(tensors, str(path), None, extras)
    weights_suffix = path.suffix in (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
    if weights_suffix or text.startswith(("/", ".")):
        raise SourceError(f"weights file not found: {path}")
    if text.count("/") == 1:
        folder = _resolve_hf_id(text)
        return read_source(folder)
    raise SourceError(
        f"{text!r} is neither a file, a folder nor an HF model id of the form org/name")
