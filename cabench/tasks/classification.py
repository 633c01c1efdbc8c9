"""Image classification, declared: columns, outcome statistics, floor, recipe hooks (no torch imported here).

The engine side (loss, evaluation, the hooks' bodies) is :mod:`cabench.tasks._impl.classification`, imported when
a hook is first resolved (the declaration names each hook by its "module:name" path): listing suites imports no torch.
"""

from __future__ import annotations

from cabench import outcomes
from cabench.columns import ColumnInfo
from cabench.tasks.base import TaskInfo, register_task

_ENGINE = "cabench.tasks._impl.classification"


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
        build=_ENGINE + ":make_task",
        default_recipe="imagenet-mbv2-paper",
        outcomes={OUTCOME_KIND: {"top1": outcomes.accuracy_of("correct1"), "top5": outcomes.accuracy_of("correct5")}},
        floors=("logistic-pixels",),
        recipe_fields=frozenset(
            {"eval_resize", "random_resized_crop", "crop_scale", "autoaugment", "random_erasing"}
            | {"label_smoothing", "dropout"}
        ),
        transforms=_ENGINE + ":transforms",
        describe_loss=_ENGINE + ":describe_loss",
    )
)
