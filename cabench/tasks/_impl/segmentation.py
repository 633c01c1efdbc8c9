"""Semantic segmentation as an engine task: pixel cross-entropy (ignore 255), mIoU from a confusion matrix.

Batches are ``(images [N,3,H,W], masks [N,H,W])`` padded to a common size by
:func:`cabench.data.segmentation_transforms.pad_collate` (padding carries the
ignore label, so it never counts). The model returns logits at the input
resolution; evaluation takes their arg-max, accumulates one confusion matrix
per rank, sums it over ranks and reports mIoU, pixel accuracy and per-class
IoU (all percent).

How a prediction is made is the recipe's segmentation protocol
(:class:`cabench.recipe_protocols.SegmentationProtocol`, default: one whole-image
pass, no flip): with ``eval_flip`` the softmax of the image and of its mirror
(mirrored back) are averaged; with ``eval_mode: sliding`` the image is padded
(centred, with the mean colour, i.e. 0 after normalisation) to at least
``window`` x ``window``, crops of that size are taken every ``stride`` pixels
(the last one flush with the border: ``ceil((H - window) / stride) + 1`` rows of
crops) and the softmax is averaged where crops overlap. This is the test
procedure of the authors' segmentation code (``houqb/SPNet``, ``tool/test.py``:
``net_process``, ``scale_process``), single scale.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cabench import outcomes
from cabench.data.segmentation_transforms import pad_collate, recipe_transforms
from cabench.engine import EvalSetup, TrainSettings, autocast, eval_loader, eval_mode, gather_objects, interleave_ranks
from cabench.engine.distributed import all_reduce_sum
from cabench.metrics.segmentation import ConfusionMatrix, per_image_confusion
from cabench.models.segmentation import set_align_corners
from cabench.recipe_protocols import SegmentationProtocol
from cabench.tasks.base import loss_on_probe
from cabench.tasks.segmentation import OUTCOME_KIND

__all__ = ["IGNORE_INDEX", "SegmentationTask", "evaluate_segmenter", "predict"]


IGNORE_INDEX = 255


class SegmentationTask:
    """DeepLabV3-style training and single-scale evaluation under ``protocol`` (default: whole image, no flip)."""

    name = "segment"
    headline = ("miou",)
    collate = staticmethod(pad_collate)

    def __init__(self, protocol: Any | None = None) -> None:
        self.protocol = protocol

    def loss(self, net: nn.Module, batch: Any, device: torch.device, settings: TrainSettings) -> Tensor:
        images, masks = batch
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = net(images)
        return nn.functional.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)

    def evaluate(self, model: nn.Module, ds: Dataset, settings: TrainSettings, device: torch.device) -> dict[str, Any]:
        return evaluate_segmenter(model, ds, settings.eval_setup(device), per_image=True, protocol=self.protocol)


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module, ds: Dataset, setup: EvalSetup, *, per_image: bool = False, protocol: Any | None = None
) -> dict[str, Any]:
    """``{"miou", "pixel_acc", "per_class_iou", "val_n"}`` of ``model`` on ``ds``, the same on every rank.

    With ``per_image``, also one confusion matrix per image in dataset order (:mod:`cabench.outcomes`). Each
    prediction is made as ``protocol`` says (see the module docstring).
    """
    device, amp, channels_last = torch.device(setup.device), setup.amp, setup.channels_last
    matrix = ConfusionMatrix(
        ds.num_classes,  # type: ignore[attr-defined]
        ignore_index=IGNORE_INDEX,
        class_names=getattr(ds, "class_names", None),
        device=device,
    )
    n = torch.zeros((), dtype=torch.int64, device=device)
    mats: list[Tensor] = []  # this rank's per-image matrices
    with eval_mode(model) as net:
        for images, masks in eval_loader(ds, setup, collate=pad_collate):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                scores = predict(net, images, protocol)
            pred, masks = scores.argmax(dim=1), masks.to(device, non_blocking=True)
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
        result[outcomes.KEY] = outcomes.Outcomes(OUTCOME_KIND, np.arange(len(confusion)), {"confusion": confusion})
    return result


def _flip_averaged(net: nn.Module, images: Tensor, flip: bool) -> Tensor:
    """Class probabilities of ``images``; with ``flip``, averaged with those of the mirrored images."""
    probs = net(images).float().softmax(dim=1)
    if flip:
        probs = (probs + net(images.flip(-1)).float().softmax(dim=1).flip(-1)) / 2
    return probs


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Crop starts along one side: every ``stride`` pixels, the last crop flush with the end (SPNet's grid)."""
    count = math.ceil(max(size - window, 0) / stride) + 1
    return [min(k * stride + window, size) - window for k in range(count)]


def _sliding(net: nn.Module, images: Tensor, window: int, stride: int, flip: bool) -> Tensor:
    n, _, h, w = images.shape
    pad_h, pad_w = max(window - h, 0), max(window - w, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = nn.functional.pad(images, (left, pad_w - left, top, pad_h - top))  # 0 = the mean colour
    big_h, big_w = padded.shape[-2:]
    total: Tensor | None = None
    count = torch.zeros(1, 1, big_h, big_w, device=images.device)
    for y in _starts(big_h, window, stride):
        for x in _starts(big_w, window, stride):
            probs = _flip_averaged(net, padded[:, :, y : y + window, x : x + window], flip)
            if total is None:
                total = torch.zeros(n, probs.shape[1], big_h, big_w, device=images.device)
            total[:, :, y : y + window, x : x + window] += probs
            count[:, :, y : y + window, x : x + window] += 1
    assert total is not None
    return (total / count)[:, :, top : top + h, left : left + w]


def predict(net: nn.Module, images: Tensor, protocol: Any | None = None) -> Tensor:
    """Per-pixel class scores ``[N, C, H, W]`` of ``images`` under a segmentation protocol (None: one pass)."""
    if protocol is None:
        return net(images).float()
    if protocol.eval_mode == "sliding":
        return _sliding(net, images, protocol.window, protocol.stride, protocol.eval_flip)
    return _flip_averaged(net, images, protocol.eval_flip)


def eval_protocol(recipe: Any) -> Any:
    """The recipe's segmentation block (or its defaults)."""
    return recipe.segmentation or SegmentationProtocol()


def apply_recipe(model: nn.Module, recipe: Any, image_size: int | None) -> None:
    set_align_corners(model, eval_protocol(recipe).align_corners)


def make_task(columns: tuple[str, ...]) -> SegmentationTask:
    """The engine task of a segmentation suite (its columns do not change it)."""
    return SegmentationTask()


def transforms(recipe: Any) -> tuple[Any, Any]:
    found = recipe_transforms(recipe)
    return found["train_transform"], found["eval_transform"]


def describe_loss(model: nn.Module, settings: TrainSettings) -> dict[str, Any]:
    """The loss on a fixed one-pixel probe (logits favour class 0, target class 1)."""
    logits = torch.tensor([[2.0, 0.0, -1.0]])[:, :, None, None]
    batch = (torch.zeros(1, 3, 1, 1), torch.tensor([[[1]]]))
    return {
        "kind": "cross_entropy(ignore_index=255)",
        "value_on_probe": loss_on_probe(SegmentationTask(), logits, batch, settings),
    }
