"""Object detection, declared: columns, outcome statistics, floor, recipe hooks (no torch imported here).

The engine side (loss, evaluation, the hooks' bodies) is :mod:`cabench.tasks._impl.detection`, imported when
a hook is first resolved (the declaration names each hook by its "module:name" path): listing suites imports no torch.
"""

from __future__ import annotations

from cabench import outcomes
from cabench.columns import ColumnInfo
from cabench.metrics.coco_eval import CocoEvaluator
from cabench.metrics.voc_eval import VocEvaluator
from cabench.tasks.base import TaskInfo, register_task

_ENGINE = "cabench.tasks._impl.detection"


def _metric(key: str, label: str, what: str) -> ColumnInfo:
    return ColumnInfo(key, label, "%", "accuracy", what)


register_task(
    TaskInfo(
        name="detect",
        title="object detection",
        metrics=(
            _metric("ap", "AP", "COCO AP averaged over IoU 0.50:0.95 (pycocotools)"),
            _metric("ap50", "AP50", "COCO AP at IoU 0.50"),
            _metric("ap75", "AP75", "COCO AP at IoU 0.75"),
            _metric("ap_s", "AP_S", "COCO AP, small objects"),
            _metric("ap_m", "AP_M", "COCO AP, medium objects"),
            _metric("ap_l", "AP_L", "COCO AP, large objects"),
            _metric("map", "mAP", "VOC2007 11-point mAP at IoU 0.5, difficult objects ignored"),
        ),
        headline=(("ap", "AP"), ("ap50", "AP50"), ("map", "mAP")),
        smoke_batch=4,
        eval_batch=32,
        takes_backbone=True,
        build=_ENGINE + ":make_task",
        # the dataset's evaluator names the kind (VocEvaluator / CocoEvaluator .outcome_kind); COCO's raw
        # detections have no bootstrap statistic here
        outcomes={VocEvaluator.outcome_kind: {"map": outcomes.voc07_map_statistic}, CocoEvaluator.outcome_kind: {}},
        floors=("mean-box",),
        recipe_fields=frozenset({"detection"}),
        requires=("detection",),
        apply_recipe=_ENGINE + ":apply_recipe",
        transforms=_ENGINE + ":transforms",
        describe_loss=_ENGINE + ":describe_loss",
    )
)
