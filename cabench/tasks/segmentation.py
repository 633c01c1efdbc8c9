"""Semantic segmentation, declared: columns, outcome statistics, floor, recipe hooks (no torch imported here).

The engine side (loss, evaluation, the hooks' bodies) is :mod:`cabench.tasks._impl.segmentation`, imported when
a hook is first called or one of its names is used: listing suites imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from cabench import outcomes
from cabench.columns import ColumnInfo
from cabench.tasks.base import TaskInfo, deferred, register_task

_ENGINE = "cabench.tasks._impl.segmentation"


def _engine(name: str) -> Any:
    return deferred(_ENGINE, name)


OUTCOME_KIND = "segment"  # per-image outcomes: ``confusion``, one [C, C] matrix per image (cabench.outcomes)

register_task(
    TaskInfo(
        name="segment",
        title="semantic segmentation",
        metrics=(ColumnInfo("miou", "mIoU", "%", "accuracy", "mean IoU over classes, single scale"),),
        headline=(("miou", "mIoU"),),
        smoke_batch=4,
        eval_batch=8,
        takes_backbone=True,
        build=lambda columns: _engine("SegmentationTask")(),
        outcomes={OUTCOME_KIND: {"miou": outcomes.miou_statistic}},
        floors=("all-background",),
        recipe_fields=frozenset({"crop_size", "scale_range", "eval_size", "segmentation"}),
        apply_recipe=_engine("_apply_recipe"),
        protocol=_engine("_protocol"),
        transforms=_engine("_transforms"),
        describe_loss=_engine("_describe_loss"),
    )
)


def __getattr__(name: str) -> Any:
    """The engine side's names (``SegmentationTask``, ...), imported on first use."""
    return getattr(importlib.import_module(_ENGINE), name)
