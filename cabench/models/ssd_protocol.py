"""An SSD whose loss, default boxes and post-processing come from a recipe's detection protocol.

:class:`ProtocolSSD` is torchvision's :class:`~torchvision.models.detection.SSD` with two losses:

* ``multibox`` (torchvision's own ``compute_loss``): smooth-L1 box regression plus softmax cross-entropy with hard
  negative mining, ``neg_pos_ratio`` negatives per positive (torchvision's ``positive_fraction`` is
  ``1 / (1 + neg_pos_ratio)``), both summed and divided by the number of positive boxes;
* ``focal``: the same regression term plus ``cls_loss_weight`` x :func:`torchvision.ops.sigmoid_focal_loss`
  (``focal_alpha``, ``focal_gamma``, summed over every default box and class) divided by the number of positives.
  The head keeps its ``num_classes`` outputs (counts unchanged): output 0, the softmax background, becomes a
  column trained towards 0 everywhere and ignored at inference; a foreground label ``c`` is output ``c``. This is
  the authors' focal loss up to a permutation of columns: their ``FocalLoss`` (``houqb/ssdlite-pytorch-mobilenext``
  ``ssd/modeling/box_head/loss.py``) one-hot encodes labels over ``num_classes + 1`` columns and drops the
  background one, which leaves their last output always negative. Inference takes the sigmoid instead of the
  softmax.

Post-processing (both losses): decode, clip to the image, per class keep scores ``> score_threshold``, the best
``candidates_per_class`` of them (None: all, as the authors' ``PostProcessor``), NMS per class at ``nms_iou``, then
the best ``detections_per_image``.

:func:`configure_ssd` applies a :class:`~cabench.recipe_protocols.DetectionProtocol` to a built detector: default
boxes (:class:`SizedDefaultBoxes` for min/max sizes in pixels, torchvision's generator for a scale range), the
loss, the post-processing and, for the focal loss, the classification head's initialisation (weights N(0, 0.01),
biases ``-log((1 - prior_prob) / prior_prob)``, the authors' ``BoxPredictor.initialize_prior``). The protocol must
give as many boxes per location on each map as the head predicts: the head, and so every parameter count, is the
registered architecture's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.ops import boxes as box_ops
from torchvision.ops import sigmoid_focal_loss

__all__ = ["ProtocolSSD", "SizedDefaultBoxes", "anchor_generator", "configure_ssd", "describe_ssd"]


class SizedDefaultBoxes(DefaultBoxGenerator):
    """torchvision's default-box generator with the SSD reference code's sizes: on map ``k`` a square of side
    ``min_sizes[k]``, one of side ``sqrt(min_sizes[k] * max_sizes[k])`` and, per aspect ratio ``r``, the boxes
    ``min_sizes[k] * (sqrt(r), 1 / sqrt(r))`` and their transposes; sizes in pixels of an ``image_size`` input."""

    def __init__(
        self,
        aspect_ratios: list[list[int]],
        min_sizes: list[float],
        max_sizes: list[float],
        image_size: int,
        steps: list[float] | None = None,
        clip: bool = True,
    ) -> None:
        self.min_sizes, self.max_sizes, self.image_size = list(min_sizes), list(max_sizes), image_size
        scales = [s / image_size for s in min_sizes] + [max_sizes[-1] / image_size]
        super().__init__(aspect_ratios, scales=scales, steps=steps, clip=clip)  # type: ignore[arg-type]

    def _generate_wh_pairs(
        self, num_outputs: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
    ) -> list[Tensor]:
        pairs = []
        for k in range(num_outputs):
            small = self.min_sizes[k] / self.image_size
            big = math.sqrt(self.min_sizes[k] * self.max_sizes[k]) / self.image_size
            wh = [[small, small], [big, big]]
            for ratio in self.aspect_ratios[k]:
                r = math.sqrt(ratio)
                wh.extend([[small * r, small / r], [small / r, small * r]])
            pairs.append(torch.as_tensor(wh, dtype=dtype, device=device))
        return pairs

    def __repr__(self) -> str:
        return (
            f"SizedDefaultBoxes(min_sizes={self.min_sizes}, max_sizes={self.max_sizes}, image_size={self.image_size}, "
            f"aspect_ratios={self.aspect_ratios}, steps={self.steps}, clip={self.clip})"
        )


def anchor_generator(spec: Any, image_size: int) -> DefaultBoxGenerator:
    """The default-box generator of an :class:`~cabench.recipe_protocols.AnchorSpec` at ``image_size``."""
    ratios = [list(r) for r in spec.aspect_ratios]
    steps = list(spec.steps) if spec.steps is not None else None
    if spec.min_sizes is not None:
        return SizedDefaultBoxes(ratios, spec.min_sizes, spec.max_sizes, image_size, steps, spec.clip)
    low, high = spec.scale_range
    return DefaultBoxGenerator(ratios, min_ratio=low, max_ratio=high, steps=steps, clip=spec.clip)  # type: ignore[arg-type]


class ProtocolSSD(SSD):
    """torchvision's SSD with a choice of loss (``multibox`` or ``focal``) and an optional per-class candidate cap;
    see the module docstring. Defaults are torchvision's (``multibox``, 3:1 negatives)."""

    loss_kind: str = "multibox"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cls_loss_weight: float = 1.0
    candidates_per_class: int | None = None

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        if self.loss_kind == "multibox":
            losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
            if self.cls_loss_weight != 1.0:
                losses["classification"] = self.cls_loss_weight * losses["classification"]
            return losses
        regression, logits = head_outputs["bbox_regression"], head_outputs["cls_logits"]
        box_losses, one_hot, positives = [], [], 0
        for target, reg, image_anchors, matched in zip(targets, regression, anchors, matched_idxs, strict=True):
            fg = torch.where(matched >= 0)[0]
            gt = matched[fg]
            positives += fg.numel()
            encoded = self.box_coder.encode_single(target["boxes"][gt], image_anchors[fg])
            box_losses.append(F.smooth_l1_loss(reg[fg], encoded, reduction="sum"))
            labels = torch.zeros(logits.shape[1], dtype=torch.int64, device=logits.device)
            labels[fg] = target["labels"][gt]
            hot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
            hot[:, 0] = 0  # the background column is trained towards 0 everywhere
            one_hot.append(hot)
        n = max(1, positives)
        focal = sigmoid_focal_loss(
            logits, torch.stack(one_hot), alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        )
        return {
            "bbox_regression": torch.stack(box_losses).sum() / n,
            "classification": self.cls_loss_weight * focal / n,
        }

    def postprocess_detections(
        self, head_outputs: dict[str, Tensor], image_anchors: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        logits = head_outputs["cls_logits"]
        all_scores = logits.sigmoid() if self.loss_kind == "focal" else F.softmax(logits, dim=-1)
        detections = []
        for regression, scores, anchors, shape in zip(
            head_outputs["bbox_regression"], all_scores, image_anchors, image_shapes, strict=True
        ):
            boxes = box_ops.clip_boxes_to_image(self.box_coder.decode_single(regression, anchors), shape)
            keep_boxes, keep_scores, keep_labels = [], [], []
            for label in range(1, scores.shape[-1]):
                score = scores[:, label]
                idx = torch.where(score > self.score_thresh)[0]
                if self.candidates_per_class is not None and idx.numel() > self.candidates_per_class:
                    idx = idx[score[idx].topk(self.candidates_per_class).indices]
                keep_boxes.append(boxes[idx])
                keep_scores.append(score[idx])
                keep_labels.append(torch.full_like(idx, label))
            image_boxes, image_scores = torch.cat(keep_boxes), torch.cat(keep_scores)
            image_labels = torch.cat(keep_labels)
            keep = box_ops.batched_nms(image_boxes, image_scores, image_labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            detections.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": image_labels[keep]})
        return detections


def _init_focal_prior(model: SSD, prior_prob: float) -> None:
    bias = -math.log((1.0 - prior_prob) / prior_prob)
    for module in model.head.classification_head.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                nn.init.constant_(module.bias, bias)


def configure_ssd(model: nn.Module, protocol: Any, image_size: int) -> ProtocolSSD:
    """Apply a detection protocol to a built :class:`ProtocolSSD` (in place; returned for convenience).

    Raises ``ValueError`` (one line) when the protocol's boxes per location differ from what the head predicts
    (a different head would change the parameter counts) or its maps from the backbone's.
    """
    if not isinstance(model, ProtocolSSD):
        raise ValueError(f"a detection protocol needs a cabench SSD, not {type(model).__name__}")
    generator = anchor_generator(protocol.anchors, image_size)
    want, have = generator.num_anchors_per_location(), model.anchor_generator.num_anchors_per_location()
    if want != have:
        raise ValueError(
            f"detection.anchors: {want} boxes per location, but the detector's head predicts {have} "
            "(aspect_ratios must keep the head, and so the parameter counts, of the registered architecture)"
        )
    model.anchor_generator = generator
    model.loss_kind = protocol.loss
    model.cls_loss_weight = protocol.cls_loss_weight
    if protocol.loss == "multibox":
        model.neg_to_pos_ratio = float(protocol.neg_pos_ratio)
    else:
        model.focal_alpha, model.focal_gamma = float(protocol.focal_alpha), float(protocol.focal_gamma)
        _init_focal_prior(model, protocol.prior_prob)
    model.score_thresh = protocol.score_threshold
    model.nms_thresh = protocol.nms_iou
    model.detections_per_img = protocol.detections_per_image
    model.candidates_per_class = protocol.candidates_per_class
    return model


def describe_ssd(model: ProtocolSSD) -> dict[str, Any]:
    """What the detector will do, read from it: loss, default boxes, post-processing, classifier bias init."""
    loss: dict[str, Any] = {"kind": model.loss_kind, "cls_loss_weight": model.cls_loss_weight}
    if model.loss_kind == "multibox":
        loss["neg_pos_ratio"] = model.neg_to_pos_ratio
    else:
        loss |= {"alpha": model.focal_alpha, "gamma": model.focal_gamma, "fn": "torchvision.ops.sigmoid_focal_loss"}
    generator = model.anchor_generator
    size = model.transform.min_size[0]
    biases = [m.bias for m in model.head.classification_head.modules() if isinstance(m, nn.Conv2d)]
    bias = [round(float(b.detach().mean()), 6) for b in biases if b is not None]
    return {
        "loss": loss,
        "anchors": {
            "generator": repr(generator),
            "boxes_per_location": generator.num_anchors_per_location(),
            "box_wh_pixels": _box_sizes(generator, size),
            "centre_step_pixels": generator.steps,
        },
        "postprocess": {
            "score": "sigmoid" if model.loss_kind == "focal" else "softmax",
            "score_threshold": model.score_thresh,
            "candidates_per_class": model.candidates_per_class,
            "nms_iou": model.nms_thresh,
            "detections_per_image": model.detections_per_img,
        },
        "cls_head_bias_mean": bias,
    }


def _box_sizes(generator: DefaultBoxGenerator, size: int) -> list[list[list[float]]]:
    """Width and height in pixels of each map's default boxes at one location, clipped as the generator clips."""
    out = []
    for pairs in generator._wh_pairs:
        wh = pairs.clamp(0, 1) if generator.clip else pairs
        out.append([[round(v * size, 3) for v in row] for row in wh.tolist()])
    return out
