"""No silent recipe field: every field of the schema changes what is built, or is refused, or is metadata.

The effective pipeline is read back from the built objects (:func:`cabench.pipeline.describe_pipeline`: the
transforms the data sources hand to their datasets, the optimizer the engine builds, the learning rates its
schedule computes, the task's loss on a probe, the configured detector, the segmentation prediction on a probe).
For each field, changing it from a shipped recipe's value must change that description. A new schema field that
is in none of the tables below fails :func:`test_every_schema_field_is_probed_refused_or_metadata`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args, get_origin

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from cabench.engine import TrainSettings
from cabench.pipeline import apply_recipe, describe_pipeline, transforms_for
from cabench.recipe import Recipe, RecipeError, load_recipe

MBV2, EFF = "imagenet-mbv2-paper", "imagenet-efficientnet-b0"
COCO, VOC, COCO_TV = "coco-ssdlite320-paper", "voc-ssdlite320-paper", "coco-ssdlite320-torchvision"
VOCSEG, CITY = "voc-deeplabv3-paper", "cityscapes-deeplabv3-paper"

Change = Any  # a new value, or a callable editing the recipe data in place

# field path -> (shipped recipe, new value or an in-place edit of the recipe data)
PROBES: dict[str, tuple[str, Change]] = {
    "dataset": (COCO, lambda d: d.update(dataset="voc-detection")),
    "optimizer": (MBV2, "rmsprop"),
    "lr": (MBV2, 0.1),
    "momentum": (MBV2, 0.8),
    "weight_decay": (MBV2, 1e-4),
    "weight_decay_norm": (MBV2, False),
    "nesterov": (MBV2, True),
    "rmsprop_decay": (EFF, 0.95),
    "optimizer_eps": (EFF, 0.01),
    "batch_size": (MBV2, 128),
    "epochs": (MBV2, 100),
    "iterations": (VOC, 120000),
    "schedule": (MBV2, "poly"),
    "warmup_epochs": (MBV2, 5.0),
    "warmup_iterations": (VOC, 2000),
    "step_gamma": (EFF, 0.5),
    "step_epochs": (EFF, 1.0),
    "milestones": (VOC, [100000, 200000]),
    "poly_power": (CITY, 2.0),
    "label_smoothing": (MBV2, 0.1),
    "dropout": (MBV2, 0.3),
    "bn_momentum": (EFF, 0.1),
    "ema": (MBV2, True),
    "ema_decay": (EFF, 0.99),
    "train_size": (MBV2, 192),
    "eval_resize": (MBV2, 288),
    "random_resized_crop": (MBV2, lambda d: d.update(random_resized_crop=False, crop_scale=(0.08, 1.0))),
    "crop_scale": (MBV2, (0.25, 1.0)),
    "hflip": (MBV2, False),
    "autoaugment": (MBV2, True),
    "random_erasing": (MBV2, 0.25),
    "crop_size": (VOCSEG, 321),
    "scale_range": (VOCSEG, (0.75, 1.25)),
    "eval_size": (VOCSEG, 600),
    "detection.loss": (VOC, lambda d: d["detection"].update(loss="focal", neg_pos_ratio=None, **_FOCAL)),
    "detection.neg_pos_ratio": (VOC, 5.0),
    "detection.focal_alpha": (COCO, 0.5),
    "detection.focal_gamma": (COCO, 1.0),
    "detection.prior_prob": (COCO, 0.05),
    "detection.cls_loss_weight": (COCO, 1.0),
    "detection.anchors.aspect_ratios": (VOC, [[3, 2]] * 6),
    "detection.anchors.min_sizes": (VOC, [32, 90, 135, 180, 225, 270]),
    "detection.anchors.max_sizes": (VOC, [90, 135, 180, 225, 270, 315]),
    "detection.anchors.scale_range": (COCO_TV, (0.15, 0.9)),
    "detection.anchors.steps": (VOC, [16, 32, 64, 107, 160, 320]),
    "detection.anchors.clip": (VOC, False),
    "detection.score_threshold": (VOC, 0.05),
    "detection.nms_iou": (VOC, 0.5),
    "detection.detections_per_image": (VOC, 200),
    "detection.candidates_per_class": (VOC, 400),
    "segmentation.align_corners": (VOCSEG, False),
    "segmentation.eval_flip": (VOCSEG, False),
    "segmentation.eval_mode": (VOCSEG, lambda d: d["segmentation"].update(eval_mode="sliding", window=513, stride=342)),
    "segmentation.window": (CITY, 700),
    "segmentation.stride": (CITY, 256),
}
_FOCAL = {"focal_alpha": 0.25, "focal_gamma": 2.0, "prior_prob": 0.01}

# Fields that only identify or document a recipe: recorded in every run's config, build nothing.
METADATA = {"id": "file name check", "source": "citation", "notes": "documentation"}
# Fields checked elsewhere, with the test that shows they are consumed or refused.
ELSEWHERE = {
    "task": "must equal the suite's task (jobs.run_training); selects the task: test_task_and_sync_bn_are_consumed",
    "sync_bn": "SyncBatchNorm needs CUDA and >1 process; refused on CPU: test_task_and_sync_bn_are_consumed",
    "mixup": "not implemented: refused when true, test_refused_fields",
}


def _schema_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        path = prefix + name
        nested = [a for a in (get_args(field.annotation) or (field.annotation,)) if _is_model(a)]
        if nested:
            yield from _schema_paths(nested[0], path + ".")
        else:
            yield path


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and get_origin(annotation) is None


def test_every_schema_field_is_probed_refused_or_metadata() -> None:
    fields = set(_schema_paths(Recipe))
    covered = set(PROBES) | set(METADATA) | set(ELSEWHERE)
    assert not fields - covered, f"recipe fields nobody consumes or refuses: {sorted(fields - covered)}"
    assert not covered - fields, f"tables name fields the schema lacks: {sorted(covered - fields)}"


class _Stub:
    def __init__(self, transform: Any, n: int) -> None:
        self.transform, self.n = transform, n

    def __len__(self) -> int:
        return self.n


class _TinySegmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5))
        self.align_corners = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _tiny_classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(4, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def ssd() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from cabench.models.registry import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="ssdlite320_mobilenetv2"))
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _describe(recipe: Recipe, ssd: tuple[nn.Module, dict[str, torch.Tensor]]) -> dict[str, Any]:
    if recipe.task == "detect":
        model, pristine = ssd
        model.load_state_dict(pristine)  # a fresh build: configure_ssd re-initialises the head for focal
    else:
        model = _tiny_classifier() if recipe.task == "classify" else _TinySegmenter()
    apply_recipe(model, recipe)
    train_tf, eval_tf = transforms_for(recipe)
    settings = TrainSettings.from_recipe(recipe)
    return describe_pipeline(recipe, model, _Stub(train_tf, 1_281_167), _Stub(eval_tf, 50_000), settings)


def _changed(recipe_id: str, path: str, change: Change) -> Recipe:
    data = load_recipe(recipe_id).model_dump()
    if callable(change):
        change(data)
    else:
        *parents, leaf = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        assert target[leaf] != change, f"{path}: the probe must change the value"
        target[leaf] = change
    return Recipe.model_validate(data)


@pytest.mark.parametrize("path", sorted(PROBES))
def test_changing_a_field_changes_what_is_built(path: str, ssd: Any) -> None:
    recipe_id, change = PROBES[path]
    before = _describe(load_recipe(recipe_id), ssd)
    after = _describe(_changed(recipe_id, path, change), ssd)
    assert before != after, f"{path}: changing it left the built pipeline unchanged"


def test_refused_fields() -> None:
    data = load_recipe(MBV2).model_dump()
    cases = [
        ({"mixup": True}, "mixup is not implemented"),
        ({"rmsprop_decay": 0.5}, "rmsprop_decay only applies with optimizer 'rmsprop'"),
        ({"optimizer_eps": 0.1}, "optimizer_eps only applies with optimizer 'rmsprop'"),
        ({"poly_power": 2.0}, "poly_power only applies with schedule 'poly'"),
        ({"ema_decay": 0.9}, "ema_decay only applies with ema: true"),
        ({"crop_size": 224}, "only apply to segment recipes"),
        ({"random_resized_crop": False, "crop_scale": (0.5, 1.0)}, "crop_scale only applies"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            Recipe.model_validate(data | edit)
    det = load_recipe(VOC).model_dump()
    for edit, message in (
        ({"label_smoothing": 0.1}, "only apply to classify recipes"),
        ({"dropout": 0.1}, "only apply to classify recipes"),
        ({"detection": None}, "needs a detection protocol"),
    ):
        with pytest.raises(ValueError, match=message):
            Recipe.model_validate(det | edit)
    focal_on_multibox = {**det["detection"], "focal_alpha": 0.25}
    with pytest.raises(ValueError, match="only apply to loss 'focal'"):
        Recipe.model_validate(det | {"detection": focal_on_multibox})


def test_refused_field_in_a_file_is_one_line(tmp_path: Any) -> None:
    text = load_recipe(MBV2).model_dump()
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump({**text, "id": "bad", "mixup": True}))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "mixup" in str(err.value) and "\n" not in str(err.value)


def test_task_and_sync_bn_are_consumed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # task: a recipe for another task than the suite's is refused before any work (profiles.train).
    from cabench.engine import loop
    from cabench.profiles.base import Request
    from cabench.profiles.train import TrainProfile
    from cabench.suite import SUITES_DIR, load_suite

    suite = load_suite(SUITES_DIR / "table6.yaml").model_copy(update={"recipe": MBV2})
    overrides = dict.fromkeys(("epochs", "iterations", "batch_size", "lr"))
    request = Request([suite], None, options=overrides)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is for classify"):
        TrainProfile("paper", "", smoke=False)._plan(suite, request, {})
    # sync_bn: with more than one process the engine converts to SyncBatchNorm, which needs CUDA: on CPU the
    # run is refused before the model is touched.
    settings = TrainSettings.from_recipe(load_recipe(COCO), batch_size=2)
    assert settings.sync_bn is True
    monkeypatch.setattr(loop, "init_distributed", lambda: (0, 2, 0, torch.device("cpu")))
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        loop.train(nn.Linear(1, 1), list(range(8)), list(range(2)), settings, tmp_path, None)  # type: ignore[arg-type]
