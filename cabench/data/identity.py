"""Which data a number was computed on: the evaluation split's size, class count and a cheap fingerprint.

A number fills a paper cell only when it was computed on the paper's evaluation split. Each dataset the recipes
name knows that split (:data:`PAPER_SPLITS`, from the paper and the datasets' own documentation):

===================  =====================================  ==========  =======
recipe dataset       split                                  images      classes
===================  =====================================  ==========  =======
imagenet             ILSVRC-2012 val (``val/<class>/``)     50,000      1,000
coco                 COCO val2017 (``instances_val2017``)   5,000
voc-detection        VOC2007 test (``Main/test.txt``)       4,952
voc-segmentation     VOC2012 val (``Segmentation/val.txt``) 1,449
cityscapes           Cityscapes val (``leftImg8bit/val``)   500
===================  =====================================  ==========  =======

The check is a size check (image count, and the class count where the split has class folders), documented as
such: a subset, a fixture or another class count is "not the paper's data". The fingerprint is a sha256 over the
split's file names and byte sizes (and the bytes of its list or annotation file), cheap enough to take on every
run (a stat per image, no decoding) and enough to tell two copies of a split apart.

Only the evaluation split is read: evaluating needs no ``train/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cabench.data.errors import DatasetError

__all__ = ["PAPER_SPLITS", "DataIdentity", "PaperSplit", "data_identity", "is_paper_data", "not_paper_text"]


@dataclass(frozen=True)
class PaperSplit:
    """The evaluation split the paper reports on."""

    name: str
    images: int
    classes: int | None = None


PAPER_SPLITS: dict[str, PaperSplit] = {
    "imagenet": PaperSplit("ImageNet val (ILSVRC-2012)", 50_000, 1_000),
    "coco": PaperSplit("COCO val2017", 5_000),
    "voc-detection": PaperSplit("Pascal VOC2007 test", 4_952),
    "voc-segmentation": PaperSplit("Pascal VOC2012 val", 1_449),
    "cityscapes": PaperSplit("Cityscapes val", 500),
}


@dataclass(frozen=True)
class DataIdentity:
    """What a run's evaluation split was, recorded in its config.json as ``data_identity``."""

    dataset: str
    split: str
    images: int
    classes: int | None
    fingerprint: str
    paper: bool  # the paper's split (size and class count as in PAPER_SPLITS)
    expected_images: int
    expected_classes: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def _images_under(folder: Path) -> list[Path]:
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop: walk each real folder once
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        found.extend(Path(dirpath, n) for n in filenames if n.lower().endswith(_IMAGE_EXT))
    return sorted(found)


def _imagenet(root: Path) -> tuple[str, list[Path], list[Path], int | None]:
    val = root / "val"
    if not val.is_dir():
        raise DatasetError(f"{root}: no 'val' folder (expected val/<class>/*.JPEG)")
    classes = sorted(p for p in val.iterdir() if p.is_dir())
    return "val", _images_under(val), [], len(classes)


def _coco(root: Path) -> tuple[str, list[Path], list[Path], int | None]:
    ann = root / "annotations" / "instances_val2017.json"
    try:
        images = json.loads(ann.read_text())["images"]
        names = [root / "val2017" / str(im["file_name"]) for im in images]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{ann}: cannot list the val2017 images ({type(e).__name__})") from None
    return "val2017", sorted(names), [ann], None


def _voc_list(root: Path, year: str, kind: str, split: str) -> tuple[str, list[Path], list[Path], int | None]:
    from cabench.data.voc_detection import voc_devkit

    base = voc_devkit(root) / f"VOC{year}"
    listing = base / "ImageSets" / kind / f"{split}.txt"
    try:
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise DatasetError(f"{listing}: cannot read the image list ({e.strerror})") from None
    return f"VOC{year} {split}", sorted(base / "JPEGImages" / f"{i}.jpg" for i in ids), [listing], None


def _cityscapes(root: Path) -> tuple[str, list[Path], list[Path], int | None]:
    val = root / "leftImg8bit" / "val"
    if not val.is_dir():
        raise DatasetError(f"{root}: no leftImg8bit/val folder")
    return "val", sorted(p for p in _images_under(val) if p.name.endswith("_leftImg8bit.png")), [], None


_LISTERS: dict[str, Callable[[Path], tuple[str, list[Path], list[Path], int | None]]] = {
    "imagenet": _imagenet,
    "coco": _coco,
    "voc-detection": lambda root: _voc_list(root, "2007", "Main", "test"),
    "voc-segmentation": lambda root: _voc_list(root, "2012", "Segmentation", "val"),
    "cityscapes": _cityscapes,
}


def _fingerprint(root: Path, files: Iterable[Path], extra: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in extra:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for path in files:
        try:
            size = path.stat().st_size
        except OSError:
            size = -1  # a listed file that is missing still changes the fingerprint
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        digest.update(f"{rel}\t{size}\n".encode())
    return "sha256:" + digest.hexdigest()


def data_identity(dataset: str, root: Path) -> DataIdentity:
    """The evaluation split of ``dataset`` at ``root``: size, classes, fingerprint, and whether it is the paper's."""
    if dataset not in _LISTERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(_LISTERS)}")
    root = Path(root).expanduser()
    split, files, extra, classes = _LISTERS[dataset](root)
    paper = PAPER_SPLITS[dataset]
    is_paper = len(files) == paper.images and (paper.classes is None or classes == paper.classes)
    return DataIdentity(
        dataset=dataset,
        split=split,
        images=len(files),
        classes=classes,
        fingerprint=_fingerprint(root, files, extra),
        paper=is_paper,
        expected_images=paper.images,
        expected_classes=paper.classes,
    )


def is_paper_data(config: dict[str, Any]) -> bool:
    """Whether a run's config records the paper's evaluation split (a run without a record is not)."""
    ident = config.get("data_identity")
    return isinstance(ident, dict) and ident.get("paper") is True


def not_paper_text(config: dict[str, Any]) -> str:
    """``not the paper's data (32 images)``, with the class count when it differs."""
    ident = config.get("data_identity")
    if not isinstance(ident, dict):
        return "not the paper's data (no data identity recorded)"
    n, classes = ident.get("images"), ident.get("classes")
    extra = f" in {classes:,} classes" if classes is not None and classes != ident.get("expected_classes") else ""
    n_text = f"{n:,}" if isinstance(n, int) else "?"
    return f"not the paper's data ({n_text} images{extra})"
