"""What the detection evaluators share: the :class:`DetectionEvaluator` protocol, :func:`to_numpy`, and
:class:`DetectionAccumulator`, the ``update``/``state``/``merge`` half of
:class:`~cabench.metrics.voc_eval.VocEvaluator` and :class:`~cabench.metrics.coco_eval.CocoEvaluator`."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["DetectionAccumulator", "DetectionEvaluator", "Detections", "to_numpy"]

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


@runtime_checkable
class DetectionEvaluator(Protocol):
    """Accumulates detections over (a shard of) an evaluation set; merges shards; computes the metric."""

    def update(self, targets: list[dict], outputs: list[dict]) -> None: ...

    def state(self) -> Any: ...

    def merge(self, states: list[Any]) -> None: ...

    def compute(self) -> dict[str, Any]: ...


def to_numpy(value: Any, dtype: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array of ``dtype``."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


class DetectionAccumulator:
    """The detections recorded so far: image id -> ``(boxes float64 [K, 4], scores float64 [K], labels [K])``
    as :meth:`_convert` stores them. An image recorded twice (a padded distributed sampler) keeps its first
    detections, in :meth:`update` as in :meth:`merge`.

    A subclass sets ``num_classes`` (labels lie in ``1..num_classes-1``) and ``_detections = {}``, and implements
    :meth:`_check_image` and :meth:`_convert`.
    """

    num_classes: int
    _detections: dict[int, Detections]
    outcome_kind = "detections"  # names the layout of per_image_outcomes() (see cabench.outcomes)

    def _check_image(self, image_id: int) -> None:
        """``ValueError`` (message starting ``update:``) if ``image_id`` is not one the evaluator knows."""
        raise NotImplementedError

    def _convert(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> Detections:
        """One image's checked outputs (boxes xyxy ``[K, 4]``, scores ``[K]``, labels ``[K]``) as stored."""
        raise NotImplementedError

    def update(self, targets: list[dict], outputs: list[dict]) -> None:
        """Record one batch: ``outputs[i]`` (boxes xyxy in the frame of the image given to the model, scores,
        labels) for the image ``targets[i]["image_id"]``. An image already recorded keeps its first detections."""
        if len(targets) != len(outputs):
            raise ValueError(f"update: {len(targets)} targets but {len(outputs)} outputs")
        for target, output in zip(targets, outputs, strict=True):
            image_id = int(target["image_id"])
            self._check_image(image_id)
            if image_id in self._detections:
                continue
            boxes = to_numpy(output["boxes"], np.float64).reshape(-1, 4)
            scores = to_numpy(output["scores"], np.float64).reshape(-1)
            labels = to_numpy(output["labels"], np.int64).reshape(-1)
            if not len(boxes) == len(scores) == len(labels):
                raise ValueError(
                    f"update: image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
                )
            if labels.size and (labels.min() < 1 or labels.max() >= self.num_classes):
                raise ValueError(f"update: image {image_id}: labels must lie in 1..{self.num_classes - 1}")
            self._detections[image_id] = self._convert(boxes, scores, labels)

    def state(self) -> dict[int, Detections]:
        """Picklable: image id -> (boxes, scores, labels) numpy arrays, as stored."""
        return dict(self._detections)

    def merge(self, states: list[Any]) -> None:
        """Replace the state by the union of ``states`` (own included); an image seen twice (a padded
        distributed sampler) keeps its first occurrence."""
        merged: dict[int, Detections] = {}
        for state in states:
            for image_id, dets in state.items():
                merged.setdefault(int(image_id), dets)
        self._detections = merged

    def per_image_outcomes(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(image_ids, arrays)``: the recorded detections as stored, flattened (``det_image`` indexes
        ``image_ids``; boxes and scores as float32): enough to evaluate any subset of the images again."""
        image_ids = sorted(self._detections)
        parts = [self._detections[i] for i in image_ids]
        counts = [len(p[1]) for p in parts]
        det_image = np.repeat(np.arange(len(image_ids), dtype=np.int32), counts)
        boxes = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 4))
        scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        labels = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
        arrays = {
            "det_image": det_image,
            "det_box": boxes.astype(np.float32),
            "det_score": scores.astype(np.float32),
            "det_label": labels.astype(np.int32),
        }
        return np.asarray(image_ids, dtype=np.int64), arrays
