"""COCO 2017 detection: loading, validation, and the evaluator hook (Table 6, SSDLite320).

Expected layout (the official downloads, extracted)::

    <root>/annotations/instances_train2017.json
    <root>/annotations/instances_val2017.json
    <root>/train2017/<file_name>      (file_name as listed in the json, e.g. 000000000009.jpg)
    <root>/val2017/<file_name>

Conventions:

* Labels are contiguous: the annotation file's category ids sorted ascending, label = index + 1 (0 is the
  background). With the real 80 categories (ids 1..90 with gaps) this gives 81 classes;
  :attr:`CocoDetection.category_ids` maps back (``category_ids[label - 1]``).
* Boxes: COCO's ``[x, y, w, h]`` (continuous pixels) become ``[x, y, x + w, y + h]``, clipped to the image.
* Targets leave out crowd annotations (``iscrowd=1``) and zero-size boxes (COCO train2017 carries two
  annotations of height 0, ids 918 and 2206849: tolerated, not trained on). The evaluator keeps the file's
  annotations as they are: COCOeval treats crowd regions as "ignore".
* The train dataset leaves out images without a usable box (as the authors' SSD code base does); the val
  dataset keeps all images (``image_id`` is the COCO image id, which the evaluator uses).

Validation (:func:`validate_coco`, also run by :func:`coco_datasets` and ``CocoDetection``) raises a one-line
:class:`DatasetError` naming the file and the entry: missing folders/files, JSON that does not parse, missing
top-level or per-entry keys, duplicate ids, non-positive image sizes, bboxes that are not 4 finite numbers, have
negative width/height or lie outside their image by more than :data:`BBOX_TOLERANCE` pixels, unknown category
or image ids, listed image files that do not exist, and train/val category lists that differ. Parsing the
train2017 json takes ~20 s; the parsed index (compact numpy arrays, no segmentations) is cached per file (path,
size, mtime), so validating and then building the datasets parses each file once.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cabench.data.classes import COCO_CATEGORIES
from cabench.data.detection_dataset import DetectionTransform, checked_index, dataset_rows, open_annotated_image
from cabench.data.detection_transforms import detection_eval_transform, recipe_transforms
from cabench.data.errors import DatasetError, dataset_root
from cabench.data.identity import SplitFiles
from cabench.metrics.coco_eval import CocoEvaluator
from cabench.yamlio import read_json_file

__all__ = [
    "BBOX_TOLERANCE",
    "COCO_CATEGORIES",
    "CocoDetection",
    "DetectionTransform",
    "checked_index",
    "coco_datasets",
    "coco_paths",
    "dataset_rows",
    "open_annotated_image",
    "validate_coco",
]

BBOX_TOLERANCE = 1.0  # pixels a bbox may reach past its image's border (real COCO has boxes touching it)
_SPLITS = ("train2017", "val2017")
_LAYOUT = "expected annotations/instances_{train,val}2017.json, train2017/ and val2017/"
_CACHE_SIZE = 4
MAX_ANNOTATION_BYTES = 2 << 30  # instances_train2017.json is 448 MB


@dataclass(frozen=True)
class _CocoIndex:
    """One parsed annotation file, compact: images sorted by id, their annotations grouped in that order."""

    ann_file: Path
    image_dir: Path
    categories: tuple[tuple[int, str, str], ...]  # (id, name, supercategory), sorted by id
    image_ids: np.ndarray  # int64 [I], ascending
    file_names: tuple[str, ...]
    widths: np.ndarray  # int64 [I]
    heights: np.ndarray  # int64 [I]
    offsets: np.ndarray  # int64 [I + 1]: annotations of image row r are offsets[r]:offsets[r + 1]
    ann_ids: np.ndarray  # int64 [A]
    ann_boxes: np.ndarray  # float64 [A, 4], xywh as in the file
    ann_categories: np.ndarray  # int64 [A], category ids
    ann_areas: np.ndarray  # float64 [A]
    ann_crowd: np.ndarray  # bool [A]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt_box(box: Any) -> str:
    try:
        return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"
    except (TypeError, ValueError):
        return " ".join(repr(box).split())


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def coco_paths(root: Path) -> dict[str, tuple[Path, Path]]:
    """``{"train2017": (ann_file, image_dir), "val2017": (...)}`` after checking they exist (cheap)."""
    root = dataset_root(root, _LAYOUT)
    paths = {}
    for split in _SPLITS:
        ann_file = root / "annotations" / f"instances_{split}.json"
        image_dir = root / split
        if not ann_file.is_file():
            raise DatasetError(f"{ann_file}: annotation file does not exist ({_LAYOUT})")
        if not image_dir.is_dir():
            raise DatasetError(f"{image_dir}: image folder does not exist ({_LAYOUT})")
        paths[split] = (ann_file, image_dir)
    return paths


def _entry_name(kind: str, entry: object, k: int) -> str:
    if isinstance(entry, dict) and "id" in entry:
        return f"{kind} id {_one_line(entry['id'])} (entry {k})"
    return f"{kind} (entry {k})"


def _check_record(where: str, kind: str, entry: object, keys: tuple[str, ...], seen: set[int]) -> None:
    """Raise the DatasetError for a ``kind`` entry that is not an object, lacks one of ``keys``, or whose ``id``
    is not an integer or is already in ``seen``."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: not an object")
    for key in keys:
        if key not in entry:
            raise DatasetError(f"{where}: missing key '{key}'")
    if not _is_int(entry["id"]):
        raise DatasetError(f"{where}: id must be an integer")
    if entry["id"] in seen:
        raise DatasetError(f"{where}: duplicate {kind} id")


