"""Import / export of the TEXTER release's own torch files (SAE and linear aligner).

SAE file (``train_sae.py`` of the release, read back by ``demo_texter.py``)::

    {"model_state_dict": {"encoder.final_block.0.weight": [n, d],
                          "encoder.final_block.0.bias":   [n],
                          "dictionary._weights":          [n, d],
                          "dictionary.multiplier":        []},
     "input_dim": d, "nb_concepts": n, "top_k": k,
     "args": argparse.Namespace(...)}           # training arguments, not needed here

The stored ``dictionary._weights`` are the raw (not necessarily unit-row) weights; the
release normalises them when it switches to eval mode, as
:func:`texter_jax.sae.normalized_dictionary` does.

Aligner file (``linear_aligner.py: save_W``): ``{"b": Tensor [d_clip], "W": Tensor
[d_clip, d_feat]}`` of float32, applied as ``h = z @ W.T + b``.

Needs torch (the ``[convert]`` extra).
"""

from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from texter_jax.converters.mapping import ConversionError, Rule, apply_rules, linear_kernel
from texter_jax.converters.state_dict import SourceError
from texter_jax.sae import SaeConfig, SaeParams, init_sae

SAE_RULES = (
    Rule("encoder.final_block.0.weight", ("encoder", "kernel"), linear_kernel),
    Rule("encoder.final_block.0.bias", ("encoder", "bias")),
    Rule("dictionary._weights", ("dictionary", "weights")),
    Rule("dictionary.multiplier", ("dictionary", "multiplier")),
)
_SAE_META = ("input_dim", "nb_concepts", "top_k")


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    import torch

    if not path.is_file():
        raise SourceError(f"file not found: {path}")
    try:
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        # Release SAE files carry the training argparse.Namespace: allow just that class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SourceError(
            f"cannot read torch file {path}: {e}\n(if you trust this file, retry with "
            "allow_pickle=True to lift torch's weights_only restriction)") from e


def _to_numpy(v: Any, name: str, path: Path) -> np.ndarray:
    import torch

    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float32).cpu().numpy()
    if isinstance(v, np.ndarray):
        return v.astype(np.float32)
    raise SourceError(f"{path}: entry {name!r} is a {type(v).__name__}, expected a tensor")


def load_release_sae(path: str | os.PathLike, *, allow_pickle: bool = False
                     ) -> tuple[SaeConfig, SaeParams]:
    """Reads a release ``sae_model.pth``.

    Args:
      path: the torch file. A bare state dict (no ``model_state_dict`` wrapper) is also
        accepted; then sizes come from the shapes and ``top_k`` defaults to n // 10, the
        release TopKSAE default.
      allow_pickle: use ``weights_only=False`` (only for files you trust).

    Returns:
      ``(config, params)`` with float32 numpy leaves in the :mod:`texter_jax.sae` layout.
    """
    path = Path(path)
    obj = _torch_load(path, allow_pickle)
    if not isinstance(obj, dict):
        raise SourceError(f"{path}: expected a dict, found {type(obj).__name__}")
    if "model_state_dict" in obj:
        raw_sd, meta = obj["model_state_dict"], obj
    else:
        raw_sd, meta = obj, {}
    sd = {k: _to_numpy(v, k, path) for k, v in raw_sd.items()}
    w = sd.get("encoder.final_block.0.weight")
    if w is None or w.ndim != 2:
        raise ConversionError(
            f"cannot convert {path}: no 2-D 'encoder.final_block.0.weight' (keys: "
            f"{sorted(sd)[:8]}); only the release's default 'linear' encoder is supported")
    n, d = w.shape
    input_dim = int(meta.get("input_dim", d))
    nb_concepts = int(meta.get("nb_concepts", n))
    top_k = int(meta.get("top_k") or max(nb_concepts // 10, 1))
    if (input_dim, nb_concepts) != (d, n):
        raise ConversionError(
            f"cannot convert {path}: metadata says input_dim={input_dim}, "
            f"nb_concepts={nb_concepts} but the encoder weight is [{n}, {d}]")
    config = SaeConfig(input_dim=input_dim, nb_concepts=nb_concepts, top_k=top_k)
    expected = jax.eval_shape(lambda key: init_sae(key, config), jax.random.key(0))
    params = apply_rules(sd, SAE_RULES, expected, source=str(path))
    return config, params


def export_release_sae(path: str | os.PathLike, config: SaeConfig, params: SaeParams) -> Path:
    """Writes ``params`` as a release ``sae_model.pth`` (readable by ``demo_texter.py``)."""
    import torch

    def t(x):
        return torch.from_numpy(np.array(x, dtype=np.float32, copy=True))

    enc, dic = params["encoder"], params["dictionary"]
    state = collections.OrderedDict([
        ("encoder.final_block.0.weight", t(np.asarray(enc["kernel"]).T)),
        ("encoder.final_block.0.bias", t(enc["bias"])),
        ("dictionary._weights", t(dic["weights"])),
        ("dictionary.multiplier", t(dic["multiplier"])),
    ])
    if tuple(state["encoder.final_block.0.weight"].shape) != (config.nb_concepts, config.input_dim):
        raise ValueError(f"params do not match {config}")
    payload = {"model_state_dict": state, "input_dim": config.input_dim,
               "nb_concepts": config.nb_concepts, "top_k": config.top_k}
    return _save_torch(path, payload)


def _save_torch(path, payload) -> Path:
    import io

    import torch

    from texter_jax.io.atomic import write_bytes_atomic

    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


def load_release_aligner(path: str | os.PathLike, *, allow_pickle: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Reads a release ``linear_aligner.pth``.

    Returns:
      ``(W, b)``: float32 numpy [d_clip, d_feat] and [d_clip]; apply as ``z @ W.T + b``.
    """
    path = Path(path)
    obj = _torch_load(path, allow_pickle)
    if not isinstance(obj, dict) or not {"W", "b"} <= set(obj):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise SourceError(f"{path}: expected a dict with 'W' and 'b', found {keys}")
    w, b = _to_numpy(obj["W"], "W", path), _to_numpy(obj["b"], "b", path)
    if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
        raise ConversionError(
            f"cannot convert {path}: W {w.shape} and b {b.shape}; expected W [d_clip, d_feat] "
            "and b [d_clip]")
    return w, b


def export_release_aligner(path: str | os.PathLike, w, b) -> Path:
    """Writes ``{"b": Tensor [d_clip], "W": Tensor [d_clip, d_feat]}`` (release key order)."""
    import torch

    w = np.asarray(w, np.float32)
    b = np.asarray(b, np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ValueError(f"W must be [d_clip, d_feat] and b [d_clip], got {w.shape}, {b.shape}")
    return _save_torch(path, {"b": torch.from_numpy(b.copy()), "W": torch.from_numpy(w.copy())})
