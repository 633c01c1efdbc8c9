"""Pascal VOC2007 detection metric: 11-point interpolated AP per class, "difficult" objects ignored. Pure numpy.

Definition (the VOC2007 devkit's, ``VOCevaldet.m``; Everingham et al., IJCV 2010, Sec. 4.2):

* per class, the detections of all evaluated images are sorted by score (descending; ties keep the order of
  images by id, then the model's order);
* each detection is compared with the ground-truth boxes of that class in its image; ``ovmax`` is the best IoU and
  ``jmax`` the first box reaching it. If ``ovmax > 0.5`` (:data:`IOU_THRESHOLD`, strict as in the devkit's
  python port; the MATLAB code uses ``>=``, which differs only at exactly 0.5): a difficult ``jmax`` makes the
  detection neither TP nor FP; an unmatched ``jmax`` makes it a TP and marks ``jmax`` matched; an already
  matched ``jmax`` makes it a FP (duplicate). Otherwise it is a FP;
* the number of positives counts only non-difficult boxes;
* ``AP = mean over t in VOC07_RECALL_THRESHOLDS of max(precision at recall >= t)`` (0 where no such point).
  The eleven thresholds are ``k * 0.1`` in float64 for ``k = 0..10``: 0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5,
  0.6000000000000001, 0.7000000000000001, 0.8, 0.9, 1.0, i.e. ``np.arange(0.0, 1.1, 0.1)``, the sequence of the
  authors' evaluator (``houqb/ssdlite-pytorch-mobilenext`` inherits ``lufficc/SSD``'s
  ``ssd/data/datasets/evaluation/voc/eval_detection_voc.py``, ``calc_detection_voc_ap``) and of py-faster-rcnn's
  ``voc_eval.voc_ap``, the code that produced the paper's Table 7. They are *not* the exact decimals ``k / 10``:
  a recall of exactly 3/10 (or 6/10, 7/10) does not reach the threshold above it, so 10 positives ranked
  TP TP TP FP TP give 41.82, not 43.64. (The MATLAB devkit's ``0:0.1:1`` also yields 0.30000000000000004; MATLAB's
  colon builds the upper half of a range from its end point, which would give 0.6 and 0.7 exactly: there, and only
  there, the Python evaluators are followed);
* mAP is the mean over classes with at least one non-difficult box among the evaluated images.

Box convention. Ground truth is kept as in the XML files: 1-based *inclusive* pixel indices, and IoU uses the
devkit's "+1" rule: ``area = (x2 - x1 + 1) * (y2 - y1 + 1)``, intersection width ``min(x2) - max(x1) + 1``.
Model outputs are in the datasets' continuous 0-based frame (pixel ``c`` covers ``[c, c + 1)``; the loader maps
an XML box to ``[xmin - 1, ymin - 1, xmax, ymax]``) and are mapped back before matching with
``(x1 + 1, y1 + 1, x2, y2)``. Under that mapping the devkit's "+1" IoU equals the plain IoU of the continuous
boxes, so ground truth fed back as predictions scores exactly 100.

Only images passed to :meth:`VocEvaluator.update` are evaluated (their ground truth alone counts), so a
subset evaluation is well defined; the full test set gives the standard number.

The protocol both detection evaluators follow, :class:`DetectionEvaluator`, and :func:`to_numpy` live in
:mod:`cabench.metrics.detection_common`; this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cabench.metrics.detection_common import DetectionAccumulator, DetectionEvaluator, Detections, to_numpy

__all__ = [
    "IOU_THRESHOLD",
    "VOC07_RECALL_THRESHOLDS",
    "DetectionEvaluator",
    "VocEvaluator",
    "VocGroundTruth",
    "devkit_iou",
    "to_numpy",
    "voc07_ap",
    "voc07_map_of_outcomes",
]

IOU_THRESHOLD = 0.5
# k * 0.1 in float64, k = 0..10 (== np.arange(0.0, 1.1, 0.1)); see the module docstring for why not k / 10.
VOC07_RECALL_THRESHOLDS: tuple[float, ...] = tuple(k * 0.1 for k in range(11))


def devkit_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU matrix ``[len(boxes), len(gt)]`` of 1-based inclusive pixel boxes, with the devkit's "+1" rule."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(boxes[:, None, 2], gt[None, :, 2]) - np.maximum(boxes[:, None, 0], gt[None, :, 0]) + 1.0
    ih = np.minimum(boxes[:, None, 3], gt[None, :, 3]) - np.maximum(boxes[:, None, 1], gt[None, :, 1]) + 1.0
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_d = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    area_g = (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
    union = area_d[:, None] + area_g[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP: mean over :data:`VOC07_RECALL_THRESHOLDS` of the largest precision at recall ``>= t``
    (0 if none)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    total = 0.0
    for t in VOC07_RECALL_THRESHOLDS:
        reached = recall >= t
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / len(VOC07_RECALL_THRESHOLDS)


class VocGroundTruth:
    """Ground truth of one image: ``boxes`` (float64 ``[N, 4]``, XML convention: 1-based inclusive), ``labels``
    (int64 ``[N]``, 1..C-1) and ``difficult`` (bool ``[N]``)."""

    __slots__ = ("boxes", "difficult", "labels")

    def __init__(self, boxes: Any, labels: Any, difficult: Any | None = None) -> None:
        self.boxes = to_numpy(boxes, np.float64).reshape(-1, 4)
        self.labels = to_numpy(labels, np.int64).reshape(-1)
        n = len(self.labels)
        self.difficult = np.zeros(n, dtype=bool) if difficult is None else to_numpy(difficult, bool).reshape(-1)
        if len(self.boxes) != n or len(self.difficult) != n:
            raise ValueError(f"ground truth: {len(self.boxes)} boxes, {n} labels, {len(self.difficult)} flags")


class VocEvaluator(DetectionAccumulator):
    """VOC2007 11-point mAP over the images given to :meth:`update`; see the module docstring.

    Args:
        class_names: index 0 is the background, so ``class_names[label]`` names a label.
        ground_truth: image id -> :class:`VocGroundTruth` (or a ``(boxes, labels, difficult)`` tuple), boxes in
            the XML convention. Difficulty is read from here, never from the outputs or targets.
    """

    outcome_kind = "voc"

    def __init__(self, class_names: Sequence[str], ground_truth: Mapping[int, VocGroundTruth | tuple]) -> None:
        if len(class_names) < 2:
            raise ValueError("class_names needs the background and at least one class")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.ground_truth: dict[int, VocGroundTruth] = {
            int(k): v if isinstance(v, VocGroundTruth) else VocGroundTruth(*v) for k, v in ground_truth.items()
        }
        for image_id, gt in self.ground_truth.items():
            if gt.labels.size and (gt.labels.min() < 1 or gt.labels.max() >= self.num_classes):
                raise ValueError(f"ground truth of image {image_id}: labels outside 1..{self.num_classes - 1}")
        # image id -> (boxes in the XML convention float64 [K, 4], scores float64 [K], labels int64 [K])
        self._detections: dict[int, Detections] = {}

    def _check_image(self, image_id: int) -> None:
        if image_id not in self.ground_truth:
            raise ValueError(f"update: image_id {image_id} is not in the evaluator's ground truth")

    def _convert(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> Detections:
        """Continuous-frame boxes -> the XML convention (``x1 + 1, y1 + 1, x2, y2``)."""
        return boxes + np.array([1.0, 1.0, 0.0, 0.0]), scores, labels

    def _match(self, image_id: int, label: int) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n_positives, scores, outcome)`` of one class in one image, detections by descending score;
        outcome 1 = TP, 0 = FP, -1 = ignored (difficult)."""
        gt = self.ground_truth[image_id]
        in_class = gt.labels == label
        gt_boxes, gt_difficult = gt.boxes[in_class], gt.difficult[in_class]
        n_pos = int((~gt_difficult).sum())
        boxes, det_scores, det_labels = self._detections[image_id]
        mine = det_labels == label
        boxes, det_scores = boxes[mine], det_scores[mine]
        order = np.argsort(-det_scores, kind="stable")
        boxes, det_scores = boxes[order], det_scores[order]
        outcome = np.zeros(len(det_scores), dtype=np.int8)
        if len(gt_boxes) and len(boxes):
            iou = devkit_iou(boxes, gt_boxes)
            best = iou.argmax(axis=1)
            best_iou = iou[np.arange(len(best)), best]
            matched = np.zeros(len(gt_boxes), dtype=bool)
            for d in np.flatnonzero(best_iou > IOU_THRESHOLD):
                j = best[d]
                if gt_difficult[j]:
                    outcome[d] = -1
                elif not matched[j]:
                    outcome[d] = 1
                    matched[j] = True
        return n_pos, det_scores, outcome

    def _class_records(self, label: int, image_ids: list[int]) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n_positives, scores, outcome)`` of one class over ``image_ids``, by descending score."""
        n_pos = 0
        scores: list[np.ndarray] = []
        outcomes: list[np.ndarray] = []
        for image_id in image_ids:
            pos, det_scores, outcome = self._match(image_id, label)
            n_pos += pos
            if len(det_scores):
                scores.append(det_scores)
                outcomes.append(outcome)
        if not scores:
            return n_pos, np.zeros(0), np.zeros(0, dtype=np.int8)
        all_scores, all_outcomes = np.concatenate(scores), np.concatenate(outcomes)
        order = np.argsort(-all_scores, kind="stable")
        return n_pos, all_scores[order], all_outcomes[order]

    def compute(self) -> dict[str, Any]:
        """``{"map": percent, "per_class_ap": {name: percent}}`` over classes with a non-difficult box among the
        evaluated images (classes without one have no AP and are left out)."""
        image_ids = sorted(self._detections)
        per_class: dict[str, float] = {}
        for label in range(1, self.num_classes):
            n_pos, _, outcome = self._class_records(label, image_ids)
            if n_pos == 0:
                continue
            counted = outcome[outcome >= 0]
            tp = np.cumsum(counted == 1)
            fp = np.cumsum(counted == 0)
            recall = tp / n_pos
            precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            per_class[self.class_names[label]] = 100.0 * voc07_ap(recall, precision)
        mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
        return {"map": mean, "per_class_ap": per_class}

    def per_image_outcomes(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(image_ids, arrays)``: every detection's image (index into ``image_ids``), label and match (1 TP,
        0 FP, -1 ignored), grouped by label and within a label in :meth:`compute`'s ranking; and each image's
        count of non-difficult boxes per class (``npos`` ``[N, C]``). Scores are not kept: the ranking is.
        :func:`voc07_map_of_outcomes` recomputes the mAP from them."""
        image_ids = sorted(self._detections)
        npos = np.zeros((len(image_ids), self.num_classes), dtype=np.int32)
        det_image: list[np.ndarray] = []
        det_label: list[np.ndarray] = []
        det_outcome: list[np.ndarray] = []
        for label in range(1, self.num_classes):
            images, scores, outcomes = [], [], []
            for i, image_id in enumerate(image_ids):
                pos, det_scores, outcome = self._match(image_id, label)
                npos[i, label] = pos
                images.append(np.full(len(det_scores), i, np.int32))
                scores.append(det_scores)
                outcomes.append(outcome)
            if not image_ids:
                continue
            order = np.argsort(-np.concatenate(scores), kind="stable")
            det_image.append(np.concatenate(images)[order])
            det_outcome.append(np.concatenate(outcomes)[order])
            det_label.append(np.full(len(order), label, np.int16))
        image_type = np.min_scalar_type(max(len(image_ids) - 1, 0))  # uint16 for VOC07 test's 4,952 images
        arrays = {
            "det_image": (np.concatenate(det_image) if det_image else np.zeros(0)).astype(image_type),
            "det_label": (np.concatenate(det_label) if det_label else np.zeros(0)).astype(np.int8),
            "det_outcome": np.concatenate(det_outcome) if det_outcome else np.zeros(0, np.int8),
            "npos": npos,
        }
        return np.asarray(image_ids, dtype=np.int64), arrays