def _parse_categories(ann_file: Path, entries: list) -> tuple[tuple[int, str, str], ...]:
    seen: set[int] = set()
    categories = []
    for k, cat in enumerate(entries):
        _check_record(f"{ann_file}: {_entry_name('category', cat, k)}", "category", cat, ("id", "name"), seen)
        seen.add(cat["id"])
        categories.append((cat["id"], str(cat["name"]), str(cat.get("supercategory", ""))))
    if not categories:
        raise DatasetError(f"{ann_file}: 'categories' is empty")
    return tuple(sorted(categories))


def _image_names(image_dir: Path) -> set[str]:
    with os.scandir(image_dir) as it:
        return {entry.name for entry in it}


def _parse_images(ann_file: Path, image_dir: Path, entries: list) -> tuple[list[int], list[str], list[int], list[int]]:
    on_disk = _image_names(image_dir)
    ids: list[int] = []
    names: list[str] = []
    widths: list[int] = []
    heights: list[int] = []
    seen: set[int] = set()
    for k, img in enumerate(entries):
        where = f"{ann_file}: {_entry_name('image', img, k)}"
        _check_record(where, "image", img, ("id", "file_name", "width", "height"), seen)
        image_id, name, width, height = img["id"], img["file_name"], img["width"], img["height"]
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            raise DatasetError(f"{where}: width/height must be positive integers, got {width!r}x{height!r}")
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{where}: file_name must be a non-empty string")
        nested = "/" in name or os.sep in name
        if not (os.path.isfile(image_dir / name) if nested else name in on_disk):
            raise DatasetError(f"{where}: file {image_dir / name} does not exist")
        seen.add(image_id)
        ids.append(image_id)
        names.append(name)
        widths.append(width)
        heights.append(height)
    return ids, names, widths, heights


