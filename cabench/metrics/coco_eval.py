"""COCO box AP through pycocotools' ``COCOeval`` (the official implementation), silenced.

:class:`CocoEvaluator` takes the ground truth as a COCO-format dict (``images`` with id/width/height,
``annotations`` with id/image_id/category_id/bbox/area/iscrowd, ``categories`` with id/name), which
:meth:`cabench.data.coco.CocoDetection.ground_truth` builds from the annotation file.

Conventions:

* model outputs are torchvision SSD eval outputs in the frame of the image given to the model (the original
  image: the eval transform does not resize), ``boxes`` xyxy -> COCO ``[x, y, w, h]`` (no +1), ``labels``
  contiguous 1..C-1 -> category id ``sorted(category ids)[label - 1]`` (the datasets' mapping);
* only images passed to :meth:`CocoEvaluator.update` are evaluated (``params.imgIds``), as in torchvision's
  reference scripts; an image recorded twice (a padded distributed sampler) keeps its first detections;
* :meth:`CocoEvaluator.compute` returns ``stats[0:6]`` as percentages: ``ap`` (IoU .50:.95), ``ap50``, ``ap75``,
  ``ap_s``, ``ap_m``, ``ap_l`` (COCOeval's 101-point interpolation). ``maxDets=100`` in these stats is COCOeval's
  cap *per image and per category*: ``evaluateImg`` keeps the 100 highest-scoring detections of one category in one
  image, so an image may contribute up to 100 x 80 detections in all; a detector that outputs more than 100
  detections per image can therefore still have all of them counted.
* A stat COCOeval leaves undefined is returned as -1.0, as COCOeval reports it: no (non-crowd) ground truth in
  that size range among the evaluated images. This holds with no detections at all too: the detections are handed
  to COCOeval as an (empty) annotation list built directly, not through ``loadRes`` (which cannot take an empty
  list), so COCOeval decides 0 (ground truth present, nothing found) versus -1 (nothing to find). Only an
  evaluator that was given no image at all returns zeros without running COCOeval.

pycocotools is imported on first use.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from cabench.metrics.detection_common import DetectionAccumulator, DetectionEvaluator, Detections

__all__ = ["STAT_NAMES", "CocoEvaluator", "DetectionEvaluator"]

STAT_NAMES: tuple[str, ...] = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")


class CocoEvaluator(DetectionAccumulator):
    """COCO box AP over the images given to :meth:`update`; see the module docstring.

    :meth:`state` is picklable: image id -> (xywh boxes, scores, category ids) numpy arrays.
    """

    outcome_kind = "coco"
    max_dets = 100  # COCOeval's largest maxDets: the six stats never look further down an image's list

    def per_image_outcomes(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The recorded detections (xywh, score, category id), each image's top :attr:`max_dets` by score in each
        category (COCOeval's cap is per image and category): all it reads for the six stats, so a subset of the
        images can be evaluated again from them."""
        kept = {}
        for image_id, (xywh, scores, categories) in self._detections.items():
            order = np.argsort(-scores, kind="stable")
            tops = [order[categories[order] == c][: self.max_dets] for c in np.unique(categories)]
            top = np.sort(np.concatenate(tops)) if tops else order  # in recorded order, as COCOeval sorts stably
            kept[image_id] = (xywh[top], scores[top], categories[top])
        full, self._detections = self._detections, kept
        try:
            return super().per_image_outcomes()
        finally:
            self._detections = full

    def __init__(self, ground_truth: Mapping[str, Any]) -> None:
        for key in ("images", "annotations", "categories"):
            if key not in ground_truth:
                raise ValueError(f"ground truth needs '{key}'")
        self._gt_dict = {key: list(ground_truth[key]) for key in ("images", "annotations", "categories")}
        self.category_ids: list[int] = sorted(int(c["id"]) for c in self._gt_dict["categories"])
        self.num_classes = len(self.category_ids) + 1
        self._category_array = np.asarray(self.category_ids, dtype=np.int64)
        self._image_ids = {int(img["id"]) for img in self._gt_dict["images"]}
        self._gt = None  # pycocotools.coco.COCO, built on first compute
        # image id -> (xywh float64 [K, 4], scores float64 [K], category ids int64 [K])
        self._detections: dict[int, Detections] = {}

    def _check_image(self, image_id: int) -> None:
        if image_id not in self._image_ids:
            raise ValueError(f"update: image_id {image_id} is not in the ground truth's images")

    def _convert(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> Detections:
        """xyxy -> COCO xywh; contiguous labels -> category ids."""
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        return xywh, scores, self._category_array[labels - 1]

    def _ground_truth(self) -> Any:
        if self._gt is None:
            from pycocotools.coco import COCO

            gt = COCO()
            gt.dataset = {
                "images": [dict(img) for img in self._gt_dict["images"]],
                "annotations": [dict(ann) for ann in self._gt_dict["annotations"]],
                "categories": [dict(cat) for cat in self._gt_dict["categories"]],
            }
            with contextlib.redirect_stdout(io.StringIO()):
                gt.createIndex()
            self._gt = gt
        return self._gt

    def compute(self) -> dict[str, float]:
        """``{"ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l"}`` in percent (see the module docstring)."""
        image_ids = sorted(self._detections)
        results: list[dict[str, Any]] = []
        for image_id in image_ids:
            xywh, scores, categories = self._detections[image_id]
            for box, score, category in zip(xywh.tolist(), scores.tolist(), categories.tolist(), strict=True):
                results.append(
                    {
                        "id": len(results) + 1,
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": box,
                        "score": score,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
        if not image_ids:
            return dict.fromkeys(STAT_NAMES, 0.0)

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        gt = self._ground_truth()
        dt = COCO()
        dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": results}
        with contextlib.redirect_stdout(io.StringIO()):
            dt.createIndex()
            coco_eval = COCOeval(gt, dt, iouType="bbox")
            coco_eval.params.imgIds = image_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        stats = [float(s) for s in coco_eval.stats[:6]]
        return {name: (100.0 * s if s >= 0 else -1.0) for name, s in zip(STAT_NAMES, stats, strict=True)}