def voc07_map_of_outcomes(arrays: Mapping[str, np.ndarray], weights: np.ndarray | None = None) -> float:
    """VOC07 mAP (%) of :meth:`VocEvaluator.per_image_outcomes`, each image counted ``weights[i]`` times.

    With unit weights this is :meth:`VocEvaluator.compute`'s mAP; a bootstrap resample passes how often it drew
    each image (its detections and its positives count that many times; duplicates of a detection are adjacent
    in the ranking, which leaves the 11-point AP as if each had been ranked separately)."""
    npos = arrays["npos"]
    w = np.ones(len(npos)) if weights is None else np.asarray(weights, dtype=np.float64)
    det_image, det_label, det_outcome = arrays["det_image"], arrays["det_label"], arrays["det_outcome"]
    aps = []
    for label in range(1, npos.shape[1]):
        n_pos = float(w @ npos[:, label])
        if n_pos == 0:
            continue
        mine = det_label == label  # already in the ranking order
        dw, outcome = w[det_image[mine]], det_outcome[mine]
        keep = (outcome >= 0) & (dw > 0)
        dw, outcome = dw[keep], outcome[keep]
        tp = np.cumsum(dw * (outcome == 1))
        fp = np.cumsum(dw * (outcome == 0))
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(100.0 * voc07_ap(tp / n_pos, precision))
    return float(np.mean(aps)) if aps else 0.0
