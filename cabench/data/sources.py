"""Which dataset a recipe trains on: where it lives, how it is checked, how it is loaded, which fixture stands in.

A recipe names its dataset (``dataset: coco``); :data:`DATA_SOURCES` maps that
name to a :class:`DataSource`. The source says which ``--data`` key gives its
root (Tables 7 and 8 both read ``voc``: one VOCdevkit holds VOC2007 and
VOC2012), which generated fixture the smoke profile uses when no root is
given, how to validate the root (one line, exit 2, before any work) and how
to build the train and evaluation datasets with the recipe's augmentation.

The smoke profile loads the same datasets with small sizes (:data:`SMOKE_SIZES`):
64-pixel ImageNet crops, 64-pixel segmentation crops and no evaluation padding.
Detection images keep their size; the SSD resizes them to 320x320 itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DATA_SOURCES", "FIXTURES", "SMOKE_SIZES", "DataSource", "write_fixture"]

SMOKE_SIZES = {"image_size": 64, "crop_size": 64}


def _imagenet(root: Path, recipe: Any, smoke: bool) -> tuple[Any, Any]:
    from cabench.data.imagenet import imagenet_datasets

    size = SMOKE_SIZES["image_size"] if smoke else recipe.train_size
    resize = round(size * recipe.eval_resize / recipe.train_size)
    return imagenet_datasets(root, size=size, resize=resize)


def _detection_transforms(recipe: Any) -> dict[str, Any]:
    """SSD augmentation, then the resize to the detector's input done in the loader (the SSD's own resize
    is then the identity), so zoomed-out canvases never travel through the DataLoader."""
    from cabench.data.detection_transforms import detection_eval_transform, ssdlite_train_transform

    size = (recipe.train_size, recipe.train_size)
    flip = 0.5 if recipe.hflip else 0.0
    return {
        "train_transform": ssdlite_train_transform(size=size, flip_p=flip),
        "eval_transform": detection_eval_transform(),
    }


def _coco(root: Path, recipe: Any, smoke: bool) -> tuple[Any, Any]:
    from cabench.data.coco import coco_datasets

    return coco_datasets(root, **_detection_transforms(recipe))


def _voc_detection(root: Path, recipe: Any, smoke: bool) -> tuple[Any, Any]:
    from cabench.data.voc_detection import voc_detection_datasets

    return voc_detection_datasets(root, **_detection_transforms(recipe))


def _segmentation_sizes(recipe: Any, smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"crop_size": SMOKE_SIZES["crop_size"], "scale_range": recipe.scale_range, "eval_size": None}
    return {"crop_size": recipe.crop_size, "scale_range": tuple(recipe.scale_range), "eval_size": recipe.eval_size}


def _voc_segmentation(root: Path, recipe: Any, smoke: bool) -> tuple[Any, Any]:
    from cabench.data.voc_segmentation import voc_segmentation_datasets

    return voc_segmentation_datasets(root, **_segmentation_sizes(recipe, smoke))


def _cityscapes(root: Path, recipe: Any, smoke: bool) -> tuple[Any, Any]:
    from cabench.data.cityscapes import cityscapes_datasets

    return cityscapes_datasets(root, **_segmentation_sizes(recipe, smoke))


def _validate(module: str, function: str, **kwargs: Any) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        import importlib

        getattr(importlib.import_module(module), function)(root, **kwargs)

    return check


@dataclass(frozen=True)
class DataSource:
    name: str  # the recipe's `dataset`
    task: str  # classify | detect | segment
    data_key: str  # --data KEY=PATH, CABENCH_DATA_<KEY>, [data] KEY in the config file
    title: str  # for messages
    fixture: str  # the `cabench fixtures` kind that stands in for it
    validate: Callable[[Path], None]
    build: Callable[[Path, Any, bool], tuple[Any, Any]]  # (root, recipe, smoke) -> (train, evaluation)


DATA_SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        DataSource(
            "imagenet",
            "classify",
            "imagenet",
            "ImageNet (train/<class>/*.JPEG, val/<class>/*.JPEG)",
            "imagenet",
            _validate("cabench.data.imagenet", "validate_imagefolder", check_images=2),
            _imagenet,
        ),
        DataSource(
            "coco",
            "detect",
            "coco",
            "COCO 2017 (annotations/instances_{train,val}2017.json, train2017/, val2017/)",
            "coco",
            _validate("cabench.data.coco", "validate_coco"),
            _coco,
        ),
        DataSource(
            "voc-detection",
            "detect",
            "voc",
            "Pascal VOC (VOCdevkit/VOC2007 and VOCdevkit/VOC2012)",
            "voc",
            _validate("cabench.data.voc_detection", "validate_voc_detection"),
            _voc_detection,
        ),
        DataSource(
            "voc-segmentation",
            "segment",
            "voc",
            "Pascal VOC 2012 with SBD (VOCdevkit/VOC2012 with SegmentationClassAug and train_aug.txt)",
            "voc",
            _validate("cabench.data.voc_segmentation", "validate_voc_segmentation"),
            _voc_segmentation,
        ),
        DataSource(
            "cityscapes",
            "segment",
            "cityscapes",
            "Cityscapes (leftImg8bit/{train,val}/<city>/, gtFine/{train,val}/<city>/)",
            "cityscapes",
            _validate("cabench.data.cityscapes", "validate_cityscapes"),
            _cityscapes,
        ),
    )
}


def _writer(module: str, function: str) -> Callable[..., Path]:
    def write(root: Path, seed: int = 0) -> Path:
        import importlib

        return getattr(importlib.import_module(module), function)(root, seed=seed)

    return write


# `cabench fixtures KIND DIR`: kind -> (writer, what it holds, the smoke command to try).
FIXTURES: dict[str, tuple[Callable[..., Path], str, str]] = {
    "imagenet": (
        _writer("cabench.data.fixtures.imagenet", "write_imagenet_fixture"),
        "ImageFolder train/<class>/*.JPEG and val/<class>/*.JPEG",
        "cabench run table1 --profile smoke --data imagenet={root}",
    ),
    "coco": (
        _writer("cabench.data.fixtures.coco", "write_coco_fixture"),
        "COCO 2017 layout: annotations/instances_{train,val}2017.json, train2017/, val2017/",
        "cabench run table6 --profile smoke --data coco={root}",
    ),
    "voc": (
        _writer("cabench.data.fixtures.voc", "write_voc_fixture"),
        "VOCdevkit/VOC2007 + VOC2012 with detection XML and segmentation PNGs (incl. SegmentationClassAug)",
        "cabench run table7 table8 --profile smoke --data voc={root}",
    ),
    "cityscapes": (
        _writer("cabench.data.fixtures.cityscapes", "write_cityscapes_fixture"),
        "Cityscapes layout: leftImg8bit/{train,val}/<city>/*_leftImg8bit.png, gtFine/.../*_gtFine_labelIds.png",
        "cabench run table9 --profile smoke --data cityscapes={root}",
    ),
}


def write_fixture(kind: str, root: Path, seed: int = 0) -> Path:
    """Write the ``kind`` fixture dataset at ``root`` (see :data:`FIXTURES`)."""
    if kind not in FIXTURES:
        raise ValueError(f"unknown fixture {kind!r}; available: {', '.join(FIXTURES)}")
    return FIXTURES[kind][0](root, seed=seed)
