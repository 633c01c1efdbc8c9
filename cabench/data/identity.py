"""Which data a number was computed on, and so which cells it may fill.

Every registered dataset declares its identity check (``DatasetInfo.identity``); the rule is data, not a
comparison of dataset names:

* :class:`PaperSplit`, a dataset the paper reports on. The check is a size check, documented as such: the
  evaluation split's image count (and class count where the split has class folders) against the paper's
  (sources: the paper and the datasets' own documentation):

  ===================  =====================================  ==========  =======
  recipe dataset       split                                  images      classes
  ===================  =====================================  ==========  =======
  imagenet             ILSVRC-2012 val (``val/<class>/``)     50,000      1,000
  coco                 COCO val2017 (``instances_val2017``)   5,000
  voc-detection        VOC2007 test (``Main/test.txt``)       4,952
  voc-segmentation     VOC2012 val (``Segmentation/val.txt``) 1,449
  cityscapes           Cityscapes val (``leftImg8bit/val``)   500
  ===================  =====================================  ==========  =======

  A number fills the suite's cell only on that split; anything else (a fixture, a subset, another class count)
  is kept and reported on its own line, "not the paper's data (N images)", never marked against the paper.
* :class:`BudgetSubset`, a declared class selection of a paper dataset (ImageNet-100, Imagewoof: budget suites).
  Its check is the selection's size (50 ImageNet val images per selected class); a number on it fills its budget
  suite's own cells and is never the paper's data.
* :class:`GeneratorManifest`, data the paper never used (the handwritten-digits probe, ``cabench fixtures digits
  DIR``). No published number exists for it, so nothing on it is marked against the paper; its identity is the
  generator's manifest (a sha256 of every file). A number fills its own suite's cells (it is the probe's result)
  when every file of the evaluation split is the one the manifest lists.

The fingerprint of a paper split is a sha256 over the split's file names and byte sizes (and the bytes of its
list or annotation file): a stat per image, no decoding, cheap enough for every run and enough to tell two copies
of a split apart. A manifest's fingerprint is the manifest's own. Each run records its :class:`DataIdentity` in
config.json as ``data_identity``; the report asks the dataset's check (:func:`cabench.data.base.fills_cells`) what
it may fill. Only the evaluation split is read: evaluating needs no training data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

from cabench.data.errors import DatasetError

__all__ = [
    "BudgetSubset",
    "DataIdentity",
    "GeneratorManifest",
    "IdentityCheck",
    "PaperSplit",
    "SplitFiles",
    "imagefolder_split",
    "is_paper_data",
    "not_paper_text",
]


class SplitFiles(NamedTuple):
    """An evaluation split as files: its name, its images, files hashed whole (lists, annotations), classes."""

    split: str
    images: list[Path]
    extra: list[Path]
    classes: int | None


@dataclass(frozen=True)
class DataIdentity:
    """What a run's evaluation split was, recorded in its config.json as ``data_identity``."""

    dataset: str
    check: str  # the identity check that judged it: "paper-split" or "manifest"
    split: str
    images: int
    classes: int | None
    fingerprint: str
    paper: bool  # the paper's split: a number on it is marked against the published one
    fills: bool  # a number on it fills the suite's cells
    expected_images: int | None  # the paper's split size (None: data the paper never used)
    expected_classes: int | None
    detail: str = ""  # why it does not fill, or where its identity comes from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class IdentityCheck(Protocol):
    """What a dataset declares: how to identify a root's evaluation split, and what a recorded run may fill."""

    kind: ClassVar[str]

    def identify(self, dataset: str, root: Path) -> DataIdentity: ...

    def fills(self, config: dict[str, Any]) -> bool: ...


@dataclass
class PaperSplit:
    """A dataset the paper reports on: numbers fill cells only on a split of the paper's size (and classes)."""

    name: str
    images: int
    classes: int | None
    files: Callable[[Path], SplitFiles]
    kind: ClassVar[str] = "paper-split"

    def identify(self, dataset: str, root: Path) -> DataIdentity:
        found = self.files(Path(root).expanduser())
        n = len(found.images)
        paper = n == self.images and (self.classes is None or found.classes == self.classes)
        return DataIdentity(
            dataset=dataset,
            check=self.kind,
            split=found.split,
            images=n,
            classes=found.classes,
            fingerprint=_fingerprint(Path(root).expanduser(), found.images, found.extra),
            paper=paper,
            fills=paper,
            expected_images=self.images,
            expected_classes=self.classes,
            detail=self.name if paper else _not_paper(n, found.classes, self.classes),
        )

    def fills(self, config: dict[str, Any]) -> bool:
        """Only a run that recorded the paper's split fills a cell (a run without a record does not)."""
        ident = config.get("data_identity")
        return isinstance(ident, dict) and ident.get("paper") is True


