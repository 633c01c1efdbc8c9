"""Object detection as an engine task: torchvision SSD losses for training, the dataset's evaluator for metrics.

Batches are ``(images, targets)`` tuples of per-image tensors and target dicts
(images may differ in size; the SSD's own transform resizes them). Training
sums the SSD's loss dict (smooth-L1 box regression + hard-negative-mined
cross-entropy). Evaluation runs the model in eval mode on this rank's share of
the dataset, feeds the post-processed detections to the dataset's evaluator
(``ds.make_evaluator()``: COCO AP through pycocotools, or VOC07 11-point mAP),
gathers every rank's evaluator state and lets rank 0 compute the metrics,
which are then broadcast so every rank returns the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from cabench import outcomes
from cabench.data.detection_transforms import recipe_transforms
from cabench.engine import EvalSetup, TrainSettings, autocast, eval_loader, eval_mode, gather_objects
from cabench.engine.distributed import get_rank, is_distributed
from cabench.models.detection import set_ssd_input_size
from cabench.models.ssd_protocol import configure_ssd, describe_ssd

__all__ = ["DetectionTask", "collate_detection", "evaluate_detector"]


def collate_detection(samples: list[tuple[Tensor, dict[str, Any]]]) -> tuple[tuple[Tensor, ...], tuple[dict, ...]]:
    """``[(image, target), ...]`` -> ``((image, ...), (target, ...))``; no stacking, sizes may differ."""
    images, targets = zip(*samples, strict=True)
    return tuple(images), tuple(targets)


def _to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in target.items()}


class DetectionTask:
    """SSD training and evaluation; ``headline`` names the suite's main metric (``ap`` or ``map``)."""

    name = "detect"

    def __init__(self, headline: tuple[str, ...] = ("ap",)) -> None:
        self.headline = headline

    collate = staticmethod(collate_detection)

    def loss(self, net: nn.Module, batch: Any, device: torch.device, settings: TrainSettings) -> Tensor:
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [_to_device(t, device) for t in targets]
        losses = net(images, targets)
        return sum(v.float() for v in losses.values())  # type: ignore[return-value]

    def evaluate(self, model: nn.Module, ds: Dataset, settings: TrainSettings, device: torch.device) -> dict[str, Any]:
        return evaluate_detector(model, ds, settings.eval_setup(device), per_image=True)


@torch.no_grad()
def evaluate_detector(model: nn.Module, ds: Dataset, setup: EvalSetup, *, per_image: bool = False) -> dict[str, Any]:
    """The dataset's detection metrics for ``model`` (see the module docstring); ``n`` is the image count. The
    images are a list of tensors, so ``setup.channels_last`` does not apply.

    With ``per_image``, rank 0's result also holds the evaluator's per-image outcomes (:mod:`cabench.outcomes`).
    """
    device, amp = torch.device(setup.device), setup.amp
    evaluator = ds.make_evaluator()  # type: ignore[attr-defined]
    n = 0
    with eval_mode(model) as net:
        for images, targets in eval_loader(ds, setup, collate=collate_detection):
            with autocast(device, amp):
                outputs = net([im.to(device, non_blocking=True) for im in images])
            outputs = [
                {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs
            ]
            evaluator.update(list(targets), outputs)
            n += len(images)
    states = gather_objects(evaluator.state())
    counts = gather_objects(n)
    result: list[Any] = [None]
    if get_rank() == 0:
        evaluator.merge(states)
        result[0] = {**evaluator.compute(), "val_n": int(sum(counts))}
    if is_distributed():
        dist.broadcast_object_list(result, src=0)
    if per_image and get_rank() == 0:
        image_ids, arrays = evaluator.per_image_outcomes()
        return {**result[0], outcomes.KEY: outcomes.Outcomes(evaluator.outcome_kind, image_ids, arrays)}
    return result[0]


def make_task(columns: tuple[str, ...]) -> DetectionTask:
    """The engine task of a detection suite: its headline metric is the first of AP (COCO) and mAP (VOC) that the
    suite's columns hold."""
    return DetectionTask(headline=tuple(c for c in ("ap", "map") if c in columns) or ("ap",))


def apply_recipe(model: nn.Module, recipe: Any, image_size: int | None) -> None:
    """The detector's fixed input at the recipe's ``train_size`` (320 in the paper's recipes, 64 in the CPU
    probe's), then the recipe's detection protocol (default boxes, loss, post-processing)."""
    set_ssd_input_size(model, recipe.train_size)  # type: ignore[arg-type]
    configure_ssd(model, recipe.detection, image_size or recipe.train_size)  # type: ignore[arg-type]


def transforms(recipe: Any) -> tuple[Any, Any]:
    found = recipe_transforms(recipe)
    return found["train_transform"], found["eval_transform"]


def describe_loss(model: nn.Module, settings: TrainSettings) -> dict[str, Any]:
    return describe_ssd(model)  # type: ignore[arg-type]
