"""Per-image outcomes of an evaluation: what a claim's bootstrap resamples when a row has one run.

Every evaluation writes ``per_image.npz`` into its run directory (compressed numpy arrays), next to
``metrics.json``. The arrays are enough to recompute the headline metric on any multiset of the
evaluated images, which is what a paired bootstrap over validation images needs. ``kind`` names the
layout of the arrays; the task whose evaluator writes a kind declares it, with the statistic that
recomputes each of its metrics (:attr:`cabench.tasks.base.TaskInfo.outcomes`), and its module documents
the layout. The statistics here are the building blocks those declarations use:

* :func:`accuracy_of`: a boolean array per image (``correct1``/``correct5`` are stored bit-packed);
* :func:`miou_statistic`: ``confusion`` (int32 ``[N, C, C]``, rows ground truth, columns prediction, one
  matrix per image): mIoU of a resample is the mIoU of the weighted sum of its images' matrices;
* :func:`voc07_map_statistic`: every detection's image, label, score and VOC07 match (1 TP, 0 FP, -1
  difficult/ignored) in the evaluator's order, and each image's count of non-difficult boxes per class:
  mAP of a resample weights each detection and each positive by how often its image was drawn.

A kind may declare no statistic for a metric (raw COCO detections: no bootstrap statistic for COCO AP;
claims on it report the difference only).

``image_ids`` names the images (dataset index or the dataset's image id), so two runs are paired only
when they were evaluated on the same images in the same order.

An evaluator returns its outcomes in its metrics under :data:`KEY`; :func:`split` takes them out
before the metrics are logged or written.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cabench.metrics.voc_eval import voc07_map_of_outcomes
from cabench.store import atomic_write_bytes

__all__ = [
    "FILE_NAME",
    "KEY",
    "Outcomes",
    "Statistic",
    "accuracy_of",
    "load",
    "miou_statistic",
    "split",
    "voc07_map_statistic",
]

FILE_NAME = "per_image.npz"
KEY = "per_image"
_PACKED = ("correct1", "correct5")


@dataclass
class Outcomes:
    """One evaluation's per-image outcomes: ``kind`` names the layout of ``arrays`` (see the module docstring)."""

    kind: str
    image_ids: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.image_ids)

    def to_bytes(self) -> bytes:
        packed = {k: np.packbits(v.astype(bool)) if k in _PACKED else v for k, v in self.arrays.items()}
        ids = self.image_ids
        # dataset indices 0..N-1 (classification, segmentation) are stored as their count
        plain = np.array_equal(ids, np.arange(len(ids)))
        named = {"n_images": np.array(len(ids))} if plain else {"image_ids": ids}
        buf = io.BytesIO()
        np.savez_compressed(buf, kind=np.array(self.kind), **named, **packed)
        return buf.getvalue()

    def save(self, directory: Path | str) -> Path:
        """Write ``per_image.npz`` into ``directory`` (atomically) and return its path."""
        path = Path(directory) / FILE_NAME
        atomic_write_bytes(path, self.to_bytes())
        return path


def load(directory: Path | str) -> Outcomes | None:
    """The outcomes stored in a run directory, or None if it has none."""
    path = Path(directory) / FILE_NAME
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        image_ids = data["image_ids"] if "image_ids" in data.files else np.arange(int(data["n_images"]))
        arrays = {}
        for key in data.files:
            if key in ("kind", "image_ids", "n_images"):
                continue
            value = data[key]
            arrays[key] = np.unpackbits(value, count=len(image_ids)).astype(bool) if key in _PACKED else value
        return Outcomes(str(data["kind"]), image_ids, arrays)


def split(metrics: dict[str, Any]) -> tuple[dict[str, Any], Outcomes | None]:
    """``metrics`` without its per-image outcomes, and the outcomes (None if the evaluator gave none)."""
    rest = {k: v for k, v in metrics.items() if k != KEY}
    return rest, metrics.get(KEY)


# --- the headline metric of a resample -----------------------------------------------------------------
# Each takes the outcomes and the weight of every image (how often a resample drew it) and returns the
# metric in percent, as the evaluator reports it.

Statistic = Callable[[Outcomes, np.ndarray], float]


def accuracy_of(key: str) -> Statistic:
    """Percent of the (weighted) images whose boolean ``arrays[key]`` is true."""

    def stat(o: Outcomes, w: np.ndarray) -> float:
        return 100.0 * float(np.average(o.arrays[key], weights=w))

    return stat


def miou_statistic(o: Outcomes, w: np.ndarray) -> float:
    """mIoU (%) of the weighted sum of the per-image confusion matrices ``arrays["confusion"]``."""
    from cabench.metrics.segmentation import miou_of_matrix

    return miou_of_matrix(np.tensordot(w, o.arrays["confusion"].astype(np.int64), axes=1))


def voc07_map_statistic(o: Outcomes, w: np.ndarray) -> float:
    """VOC07 11-point mAP (%) of the weighted detections and positives (see the module docstring)."""
    return voc07_map_of_outcomes(o.arrays, w)
