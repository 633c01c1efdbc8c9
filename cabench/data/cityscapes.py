"""Cityscapes (fine annotations) semantic segmentation, for Table 9.

Layout (the official one; ``root`` holds ``leftImg8bit`` and ``gtFine``)::

    root/leftImg8bit/{train,val}/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
    root/gtFine/{train,val}/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelIds.png

Only ``*_gtFine_labelIds.png`` is read (8-bit single-channel PNG of the official ``labelId`` 0..33); the other
gtFine files (``_color``, ``_instanceIds``, ``_polygons.json``) and the ``test`` split are ignored. The labelIds
are mapped to the 19 evaluation ``trainId`` classes through a 256-entry lookup table (``LABELID_TO_TRAINID``);
every other labelId (0-6, 9, 10, 14-16, 18, 29, 30, and license plate, -1) maps to 255, the ignore label.
Nothing assumes the 1024 x 2048 size of the real images.

Train: the 2,975 train images with the DeepLabV3 train transform; val: the 500 val images at full resolution.

Checks: structure eagerly and fast (folders, and that every ``_leftImg8bit.png`` has its ``_gtFine_labelIds.png``,
one directory listing per city); file contents when a sample is loaded (readable single-channel PNG, same size
as the image, labelIds <= 33), raising ``DatasetError`` naming the file. ``check_samples=N`` makes the validator
load the first N samples of each split too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cabench.data.errors import DatasetError, dataset_root
from cabench.data.identity import SplitFiles
from cabench.data.images import walk_files
from cabench.data.segmentation_dataset import PairedSegmentationDataset
from cabench.data.segmentation_transforms import (
    IGNORE_INDEX,
    bad_values,
    deeplab_transforms,
    recipe_transforms,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABELS",
    "LABELID_TO_TRAINID",
    "MAX_LABEL_ID",
    "CityscapesLabel",
    "CityscapesSegmentation",
    "cityscapes_datasets",
    "labelids_to_trainids",
    "validate_cityscapes",
]


class CityscapesLabel(NamedTuple):
    """One row of the official label table."""

    name: str
    id: int
    train_id: int


# The official label table (cityscapesScripts' labels.py): name, labelId, trainId (255 = ignored in evaluation).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(*row)
    for row in (
        ("unlabeled", 0, 255),
        ("ego vehicle", 1, 255),
        ("rectification border", 2, 255),
        ("out of roi", 3, 255),
        ("static", 4, 255),
        ("dynamic", 5, 255),
        ("ground", 6, 255),
        ("road", 7, 0),
        ("sidewalk", 8, 1),
        ("parking", 9, 255),
        ("rail track", 10, 255),
        ("building", 11, 2),
        ("wall", 12, 3),
        ("fence", 13, 4),
        ("guard rail", 14, 255),
        ("bridge", 15, 255),
        ("tunnel", 16, 255),
        ("pole", 17, 5),
        ("polegroup", 18, 255),
        ("traffic light", 19, 6),
        ("traffic sign", 20, 7),
        ("vegetation", 21, 8),
        ("terrain", 22, 9),
        ("sky", 23, 10),
        ("person", 24, 11),
        ("rider", 25, 12),
        ("car", 26, 13),
        ("truck", 27, 14),
        ("bus", 28, 15),
        ("caravan", 29, 255),
        ("trailer", 30, 255),
        ("train", 31, 16),
        ("motorcycle", 32, 17),
        ("bicycle", 33, 18),
        ("license plate", -1, 255),  # trainId -1 in the official table; never stored in a uint8 labelIds PNG
    )
)
MAX_LABEL_ID = 33
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(
    label.name for label in sorted(CITYSCAPES_LABELS, key=lambda lb: lb.train_id) if label.train_id != IGNORE_INDEX
)


def _lookup_table() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.id <= 255:
            table[label.id] = label.train_id
    table.setflags(write=False)
    return table


LABELID_TO_TRAINID: np.ndarray = _lookup_table()  # uint8[256]: labelId -> trainId (0..18) or 255


def labelids_to_trainids(label_ids: np.ndarray) -> np.ndarray:
    """Map an integer array of labelIds (0..255) to trainIds (uint8, 0..18 or 255) through ``LABELID_TO_TRAINID``."""
    return LABELID_TO_TRAINID[np.asarray(label_ids)]


_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"
_SPLITS = ("train", "val")
_LAYOUT = "expected leftImg8bit/{train,val}/<city>/*_leftImg8bit.png, gtFine/{train,val}/<city>/*_gtFine_labelIds.png"


def _split_samples(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds) pairs of one split, sorted by city then file name; structure checks only."""
    image_root, label_root = root / "leftImg8bit" / split, root / "gtFine" / split
    with os.scandir(image_root) as it:
        cities = sorted(entry.name for entry in it if entry.is_dir())
    if not cities:
        raise DatasetError(f"{image_root}: no city folders ({_LAYOUT})")
    samples: list[tuple[Path, Path]] = []
    for city in cities:
        images = sorted(name for name in os.listdir(image_root / city) if name.endswith(_IMAGE_SUFFIX))
        if not images:
            continue
        label_dir = label_root / city
        if not label_dir.is_dir():
            raise DatasetError(f"{label_dir}: no such folder, but {image_root / city} has {len(images)} images")
        labels = set(os.listdir(label_dir))
        for name in images:
            label_name = name[: -len(_IMAGE_SUFFIX)] + _LABEL_SUFFIX
            if label_name not in labels:
                raise DatasetError(f"{image_root / city / name}: no label file {label_dir / label_name}")
            samples.append((image_root / city / name, label_dir / label_name))
    if not samples:
        raise DatasetError(f"{image_root}: no *{_IMAGE_SUFFIX} images in any city folder ({_LAYOUT})")
    return samples