def _parse_coco(ann_file: Path, image_dir: Path) -> _CocoIndex:
    """Parse and fully validate one annotation file against its image folder."""
    data = _read_top_level(ann_file)
    categories = _parse_categories(ann_file, data["categories"])
    ids, names, widths, heights = _parse_images(ann_file, image_dir, data["images"])
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    anns = data["annotations"]
    del data
    ann_ids, rows, cats, boxes, areas, crowd = _parse_annotations(ann_file, anns, {c[0] for c in categories}, row_of)
    widths_a = np.asarray(widths, dtype=np.int64)
    heights_a = np.asarray(heights, dtype=np.int64)
    _check_boxes_inside(ann_file, ann_ids, rows, boxes, ids, widths_a, heights_a)

    # Sort images by id and group annotations by image (stable: file order within an image).
    n = len(ann_ids)
    image_order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    rank = np.empty_like(image_order)
    rank[image_order] = np.arange(len(ids))
    ann_rank = rank[rows] if n else rows
    ann_order = np.argsort(ann_rank, kind="stable")
    counts = np.bincount(ann_rank, minlength=len(ids)) if n else np.zeros(len(ids), dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _CocoIndex(
        ann_file=ann_file,
        image_dir=image_dir,
        categories=categories,
        image_ids=np.asarray(ids, dtype=np.int64)[image_order],
        file_names=tuple(names[i] for i in image_order),
        widths=widths_a[image_order],
        heights=heights_a[image_order],
        offsets=offsets,
        ann_ids=ann_ids[ann_order],
        ann_boxes=boxes[ann_order],
        ann_categories=cats[ann_order],
        ann_areas=areas[ann_order],
        ann_crowd=crowd[ann_order],
    )


def _read_top_level(ann_file: Path) -> dict[str, Any]:
    """The annotation file's JSON object, with its three lists (images, annotations, categories) checked."""
    data = read_json_file(ann_file, "annotation", DatasetError, MAX_ANNOTATION_BYTES)
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: top level is not a JSON object (expected images, annotations, categories)")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise DatasetError(f"{ann_file}: missing top-level key(s) {', '.join(missing)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DatasetError(f"{ann_file}: '{key}' is not a list")
    return data


def _parse_annotations(
    ann_file: Path, anns: list[Any], known_categories: set[int], row_of: dict[int, int]
) -> tuple[np.ndarray, ...]:
    """``(ids, image rows, categories, boxes, areas, crowd)`` arrays in file order; the first bad entry is one
    line (:func:`_annotation_error`)."""
    n = len(anns)
    ann_ids = np.empty(n, dtype=np.int64)
    rows = np.empty(n, dtype=np.int64)
    cats = np.empty(n, dtype=np.int64)
    boxes = np.empty((n, 4), dtype=np.float64)
    areas = np.empty(n, dtype=np.float64)
    crowd = np.zeros(n, dtype=bool)
    seen_ann: set[int] = set()
    for k, ann in enumerate(anns):
        try:
            ann_id, bbox, cat, image_id = ann["id"], ann["bbox"], ann["category_id"], ann["image_id"]
            ok = (
                _is_int(ann_id)
                and ann_id not in seen_ann
                and cat in known_categories
                and image_id in row_of
                and isinstance(bbox, list)
                and len(bbox) == 4
                and all(_is_number(v) for v in bbox)
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            _annotation_error(ann_file, ann, k, seen_ann, known_categories, row_of)
        seen_ann.add(ann_id)
        ann_ids[k] = ann_id
        rows[k] = row_of[image_id]
        cats[k] = cat
        boxes[k] = bbox
        area = ann.get("area")
        areas[k] = area if _is_number(area) else bbox[2] * bbox[3]
        crowd[k] = bool(ann.get("iscrowd", 0))
    return ann_ids, rows, cats, boxes, areas, crowd


def _check_boxes_inside(
    ann_file: Path,
    ann_ids: np.ndarray,
    rows: np.ndarray,
    boxes: np.ndarray,
    ids: list[int],
    widths: np.ndarray,
    heights: np.ndarray,
) -> None:
    """One line for the first box with a negative side or outside its image (beyond :data:`BBOX_TOLERANCE`)."""
    if not len(ann_ids):
        return
    w_img, h_img = widths[rows], heights[rows]
    negative = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    outside = (
        (boxes[:, 0] < -BBOX_TOLERANCE)
        | (boxes[:, 1] < -BBOX_TOLERANCE)
        | (boxes[:, 0] + boxes[:, 2] > w_img + BBOX_TOLERANCE)
        | (boxes[:, 1] + boxes[:, 3] > h_img + BBOX_TOLERANCE)
    )
    bad = np.flatnonzero(negative | outside)
    if bad.size:
        k = int(bad[0])
        where = f"{ann_file}: annotation id {ann_ids[k]} (entry {k}): bbox {_fmt_box(boxes[k])}"
        if negative[k]:
            raise DatasetError(f"{where} has a negative width or height")
        row = rows[k]
        raise DatasetError(f"{where} lies outside image {ids[row]} ({widths[row]}x{heights[row]})")


def _annotation_error(
    ann_file: Path, ann: object, k: int, seen: set[int], categories: set[int], row_of: dict[int, int]
) -> None:
    """Raise the DatasetError that describes what is wrong with annotation entry ``k``."""
    where = f"{ann_file}: {_entry_name('annotation', ann, k)}"
    _check_record(where, "annotation", ann, ("id", "bbox", "category_id", "image_id"), seen)
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise DatasetError(f"{where}: bbox {_fmt_box(bbox)} is not a list of 4 finite numbers [x, y, w, h]")
    try:
        known_category = ann["category_id"] in categories
        known_image = ann["image_id"] in row_of
    except TypeError:  # an unhashable id
        known_category = known_image = False
    if not known_category:
        raise DatasetError(f"{where}: unknown category_id {_one_line(ann['category_id'])}")
    if not known_image:
        raise DatasetError(f"{where}: image_id {_one_line(ann['image_id'])} is not in 'images'")
    raise DatasetError(f"{where}: malformed annotation")  # pragma: no cover - every failing check is named above


_CACHE: OrderedDict[tuple, _CocoIndex] = OrderedDict()


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _load_index(ann_file: Path, image_dir: Path) -> _CocoIndex:
    """Parse + validate ``ann_file`` (cached on the file's and the image folder's identity and mtime)."""
    ann_file, image_dir = Path(ann_file).expanduser(), Path(image_dir).expanduser()
    if not ann_file.is_file():
        raise DatasetError(f"{ann_file}: annotation file does not exist")
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder does not exist")
    key = (str(ann_file.resolve()), _stat_key(ann_file), str(image_dir.resolve()), _stat_key(image_dir))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    index = _parse_coco(ann_file, image_dir)
    _CACHE[key] = index
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return index


def _check_same_categories(train: _CocoIndex, val: _CocoIndex) -> None:
    a = [(c[0], c[1]) for c in train.categories]
    b = [(c[0], c[1]) for c in val.categories]
    if a != b:
        only_val = sorted(set(b) - set(a))[:3]
        only_train = sorted(set(a) - set(b))[:3]
        raise DatasetError(
            f"{val.ann_file}: categories differ from {train.ann_file} "
            f"(only in val: {only_val or 'none'}; only in train: {only_train or 'none'})"
        )


def validate_coco(root: Path) -> None:
    """Check the COCO 2017 layout and fully validate both annotation files; raise a one-line DatasetError.

    The cheap checks (folders and files exist) run first; then each json is parsed once (cached for
    :func:`coco_datasets`).
    """
    paths = coco_paths(root)
    train = _load_index(*paths["train2017"])
    val = _load_index(*paths["val2017"])
    _check_same_categories(train, val)


class CocoDetection(Dataset):
    """One COCO split as ``(image, target)`` pairs; see the module docstring for conventions.

    Args:
        ann_file: ``instances_<split>.json``.
        image_dir: the folder holding the split's images.
        transform: ``(PIL image, target) -> (tensor, target)``; default :func:`detection_eval_transform`.
        remove_empty: leave out images without a usable (non-crowd, non-empty) box.
    """

    def __init__(
        self,
        ann_file: Path,
        image_dir: Path,
        *,
        transform: DetectionTransform | None = None,
        remove_empty: bool = False,
    ) -> None:
        index = _load_index(ann_file, image_dir)
        self._index = index
        self.ann_file = index.ann_file
        self.image_dir = index.image_dir
        self.transform = transform if transform is not None else detection_eval_transform()
        self.remove_empty = remove_empty
        self.category_ids: list[int] = [c[0] for c in index.categories]
        self.num_classes: int = len(self.category_ids) + 1
        self.class_names: list[str] = ["__background__", *(c[1] for c in index.categories)]
        self._category_array = np.asarray(self.category_ids, dtype=np.int64)
        boxes = index.ann_boxes
        self._usable = ~index.ann_crowd & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        self._rows = dataset_rows(index.offsets, self._usable, remove_empty)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids in dataset order."""
        return self._index.image_ids[self._rows].tolist()

    def labels_to_category_ids(self, labels: Any) -> np.ndarray:
        """Contiguous labels (1..num_classes-1) -> the file's category ids."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 1 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in 1..{self.num_classes - 1}, got {labels.min()}..{labels.max()}")
        return self._category_array[labels - 1]

    def category_ids_to_labels(self, category_ids: Any) -> np.ndarray:
        """The file's category ids -> contiguous labels."""
        ids = np.asarray(category_ids, dtype=np.int64)
        labels = np.searchsorted(self._category_array, ids)
        if ids.size and (np.any(labels >= len(self._category_array)) or np.any(self._category_array[labels] != ids)):
            raise ValueError(f"unknown category id(s) in {ids.tolist()}")
        return labels + 1

    def target(self, i: int) -> dict[str, Any]:
        """The target of item ``i`` before any transform (boxes in the original image's frame)."""
        index = self._index
        row = int(self._rows[i])
        lo, hi = int(index.offsets[row]), int(index.offsets[row + 1])
        usable = self._usable[lo:hi]
        xywh = index.ann_boxes[lo:hi][usable]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, index.widths[row])
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, index.heights[row])
        labels = self.category_ids_to_labels(index.ann_categories[lo:hi][usable])
        return {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "image_id": int(index.image_ids[row]),
        }

    def image_path(self, i: int) -> Path:
        return self.image_dir / self._index.file_names[int(self._rows[i])]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        i = checked_index(i, len(self))
        row = int(self._rows[i])
        expected = (int(self._index.widths[row]), int(self._index.heights[row]))
        note = f" (image id {int(self._index.image_ids[row])})"
        image = open_annotated_image(self.image_path(i), expected, str(self.ann_file), note)
        return self.transform(image, self.target(i))

    def ground_truth(self) -> dict[str, list[dict[str, Any]]]:
        """The annotation file's images, annotations and categories as a COCO-format dict (no segmentations)."""
        index = self._index
        images = [
            {"id": int(i), "width": int(w), "height": int(h), "file_name": name}
            for i, w, h, name in zip(index.image_ids, index.widths, index.heights, index.file_names, strict=True)
        ]
        image_of = np.repeat(index.image_ids, np.diff(index.offsets))
        annotations = [
            {
                "id": int(a),
                "image_id": int(img),
                "category_id": int(c),
                "bbox": [float(v) for v in box],
                "area": float(area),
                "iscrowd": int(crowd),
            }
            for a, img, c, box, area, crowd in zip(
                index.ann_ids,
                image_of,
                index.ann_categories,
                index.ann_boxes,
                index.ann_areas,
                index.ann_crowd,
                strict=True,
            )
        ]
        categories = [{"id": c, "name": name, "supercategory": sup} for c, name, sup in index.categories]
        return {"images": images, "annotations": annotations, "categories": categories}

    def make_evaluator(self) -> CocoEvaluator:
        """A fresh COCO-AP evaluator over this split's annotation file."""
        return CocoEvaluator(self.ground_truth())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ann_file}, {len(self)} images, transform={self.transform!r})"


