"""Pieces both detection datasets (COCO and Pascal VOC) use: the transform type, row selection, image opening."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cabench.data.errors import DatasetError
from cabench.data.images import load_rgb

__all__ = ["DetectionTransform", "checked_index", "dataset_rows", "open_annotated_image"]

DetectionTransform = Callable[[Image.Image, dict], tuple[torch.Tensor, dict]]  # (PIL image, target) -> (tensor, target)


def dataset_rows(offsets: np.ndarray, usable: np.ndarray, remove_empty: bool) -> np.ndarray:
    """The index rows a detection dataset serves, in order, when the objects of row ``r`` are
    ``offsets[r]:offsets[r + 1]``: every row, or with ``remove_empty`` only rows with at least one ``usable`` one."""
    n_images = len(offsets) - 1
    if not remove_empty:
        return np.arange(n_images)
    row_of_object = np.repeat(np.arange(n_images), np.diff(offsets))
    has_object = np.zeros(n_images, dtype=bool)
    has_object[row_of_object[usable]] = True
    return np.flatnonzero(has_object)


def checked_index(i: int, length: int) -> int:
    """``i`` (negative counts from the end) as an index in ``0..length-1``; ``IndexError`` if out of range."""
    if not -length <= i < length:
        raise IndexError(f"index {i} out of range for {length} images")
    return i % length


def open_annotated_image(path: Path, expected: tuple[int, int], source: str, note: str = "") -> Image.Image:
    """Open ``path`` as an RGB PIL image whose size must be ``expected`` (width, height), as ``source`` says;
    ``DatasetError`` naming the file if unreadable or of another size (``note`` ends that message)."""
    image = load_rgb(path)  # the one image policy: pixel limit from the header, regular files only, one line
    if image.size != expected:
        raise DatasetError(
            f"{path}: image is {image.size[0]}x{image.size[1]} but {source} says {expected[0]}x{expected[1]}{note}"
        )
    return image
