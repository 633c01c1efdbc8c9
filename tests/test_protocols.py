"""The recipe protocols build what their sources describe: SSD default boxes, losses and post-processing,
segmentation evaluation, classification augmentation and dropout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

from cabench.models.ssd_protocol import ProtocolSSD, SizedDefaultBoxes
from cabench.recipe import load_recipe
from cabench.recipe_protocols import SegmentationProtocol
from cabench.tasks._impl.segmentation import _starts, predict


def _prior_boxes(fmaps, steps, mins, maxs, ratios, size=320):
    """The SSD reference code's priors (cx, cy, w, h relative), written out independently, clipped to [0, 1]."""
    out = []
    for k, f in enumerate(fmaps):
        scale = size / steps[k]
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) / scale, (i + 0.5) / scale
                s, big = mins[k] / size, math.sqrt(mins[k] * maxs[k]) / size
                out += [[cx, cy, s, s], [cx, cy, big, big]]
                for r in ratios[k]:
                    out += [[cx, cy, s * math.sqrt(r), s / math.sqrt(r)], [cx, cy, s / math.sqrt(r), s * math.sqrt(r)]]
    return np.clip(np.array(out), 0, 1)


def test_sized_default_boxes_are_the_authors_priors() -> None:
    recipe = load_recipe("voc-ssdlite320-paper")
    a = recipe.detection.anchors
    gen = SizedDefaultBoxes(a.aspect_ratios, a.min_sizes, a.max_sizes, 320, a.steps, a.clip)
    fmaps = [20, 10, 5, 3, 2, 1]
    ours = gen._grid_default_boxes([[f, f] for f in fmaps], [320, 320]).numpy()
    ref = _prior_boxes(fmaps, a.steps, a.min_sizes, a.max_sizes, a.aspect_ratios)
    assert ours.shape == ref.shape == (sum(6 * f * f for f in fmaps), 4)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def _tiny_ssd(cls: type[SSD], **kwargs) -> SSD:
    torch.manual_seed(0)
    backbone = nn.Conv2d(3, 8, 3, stride=8, padding=1)
    backbone.out_channels = [8]  # type: ignore[assignment]
    gen = DefaultBoxGenerator([[2]], min_ratio=0.3, max_ratio=0.8)
    head = SSDLiteHead([8], gen.num_anchors_per_location(), 4, nn.BatchNorm2d)
    wrapped = nn.Sequential()
    wrapped.forward = lambda x: {"0": backbone(x)}  # type: ignore[method-assign]
    wrapped.add_module("conv", backbone)
    return cls(wrapped, gen, (64, 64), 4, head=head, **kwargs)


def _batch():
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 30.0, 60.0, 44.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def test_multibox_protocol_ssd_equals_torchvision_ssd() -> None:
    kw = {"score_thresh": 0.2, "nms_thresh": 0.5, "detections_per_img": 7, "topk_candidates": 5}
    ref, ours = _tiny_ssd(SSD, **kw), _tiny_ssd(ProtocolSSD, **kw)
    ours.candidates_per_class = 5
    ours.load_state_dict(ref.state_dict())
    images, targets = _batch()
    ref.train(), ours.train()
    torch.manual_seed(1)
    a = ref(images, targets)
    torch.manual_seed(1)
    b = ours(images, targets)
    assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}
    ref.eval(), ours.eval()
    with torch.no_grad():
        for x, y in zip(ref(images), ours(images), strict=True):
            assert len(x["boxes"]) == len(y["boxes"]) > 0
            order_x, order_y = x["scores"].argsort(), y["scores"].argsort()
            for key in ("boxes", "scores", "labels"):
                torch.testing.assert_close(x[key][order_x], y[key][order_y])


