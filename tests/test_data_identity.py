"""Data identity: every run knows its evaluation split (size, classes, fingerprint); only the paper's split fills
a paper cell."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cabench.data import identity
from cabench.data.fixtures.cityscapes import write_cityscapes_fixture
from cabench.data.fixtures.coco import write_coco_fixture
from cabench.data.fixtures.imagenet import write_imagenet_fixture
from cabench.data.fixtures.voc import write_voc_fixture


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_fixture(tmp_path_factory.mktemp("d") / "imagenet", train_per_class=2, val_per_class=3)


def test_the_paper_splits_are_the_papers() -> None:
    splits = identity.PAPER_SPLITS
    assert (splits["imagenet"].images, splits["imagenet"].classes) == (50_000, 1_000)
    assert splits["coco"].images == 5_000 and splits["voc-detection"].images == 4_952
    assert splits["voc-segmentation"].images == 1_449 and splits["cityscapes"].images == 500


def test_a_fixture_is_not_the_papers_data_and_its_fingerprint_tracks_the_files(imagenet: Path, tmp_path: Path) -> None:
    ident = identity.data_identity("imagenet", imagenet)
    n_classes = len([p for p in (imagenet / "val").iterdir() if p.is_dir()])
    assert ident.images == 3 * n_classes and ident.classes == n_classes and not ident.paper
    assert ident.fingerprint.startswith("sha256:") and ident == identity.data_identity("imagenet", imagenet)
    copy = tmp_path / "copy"
    shutil.copytree(imagenet / "val", copy / "val")  # only the evaluation split: no train/ needed
    assert identity.data_identity("imagenet", copy).fingerprint == ident.fingerprint
    next((copy / "val").rglob("*.JPEG")).unlink()
    smaller = identity.data_identity("imagenet", copy)
    assert smaller.images == ident.images - 1 and smaller.fingerprint != ident.fingerprint


def test_the_papers_size_and_classes_make_it_the_papers(imagenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = identity.data_identity("imagenet", imagenet)
    monkeypatch.setitem(identity.PAPER_SPLITS, "imagenet", identity.PaperSplit("x", n.images, n.classes))
    assert identity.data_identity("imagenet", imagenet).paper
    monkeypatch.setitem(identity.PAPER_SPLITS, "imagenet", identity.PaperSplit("x", n.images, 1000))
    assert not identity.data_identity("imagenet", imagenet).paper  # same size, other class count


@pytest.mark.parametrize(
    ("dataset", "writer"),
    [
        ("coco", write_coco_fixture),
        ("voc-detection", write_voc_fixture),
        ("voc-segmentation", write_voc_fixture),
        ("cityscapes", write_cityscapes_fixture),
    ],
)
def test_every_dataset_knows_its_evaluation_split(dataset: str, writer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = writer(tmp_path / "d")
    ident = identity.data_identity(dataset, root)
    assert 0 < ident.images < identity.PAPER_SPLITS[dataset].images and not ident.paper
    assert ident.expected_images == identity.PAPER_SPLITS[dataset].images


def test_the_not_papers_data_text_names_the_size() -> None:
    config = {"data_identity": {"images": 32, "classes": 4, "expected_classes": 1000, "paper": False}}
    assert identity.not_paper_text(config) == "not the paper's data (32 images in 4 classes)"
    assert not identity.is_paper_data({}) and identity.is_paper_data({"data_identity": {"paper": True}})


TINY = """\
id: tiny
title: "One row of Table 1"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
columns:
  top1: {unit: "%", tolerance: 0.3}
rows:
  - name: "+ CA"
    id: ca
    model: {arch: mobilenetv2, width: 0.5, attention: ca}
    published: {top1: 67.0}
"""


def _eval_into_report(tmp_path: Path, data_root: Path) -> tuple[dict[str, str], str, dict]:  # type: ignore[type-arg]
    import csv
    import json

    import torch
    from typer.testing import CliRunner

    from cabench.cli import app
    from cabench.models.mobilenetv2 import MobileNetV2

    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    ckpt = tmp_path / "mbv2_ca.pth"
    torch.save({"model": MobileNetV2(width=0.5, attention="ca").state_dict()}, ckpt)
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    runner = CliRunner()
    args = ["eval", str(suite), "--row", "ca", "--checkpoint", str(ckpt), "--data", f"imagenet={data_root}"]
    result = runner.invoke(app, [*args, "--workers", "0", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    config = json.loads((next((runs / "tiny" / "ca" / "eval").iterdir()) / "config.json").read_text())
    result = runner.invoke(app, ["report", str(suite), "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    assert result.exit_code == 0, result.output
    with open(reports / "results.csv") as fh:
        cell = next(c for c in csv.DictReader(fh) if (c["row"], c["column"]) == ("ca", "top1"))
    return cell, (reports / "tiny.md").read_text(), config


def test_a_fixture_evaluation_never_fills_a_paper_cell(tmp_path: Path, imagenet: Path) -> None:
    cell, page, config = _eval_into_report(tmp_path, imagenet)
    ident = config["data_identity"]
    assert ident["dataset"] == "imagenet" and ident["images"] > 0 and not ident["paper"]
    assert ident["fingerprint"].startswith("sha256:")
    assert cell["status"] == "pending" and cell["reproduced"] == ""  # the trap: this was "25.00 ... ❌"
    line = next(x for x in page.splitlines() if "not the paper's data" in x and x.startswith("- "))
    assert f"({ident['images']} images in" in line and "✅" not in line and "❌" not in line


def test_evaluation_needs_only_the_evaluation_split(tmp_path: Path, imagenet: Path) -> None:
    val_only = tmp_path / "val_only"
    shutil.copytree(imagenet / "val", val_only / "val")
    _, _, config = _eval_into_report(tmp_path, val_only)
    assert config["data_identity"]["images"] == identity.data_identity("imagenet", imagenet).images


def test_the_papers_split_fills_the_cell(tmp_path: Path, imagenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = identity.data_identity("imagenet", imagenet)
    # Pretend the fixture is the paper's split: the path that fills a cell must still work.
    monkeypatch.setitem(identity.PAPER_SPLITS, "imagenet", identity.PaperSplit("x", n.images, n.classes))
    cell, page, _ = _eval_into_report(tmp_path, imagenet)
    assert cell["profile"] == "eval" and cell["reproduced"] != "" and "not the paper's data" not in page
