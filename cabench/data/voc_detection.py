"""Pascal VOC detection (Table 7, SSDLite320): VOC2007+2012 trainval for training, VOC2007 test for evaluation.

Expected layout (the official tars extracted into one folder; ``root`` may be that folder or ``VOCdevkit``)::

    <root>/VOCdevkit/VOC2007/Annotations/<id>.xml
    <root>/VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2007/ImageSets/Main/trainval.txt, test.txt
    <root>/VOCdevkit/VOC2012/Annotations/<id>.xml
    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2012/ImageSets/Main/trainval.txt

Conventions:

* Labels: ``VOC_CLASSES`` in the devkit's (alphabetical) order, label = index + 1; 0 is the background
  (``num_classes`` 21).
* Boxes: the XML's ``bndbox`` holds 1-based inclusive pixel indices; targets use the continuous 0-based frame
  (pixel ``c`` covers ``[c, c + 1)``), i.e. ``[xmin - 1, ymin - 1, xmax, ymax]``, clipped to the image. The
  evaluator maps predictions back with ``(x1 + 1, y1 + 1, x2, y2)`` and applies the devkit's "+1" IoU, which for
  these boxes is the plain IoU (see :mod:`cabench.metrics.voc_eval`).
* ``image_id`` is the index in the dataset (both splits); targets carry ``difficult`` (bool ``[N]``).
* The train split (2007 trainval + 2012 trainval, 16,551 images on the real data) drops difficult objects (SSD
  practice) and then images left without objects; the test split (2007 test, 4,952 images) keeps every image
  and every object, difficult ones flagged. The evaluator reads difficulty from its own parsed annotations.

Validation (:func:`validate_voc_detection`, also done while building the datasets) raises a one-line
:class:`DatasetError` naming the file and the entry: missing folders or ``ImageSets/Main`` lists, listed ids
without XML or JPEG, XML that does not parse, a missing ``<size>``, an object with an unknown class name or a
missing/non-numeric ``bndbox``, ``xmin >= xmax`` (or y), or a box outside the image by more than 1 pixel
(``xmin >= 0``, ``xmax <= width + 1``). Parsing all ~22k XMLs of the real data takes a few seconds; the parsed
records are cached per list file (path, size, mtime) so validating and then building parses once.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cabench.data.classes import VOC_CLASSES
from cabench.data.detection_dataset import DetectionTransform, checked_index, dataset_rows, open_annotated_image
from cabench.data.detection_transforms import detection_eval_transform, recipe_transforms
from cabench.data.errors import DatasetError, dataset_root
from cabench.data.identity import SplitFiles
from cabench.metrics.voc_eval import VocEvaluator, VocGroundTruth

__all__ = [
    "TEST_SETS",
    "TRAIN_SETS",
    "VOC_CLASSES",
    "VocDetection",
    "validate_voc_detection",
    "voc_detection_datasets",
    "voc_devkit",
    "voc_split",
]

TRAIN_SETS: tuple[tuple[str, str], ...] = (("2007", "trainval"), ("2012", "trainval"))
TEST_SETS: tuple[tuple[str, str], ...] = (("2007", "test"),)
_LAYOUT = "expected VOCdevkit/VOC2007 and VOCdevkit/VOC2012 with Annotations, JPEGImages, ImageSets/Main"
_LABEL_OF = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
_TOLERANCE = 1.0
_CACHE_SIZE = 4


@dataclass(frozen=True)
class _VocRecords:
    """Parsed annotations of one or more image sets, compact; objects of image ``r`` at ``offsets[r]:offsets[r+1]``."""

    names: tuple[str, ...]  # "VOC2007/000001"
    jpegs: tuple[str, ...]
    widths: np.ndarray  # int64 [I]
    heights: np.ndarray  # int64 [I]
    offsets: np.ndarray  # int64 [I + 1]
    boxes: np.ndarray  # float64 [M, 4], XML convention (1-based inclusive)
    labels: np.ndarray  # int64 [M]
    difficult: np.ndarray  # bool [M]

    @staticmethod
    def concatenate(parts: Sequence[_VocRecords]) -> _VocRecords:
        counts = np.concatenate([np.diff(p.offsets) for p in parts])
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return _VocRecords(
            names=tuple(n for p in parts for n in p.names),
            jpegs=tuple(j for p in parts for j in p.jpegs),
            widths=np.concatenate([p.widths for p in parts]),
            heights=np.concatenate([p.heights for p in parts]),
            offsets=offsets,
            boxes=np.concatenate([p.boxes for p in parts]).reshape(-1, 4),
            labels=np.concatenate([p.labels for p in parts]),
            difficult=np.concatenate([p.difficult for p in parts]),
        )


def voc_devkit(root: Path) -> Path:
    """The ``VOCdevkit`` folder: ``root/VOCdevkit`` if present, else ``root`` itself if it holds VOC2007/VOC2012."""
    root = dataset_root(root, _LAYOUT)
    if (root / "VOCdevkit").is_dir():
        return root / "VOCdevkit"
    if (root / "VOC2007").is_dir() or (root / "VOC2012").is_dir():
        return root
    raise DatasetError(f"{root}: no VOCdevkit folder ({_LAYOUT}; root may also be the VOCdevkit folder itself)")


def voc_split(root: Path, year: str, kind: str, split: str) -> SplitFiles:
    """A VOC split as its ``ImageSets/<kind>/<split>.txt`` lists it (the list hashed whole)."""
    base = voc_devkit(Path(root)) / f"VOC{year}"
    listing = base / "ImageSets" / kind / f"{split}.txt"
    try:
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise DatasetError(f"{listing}: cannot read the image list ({e.strerror})") from None
    return SplitFiles(f"VOC{year} {split}", sorted(base / "JPEGImages" / f"{i}.jpg" for i in ids), [listing], None)


def _set_paths(devkit: Path, year: str, split: str) -> tuple[Path, Path, Path]:
    """``(list file, Annotations, JPEGImages)`` of one image set, after checking they exist."""
    base = devkit / f"VOC{year}"
    if not base.is_dir():
        raise DatasetError(f"{base}: folder does not exist ({_LAYOUT})")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        if not (base / sub).is_dir():
            raise DatasetError(f"{base / sub}: folder does not exist ({_LAYOUT})")
    listing = base / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: image list does not exist ({_LAYOUT})")
    return listing, base / "Annotations", base / "JPEGImages"


def _read_ids(listing: Path) -> list[str]:
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{listing}: cannot read image list ({' '.join(str(exc).split())})") from exc
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise DatasetError(f"{listing}: image list is empty")
    return ids


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_xml(
    xml_path: Path, classes: Sequence[str] = VOC_CLASSES
) -> tuple[int, int, list[list[float]], list[int], list[bool]]:
    """``(width, height, boxes, labels, difficult)`` of one annotation file, validated; label = class index + 1."""
    label_of = _LABEL_OF if classes is VOC_CLASSES else {name: i + 1 for i, name in enumerate(classes)}
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"{xml_path}: not well-formed XML ({' '.join(str(exc).split())})") from exc
    except OSError as exc:
        raise DatasetError(f"{xml_path}: cannot read annotation ({' '.join(str(exc).split())})") from exc
    size = root.find("size")
    width = _number(size.findtext("width")) if size is not None else None
    height = _number(size.findtext("height")) if size is not None else None
    if width is None or height is None:
        raise DatasetError(f"{xml_path}: no <size> element with numeric <width> and <height>")
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DatasetError(f"{xml_path}: <size> must hold positive integers, got {width:g}x{height:g}")
    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    for k, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml_path}: object {k} ({name or 'no name'})"
        if name not in label_of:
            raise DatasetError(
                f"{xml_path}: object {k}: unknown class name {name!r} (expected one of the {len(classes)} "
                f"classes, e.g. {', '.join(classes[:4])}, ...)"
            )
        flag = obj.findtext("difficult")
        flag_value = 0.0 if flag is None or not flag.strip() else _number(flag)
        if flag_value not in (0.0, 1.0):
            raise DatasetError(f"{where}: <difficult> must be 0 or 1, got {flag!r}")
        bndbox = obj.find("bndbox")  # a direct child only: person layouts nest <part><bndbox>
        if bndbox is None:
            raise DatasetError(f"{where}: no <bndbox>")
        coords = [_number(bndbox.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        if any(c is None for c in coords):
            raise DatasetError(f"{where}: <bndbox> needs numeric xmin, ymin, xmax, ymax")
        xmin, ymin, xmax, ymax = coords
        text = f"bndbox xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}"
        if xmin >= xmax or ymin >= ymax:
            raise DatasetError(f"{where}: {text} is empty (needs xmin < xmax and ymin < ymax)")
        if xmin < 0 or ymin < 0 or xmax > width + _TOLERANCE or ymax > height + _TOLERANCE:
            raise DatasetError(f"{where}: {text} lies outside the image ({width:g}x{height:g}, 1-based pixels)")
        boxes.append([xmin, ymin, xmax, ymax])
        labels.append(label_of[name])
        difficult.append(flag_value == 1.0)
    return int(width), int(height), boxes, labels, difficult


def _parse_set(devkit: Path, year: str, split: str, classes: Sequence[str] = VOC_CLASSES) -> _VocRecords:
    listing, annotations, jpeg_dir = _set_paths(devkit, year, split)
    ids = _read_ids(listing)
    with os.scandir(annotations) as it:
        xml_names = {e.name for e in it}
    with os.scandir(jpeg_dir) as it:
        jpeg_names = {e.name for e in it}
    widths, heights, counts = [], [], []
    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    for image_id in ids:
        if f"{image_id}.xml" not in xml_names:
            raise DatasetError(
                f"{annotations / (image_id + '.xml')}: annotation of id {image_id} (in {listing}) does not exist"
            )
        if f"{image_id}.jpg" not in jpeg_names:
            raise DatasetError(
                f"{jpeg_dir / (image_id + '.jpg')}: image of id {image_id} (in {listing}) does not exist"
            )
        w, h, b, lab, dif = _parse_xml(annotations / f"{image_id}.xml", classes)
        widths.append(w)
        heights.append(h)
        counts.append(len(lab))
        boxes.extend(b)
        labels.extend(lab)
        difficult.extend(dif)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _VocRecords(
        names=tuple(f"VOC{year}/{i}" for i in ids),
        jpegs=tuple(str(jpeg_dir / f"{i}.jpg") for i in ids),
        widths=np.asarray(widths, dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64),
        offsets=offsets,
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
    )


_CACHE: OrderedDict[tuple, _VocRecords] = OrderedDict()


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _load_set(devkit: Path, year: str, split: str, classes: Sequence[str] = VOC_CLASSES) -> _VocRecords:
    listing, annotations, jpeg_dir = _set_paths(devkit, year, split)
    key = (str(listing.resolve()), _stat_key(listing), _stat_key(annotations), _stat_key(jpeg_dir), tuple(classes))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    records = _parse_set(devkit, year, split, classes)
    _CACHE[key] = records
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return records


def validate_voc_detection(
    root: Path,
    train_sets: Sequence[tuple[str, str]] = TRAIN_SETS,
    test_sets: Sequence[tuple[str, str]] = TEST_SETS,
    classes: Sequence[str] = VOC_CLASSES,
) -> None:
    """Check the layout (cheap), then parse and validate every listed XML of the image sets (by default 2007
    trainval/test and 2012 trainval); raise a one-line DatasetError. The parsed records are cached for the
    datasets."""
    devkit = voc_devkit(root)
    sets = (*train_sets, *test_sets)
    for year, split in sets:
        _set_paths(devkit, year, split)
    for year, split in sets:
        _load_set(devkit, year, split, classes)


class VocDetection(Dataset):
    """The union of VOC image sets as ``(image, target)`` pairs; see the module docstring for conventions.

    Args:
        devkit: the ``VOCdevkit`` folder (or its parent).
        image_sets: ``(year, split)`` pairs, e.g. ``(("2007", "trainval"), ("2012", "trainval"))``.
        keep_difficult: keep difficult objects in the targets (flagged) rather than dropping them.
        transform: ``(PIL image, target) -> (tensor, target)``; default :func:`detection_eval_transform`.
        remove_empty: leave out images without objects (after dropping difficult ones).
        classes: the class names the XML files use (label = index + 1); default the 20 VOC classes.
    """

    def __init__(
        self,
        devkit: Path,
        image_sets: Sequence[tuple[str, str]],
        *,
        keep_difficult: bool,
        transform: DetectionTransform | None = None,
        remove_empty: bool = False,
        classes: Sequence[str] = VOC_CLASSES,
    ) -> None:
        if not image_sets:
            raise ValueError("image_sets is empty")
        self.num_classes: int = len(classes) + 1
        self.class_names: list[str] = ["__background__", *classes]
        self.devkit = voc_devkit(devkit)
        self.image_sets = tuple((str(y), str(s)) for y, s in image_sets)
        self.keep_difficult = keep_difficult
        self.transform = transform if transform is not None else detection_eval_transform()
        self.remove_empty = remove_empty
        parts = [_load_set(self.devkit, year, split, classes) for year, split in self.image_sets]
        self._records = parts[0] if len(parts) == 1 else _VocRecords.concatenate(parts)
        self._kept = np.ones(len(self._records.labels), dtype=bool) if keep_difficult else ~self._records.difficult
        self._rows = dataset_rows(self._records.offsets, self._kept, remove_empty)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def ids(self) -> list[str]:
        """``"VOC<year>/<id>"`` of each item, in dataset order."""
        return [self._records.names[r] for r in self._rows]

    def image_size(self, i: int) -> tuple[int, int]:
        """``(width, height)`` of item ``i`` as its annotation gives it."""
        row = int(self._rows[i])
        return int(self._records.widths[row]), int(self._records.heights[row])

    def image_path(self, i: int) -> Path:
        return Path(self._records.jpegs[int(self._rows[i])])

    def _objects(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        rec = self._records
        row = int(self._rows[i])
        lo, hi = int(rec.offsets[row]), int(rec.offsets[row + 1])
        kept = self._kept[lo:hi]
        return rec.boxes[lo:hi][kept], rec.labels[lo:hi][kept], rec.difficult[lo:hi][kept], row, lo

    def target(self, i: int) -> dict[str, Any]:
        """The target of item ``i`` before any transform (continuous 0-based boxes, original image frame)."""
        boxes, labels, difficult, row, _ = self._objects(i)
        width, height = int(self._records.widths[row]), int(self._records.heights[row])
        frame = boxes - np.array([1.0, 1.0, 0.0, 0.0])
        frame[:, 0::2] = np.clip(frame[:, 0::2], 0, width)
        frame[:, 1::2] = np.clip(frame[:, 1::2], 0, height)
        return {
            "boxes": torch.as_tensor(frame, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "difficult": torch.as_tensor(difficult, dtype=torch.bool),
            "image_id": int(i),
        }

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        i = checked_index(i, len(self))
        row = int(self._rows[i])
        expected = (int(self._records.widths[row]), int(self._records.heights[row]))
        image = open_annotated_image(self.image_path(i), expected, "its annotation")
        return self.transform(image, self.target(i))

    def make_evaluator(self) -> VocEvaluator:
        """A fresh VOC2007 11-point mAP evaluator over this dataset (image ids = indices), difficult flags from
        the parsed annotations (all objects, whatever ``keep_difficult`` says)."""
        rec = self._records
        ground_truth = {}
        for i, row in enumerate(self._rows):
            lo, hi = int(rec.offsets[row]), int(rec.offsets[row + 1])
            ground_truth[i] = VocGroundTruth(rec.boxes[lo:hi], rec.labels[lo:hi], rec.difficult[lo:hi])
        return VocEvaluator(self.class_names, ground_truth)

    def __repr__(self) -> str:
        sets = "+".join(f"{y}-{s}" for y, s in self.image_sets)
        return f"{type(self).__name__}({self.devkit}, {sets}, {len(self)} images, transform={self.transform!r})"


def voc_detection_datasets(
    root: Path,
    *,
    train_transform: DetectionTransform | None = None,
    eval_transform: DetectionTransform | None = None,
    train_sets: Sequence[tuple[str, str]] = TRAIN_SETS,
    test_sets: Sequence[tuple[str, str]] = TEST_SETS,
    classes: Sequence[str] = VOC_CLASSES,
) -> tuple[VocDetection, VocDetection]:
    """Validate ``root`` and return ``(train, test)``: VOC2007+2012 trainval (difficult dropped, empty images
    dropped) and VOC2007 test (all kept), or the given image sets and class names (the digits probe).
    ``train_transform`` defaults to no augmentation (to tensor only)."""
    validate_voc_detection(root, train_sets, test_sets, classes)
    devkit = voc_devkit(root)
    kw: dict[str, Any] = {"classes": classes}
    train = VocDetection(devkit, train_sets, keep_difficult=False, transform=train_transform, remove_empty=True, **kw)
    test = VocDetection(devkit, test_sets, keep_difficult=True, transform=eval_transform, remove_empty=False, **kw)
    return train, test


def build_voc_detection(root: Path, recipe: Any) -> tuple[Any, Any]:
    """``(trainval 07+12, test 07)`` with the recipe's transforms (``voc-detection``'s declared ``build``)."""
    return voc_detection_datasets(root, **recipe_transforms(recipe))
