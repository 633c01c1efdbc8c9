"""Budget subsets of the user's own ImageNet: a committed class selection, read in place from the ImageNet tree.

A selection is data (``suites/subsets/<id>.yaml``, found on the suites search path like recipes): its WordNet ids,
where the list comes from, the validation images per class (ImageNet's own val split: 50) and how many training
images one epoch reads. Each shipped selection is a registered dataset of its own (``imagenet-100``,
``imagewoof``) that reads the ``imagenet`` data key: no image is copied or written, the loaders walk only the
selected class folders of ``train/`` and ``val/``, and class ``k`` is the ``k``-th selected id in sorted order.
A tree that lacks a selected class is one line naming it. The identity check (:class:`BudgetSubset`) is the
selection's size; numbers on it fill their budget suite's cells and never a paper cell.

Resolution is the recipe's (``train_size``, ``eval_resize``): a budget recipe at 128 px down-samples on load.
This module declares (it imports no torch); the loaders are :func:`cabench.data.imagenet.subset_datasets`.
A plugin adds a selection with :func:`register_subset` after writing its YAML beside its suites; ``cabench
fixtures imagewoof DIR`` writes a tiny ImageNet-shaped tree of a selection's classes
(:mod:`cabench.data.fixtures.subsets`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cabench.data.base import DatasetInfo, register_dataset
from cabench.data.errors import DatasetError
from cabench.data.identity import BudgetSubset, SplitFiles
from cabench.data.images import IMAGE_EXTENSIONS, walk_files
from cabench.locate import recipe_files, subset_files
from cabench.recipe import RecipeError
from cabench.registry import LazyCall
from cabench.yamlio import read_yaml_mapping

__all__ = [
    "SHIPPED",
    "Selection",
    "class_folders",
    "estimate",
    "load_selection",
    "register_subset",
    "selected_files",
    "validate_subset",
]

_WNID = re.compile(r"n\d{8}")
_FIELDS = {"id", "title", "source", "val_per_class", "train_images", "classes"}


@dataclass(frozen=True)
class Selection:
    """A declared class selection of ImageNet (``suites/subsets/<id>.yaml``)."""

    id: str
    title: str
    source: str
    classes: tuple[str, ...]  # WordNet ids, sorted: class k is classes[k]
    val_per_class: int
    train_images: int

    @property
    def val_images(self) -> int:
        return self.val_per_class * len(self.classes)


def load_selection(name: str) -> Selection:
    """The selection ``name`` from the suites search path; one-line ``DatasetError`` when it is malformed."""
    path = subset_files().get(name)
    if path is None:
        raise DatasetError(f"no class selection {name!r} (expected suites/subsets/{name}.yaml)")
    data = read_yaml_mapping(path, "class selection", DatasetError)
    unknown = sorted(set(data) - _FIELDS)
    if unknown or set(data) != _FIELDS:
        what = f"unknown field {unknown[0]!r}" if unknown else f"missing {sorted(_FIELDS - set(data))[0]!r}"
        raise DatasetError(f"{path}: {what} (a selection has {', '.join(sorted(_FIELDS))})")
    classes = data["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"{path}: classes must be a non-empty list of WordNet ids")
    bad = next((c for c in classes if not _WNID.fullmatch(c)), None)
    if bad is not None or len(set(classes)) != len(classes):
        why = f"{bad!r} is not a WordNet id (n + 8 digits)" if bad else "a class is listed twice"
        raise DatasetError(f"{path}: classes: {why}")
    for key in ("val_per_class", "train_images"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1:
            raise DatasetError(f"{path}: {key} must be a positive integer")
    if data["id"] != name:
        raise DatasetError(f"{path}: id is {data['id']!r}, not the file's name {name!r}")
    return Selection(
        name,
        str(data["title"]),
        str(data["source"]),
        tuple(sorted(classes)),
        data["val_per_class"],
        data["train_images"],
    )


def estimate(suite: Any) -> tuple[int, float] | None:
    """``(training images one row-seed reads, GPU-hours at the suite's declared speed)`` for a suite that declares
    a ``cost`` and trains on a class selection; None otherwise. Reads YAML only (``cabench show`` imports no torch)."""
    path = recipe_files().get(suite.recipe or "")
    if suite.cost is None or path is None:
        return None
    recipe = read_yaml_mapping(path, "recipe", RecipeError)  # the fields alone: validating builds the registries
    dataset, epochs = recipe.get("dataset"), recipe.get("epochs")
    if dataset not in subset_files() or not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        return None
    images = load_selection(dataset).train_images * epochs
    return images, images / suite.cost.img_per_s / 3600


def class_folders(root: Path, split: str, selection: Selection) -> list[Path]:
    """The selected class folders of ``root/split``; the first missing one is one line naming it."""
    root = Path(root).expanduser()
    if not (root / split).is_dir():
        raise DatasetError(f"{root}: no '{split}' folder (expected {split}/<wnid>/*.JPEG of the user's ImageNet)")
    folders = [root / split / wnid for wnid in selection.classes]
    missing = [f.name for f in folders if not f.is_dir()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DatasetError(
            f"{root / split}: no folder for class {missing[0]}{more} of the {selection.title} selection "
            f"({len(selection.classes)} classes, suites/subsets/{selection.id}.yaml)"
        )
    return folders


def selected_files(root: Path, name: str, split: str = "val") -> SplitFiles:
    """The images of the selection ``name``'s classes in ``root/split`` (the identity check's view)."""
    folders = class_folders(root, split, load_selection(name))
    images = [p for f in folders for p in walk_files(f, lambda n: n.lower().endswith(IMAGE_EXTENSIONS))]
    return SplitFiles(split, images, [], len(folders))


def validate_subset(root: Path, name: str) -> None:
    """Both splits of ``root`` hold every class folder of the selection ``name``."""
    selection = load_selection(name)
    for split in ("train", "val"):
        class_folders(root, split, selection)


def register_subset(name: str) -> DatasetInfo:
    """Register the selection ``suites/subsets/<name>.yaml`` as the dataset ``name`` (read from the imagenet key);
    its loaders are :func:`cabench.data.imagenet.subset_datasets`, imported when first used."""
    selection = load_selection(name)
    return register_dataset(
        DatasetInfo(
            name=name,
            task="classify",
            data_key="imagenet",
            title=f"{selection.title}: {len(selection.classes)} classes of the user's ImageNet (train/ and val/)",
            validate=LazyCall("cabench.data.subsets:validate_subset", name=name),
            build=LazyCall("cabench.data.imagenet:build_subset", name=name),
            fixture=name,
            at_smoke_sizes=LazyCall("cabench.data.imagenet:at_smoke_sizes"),
            eval_only=LazyCall("cabench.data.imagenet:subset_eval_only", name=name),
            identity=BudgetSubset(
                f"{selection.title} val",
                selection.val_images,
                len(selection.classes),
                LazyCall("cabench.data.subsets:selected_files", name=name),
            ),
        )
    )


#: The selections shipped in suites/subsets/, each a dataset (and a fixture) of its own (registered by
#: cabench.data.declared with the built-in datasets).
SHIPPED = ("imagenet-100", "imagewoof")