@dataclass
class GeneratorManifest:
    """Generated data the paper never used: the manifest is the identity; numbers fill their own suite's cells."""

    files: Callable[[Path], SplitFiles]
    manifest: Callable[[Path], dict[str, Any]]  # the generator's manifest: fingerprint, files {relpath: sha256}
    kind: ClassVar[str] = "manifest"

    def identify(self, dataset: str, root: Path) -> DataIdentity:
        root = Path(root).expanduser()
        manifest = self.manifest(root)
        found = self.files(root)
        changed = _first_unlisted(root, [*found.images, *found.extra], manifest.get("files") or {})
        fills = bool(found.images) and changed is None
        detail = "the generator's manifest" if fills else f"not the data its manifest lists ({changed or 'no images'})"
        return DataIdentity(
            dataset=dataset,
            check=self.kind,
            split=found.split,
            images=len(found.images),
            classes=found.classes,
            fingerprint=f"sha256:{manifest.get('fingerprint')}",
            paper=False,
            fills=fills,
            expected_images=None,
            expected_classes=None,
            detail=detail,
        )

    def fills(self, config: dict[str, Any]) -> bool:
        """A run whose evaluation split is the manifest's; a run from before identities were recorded fills when
        it recorded the manifest's fingerprint (``data_fingerprint``, what every generated-data run records)."""
        ident = config.get("data_identity")
        if isinstance(ident, dict):
            return ident.get("fills") is True
        recorded = config.get("data_fingerprint")
        return isinstance(recorded, dict) and isinstance(recorded.get("fingerprint"), str)


@dataclass
class BudgetSubset(PaperSplit):
    """A declared subset of a paper dataset (a class selection of the user's ImageNet, :mod:`cabench.data.subsets`):
    the same size check as :class:`PaperSplit`, against the selection's declared size; a number on it fills its
    budget suite's own cells and is never the paper's data, so it is never marked against a published number."""

    kind: ClassVar[str] = "budget-subset"

    def identify(self, dataset: str, root: Path) -> DataIdentity:
        ident = super().identify(dataset, root)
        detail = (
            self.name
            if ident.paper
            else f"not the {self.name} split ({ident.images:,} images in {ident.classes} classes)"
        )
        return replace(ident, paper=False, fills=ident.paper, detail=detail)

    def fills(self, config: dict[str, Any]) -> bool:
        ident = config.get("data_identity")
        return isinstance(ident, dict) and ident.get("check") == self.kind and ident.get("fills") is True


def _first_unlisted(root: Path, files: Iterable[Path], listed: dict[str, str]) -> str | None:
    """The first file that the manifest does not list with these bytes (its relative path), else None."""
    for path in files:
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return f"{rel} is missing"
        if listed.get(rel) != digest:
            return f"{rel} is not the generated file"
    return None


def _not_paper(n: int, classes: int | None, expected_classes: int | None) -> str:
    extra = f" in {classes:,} classes" if classes is not None and classes != expected_classes else ""
    return f"not the paper's data ({n:,} images{extra})"


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


_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def imagefolder_split(folder: Path, split: str = "val") -> SplitFiles:
    """``folder/<split>/<class>/*``: its images and class folders."""
    from cabench.data.images import walk_files

    top = Path(folder) / split
    if not top.is_dir():
        raise DatasetError(f"{folder}: no '{split}' folder (expected {split}/<class>/*.JPEG)")
    classes = [p for p in top.iterdir() if p.is_dir()]
    images = walk_files(top, lambda name: name.lower().endswith(_IMAGE_EXT))
    return SplitFiles(split, images, [], len(classes))


def is_paper_data(config: dict[str, Any]) -> bool:
    """Whether a run's config records the paper's evaluation split (a run without a record is not)."""
    ident = config.get("data_identity")
    return isinstance(ident, dict) and ident.get("paper") is True


def not_paper_text(config: dict[str, Any]) -> str:
    """``not the paper's data (32 images in 4 classes)``: why a run's number is on its own line."""
    ident = config.get("data_identity")
    if not isinstance(ident, dict):
        return "not the paper's data (no data identity recorded)"
    if ident.get("check") in ("manifest", BudgetSubset.kind):
        return str(ident.get("detail") or "not the data its manifest lists")
    n, classes = ident.get("images"), ident.get("classes")
    if not isinstance(n, int):
        return "not the paper's data (? images)"
    return _not_paper(n, classes if isinstance(classes, int) else None, ident.get("expected_classes"))
