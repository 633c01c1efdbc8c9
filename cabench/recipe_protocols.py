"""The task protocols a recipe carries as data: detection (loss, default boxes, post-processing) and segmentation
(upsampling and evaluation).

Each block is a frozen pydantic model that forbids unknown keys; a key that does not apply to the chosen variant
(``neg_pos_ratio`` with a focal loss, ``window`` without sliding-window evaluation, ...) is refused rather than
ignored. What consumes each field:

* :class:`DetectionProtocol`: :func:`cabench.models.ssd_protocol.configure_ssd` (loss, anchors, post-processing);
* :class:`SegmentationProtocol`: :func:`cabench.models.segmentation.set_align_corners` (the model's upsampling)
  and :func:`cabench.tasks._impl.segmentation.evaluate_segmenter` (flip, whole image or sliding window).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AnchorSpec", "DetectionProtocol", "SegmentationProtocol"]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnchorSpec(_Block):
    """SSD default boxes on the detector's feature maps (one entry per map).

    Two ways to give the box sizes, exactly one of them:

    * ``min_sizes`` and ``max_sizes`` in pixels of the ``train_size`` input (the SSD reference code and the authors'
      ``MODEL.PRIORS``): on map ``k`` the boxes are a square of side ``min_sizes[k]``, a square of side
      ``sqrt(min_sizes[k] * max_sizes[k])`` and, for each ratio ``r``, ``min_sizes[k] * (sqrt(r), 1 / sqrt(r))``
      and its transpose;
    * ``scale_range`` ``[min_ratio, max_ratio]``: torchvision's ``DefaultBoxGenerator`` scales, linear over the maps.

    ``steps`` (pixels between box centres; None: the map's own grid) and ``clip`` (clip box width and height to
    the image) are passed to torchvision's box generator.
    """

    aspect_ratios: list[list[int]] = Field(min_length=1)
    min_sizes: list[float] | None = None
    max_sizes: list[float] | None = None
    scale_range: tuple[float, float] | None = None
    steps: list[float] | None = None
    clip: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> AnchorSpec:
        maps = len(self.aspect_ratios)
        sized = self.min_sizes is not None or self.max_sizes is not None
        if sized == (self.scale_range is not None):
            raise ValueError("give either min_sizes and max_sizes, or scale_range")
        if sized and (self.min_sizes is None or self.max_sizes is None):
            raise ValueError("min_sizes and max_sizes go together")
        for name in ("min_sizes", "max_sizes", "steps"):
            values = getattr(self, name)
            if values is not None and (len(values) != maps or min(values) <= 0):
                raise ValueError(f"{name} needs {maps} positive values, one per feature map")
        if self.scale_range is not None and not 0 < self.scale_range[0] < self.scale_range[1]:
            raise ValueError("scale_range must be [min_ratio, max_ratio] with 0 < min_ratio < max_ratio")
        return self

    def boxes_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]


class DetectionProtocol(_Block):
    """How an SSD is trained and what its inference keeps.

    ``loss: multibox``: softmax cross-entropy with hard-negative mining at ``neg_pos_ratio`` negatives per positive,
    plus smooth-L1 box regression (Liu et al., SSD). ``loss: focal``: sigmoid focal loss (Lin et al., RetinaNet) over
    every default box with ``focal_alpha``, ``focal_gamma``, weighted by ``cls_loss_weight``, normalised by the
    number of positives, and the classification predictors initialised to the prior probability ``prior_prob``.
    Post-processing: per class, scores above ``score_threshold``; the best ``candidates_per_class`` (None: all);
    NMS per class at ``nms_iou``; the best ``detections_per_image`` over all classes.
    """

    loss: Literal["focal", "multibox"]
    neg_pos_ratio: float | None = Field(default=None, gt=0)
    focal_alpha: float | None = Field(default=None, ge=0, le=1)
    focal_gamma: float | None = Field(default=None, ge=0)
    prior_prob: float | None = Field(default=None, gt=0, lt=1)
    cls_loss_weight: float = Field(default=1.0, gt=0)
    anchors: AnchorSpec
    score_threshold: float = Field(ge=0, lt=1)
    nms_iou: float = Field(gt=0, le=1)
    detections_per_image: int = Field(gt=0)
    candidates_per_class: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> DetectionProtocol:
        focal = ("focal_alpha", "focal_gamma", "prior_prob")
        if self.loss == "multibox":
            if self.neg_pos_ratio is None:
                raise ValueError("loss 'multibox' needs neg_pos_ratio")
            given = [name for name in focal if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to loss 'focal'")
        else:
            missing = [name for name in focal if getattr(self, name) is None]
            if missing:
                raise ValueError(f"loss 'focal' needs {', '.join(missing)}")
            if self.neg_pos_ratio is not None:
                raise ValueError("neg_pos_ratio only applies to loss 'multibox'")
        return self


class SegmentationProtocol(_Block):
    """Upsampling and evaluation of a segmenter.

    ``align_corners``: of the bilinear upsampling of the logits to the input size (training and evaluation).
    ``eval_flip``: average the softmax of the image and of its horizontal flip (flipped back).
    ``eval_mode``: ``whole`` runs each (padded) evaluation image at once; ``sliding`` pads it to at least
    ``window`` x ``window`` with the mean colour, runs ``window``-sized crops ``stride`` pixels apart (the last one
    flush with the border) and averages the softmax where crops overlap.
    """

    align_corners: bool = False
    eval_flip: bool = False
    eval_mode: Literal["whole", "sliding"] = "whole"
    window: int | None = Field(default=None, gt=0)
    stride: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SegmentationProtocol:
        sliding = self.eval_mode == "sliding"
        if sliding and (self.window is None or self.stride is None):
            raise ValueError("eval_mode 'sliding' needs window and stride")
        if not sliding and (self.window is not None or self.stride is not None):
            raise ValueError("window and stride only apply to eval_mode 'sliding'")
        if sliding and self.stride > self.window:  # type: ignore[operator]
            raise ValueError("stride must not exceed window (pixels would be skipped)")
        return self
