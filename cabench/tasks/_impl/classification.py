"""Image classification as an engine task: cross-entropy training, top-1/top-5 evaluation.

:func:`train_classifier` trains any ``nn.Module`` on any map-style dataset of
``(image_tensor, label)`` pairs through :func:`cabench.engine.train`
(schedule, checkpoints, resume, DDP, AMP and logs are the engine's).

Per-image outcomes (kind ``classify``): ``correct1``/``correct5``, one bool per image in dataset order;
the task declares the statistics that recompute top-1/top-5 from them on a resample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cabench import outcomes
from cabench.data.imagenet import recipe_transforms
from cabench.engine import (
    CHECKPOINT_NAME,
    LOG_NAME,
    EvalSetup,
    ProgressFn,
    TrainingInterrupted,
    TrainSettings,
    autocast,
    eval_loader,
    eval_mode,
    gather_objects,
    interleave_ranks,
    lr_at,
    train,
)
from cabench.engine.distributed import all_reduce_sum
from cabench.tasks.base import loss_on_probe
from cabench.tasks.classification import OUTCOME_KIND

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "ClassificationTask",
    "TrainSettings",
    "TrainingInterrupted",
    "evaluate_classifier",
    "lr_at",
    "train_classifier",
]


class ClassificationTask:
    """Batches of ``(images, labels)``; cross-entropy (with the recipe's label smoothing); top-1/top-5."""

    name = "classify"
    headline = ("top1", "top5")
    collate = None  # torch's default_collate

    def loss(self, net: nn.Module, batch: Any, device: torch.device, settings: TrainSettings) -> Tensor:
        images, labels = batch
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if settings.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = net(images)
        return nn.functional.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)

    def evaluate(self, model: nn.Module, ds: Dataset, settings: TrainSettings, device: torch.device) -> dict[str, Any]:
        ev = evaluate_classifier(model, ds, settings.eval_setup(device), per_image=True)
        if not math.isfinite(ev["loss"]):  # finite-but-huge weights: logits overflow; no metric of such a model
            raise ValueError(
                f"the validation loss is {ev['loss']} on {ev['n']:,} images: the model's outputs overflow; "
                "no metric is written"
            )
        metrics = {"top1": ev["top1"], "top5": ev["top5"], "val_loss": ev["loss"], "val_n": ev["n"]}
        return {**metrics, outcomes.KEY: ev[outcomes.KEY]}


@torch.no_grad()
def evaluate_classifier(model: nn.Module, ds: Dataset, setup: EvalSetup, *, per_image: bool = False) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over ``ds``: ``{"top1", "top5", "n", "loss"}``.

    In a process group each rank evaluates ``range(rank, n, world)`` (no padding, so nothing is counted
    twice) and the sums are all-reduced; every rank returns the same numbers. ``setup.batch_size`` is per process.
    With ``per_image``, also each image's top-1/top-5 correctness in dataset order (:mod:`cabench.outcomes`).
    """
    device, amp, channels_last = torch.device(setup.device), setup.amp, setup.channels_last
    loader = eval_loader(ds, setup)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct@1, correct@5, n
    hits: list[Tensor] = []  # this rank's [batch, 2] correct@1, correct@5
    with eval_mode(model) as net:
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = net(images)
            logits = logits.float()
            sums[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hit = top.eq(labels.unsqueeze(1))
            correct = torch.stack([hit[:, :1].any(dim=1), hit.any(dim=1)], dim=1)
            sums[1:3] += correct.sum(dim=0)
            sums[3] += labels.numel()
            if per_image:
                hits.append(correct.cpu())
    all_reduce_sum(sums)
    loss, c1, c5, n = sums.tolist()
    if n == 0:
        raise ValueError("evaluation set is empty")
    result: dict[str, Any] = {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "n": int(n), "loss": loss / n}
    if per_image:
        mine = torch.cat(hits).numpy() if hits else np.zeros((0, 2), dtype=bool)
        correct_all = interleave_ranks(gather_objects(mine), int(n))
        result[outcomes.KEY] = outcomes.Outcomes(
            OUTCOME_KIND, np.arange(int(n)), {"correct1": correct_all[:, 0], "correct5": correct_all[:, 1]}
        )
    return result


def train_classifier(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    settings: TrainSettings,
    run_dir: Path | str,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train a classifier (see :func:`cabench.engine.train`).

    Returns ``{"top1", "top5", "val_loss", "val_n", "epochs", "steps", "train_loss", "img_per_s",
    "wall_s"}`` (plus ``top1_raw``/``top5_raw`` for the non-EMA weights when ``ema`` is on).
    """
    return train(model, train_ds, val_ds, settings, run_dir, ClassificationTask(), progress)


def make_task(columns: tuple[str, ...]) -> ClassificationTask:
    """The engine task of a classification suite (its columns do not change it)."""
    return ClassificationTask()


def transforms(recipe: Any) -> tuple[Any, Any]:
    return recipe_transforms(recipe)


def describe_loss(model: nn.Module, settings: TrainSettings) -> dict[str, Any]:
    """The loss on a fixed probe (logits favour class 0, target class 1)."""
    probe = loss_on_probe(
        ClassificationTask(), torch.tensor([[2.0, 0.0, -1.0]]), (torch.zeros(1, 3), torch.tensor([1])), settings
    )
    return {"kind": f"cross_entropy(label_smoothing={settings.label_smoothing})", "value_on_probe": probe}
