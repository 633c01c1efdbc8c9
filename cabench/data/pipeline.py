"""The ImageNet training input pipeline on tensors (CPU workers) and on the GPU (nvjpeg), same augmentation.

Both apply, per image: decode to RGB ``uint8``; RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3),
bilinear with antialiasing); horizontal flip with p = 0.5; optionally AutoAugment (ImageNet policy); conversion to
float in [0, 1]; Normalize(ImageNet mean / std). That is the MobileNetV2 recipe's augmentation
(:func:`cabench.data.imagenet.train_transform`, which does it on PIL images) with the work on ``uint8`` tensors:

* :func:`read_rgb` decodes with ``torchvision.io.decode_image`` (libjpeg-turbo; PNG too; grayscale and CMYK
  converted to RGB), falling back to PIL for anything it cannot read;
* :func:`tensor_train_transform` is the ``transforms.v2`` pipeline on the ``uint8`` tensor: the crop is taken
  before resizing and the resize runs on ``uint8`` (torchvision's vectorised kernel), float conversion comes last.

Crops are drawn from the same distribution as torchvision's ``RandomResizedCrop``; pixel values can differ from the
PIL pipeline's by the resampling kernels' rounding (PIL and torch implement antialiased bilinear separately).

:func:`gpu_train_batch` is the GPU option: files are read on the CPU, decoded in one batched
``torchvision.io.decode_jpeg(..., device="cuda")`` call, and the same ``transforms.v2`` pipeline runs per image on
the GPU before stacking. Non-JPEG files are decoded on the CPU and moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cabench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["gpu_train_batch", "read_rgb", "reference_train_transform", "tensor_train_transform"]


def read_rgb(path: str | Path) -> torch.Tensor:
    """The image at ``path`` as a ``(3, H, W)`` uint8 RGB tensor."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError:  # a format or variant libjpeg/libpng here cannot decode: let PIL try
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def tensor_train_transform(size: int = 224, autoaugment: bool = False) -> Any:
    """``transforms.v2`` training augmentation for a uint8 ``(3, H, W)`` tensor (see the module docstring)."""
    if size < 1:
        raise ValueError(f"tensor_train_transform: size must be positive, got {size}")
    from torchvision.transforms import v2

    steps: list[Any] = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    if autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def reference_train_transform(size: int = 224, autoaugment: bool = False) -> Any:
    """torchvision's reference classification training preset (references/classification/presets.py, PIL
    backend): RandomResizedCrop (bilinear, antialias), flip, [AutoAugment], PILToTensor, ConvertImageDtype,
    Normalize; applied to a PIL image."""
    from torchvision import transforms

    steps: list[Any] = [
        transforms.RandomResizedCrop(size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.RandomHorizontalFlip(0.5),
    ]
    if autoaugment:
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET))
    steps += [
        transforms.PILToTensor(),
        transforms.ConvertImageDtype(torch.float),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    return transforms.Compose(steps)


def gpu_train_batch(
    paths: Sequence[str | Path], device: str | torch.device = "cuda", size: int = 224, autoaugment: bool = False
) -> torch.Tensor:
    """A ``(len(paths), 3, size, size)`` float batch on ``device``: nvjpeg decode in one call, then the
    :func:`tensor_train_transform` augmentation per image on the device."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    device = torch.device(device)
    data = [read_file(str(p)) for p in paths]
    is_jpeg = [d.numel() >= 2 and d[0].item() == 0xFF and d[1].item() == 0xD8 for d in data]
    jpegs = [d for d, j in zip(data, is_jpeg, strict=True) if j]
    decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else [])
    transform = tensor_train_transform(size, autoaugment)
    out = []
    for path, j in zip(paths, is_jpeg, strict=True):
        image = next(decoded) if j else read_rgb(path).to(device)
        out.append(transform(image))
    return torch.stack(out)
