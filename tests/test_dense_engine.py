"""The engine's dense-prediction side: iteration schedules, the paper's Section 4.4 recipes, backbone initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cabench.engine import TrainSettings, lr_at
from cabench.models.registry import ModelSpec, build_model
from cabench.models.weights import load_backbone
from cabench.recipe import RecipeError, load_recipe


def test_iteration_recipes_run_for_their_iterations_whatever_the_epoch_length() -> None:
    s = TrainSettings(
        lr=1e-3, epochs=None, iterations=240_000, schedule="multistep", milestones=(160_000, 200_000), step_gamma=0.1
    )
    for steps_per_epoch in (7, 690):  # a fixture-sized and a VOC07+12-sized epoch give the same schedule
        assert lr_at(0, s, steps_per_epoch) == pytest.approx(1e-3)
        assert lr_at(159_999, s, steps_per_epoch) == pytest.approx(1e-3)
        assert lr_at(160_000, s, steps_per_epoch) == pytest.approx(1e-4)
        assert lr_at(200_000, s, steps_per_epoch) == pytest.approx(1e-5)
    cos = TrainSettings(lr=0.01, epochs=None, iterations=100, schedule="cosine", warmup_iterations=10)
    assert lr_at(0, cos, 3) == pytest.approx(0.001) and lr_at(9, cos, 3) == pytest.approx(0.01)
    assert lr_at(55, cos, 3) == pytest.approx(0.005)  # half-way through the 90 cosine steps
    poly = TrainSettings(lr=0.007, epochs=None, iterations=30_000, schedule="poly", poly_power=0.9)
    assert lr_at(15_000, poly, 661) == pytest.approx(0.007 * 0.5**0.9)


def test_the_papers_dense_recipes() -> None:
    coco = load_recipe("coco-ssdlite320-paper")  # Section 4.4.1, COCO
    assert (coco.batch_size, coco.iterations, coco.schedule, coco.lr, coco.sync_bn) == (
        256,
        1_600_000,
        "cosine",
        0.01,
        True,
    )
    voc = load_recipe("voc-ssdlite320-paper")  # "weight decay 0.9" read as momentum, and said so
    assert (voc.batch_size, voc.iterations, voc.lr, voc.milestones, voc.step_gamma) == (
        24,
        240_000,
        0.001,
        [160_000, 200_000],
        0.1,
    )
    assert voc.momentum == 0.9 and voc.weight_decay < 0.01
    assert any("0.9" in n and "momentum" in n for n in voc.notes)
    for name, dataset, crop in (
        ("voc-deeplabv3-paper", "voc-segmentation", 513),
        ("cityscapes-deeplabv3-paper", "cityscapes", 768),
    ):
        seg = load_recipe(name)
        assert (seg.dataset, seg.crop_size, seg.weight_decay, seg.schedule) == (dataset, crop, 4e-5, "poly")
    assert load_recipe("cityscapes-deeplabv3-paper").eval_size is None  # full 1024x2048 at test time


def test_a_recipe_gives_exactly_one_length(tmp_path: Path) -> None:
    data = load_recipe("voc-ssdlite320-paper").model_dump() | {"id": "both", "epochs": 10}
    path = tmp_path / "both.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="exactly one of epochs and iterations"):
        load_recipe(path)


def _classifier_checkpoint(tmp_path: Path, attention: str) -> Path:
    model = build_model(ModelSpec("mobilenetv2", attention=attention, num_classes=10))
    path = tmp_path / f"mbv2-{attention}.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.mark.parametrize(("arch", "prefix"), [("deeplabv3_mobilenetv2", ""), ("ssdlite320_mobilenetv2", "backbone.")])
def test_backbone_comes_from_an_imagenet_checkpoint(tmp_path: Path, arch: str, prefix: str) -> None:
    path = _classifier_checkpoint(tmp_path, "ca")
    source = torch.load(path, weights_only=True)["model"]
    dense = build_model(ModelSpec(arch, attention="ca", num_classes=21))
    sha = load_backbone(dense, path)
    assert len(sha) == 64
    own = dense.state_dict()
    copied = [k for k in source if not k.startswith("classifier.")]
    assert copied and all(torch.equal(own[prefix + k], source[k]) for k in copied)


def test_authors_ca_names_load_as_a_backbone(tmp_path: Path) -> None:
    model = build_model(ModelSpec("mobilenetv2", attention="ca"))
    authors = {
        "module." + k.replace(".conv_h.", ".conv2.").replace(".conv_w.", ".conv3."): v
        for k, v in model.state_dict().items()
    }
    path = tmp_path / "mbv2_ca.pth"
    torch.save(authors, path)
    dense = build_model(ModelSpec("deeplabv3_mobilenetv2", attention="ca", num_classes=21))
    load_backbone(dense, path)
    key = next(k for k in dense.state_dict() if ".conv_h." in k)
    assert torch.equal(dense.state_dict()[key], model.state_dict()[key])


def test_a_backbone_of_another_attention_block_is_one_line(tmp_path: Path) -> None:
    path = _classifier_checkpoint(tmp_path, "se")
    dense = build_model(ModelSpec("deeplabv3_mobilenetv2", attention="ca", num_classes=21))
    with pytest.raises(ValueError) as info:
        load_backbone(dense, path, row="mbv2-os16-ca")
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "mbv2-os16-ca" in msg and "has no counterpart" in msg


def test_the_report_says_whether_a_dense_cell_started_from_an_imagenet_backbone(tmp_path: Path) -> None:
    from cabench.cells import build_cells
    from cabench.store import Store
    from cabench.suite import find_suite, load_suite

    suite = load_suite(find_suite("table8"))
    store = Store(tmp_path / "runs")
    paper_data = {"dataset": "voc-segmentation", "images": 1449, "paper": True}  # the paper's split (stand-in)
    base = {"recipe": suite.recipe, "overrides": {}, "suite": "table8", "profile": "paper", "data_identity": paper_data}
    # Stand-in paper runs: this test is about the footnote, not about a number.
    store.write_run("table8", "mbv2-os16", "paper", base | {"backbone_checkpoint": None}, {"miou": 12.5})
    backbone = {"path": "/ckpt/mbv2_ca.pth", "sha256": "ab" * 32}
    store.write_run("table8", "mbv2-os16-ca", "paper", base | {"backbone_checkpoint": backbone}, {"miou": 13.5})
    cells = {(c.row, c.column): c for c in build_cells([suite], store)}
    scratch, pretrained = cells[("mbv2-os16", "miou")], cells[("mbv2-os16-ca", "miou")]
    assert scratch.reproduced == 12.5 and "trained from scratch" in (scratch.provenance or "")
    assert "backbone from /ckpt/mbv2_ca.pth (sha256 abababababab" in (pretrained.provenance or "")
    assert "scratch" not in (pretrained.provenance or "")
    # A backbone from another suite's run is named by that run (the same on every machine), not by its path.
    source = {"suite": "probe-classify", "row": "se", "run": "20261206-021523-1e3a25", "seed": 0}
    moved = {"path": "/elsewhere/runs/probe-classify/se/checkpoint.pt", "sha256": "cd" * 32, "from": source}
    store.write_run("table8", "mbv2-os16-se", "paper", base | {"backbone_checkpoint": moved}, {"miou": 14.5})
    cells = {(c.row, c.column): c for c in build_cells([suite], store)}
    text = cells[("mbv2-os16-se", "miou")].provenance or ""
    assert "backbone from probe-classify/se run 20261206-021523-1e3a25 (seed 0, sha256 cdcdcdcdcdcd…)" in text
    assert "/elsewhere" not in text


def test_tensorboard_is_optional_and_checked_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from cabench.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "table9", "--profile", "smoke", "--tensorboard", "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "pip install tensorboard" in result.output and not runs.exists()
