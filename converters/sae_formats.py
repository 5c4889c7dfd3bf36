"""SAEs from and to SAELens and dictionary_learning, exactly (same codes, same x_hat).

SAELens folder (``SAE.save_model``): ``cfg.json`` (``architecture`` "topk" with ``k``, or
"jumprelu"; ``d_in``, ``d_sae``, ``apply_b_dec_to_input``, ``normalize_activations``, ...)
and ``sae_weights.safetensors`` with ``W_enc`` [d, n], ``b_enc`` [n], ``W_dec`` [n, d],
``b_dec`` [d] (and ``threshold`` [n] for JumpReLU). It encodes
``act((x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)`` and decodes
``f @ W_dec + b_dec``.

dictionary_learning ``ae.pt`` (``AutoEncoderTopK.state_dict()``): ``encoder.weight``
[n, d], ``encoder.bias`` [n], ``decoder.weight`` [d, n], ``b_dec`` [d], ``k`` [],
``threshold`` [] (-1 when unset; BatchTopK's inference threshold otherwise). It encodes
``TopK(ReLU(W_e (x - b_dec) + b_e))`` (or, with the threshold, the ReLU'd entries above
it) and decodes ``W_d f + b_dec``.

Both map onto texter_jax's SAE by folding the input-side ``b_dec`` into the encoder bias
(``b_enc - b_dec @ W_enc``), keeping ``b_dec`` as the decoder bias and the decoder rows'
norms as ``dictionary["scale"]``. ReLU-then-TopK and TopK-then-ReLU give the same codes.
SAELens options that change the input (``normalize_activations`` other than "none",
``reshape_activations``, ``rescale_acts_by_decoder_norm``) are refused by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from texter_jax.io.checkpoints import CheckpointError
from texter_jax.sae import SaeConfig, SaeParams, normalized_dictionary

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"


def _params(w_enc, b_enc, w_dec, b_dec, threshold=None, *, subtract_b_dec=True) -> SaeParams:
    """``subtract_b_dec``: the library encodes ``x - b_dec`` (folded into the encoder
    bias here); the decoder adds ``b_dec`` either way."""
    w_enc, b_enc, w_dec, b_dec = (np.asarray(a, np.float32) for a in (w_enc, b_enc, w_dec,
                                                                       b_dec))
    norms = np.linalg.norm(w_dec, axis=1).astype(np.float32)
    bias = b_enc - b_dec @ w_enc if subtract_b_dec else b_enc
    params = {"encoder": {"kernel": w_enc, "bias": bias.astype(np.float32)},
              "dictionary": {"weights": w_dec, "multiplier": np.zeros((), np.float32),
                             "scale": norms, "bias": b_dec}}
    if threshold is not None:
        params["threshold"] = np.asarray(threshold, np.float32)
    return params


def _decoder(params: SaeParams) -> tuple[np.ndarray, np.ndarray]:
    """(W_dec [n, d] as texter_jax decodes with it, b_dec [d])."""
    w = np.asarray(normalized_dictionary(params), np.float32)
    d = w.shape[1]
    return w, np.asarray(params["dictionary"].get("bias", np.zeros(d)), np.float32)


def load_saelens(path: str | os.PathLike) -> tuple[SaeConfig, SaeParams]:
    """A SAELens folder as ``(SaeConfig, params)``; CheckpointError names what does not
    fit."""
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        cfg = json.loads((path / SAELENS_CFG).read_text())
        t = load_file(str(path / SAELENS_WEIGHTS))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a SAELens SAE folder ({SAELENS_CFG} + "
                              f"{SAELENS_WEIGHTS}): {e}") from e
    arch = cfg.get("architecture", "standard")
    if arch not in ("topk", "jumprelu"):
        raise CheckpointError(f"{path / SAELENS_CFG}: architecture {arch!r}; texter_jax reads "
                              "'topk' and 'jumprelu' SAEs")
    for key, plain in (("normalize_activations", "none"), ("reshape_activations", "none"),
                       ("rescale_acts_by_decoder_norm", False)):
        if cfg.get(key, plain) != plain:
            raise CheckpointError(f"{path / SAELENS_CFG}: {key}={cfg[key]!r} is not supported "
                                  f"(only {plain!r})")
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in t]
    if missing:
        raise CheckpointError(f"{path / SAELENS_WEIGHTS}: missing {', '.join(missing)}")
    params = _params(t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"],
                     t.get("threshold") if arch == "jumprelu" else None,
                     subtract_b_dec=cfg.get("apply_b_dec_to_input", True))
    d, n = params["encoder"]["kernel"].shape
    k = int(cfg["k"]) if arch == "topk" else n
    return SaeConfig(d, n, k), params


def save_saelens(path: str | os.PathLike, config: SaeConfig, params: SaeParams) -> Path:
    """Writes a SAELens folder that encodes and decodes as ``params`` do ("topk", or
    "jumprelu" for params with a threshold)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    w_dec, b_dec = _decoder(params)
    n = w_dec.shape[0]
    tensors = {"W_enc": np.asarray(params["encoder"]["kernel"], np.float32),
               "b_enc": np.asarray(params["encoder"]["bias"], np.float32),
               "W_dec": w_dec, "b_dec": b_dec}
    cfg: dict[str, Any] = {"d_in": config.input_dim, "d_sae": config.nb_concepts,
                           "dtype": "float32", "device": "cpu",
                           "apply_b_dec_to_input": False, "normalize_activations": "none",
                           "reshape_activations": "none"}
    if "threshold" in params:
        cfg["architecture"] = "jumprelu"
        tensors["threshold"] = np.broadcast_to(
            np.asarray(params["threshold"], np.float32), (n,)).copy()
    else:
        cfg.update(architecture="topk", k=config.top_k, rescale_acts_by_decoder_norm=False)
    save_file(tensors, str(path / SAELENS_WEIGHTS))
    (path / SAELENS_CFG).write_text(json.dumps(cfg, indent=1))
    return path