def coco_datasets(
    root: Path,
    *,
    train_transform: DetectionTransform | None = None,
    eval_transform: DetectionTransform | None = None,
) -> tuple[CocoDetection, CocoDetection]:
    """Validate ``root`` and return ``(train2017, val2017)``.

    ``train_transform`` defaults to no augmentation (to tensor only); pass
    :func:`~cabench.data.detection_transforms.ssdlite_train_transform` for the SSD recipe. The train split leaves
    out images without a usable box; val keeps every image.
    """
    validate_coco(root)  # parses each file once; the datasets below reuse the cached index
    paths = coco_paths(root)
    train = CocoDetection(*paths["train2017"], transform=train_transform, remove_empty=True)
    val = CocoDetection(*paths["val2017"], transform=eval_transform, remove_empty=False)
    return train, val


def coco_val_files(root: Path) -> SplitFiles:
    """val2017 as ``instances_val2017.json`` lists it (the annotation file hashed whole)."""
    ann = Path(root) / "annotations" / "instances_val2017.json"
    try:
        images = json.loads(ann.read_text())["images"]
        names = [Path(root) / "val2017" / str(im["file_name"]) for im in images]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{ann}: cannot list the val2017 images ({type(e).__name__})") from None
    return SplitFiles("val2017", sorted(names), [ann], None)


def build_coco(root: Path, recipe: Any) -> tuple[Any, Any]:
    """``(train2017, val2017)`` with the recipe's transforms (the ``coco`` dataset's declared ``build``)."""
    return coco_datasets(root, **recipe_transforms(recipe))