def _layout(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    root = dataset_root(root, _LAYOUT)
    for top in ("leftImg8bit", "gtFine"):
        for split in _SPLITS:
            if not (root / top / split).is_dir():
                raise DatasetError(f"{root}: no '{top}/{split}' folder ({_LAYOUT})")
    return {split: _split_samples(root, split) for split in _SPLITS}


class CityscapesSegmentation(PairedSegmentationDataset):
    """Cityscapes fine samples: ``(image float32 [3,H,W] normalized, mask int64 [H,W] trainIds 0..18 or 255)``.

    ``samples`` is the list of ``(leftImg8bit_path, labelIds_path)``; ``transform(image uint8 [3,H,W], mask uint8
    [H,W])`` produces the output pair (default: normalization only). Built by :func:`cityscapes_datasets`.
    """

    CLASSES = CITYSCAPES_CLASSES

    def labels_to_mask(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        """labelIds -> trainIds (uint8 ``[H, W]``); ``DatasetError`` for a labelId above ``MAX_LABEL_ID``."""
        unknown = labels > MAX_LABEL_ID
        if unknown.any():
            raise DatasetError(f"{label_path}: unknown labelIds (> {MAX_LABEL_ID}): {bad_values(labels[unknown])}")
        return labelids_to_trainids(labels)


def validate_cityscapes(root: Path, check_samples: int = 0) -> None:
    """Check the Cityscapes fine layout under ``root``; ``DatasetError`` (one line, naming the file) if wrong.

    Structure only by default (folders, every image paired with its labelIds PNG); with ``check_samples > 0`` it
    also loads the first ``check_samples`` samples of each split (readable files, sizes, labelIds).
    """
    for samples in _layout(root).values():
        CityscapesSegmentation(samples).check_first(check_samples)


def cityscapes_datasets(
    root: Path,
    *,
    crop_size: int = 768,
    scale_range: tuple[float, float] = (0.5, 2.0),
    eval_size: int | None = None,
    flip_p: float = 0.5,
    train_transform: Any | None = None,
    eval_transform: Any | None = None,
) -> tuple[CityscapesSegmentation, CityscapesSegmentation]:
    """Validate ``root`` (structure) then return ``(train, val)``: train with the DeepLabV3 train transform
    (``crop_size``, ``scale_range``, horizontal flip with probability ``flip_p``; or ``train_transform``), val
    normalized at full resolution (or padded to ``eval_size`` if given; or ``eval_transform``)."""
    train_tf, eval_tf = deeplab_transforms(crop_size, scale_range, eval_size, flip_p, train_transform, eval_transform)
    layout = _layout(root)
    return CityscapesSegmentation(layout["train"], train_tf, split="train"), CityscapesSegmentation(
        layout["val"], eval_tf, split="val"
    )


def cityscapes_val_files(root: Path) -> SplitFiles:
    """``leftImg8bit/val/<city>/*_leftImg8bit.png``."""
    val = Path(root) / "leftImg8bit" / "val"
    if not val.is_dir():
        raise DatasetError(f"{root}: no leftImg8bit/val folder ({_LAYOUT})")
    return SplitFiles("val", walk_files(val, lambda name: name.endswith(_IMAGE_SUFFIX)), [], None)


def build_cityscapes(root: Path, recipe: Any) -> tuple[Any, Any]:
    """``(train, val)`` with DeepLabV3's transforms at the recipe's sizes (``cityscapes``' declared ``build``)."""
    return cityscapes_datasets(root, **recipe_transforms(recipe))
