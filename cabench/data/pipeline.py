"""The ImageNet training input on the GPU, and torchvision's reference preset that the CPU pipeline is timed against.

The CPU training pipeline is the one the ImageNet datasets build: :func:`cabench.data.images.decode_rgb` (JPEGs
decoded by ``torchvision.io`` into a uint8 tensor, after the bad-image policy's header checks) then
:func:`cabench.data.imagenet.train_transform` (``transforms.v2`` on the uint8 tensor: the crop is taken before the
resize, which runs on uint8, and float conversion comes last). Crops are drawn from the same distribution as
torchvision's ``RandomResizedCrop``; pixel values can differ from the PIL preset's by the resampling kernels'
rounding (PIL and torch implement antialiased bilinear separately); the decoded pixels are the same.

* :func:`reference_train_transform` is torchvision's reference classification preset on PIL images, the baseline
  ``cabench bench --no-models`` reports the training pipeline against.
* :func:`plain_v2_train_transform` is the PIL path cabench's training took before (PIL decode, then the recipe's
  steps in plain ``transforms.v2``), the second baseline.
* :func:`gpu_train_batch` is the GPU option: files are read on the CPU, decoded in one batched
  ``torchvision.io.decode_jpeg(..., device="cuda")`` call, and the same ``transforms.v2`` training transform runs
  per image on the GPU before stacking. Non-JPEG files are decoded on the CPU and moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cabench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, train_transform
from cabench.data.images import decode_rgb

__all__ = ["gpu_train_batch", "plain_v2_train_transform", "reference_train_transform"]


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


def plain_v2_train_transform(size: int = 224, autoaugment: bool = False) -> Any:
    """The same steps as :func:`~cabench.data.imagenet.train_transform` written plainly in ``transforms.v2`` on a
    PIL image (``ToImage``, RandomResizedCrop, flip, [AutoAugment], ``ToDtype(scale=True)``, ``Normalize``): the
    path cabench's training loader took before it decoded into tensors, kept as its benchmark baseline."""
    from torchvision.transforms import v2

    steps: list[Any] = [v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    if autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def gpu_train_batch(
    paths: Sequence[str | Path], device: str | torch.device = "cuda", size: int = 224, autoaugment: bool = False
) -> torch.Tensor:
    """A ``(len(paths), 3, size, size)`` float batch on ``device``: nvjpeg decode in one call, then the
    :func:`~cabench.data.imagenet.train_transform` augmentation per image on the device."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    device = torch.device(device)
    data = [read_file(str(p)) for p in paths]
    is_jpeg = [d.numel() >= 2 and d[0].item() == 0xFF and d[1].item() == 0xD8 for d in data]
    jpegs = [d for d, j in zip(data, is_jpeg, strict=True) if j]
    decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else [])
    transform = train_transform(size, autoaugment=autoaugment)
    out = []
    for path, j in zip(paths, is_jpeg, strict=True):
        image = next(decoded) if j else decode_rgb(path).to(device)
        out.append(transform(image))
    return torch.stack(out)
