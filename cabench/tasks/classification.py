"""Image classification, declared: columns, outcome statistics, floor, recipe hooks (no torch imported here).

The engine side (loss, evaluation, the hooks' bodies) is :mod:`cabench.tasks._impl.classification`, imported when
a hook is first called or one of its names is used: listing suites imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from cabench import outcomes
from cabench.columns import ColumnInfo
from cabench.tasks.base import TaskInfo, deferred, register_task

_ENGINE = "cabench.tasks._impl.classification"


def _engine(name: str) -> Any:
    return deferred(_ENGINE, name)


OUTCOME_KIND = "classify"

register_task(
    TaskInfo(
        name="classify",
        title="image classification",
        metrics=(ColumnInfo("top1", "Top-1", "%", "accuracy", "top-1 accuracy on the evaluation split"),),
        headline=(("top1", "top-1"), ("top5", "top-5")),
        smoke_batch=8,
        eval_batch=100,
        takes_backbone=False,
        build=lambda columns: _engine("ClassificationTask")(),
        default_recipe="imagenet-mbv2-paper",
        outcomes={OUTCOME_KIND: {"top1": outcomes.accuracy_of("correct1"), "top5": outcomes.accuracy_of("correct5")}},
        floors=("logistic-pixels",),
        recipe_fields=frozenset(
            {"eval_resize", "random_resized_crop", "crop_scale", "autoaugment", "random_erasing"}
            | {"label_smoothing", "dropout"}
        ),
        transforms=_engine("_transforms"),
        describe_loss=_engine("_describe_loss"),
    )
)


def __getattr__(name: str) -> Any:
    """The engine side's names (``ClassificationTask``, ...), imported on first use."""
    return getattr(importlib.import_module(_ENGINE), name)
