"""Semantic segmentation, declared: columns, outcome statistics, floor, recipe hooks (no torch imported here).

The engine side (loss, evaluation, the hooks' bodies) is :mod:`cabench.tasks._impl.segmentation`, imported when
a hook is first resolved (the declaration names each hook by its "module:name" path): listing suites imports no torch.
"""

from __future__ import annotations

from cabench import outcomes
from cabench.columns import ColumnInfo
from cabench.tasks.base import TaskInfo, register_task

_ENGINE = "cabench.tasks._impl.segmentation"


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
        build=_ENGINE + ":make_task",
        outcomes={OUTCOME_KIND: {"miou": outcomes.miou_statistic}},
        floors=("all-background",),
        recipe_fields=frozenset({"crop_size", "scale_range", "eval_size", "segmentation"}),
        apply_recipe=_ENGINE + ":apply_recipe",
        protocol=_ENGINE + ":eval_protocol",
        transforms=_ENGINE + ":transforms",
        describe_loss=_ENGINE + ":describe_loss",
    )
)