def is_saelens_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file()


def is_dictionary_learning(path: str | os.PathLike) -> bool:
    """Whether a torch file holds dictionary_learning's TopK state dict. Needs torch."""
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the release's file (argparse inside) or not torch at all
        return False
    return isinstance(sd, dict) and {"encoder.weight", "decoder.weight", "b_dec"} <= set(sd)


def load_dictionary_learning(path: str | os.PathLike) -> tuple[SaeConfig, SaeParams]:
    """dictionary_learning's TopK / BatchTopK ``ae.pt`` as ``(SaeConfig, params)`` (its
    threshold, when set, becomes the inference threshold). Needs torch."""
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        w_e, b_e = sd["encoder.weight"].numpy(), sd["encoder.bias"].numpy()
        w_d, b_dec = sd["decoder.weight"].numpy(), sd["b_dec"].numpy()
        k, thr = int(sd["k"]), float(sd.get("threshold", torch.tensor(-1.0)))
    except (OSError, RuntimeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a dictionary_learning TopK ae.pt "
                              f"(encoder.weight, encoder.bias, decoder.weight, b_dec, k): "
                              f"{type(e).__name__}: {e}") from e
    params = _params(w_e.T, b_e, w_d.T, b_dec, thr if thr >= 0 else None)
    d, n = params["encoder"]["kernel"].shape
    return SaeConfig(d, n, k), params


def save_dictionary_learning(path: str | os.PathLike, config: SaeConfig,
                             params: SaeParams) -> Path:
    """Writes an ``ae.pt`` that ``AutoEncoderTopK.from_pretrained`` reads (use its
    ``use_threshold`` encode for params with a scalar threshold). Needs torch."""
    import torch

    w_dec, b_dec = _decoder(params)
    w_enc = np.asarray(params["encoder"]["kernel"], np.float32)
    # the library subtracts b_dec before encoding: put it back into the encoder bias
    b_enc = np.asarray(params["encoder"]["bias"], np.float32) + b_dec @ w_enc
    thr = np.asarray(params.get("threshold", -1.0), np.float32)
    if thr.ndim:
        raise ValueError("dictionary_learning stores one threshold; these params hold one "
                         "per latent")
    sd = {"k": torch.tensor(config.top_k, dtype=torch.int), "threshold": torch.tensor(thr),
          "decoder.weight": torch.from_numpy(w_dec.T.copy()),
          "encoder.weight": torch.from_numpy(w_enc.T.copy()),
          "encoder.bias": torch.from_numpy(b_enc), "b_dec": torch.from_numpy(b_dec)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path
