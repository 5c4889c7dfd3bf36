"""Loading the aligner and the SAE from whichever form a user has: the dispatch by path.

* aligner: a folder written by ``texter train-aligner`` (:mod:`texter_jax.aligner`'s
  format) or the release's ``linear_aligner.pth`` (``{"W": [d_clip, d_feat], "b":
  [d_clip]}``, read by ``texter_jax.converters.release``);
* SAE: a folder written by ``texter train-sae`` (its ``sae/`` subfolder or the run
  folder itself; :mod:`texter_jax.sae`'s format), a SAELens folder, a dictionary_learning
  ``ae.pt`` (:mod:`texter_jax.converters.sae_formats`) or the release's ``sae_model.pth``;
* a whole session (:func:`load_session`): the library's loader with this dispatch.

Release ``.pth`` files need torch (the ``[convert]`` extra); it is imported only then.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from texter_jax import aligner as aligner_io
from texter_jax import sae as sae_io
from texter_jax import session
from texter_jax.io.checkpoints import CheckpointError

RELEASE_SUFFIXES = (".pth", ".pt", ".bin")


def load_aligner(path: str | os.PathLike) -> aligner_io.Aligner:
    """An :class:`~texter_jax.aligner.Aligner` (w float32 [E, D], b float32 [E])."""
    path = Path(path)
    if path.is_file() and path.suffix in RELEASE_SUFFIXES:
        from texter_jax.converters.release import load_release_aligner  # needs torch

        w, b = load_release_aligner(path)
        return aligner_io.Aligner(np.asarray(w, np.float32), np.asarray(b, np.float32),
                                  method="release")
    if path.is_dir():
        return aligner_io.load(path)
    raise CheckpointError(f"no aligner at {path}: expected a `texter train-aligner` "
                          "folder or the release's linear_aligner.pth")


def load_sae(path: str | os.PathLike) -> sae_io.Sae:
    """A :class:`~texter_jax.sae.Sae` (params pytree and top_k)."""
    path = Path(path)
    if path.is_file() and path.suffix in RELEASE_SUFFIXES:
        from texter_jax.converters import sae_formats  # needs torch
        from texter_jax.converters.release import load_release_sae

        load = (sae_formats.load_dictionary_learning
                if sae_formats.is_dictionary_learning(path) else load_release_sae)
        config, params = load(path)
        return sae_io.Sae(params, int(config.top_k))
    if path.is_dir():
        from texter_jax.converters import sae_formats

        if sae_formats.is_saelens_folder(path):
            config, params = sae_formats.load_saelens(path)
            return sae_io.Sae(params, int(config.top_k))
        return sae_io.load_sae(path)
    raise CheckpointError(f"no SAE at {path}: expected a `texter train-sae` folder, a "
                          "SAELens folder (cfg.json + sae_weights.safetensors), a "
                          "dictionary_learning ae.pt or the release's sae_model.pth")


def load_session(classifier, clip, aligner, sae=None, **kwargs) -> session.Session:
    """:func:`texter_jax.session.load` reading the aligner and SAE in either form."""
    return session.load(classifier, clip, aligner, sae, load_aligner=load_aligner,
                        load_sae=load_sae, **kwargs)
