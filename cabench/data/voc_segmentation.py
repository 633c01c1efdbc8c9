"""Pascal VOC 2012 semantic segmentation with the SBD augmentation ("train_aug"), for Table 8.

Layout (the standard one; ``root`` is the folder that contains ``VOCdevkit/``, or ``VOCdevkit`` itself)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt, val.txt   (train.txt, trainval.txt unused)
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png    mode-L PNG, class indices 0..20, 255 = ignore
    VOCdevkit/VOC2012/SegmentationClass/<id>.png       palette PNG (optional), same indices

* train: the ids of ``train_aug.txt`` (10,582 for the real set), masks from ``SegmentationClassAug/``;
* val: the ids of ``val.txt`` (1,449), masks from ``SegmentationClass/`` when that folder exists, else from
  ``SegmentationClassAug/``.

A list line is either one id (``2007_000032``) or the DeepLab list style of two paths relative to ``VOC2012``
(``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``), which are then used as given. Blank
lines are skipped. Masks are read as the stored *indices* (a palette PNG is never converted to RGB); 21 classes
including background, 255 is the ignore label (object borders, "difficult" regions).

Checks: ``validate_voc_segmentation`` (and the dataset builder) check the structure eagerly and fast: the
folders and list files, every list line's form, and that every listed image and mask exists (one directory
listing per folder, not one ``stat`` per file). What needs the files opened (readable PNG, single channel, same
size as the image, values in 0..20 or 255) is checked when a sample is loaded, raising ``DatasetError`` naming
the file; ``check_samples=N`` makes the validator open the first N samples of each split too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cabench.data.errors import DatasetError, dataset_root
from cabench.data.segmentation_dataset import PairedSegmentationDataset
from cabench.data.segmentation_transforms import (
    IGNORE_INDEX,
    bad_values,
    deeplab_transforms,
    recipe_transforms,
)
from cabench.data.voc_detection import VOC_CLASSES

__all__ = [
    "VOC_SEGMENTATION_CLASSES",
    "VocSegmentation",
    "validate_voc_segmentation",
    "voc_segmentation_datasets",
]

VOC_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)  # mask index = detection label
_LAYOUT = "expected VOCdevkit/VOC2012/{JPEGImages,ImageSets/Segmentation,SegmentationClassAug}"
_LIST_FORMS = "'<id>' or '/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png'"


class _Listing:
    """Existence checks through one ``os.listdir`` per folder (fast on network file systems)."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str]] = {}

    def exists(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return path.name in self._names[folder]


def _read_list(list_path: Path, voc: Path, mask_dir: str, listing: _Listing) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a list file; ``DatasetError`` naming ``list:line`` for a bad line or missing file."""
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{list_path}: cannot read list file ({type(exc).__name__})") from exc
    pairs: list[tuple[Path, Path]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 1:
            image, mask = voc / "JPEGImages" / f"{tokens[0]}.jpg", voc / mask_dir / f"{tokens[0]}.png"
        elif len(tokens) == 2:
            image, mask = voc / tokens[0].lstrip("/"), voc / tokens[1].lstrip("/")
        else:
            raise DatasetError(f"{list_path}:{lineno}: expected {_LIST_FORMS}, got {line.strip()!r}")
        for what, path in (("image", image), ("mask", mask)):
            if not listing.exists(path):
                raise DatasetError(f"{list_path}:{lineno}: {what} {path} does not exist")
        pairs.append((image, mask))
    if not pairs:
        raise DatasetError(f"{list_path}: list file has no entries")
    return pairs


@dataclass(frozen=True)
class _VocLayout:
    voc: Path
    train: list[tuple[Path, Path]]
    val: list[tuple[Path, Path]]
    val_mask_dir: str


def _voc2012_dir(root: Path) -> Path:
    root = dataset_root(root, _LAYOUT)
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if candidate.is_dir():
            return candidate
    raise DatasetError(f"{root}: no VOCdevkit/VOC2012 folder (give the folder containing VOCdevkit, or VOCdevkit)")


def _layout(root: Path, train_list: str = "train_aug", train_masks: str = "SegmentationClassAug") -> _VocLayout:
    voc = _voc2012_dir(root)
    for sub in ("JPEGImages", train_masks, "ImageSets/Segmentation"):
        if not (voc / sub).is_dir():
            raise DatasetError(f"{voc}: no '{sub}' folder ({_LAYOUT})")
    lists = voc / "ImageSets" / "Segmentation"
    for name in (f"{train_list}.txt", "val.txt"):
        if not (lists / name).is_file():
            raise DatasetError(f"{lists}: no '{name}' list file")
    val_mask_dir = "SegmentationClass" if (voc / "SegmentationClass").is_dir() else train_masks
    listing = _Listing()
    train = _read_list(lists / f"{train_list}.txt", voc, train_masks, listing)
    val = _read_list(lists / "val.txt", voc, val_mask_dir, listing)
    return _VocLayout(voc=voc, train=train, val=val, val_mask_dir=val_mask_dir)


class VocSegmentation(PairedSegmentationDataset):
    """VOC 2012 segmentation samples: ``(image float32 [3,H,W] normalized, mask int64 [H,W] in 0..20 or 255)``.

    ``samples`` is the list of ``(image_path, mask_path)``; ``transform(image uint8 [3,H,W], mask uint8 [H,W])``
    produces the output pair (default: normalization only). Built by :func:`voc_segmentation_datasets`.
    """

    CLASSES = VOC_SEGMENTATION_CLASSES

    def labels_to_mask(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        """The stored class indices as uint8; ``DatasetError`` for a value outside ``0..20`` and 255."""
        bad = (labels >= self.num_classes) & (labels != IGNORE_INDEX)
        if bad.any():
            allowed = f"0..{self.num_classes - 1} and {IGNORE_INDEX}"
            raise DatasetError(f"{label_path}: label values outside {allowed}: {bad_values(labels[bad])}")
        return labels.astype(np.uint8)


def validate_voc_segmentation(
    root: Path, check_samples: int = 0, train_list: str = "train_aug", train_masks: str = "SegmentationClassAug"
) -> None:
    """Check the VOC 2012 + SBD layout under ``root``; ``DatasetError`` (one line, naming the file) if wrong.

    Structure only by default (folders, list files, every listed image and mask present); with
    ``check_samples > 0`` it also loads the first ``check_samples`` samples of each split (readable files,
    mask size and values).
    """
    layout = _layout(root, train_list, train_masks)
    if check_samples > 0:
        for samples in (layout.train, layout.val):
            VocSegmentation(samples).check_first(check_samples)


def voc_segmentation_datasets(
    root: Path,
    *,
    crop_size: int = 513,
    scale_range: tuple[float, float] = (0.5, 2.0),
    eval_size: int | None = 513,
    flip_p: float = 0.5,
    train_transform: Any | None = None,
    eval_transform: Any | None = None,
) -> tuple[VocSegmentation, VocSegmentation]:
    """Validate ``root`` (structure) then return ``(train, val)``: train_aug with the DeepLabV3 train transform
    (``crop_size``, ``scale_range``, horizontal flip with probability ``flip_p``; or ``train_transform``), val
    with normalization and padding to ``eval_size`` (None: native size; or ``eval_transform``)."""
    train_tf, eval_tf = deeplab_transforms(crop_size, scale_range, eval_size, flip_p, train_transform, eval_transform)
    layout = _layout(root)
    return VocSegmentation(layout.train, train_tf, split="train_aug"), VocSegmentation(layout.val, eval_tf, split="val")


def build_voc_segmentation(root: Path, recipe: Any) -> tuple[Any, Any]:
    """``(train_aug, val)`` with DeepLabV3's transforms (``voc-segmentation``'s declared ``build``)."""
    return voc_segmentation_datasets(root, **recipe_transforms(recipe))