def test_focal_loss_is_the_authors_formula() -> None:
    model = _tiny_ssd(ProtocolSSD)
    model.loss_kind, model.focal_alpha, model.focal_gamma, model.cls_loss_weight = "focal", 0.25, 2.0, 5.0
    torch.manual_seed(3)
    n_anchors, n_classes = 6, 4
    logits = torch.randn(1, n_anchors, n_classes)
    regression = torch.randn(1, n_anchors, 4)
    anchors = [torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 30, 30]] * 2, dtype=torch.float32)]
    matched = [torch.tensor([-1, 0, -1, 1, -1, -1])]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 22.0, 21.0], [1.0, 1.0, 12.0, 9.0]]), "labels": torch.tensor([2, 3])}]
    out = model.compute_loss(targets, {"cls_logits": logits, "bbox_regression": regression}, anchors, matched)
    # The authors' loss, written out: one-hot over the classes without background, alpha for positives,
    # (1 - p)^gamma log p and p^gamma log(1 - p), summed, x5, / positives.
    p = logits[0].sigmoid()
    label = torch.zeros(n_anchors, n_classes)
    label[1, 2] = label[3, 3] = 1.0
    pos = -0.25 * (1 - p) ** 2 * torch.log(p)
    neg = -0.75 * p**2 * torch.log(1 - p)
    expected = 5.0 * torch.where(label == 1, pos, neg).sum() / 2
    torch.testing.assert_close(out["classification"], expected)
    # Regression: smooth L1 over the two positives, / positives.
    fg = torch.tensor([1, 3])
    encoded = model.box_coder.encode_single(targets[0]["boxes"][torch.tensor([0, 1])], anchors[0][fg])
    torch.testing.assert_close(
        out["bbox_regression"], nn.functional.smooth_l1_loss(regression[0][fg], encoded, reduction="sum") / 2
    )


def test_focal_prior_initialises_the_classifier_bias() -> None:
    from cabench.models.registry import ModelSpec, build_model
    from cabench.pipeline import apply_recipe

    model = apply_recipe(build_model(ModelSpec(arch="ssdlite320_mobilenetv2")), load_recipe("coco-ssdlite320-paper"))
    convs = [m for m in model.head.classification_head.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert convs and all(torch.allclose(m.bias, torch.full_like(m.bias, -math.log(99))) for m in convs)
    assert (model.score_thresh, model.nms_thresh, model.detections_per_img) == (0.05, 0.5, 100)


def test_a_protocol_that_would_change_the_head_is_refused() -> None:
    from cabench.models.registry import ModelSpec, build_model
    from cabench.pipeline import apply_recipe

    data = load_recipe("coco-ssdlite320-paper").model_dump()
    data["detection"]["anchors"]["aspect_ratios"][-1] = [2]  # the authors' config: 4 boxes on the last map
    recipe = type(load_recipe("coco-ssdlite320-paper")).model_validate(data)
    with pytest.raises(ValueError, match="boxes per location"):
        apply_recipe(build_model(ModelSpec(arch="ssdlite320_mobilenetv2")), recipe)


def test_sliding_windows_follow_spnets_grid_and_equal_one_pass_when_one_window_covers() -> None:
    assert _starts(1024, 768, 512) == [0, 256]
    assert _starts(2048, 768, 512) == [0, 512, 1024, 1280]
    assert _starts(513, 513, 342) == [0]  # sizes are padded to the window first
    torch.manual_seed(0)
    net = nn.Conv2d(3, 5, 3, padding=1).eval()  # zero padding: a zero-padded window sees the same borders
    image = torch.randn(2, 3, 12, 16)
    whole = predict(net, image, SegmentationProtocol())
    sliding = predict(net, image, SegmentationProtocol(eval_mode="sliding", window=20, stride=10))
    torch.testing.assert_close(whole, sliding)
    flipped = predict(net, image, SegmentationProtocol(eval_flip=True))
    manual = (net(image).softmax(1) + net(image.flip(-1)).softmax(1).flip(-1)) / 2
    torch.testing.assert_close(flipped, manual.detach())
    # Overlapping windows average their softmax.
    tiled = predict(net, image, SegmentationProtocol(eval_mode="sliding", window=8, stride=4))
    assert tiled.shape == whole.shape and torch.allclose(tiled.sum(1), torch.ones(2, 12, 16))


def test_classification_augmentation_is_the_recipes() -> None:
    from cabench.pipeline import transforms_for

    train, _ = transforms_for(load_recipe("imagenet-efficientnet-b0"))
    text = repr(train)
    assert "AutoAugment(" in text and "AutoAugmentPolicy.IMAGENET" in text and "scale=(0.08, 1.0)" in text
    assert "RandomErasing" not in text
    data = load_recipe("imagenet-mbv2-paper").model_dump() | {"random_erasing": 0.25, "crop_scale": (0.35, 1.0)}
    train, _ = transforms_for(type(load_recipe("imagenet-mbv2-paper")).model_validate(data))
    assert "RandomErasing(p=0.25" in repr(train) and "scale=(0.35, 1.0)" in repr(train)
    assert "AutoAugment" not in repr(train)
    out = train(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (300, 200), (120, 30, 200)))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_tables_1_to_4_train_every_row_with_the_authors_dropout() -> None:
    from cabench.models.registry import ModelSpec, build_model
    from cabench.pipeline import apply_recipe

    recipe = load_recipe("imagenet-mbv2-paper")
    for arch in ("mobilenetv2", "mobilenext"):
        model = apply_recipe(build_model(ModelSpec(arch=arch, width=0.5)), recipe)
        rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
        assert rates == [0.1], (arch, rates)


