"""Mean intersection-over-union from a confusion matrix, the metric of Tables 8-9 (VOC 2012 val, Cityscapes val).

The matrix is ``[C, C]`` int64, rows = ground truth, columns = prediction, accumulated over the whole split
(the standard "dataset-level" mIoU of the VOC and Cityscapes devkits, not a mean of per-image IoUs). For class c,

    IoU_c = M[c, c] / (sum_j M[c, j] + sum_i M[i, c] - M[c, c])     (TP / (TP + FN + FP))

A class with neither ground-truth nor predicted pixels has no IoU (``None``) and is left out of the mean; a class
with ground truth but no correct pixel counts as 0. Pixels whose target is ``ignore_index`` (255: VOC borders,
Cityscapes void classes, padding) are skipped. Percentages are returned (0-100).

Under DDP each rank accumulates its own shard, then ``all_reduce()`` sums the matrices (integer counts: the
result does not depend on how the data was split). Keep the matrix on the device the process group reduces
(CUDA for NCCL, CPU for gloo) by passing ``device``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["ConfusionMatrix", "miou_of_matrix", "per_image_confusion"]


class ConfusionMatrix:
    """Accumulates a ``[C, C]`` confusion matrix (rows ground truth, columns prediction) and computes mIoU."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: list[str] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"ConfusionMatrix: num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ConfusionMatrix: ignore_index {ignore_index} is a class index (0..{num_classes - 1})")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"ConfusionMatrix: {len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix.zero_()

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count predicted vs ground-truth class indices (integer tensors of the same shape, e.g. ``[N, H, W]``).

        Pixels whose target is ``ignore_index`` are skipped. Any other target, and any prediction, outside
        ``0..C-1`` is an error (``ValueError``): it means a wrong ``num_classes`` or unmapped labels.
        """
        if pred.shape != target.shape:
            raise ValueError(f"ConfusionMatrix.update: pred {list(pred.shape)} and target {list(target.shape)} differ")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("ConfusionMatrix.update: pred and target must be integer class indices (argmax logits)")
        n = self.num_classes
        pred = pred.reshape(-1).to(torch.int64)
        target = target.reshape(-1).to(device=pred.device, dtype=torch.int64)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() == 0:
            return
        lo_t, hi_t, lo_p, hi_p = torch.stack([target.min(), target.max(), pred.min(), pred.max()]).tolist()
        if lo_t < 0 or hi_t >= n:
            raise ValueError(
                f"ConfusionMatrix.update: target values {lo_t}..{hi_t} outside 0..{n - 1} (ignore {self.ignore_index})"
            )
        if lo_p < 0 or hi_p >= n:
            raise ValueError(f"ConfusionMatrix.update: predicted values {lo_p}..{hi_p} outside 0..{n - 1}")
        counts = torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        self.matrix += counts.to(self.matrix.device)

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks when ``torch.distributed`` is initialized; a no-op otherwise."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def iou(self) -> list[float | None]:
        """Per-class IoU as fractions (0-1), ``None`` for a class with no ground-truth and no predicted pixel."""
        m = self.matrix.detach().to("cpu", torch.float64)
        tp = m.diagonal()
        union = m.sum(dim=1) + m.sum(dim=0) - tp
        return [None if u == 0 else float(t / u) for t, u in zip(tp.tolist(), union.tolist(), strict=True)]

    def compute(self) -> dict[str, Any]:
        """``{"miou": %, "pixel_acc": %, "per_class_iou": {name: % or None}}``.

        ``miou`` averages the IoUs of the classes present in ground truth or prediction; ``pixel_acc`` is the
        fraction of counted pixels predicted right. Both are NaN when no pixel was counted.
        """
        ious = self.iou()
        present = [v for v in ious if v is not None]
        miou = 100.0 * sum(present) / len(present) if present else math.nan
        total = int(self.matrix.sum())
        correct = int(self.matrix.diagonal().sum())
        pixel_acc = 100.0 * correct / total if total else math.nan
        per_class = {name: (None if v is None else 100.0 * v) for name, v in zip(self.class_names, ious, strict=True)}
        return {"miou": miou, "pixel_acc": pixel_acc, "per_class_iou": per_class}


def per_image_confusion(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """One ``[C, C]`` confusion matrix per image of a batch (``[N, H, W]`` class indices): int64 ``[N, C, C]``.

    Counts exactly what :meth:`ConfusionMatrix.update` counts for that image (call it too: it checks the ranges).
    """
    n, c = pred.shape[0], num_classes
    pred = pred.reshape(n, -1).to(torch.int64)
    target = target.reshape(n, -1).to(device=pred.device, dtype=torch.int64)
    image = torch.arange(n, device=pred.device).unsqueeze(1).expand_as(target)
    keep = target != ignore_index
    index = (image[keep] * c + target[keep]) * c + pred[keep]
    return torch.bincount(index, minlength=n * c * c).reshape(n, c, c)


def miou_of_matrix(matrix: Any) -> float:
    """mIoU (%) of a summed ``[C, C]`` confusion matrix, exactly as :meth:`ConfusionMatrix.compute` defines it."""
    m = torch.as_tensor(matrix).round().to(torch.int64)
    cm = ConfusionMatrix(m.shape[0], ignore_index=max(255, m.shape[0]))
    cm.matrix = m
    return float(cm.compute()["miou"])
