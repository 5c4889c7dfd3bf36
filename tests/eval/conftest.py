"""The tiny procedural-world evaluation set and model folders the `texter eval` tests share
(one per test module: each module's runs write beside it)."""

import pytest

from tests.helpers import aligner_folder, sae_folder, tiny_classifier_folder, tiny_clip_folder
from texter_jax.world import sample_attributes
from texter_jax.world.eval_set import write_world_set

N_IMAGES = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_world_set(root / "world", sample_attributes(0, N_IMAGES),
                           label_attribute="shape", truth_attributes="background",
                           image_size=32)
    (data / "class_00" / "broken.png").write_bytes(b"\x89PNG not an image")
    models = {"classifier": tiny_classifier_folder(root / "clf", num_classes=6),
              "clip": tiny_clip_folder(root / "clip", root),
              "aligner": aligner_folder(root / "aligner", 16, 12),
              "sae": sae_folder(root / "sae", 16)}
    return root, data, models
