"""The dataset class shared by :mod:`cabench.data.voc_segmentation` and :mod:`cabench.data.cityscapes`.

A :class:`PairedSegmentationDataset` holds ``samples``, a list of ``(image_path, label_path)`` pairs, and reads
sample ``i`` as the conventions of :mod:`cabench.data.segmentation_transforms` say: the image as a uint8 tensor
``[3, H, W]``, the label PNG's stored values as an integer array, checked to have the image's size, then turned
into the mask of class indices (uint8 ``[H, W]``, ``0..C-1`` or 255) by the subclass's :meth:`labels_to_mask`,
which also rejects values the dataset does not define (``DatasetError`` naming the file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cabench.data.images import decode_rgb
from cabench.data.segmentation_transforms import (
    IGNORE_INDEX,
    SegmentationEvalTransform,
    check_same_size,
    read_label_png,
)

__all__ = ["PairedSegmentationDataset"]


class PairedSegmentationDataset(Dataset):
    """Samples ``(image float32 [3,H,W] normalized, mask int64 [H,W])`` from ``(image_path, label_path)`` pairs.

    ``transform(image uint8 [3,H,W], mask uint8 [H,W])`` produces the output pair (default: normalization only).
    Subclasses set ``CLASSES`` (the class names, index = mask value) and implement :meth:`labels_to_mask`.
    """

    CLASSES: ClassVar[Sequence[str]] = ()
    ignore_index: int = IGNORE_INDEX

    def __init__(self, samples: list[tuple[Path, Path]], transform: Any = None, split: str = "") -> None:
        self.samples = list(samples)
        self.transform = transform if transform is not None else SegmentationEvalTransform()
        self.split = split
        self.num_classes = len(self.CLASSES)
        self.class_names = list(self.CLASSES)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, transform={self.transform!r})"

    def labels_to_mask(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        """The stored label values ``labels`` (integer ``(H, W)``) of ``label_path`` as a uint8 mask of class
        indices or ``IGNORE_INDEX``; ``DatasetError`` naming ``label_path`` for a value the dataset does not define.
        """
        raise NotImplementedError

    def load(self, i: int) -> tuple[Tensor, Tensor]:
        """Sample ``i`` before the transform: ``(image uint8 [3,H,W], mask uint8 [H,W])``, with its checks."""
        image_path, label_path = self.samples[i]
        image = decode_rgb(image_path)
        labels = read_label_png(label_path)
        check_same_size(image, labels, image_path, label_path)
        return image, torch.from_numpy(self.labels_to_mask(labels, label_path))

    def check_first(self, count: int) -> None:
        """Load the first ``count`` samples (at most all of them), raising ``DatasetError`` at the first bad one."""
        for i in range(min(count, len(self))):
            self.load(i)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.load(i)
        return self.transform(image, mask)
