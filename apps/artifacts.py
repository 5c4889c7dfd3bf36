"""Loading the aligner and SAE from any of the forms users have.

* aligner: a folder written by ``texter train-aligner`` (``aligner.json`` + Orbax) or the
  release's ``linear_aligner.pth`` (``{"W": [d_clip, d_feat], "b": [d_clip]}``);
* SAE: a folder written by ``texter train-sae`` (its ``sae/`` subfolder or the run
  folder itself) or the release's ``sae_model.pth``.

Release ``.pth`` files need torch (the ``[convert]`` extra); it is imported only then.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from texter_jax.io.checkpoints import CheckpointError


def load_aligner(path: str | os.PathLike):
    """Returns ``texter_jax.explain.Aligner`` with W float32 [E, D] and b float32 [E]."""
    from texter_jax.explain import Aligner

    path = Path(path)
    if path.is_file() and path.suffix in (".pth", ".pt", ".bin"):
        from converters.release import load_release_aligner

        w, b = load_release_aligner(path)
    elif path.is_dir():
        from train.aligner import load_aligner as load_folder

        result = load_folder(path)
        w, b = result.W, result.b
    else:
        raise CheckpointError(f"no aligner at {path}: expected a `texter train-aligner` "
                              "folder or the release's linear_aligner.pth")
    return Aligner(np.asarray(w, np.float32), np.asarray(b, np.float32))


def load_sae(path: str | os.PathLike):
    """Returns ``texter_jax.explain.Sae`` (params pytree and top_k)."""
    from texter_jax.explain import Sae

    path = Path(path)
    if path.is_file() and path.suffix in (".pth", ".pt", ".bin"):
        from converters.release import load_release_sae

        config, params = load_release_sae(path)
    elif path.is_dir():
        from train.sae_train import load_sae as load_folder

        folder = path / "sae" if (path / "sae" / "sae.json").is_file() else path
        config, params = load_folder(folder)
    else:
        raise CheckpointError(f"no SAE at {path}: expected a `texter train-sae` folder or "
                              "the release's sae_model.pth")
    return Sae(params, int(config.top_k))