@pytest.mark.slow
def test_efficientnet_smoke_run_records_autoaugment(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from cabench.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["fixtures", "imagenet", str(tmp_path / "imagenet")]).exit_code == 0
    suite = tmp_path / "eff.yaml"
    suite.write_text(
        "id: eff\ntitle: t\nsource: test\ntask: classify\nrecipe: imagenet-efficientnet-b0\nbaseline: ca\n"
        "columns:\n  top1: {unit: '%'}\nrows:\n  - name: CA\n    id: ca\n"
        "    model: {arch: efficientnet_b0, attention: ca}\n    published: {top1: 76.9}\n"
    )
    runs = tmp_path / "runs"
    args = ["run", str(suite), "--profile", "smoke", "--data", f"imagenet={tmp_path / 'imagenet'}"]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    config = json.loads((next((runs / "eff" / "ca" / "smoke").iterdir()) / "config.json").read_text())
    pipeline = config["pipeline"]
    assert "AutoAugment(" in pipeline["train_transform"] and "IMAGENET" in pipeline["train_transform"]
    assert pipeline["optimizer"]["class"] == "RMSprop" and len(pipeline["optimizer"]["param_groups"]) == 2
    assert pipeline["model"]["ema"] is not None and pipeline["loss"]["kind"] == "cross_entropy(label_smoothing=0.1)"


def test_segmentation_recipes_carry_the_authors_test_procedure() -> None:
    from cabench.pipeline import task_protocol

    city = task_protocol(load_recipe("cityscapes-deeplabv3-paper"))
    assert (city.eval_mode, city.window, city.stride, city.eval_flip, city.align_corners) == (
        "sliding",
        768,
        512,
        True,
        True,
    )
    from cabench.data.base import DATASETS

    at_smoke = DATASETS.get("cityscapes").at_smoke_sizes(load_recipe("cityscapes-deeplabv3-paper"))
    smoke = task_protocol(at_smoke)  # the smoke profile trains and evaluates the recipe at its 64-pixel crops
    assert (smoke.window, smoke.stride) == (64, 43)  # scaled like the smoke crops (768 -> 64)
    assert (at_smoke.crop_size, at_smoke.eval_size) == (64, None)
    voc = task_protocol(load_recipe("voc-deeplabv3-paper"))
    assert (voc.eval_mode, voc.eval_flip, voc.align_corners) == ("whole", True, True)
