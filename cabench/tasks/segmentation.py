"""Semantic segmentation as an engine task: pixel cross-entropy (ignore 255), mIoU from a confusion matrix.

Batches are ``(images [N,3,H,W], masks [N,H,W])`` padded to a common size by
:func:`cabench.data.segmentation_transforms.pad_collate` (padding carries the
ignore label, so it never counts). The model returns logits at the input
resolution; evaluation takes their arg-max, accumulates one confusion matrix
per rank, sums it over ranks and reports mIoU, pixel accuracy and per-class
IoU (all percent).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cabench import outcomes
from cabench.columns import ColumnInfo
from cabench.engine import TrainSettings, autocast, eval_loader, eval_mode, gather_objects, interleave_ranks
from cabench.engine.distributed import all_reduce_sum
from cabench.tasks.base import TaskInfo, register_task

__all__ = ["IGNORE_INDEX", "SegmentationTask", "evaluate_segmenter"]

IGNORE_INDEX = 255


def _collate(samples: list[Any]) -> Any:
    from cabench.data.segmentation_transforms import pad_collate

    return pad_collate(samples)


class SegmentationTask:
    """DeepLabV3-style training and single-scale evaluation."""

    name = "segment"
    headline = ("miou",)
    collate = staticmethod(_collate)

    def loss(self, net: nn.Module, batch: Any, device: torch.device, settings: TrainSettings) -> Tensor:
        images, masks = batch
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = net(images)
        return nn.functional.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)

    def evaluate(self, model: nn.Module, ds: Dataset, settings: TrainSettings, device: torch.device) -> dict[str, Any]:
        batch = settings.eval_batch_per_process()
        return evaluate_segmenter(
            model,
            ds,
            batch,
            settings.workers,
            device,
            amp=settings.amp,
            channels_last=settings.channels_last,
            per_image=True,
        )


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module,
    ds: Dataset,
    batch_size: int,
    workers: int,
    device: torch.device | str,
    *,
    amp: str = "off",
    channels_last: bool = False,
    per_image: bool = False,
) -> dict[str, Any]:
    """``{"miou", "pixel_acc", "per_class_iou", "val_n"}`` of ``model`` on ``ds``, the same on every rank.

    With ``per_image``, also one confusion matrix per image in dataset order (:mod:`cabench.outcomes`).
    """
    from cabench.metrics.segmentation import ConfusionMatrix, per_image_confusion

    device = torch.device(device)
    matrix = ConfusionMatrix(
        ds.num_classes,  # type: ignore[attr-defined]
        ignore_index=IGNORE_INDEX,
        class_names=getattr(ds, "class_names", None),
        device=device,
    )
    n = torch.zeros((), dtype=torch.int64, device=device)
    mats: list[Tensor] = []  # this rank's per-image matrices
    with eval_mode(model) as net:
        for images, masks in eval_loader(ds, batch_size, workers, collate=_collate):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = net(images)
            pred, masks = logits.argmax(dim=1), masks.to(device, non_blocking=True)
            matrix.update(pred, masks)
            if per_image:
                mats.append(per_image_confusion(pred, masks, matrix.num_classes, IGNORE_INDEX).to("cpu", torch.int32))
            n += images.shape[0]
    matrix.all_reduce()
    all_reduce_sum(n)
    result = {**matrix.compute(), "val_n": int(n.item())}
    if per_image:
        c = matrix.num_classes
        mine = torch.cat(mats).numpy() if mats else np.zeros((0, c, c), dtype=np.int32)
        confusion = interleave_ranks(gather_objects(mine), int(n.item()))
        result[outcomes.KEY] = outcomes.Outcomes("segment", np.arange(len(confusion)), {"confusion": confusion})
    return result


register_task(
    TaskInfo(
        name="segment",
        title="semantic segmentation",
        metrics=(ColumnInfo("miou", "mIoU", "%", "accuracy", "mean IoU over classes, single scale"),),
        headline=(("miou", "mIoU"),),
        smoke_batch=4,
        eval_batch=8,
        takes_backbone=True,
        build=lambda columns: SegmentationTask(),
    )
)
