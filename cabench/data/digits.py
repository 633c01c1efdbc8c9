"""The handwritten-digits probe datasets (:mod:`cabench.data.fixtures.digits`), read by the real loaders.

One root (``--data digits=DIR``, written by ``cabench fixtures digits DIR``) holds three datasets:

* ``classify/``: an ImageFolder (``train/<digit>``, ``val/<digit>``), 32x32 scenes; the recipe's
  ``random_resized_crop`` and ``hflip`` are honoured (the probe recipe turns both off: a crop can cut the
  digit away, a mirrored digit is another glyph);
* ``detect/``: VOC detection, VOC2007 ``trainval`` for training and ``test`` for evaluation, class names
  ``"0"``..``"9"`` (labels 1..10), the SSD augmentation of the paper's recipe, VOC07 11-point mAP;
* ``segment/``: VOC segmentation, ``train.txt``/``val.txt`` with ``SegmentationClass`` palette masks
  (0 background, digit d -> d + 1, 255 ignored), DeepLabV3's augmentation.

``manifest.json`` beside them (every file's sha256 and the generator's parameters) is the dataset's
fingerprint: :func:`digits_fingerprint` is what each run records in its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cabench.data.detection_transforms import detection_eval_transform, ssdlite_train_transform
from cabench.data.errors import DatasetError
from cabench.data.identity import SplitFiles, imagefolder_split
from cabench.data.image_folder import FixedClassesImageFolder
from cabench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, validate_imagefolder
from cabench.data.images import is_image
from cabench.data.segmentation_transforms import SegmentationEvalTransform, SegmentationTrainTransform
from cabench.data.voc_detection import validate_voc_detection, voc_detection_datasets, voc_split
from cabench.data.voc_segmentation import VocSegmentation, _layout, validate_voc_segmentation

__all__ = [
    "DIGIT_CLASSES",
    "DIGIT_SEGMENTATION_CLASSES",
    "DigitSegmentation",
    "digits_classify_datasets",
    "digits_detection_datasets",
    "digits_fingerprint",
    "digits_segmentation_datasets",
    "eval_files",
    "read_manifest",
    "validate_digits",
]

DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
DIGIT_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *DIGIT_CLASSES)
DETECT_SETS = {"train": (("2007", "trainval"),), "test": (("2007", "test"),)}
_LAYOUT = "expected manifest.json, classify/, detect/VOCdevkit, segment/VOCdevkit (cabench fixtures digits DIR)"


class DigitSegmentation(VocSegmentation):
    """Digit scenes' masks: 0 background, 1..10 the digits 0..9, 255 ignored."""

    CLASSES = DIGIT_SEGMENTATION_CLASSES


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root).expanduser() / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{path}: no digits manifest ({_LAYOUT})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({' '.join(str(exc).split())})") from exc
    if not isinstance(manifest, dict) or not all(k in manifest for k in ("fingerprint", "params", "seed")):
        raise DatasetError(f"{path}: manifest lacks fingerprint, params or seed")
    return manifest


def digits_fingerprint(root: Path) -> dict[str, Any]:
    """What a run records about the data: the manifest's fingerprint (sha256 over every file's sha256),
    generator, seed and parameters, and the number of files."""
    m = read_manifest(root)
    return {
        "manifest": str(Path(root).expanduser().absolute() / "manifest.json"),
        "fingerprint": m["fingerprint"],
        "generator": m.get("generator"),
        "seed": m["seed"],
        "params": m["params"],
        "files": len(m.get("files", {})),
    }


def validate_digits(root: Path, task: str) -> None:
    """The manifest and the ``task``'s layout under ``root``; one-line :class:`DatasetError` otherwise."""
    read_manifest(root)
    root = Path(root).expanduser()
    if task == "classify":
        validate_imagefolder(root / "classify", check_images=2)
    elif task == "detect":
        validate_voc_detection(root / "detect", DETECT_SETS["train"], DETECT_SETS["test"], DIGIT_CLASSES)
    else:
        validate_voc_segmentation(root / "segment", train_list="train", train_masks="SegmentationClass")


def _refuse(recipe: Any, *fields: str) -> None:
    on = [f for f in fields if getattr(recipe, f, False)]
    if on:
        raise ValueError(f"recipe {recipe.id}: the digits data do not implement {', '.join(on)}")


def digits_classify_datasets(root: Path, recipe: Any) -> tuple[Any, Any]:
    """``(train, val)`` ImageFolders of ``root/classify`` at the recipe's ``train_size``."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    _refuse(recipe, "autoaugment", "random_erasing", "mixup")
    size = recipe.train_size
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_ops: list[Any] = [
        transforms.RandomResizedCrop(size) if recipe.random_resized_crop else transforms.Resize(size)
    ]
    if recipe.hflip:
        train_ops.append(transforms.RandomHorizontalFlip())
    folder = Path(root).expanduser() / "classify"
    train = ImageFolder(str(folder / "train"), transform=transforms.Compose(train_ops + tail), is_valid_file=is_image)
    val_tf = transforms.Compose([transforms.Resize(recipe.eval_resize), transforms.CenterCrop(size), *tail])
    val = FixedClassesImageFolder(str(folder / "val"), train.class_to_idx, transform=val_tf, is_valid_file=is_image)
    return train, val


def digits_detection_datasets(root: Path, recipe: Any) -> tuple[Any, Any]:
    """``(train, test)`` VOC detection datasets of ``root/detect`` with the recipe's SSD augmentation."""
    size = (recipe.train_size, recipe.train_size)
    train_tf = ssdlite_train_transform(size=size, flip_p=0.5 if recipe.hflip else 0.0)
    return voc_detection_datasets(
        Path(root).expanduser() / "detect",
        train_transform=train_tf,
        eval_transform=detection_eval_transform(),
        train_sets=DETECT_SETS["train"],
        test_sets=DETECT_SETS["test"],
        classes=DIGIT_CLASSES,
    )


def digits_segmentation_datasets(root: Path, recipe: Any) -> tuple[Any, Any]:
    """``(train, val)`` of ``root/segment`` with DeepLabV3's augmentation at the recipe's sizes."""
    layout = _layout(Path(root).expanduser() / "segment", train_list="train", train_masks="SegmentationClass")
    flip = 0.5 if recipe.hflip else 0.0
    train_tf = SegmentationTrainTransform(crop_size=recipe.crop_size, scale_range=recipe.scale_range, flip_p=flip)
    train = DigitSegmentation(layout.train, train_tf, split="train")
    val = DigitSegmentation(layout.val, SegmentationEvalTransform(recipe.eval_size), split="val")
    return train, val


def eval_files(root: Path, folder: str) -> SplitFiles:
    """The evaluation split of the layout ``folder`` (classify, detect or segment) under a digits root."""
    base = Path(root).expanduser() / folder
    if folder == "classify":
        return imagefolder_split(base, "val")
    if folder == "detect":
        return voc_split(base, "2007", "Main", "test")
    return voc_split(base, "2012", "Segmentation", "val")
