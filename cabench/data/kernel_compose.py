"""A ``transforms.v2.Compose`` that runs the training transform's geometric steps as their image kernels.

Each v2 transform called on a lone tensor first flattens its input, looks up the kernel for the input's type and
checks which inputs need transforming; per 224-pixel training image that bookkeeping costs about as much as the
flip and the normalisation together. :class:`KernelCompose` keeps the same steps (its ``repr`` lists them, as
the run's recorded pipeline) and, for a plain image tensor, draws each step's parameters the way the step does and
calls ``transforms.v2.functional``'s image kernel: the same random draws in the same order and the same pixels
(``tests/test_bench.py`` holds it for every recipe variant). Steps it does not know (AutoAugment, RandomErasing)
are called as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["KernelCompose"]


def _random_resized_crop(step: v2.RandomResizedCrop, image: torch.Tensor) -> torch.Tensor:
    box = step.make_params([image])  # the draws RandomResizedCrop makes: area, log aspect ratio, then position
    return F.resized_crop_image(
        image, **box, size=step.size, interpolation=step.interpolation, antialias=step.antialias
    )


def _horizontal_flip(step: v2.RandomHorizontalFlip, image: torch.Tensor) -> torch.Tensor:
    return image if torch.rand(1) >= step.p else F.horizontal_flip_image(image)  # the draw v2 makes


def _resize(step: v2.Resize, image: torch.Tensor) -> torch.Tensor:
    return F.resize_image(image, step.size, step.interpolation, step.max_size, step.antialias)


def _center_crop(step: v2.CenterCrop, image: torch.Tensor) -> torch.Tensor:
    return F.center_crop_image(image, list(step.size))


def _lambda(step: v2.Lambda, image: torch.Tensor) -> torch.Tensor:
    return step.lambd(image) if isinstance(image, step.types) else image


# Steps' public ``make_params`` and the ``*_image`` kernels are torchvision >= 0.21; before that every step runs as
# v2 runs it.
_KERNELS: dict[type, Any] = (
    {
        v2.RandomResizedCrop: _random_resized_crop,
        v2.RandomHorizontalFlip: _horizontal_flip,
        v2.Resize: _resize,
        v2.CenterCrop: _center_crop,
        v2.Lambda: _lambda,
    }
    if hasattr(v2.Transform, "make_params")
    else {}
)


class KernelCompose(v2.Compose):
    """``v2.Compose(steps)`` whose known steps run as image kernels on a single plain image tensor (or a PIL
    image, while a ``Lambda`` step has not yet made it a tensor); anything else goes through ``Compose``."""

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != 1:
            return super().forward(*inputs)
        image = inputs[0]
        for step in self.transforms:
            kernel = _KERNELS.get(type(step))
            if kernel is None or not (type(image) is torch.Tensor or isinstance(step, v2.Lambda)):
                image = step(image)
            else:
                image = kernel(step, image)
        return image
