"""Feature extraction over an image folder into memory-mappable shards, and their reader.

Output folder::

    <out>/manifest.json          format, inputs (count + sha256 of the file list),
                                 preprocessing, shard size, classes, skipped files, done flag
    <out>/features_00000.npy     float32 [n_i, D]   (n_i <= shard_size: unreadable files
    <out>/labels_00000.npy       int64 [n_i]         are skipped; -1 = no label)
    <out>/files_00000.json       {"files": [...n_i paths], "skipped": [{"path", "error"}]}

Shard ``i`` always covers inputs ``[i * shard_size, (i + 1) * shard_size)`` of the file
list, so an interrupted run resumes at the first shard whose ``files_*.json`` (written
last, atomically) is missing.

The pipeline, one module per part (all public names re-exported here):

* :mod:`texter_jax.train.feature_inputs`: the image list (:func:`list_image_folder`,
  :func:`read_file_list`).
* :mod:`texter_jax.train.feature_decode`: host side, :data:`PREPROCESS` and :func:`preprocess_image`
  in a thread pool.
* :mod:`texter_jax.train.feature_forward`: device side, :func:`make_forward`.
* :mod:`texter_jax.train.feature_extract`: :func:`extract_features`, writing the shards.
* :mod:`texter_jax.train.feature_shards`: the format and its reader, :class:`FeatureShards`.

Any named layer of any JAX model, instead of a classifier's penultimate features:
:mod:`texter_jax.train.layer_features`.
"""

from __future__ import annotations

from texter_jax.train.feature_decode import PREPROCESS, preprocess_image
from texter_jax.train.feature_extract import extract_features
from texter_jax.train.feature_forward import make_forward
from texter_jax.train.feature_inputs import list_image_folder, read_file_list
from texter_jax.train.feature_shards import FORMAT, MANIFEST, FeatureShards, FeatureShardsError

__all__ = ["FORMAT", "MANIFEST", "PREPROCESS", "FeatureShards", "FeatureShardsError",
           "extract_features", "list_image_folder", "make_forward", "preprocess_image",
           "read_file_list"]
