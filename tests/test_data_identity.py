"""Data identity: every run knows its evaluation split (size, classes, fingerprint); each dataset declares the
check that decides what a number on it may fill: the paper's split (by size) or a generator's manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cabench.data import identity
from cabench.data.base import DATASETS, DatasetInfo, data_identity, fills_cells, register_dataset
from cabench.data.fixtures.cityscapes import write_cityscapes_fixture
from cabench.data.fixtures.coco import write_coco_fixture
from cabench.data.fixtures.imagenet import write_imagenet_fixture
from cabench.data.fixtures.voc import write_voc_fixture

PAPER = {
    "imagenet": (50_000, 1_000),
    "coco": (5_000, None),
    "voc-detection": (4_952, None),
    "voc-segmentation": (1_449, None),
    "cityscapes": (500, None),
}


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_fixture(tmp_path_factory.mktemp("d") / "imagenet", train_per_class=2, val_per_class=3)


def _paper_split(monkeypatch: pytest.MonkeyPatch, images: int, classes: int | None) -> None:
    """Pretend ImageNet's paper split has this size (the path that fills a cell must still work)."""
    check = DATASETS.get("imagenet").identity
    monkeypatch.setattr(check, "images", images)
    monkeypatch.setattr(check, "classes", classes)


BUDGET = {"imagenet-100": (5_000, 100), "imagewoof": (500, 10)}  # 50 ImageNet val images per selected class


def test_every_dataset_declares_its_identity_check_and_the_paper_splits_are_the_papers() -> None:
    for name in DATASETS.names():
        check = DATASETS.get(name).identity
        if name.startswith("digits-"):  # generated probe data: no paper split, the manifest is the identity
            assert isinstance(check, identity.GeneratorManifest)
        elif name in BUDGET:  # a class selection of the user's ImageNet: its declared size, never the paper's
            assert isinstance(check, identity.BudgetSubset) and (check.images, check.classes) == BUDGET[name]
        else:
            assert isinstance(check, identity.PaperSplit) and (check.images, check.classes) == PAPER[name]
    assert set(PAPER) <= set(DATASETS.names())


def test_a_dataset_without_an_identity_check_is_refused() -> None:
    info = DatasetInfo("nameless", "classify", "nameless", "t", validate=lambda root: None, build=lambda *a: (a, a))
    with pytest.raises(ValueError, match="declares no identity check"):
        register_dataset(info)
    assert "nameless" not in DATASETS


def test_a_fixture_is_not_the_papers_data_and_its_fingerprint_tracks_the_files(imagenet: Path, tmp_path: Path) -> None:
    ident = data_identity("imagenet", imagenet)
    n_classes = len([p for p in (imagenet / "val").iterdir() if p.is_dir()])
    assert ident.images == 3 * n_classes and ident.classes == n_classes and not ident.paper and not ident.fills
    assert ident.fingerprint.startswith("sha256:") and ident == data_identity("imagenet", imagenet)
    copy = tmp_path / "copy"
    shutil.copytree(imagenet / "val", copy / "val")  # only the evaluation split: no train/ needed
    assert data_identity("imagenet", copy).fingerprint == ident.fingerprint
    next((copy / "val").rglob("*.JPEG")).unlink()
    smaller = data_identity("imagenet", copy)
    assert smaller.images == ident.images - 1 and smaller.fingerprint != ident.fingerprint


def test_the_papers_size_and_classes_make_it_the_papers(imagenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = data_identity("imagenet", imagenet)
    _paper_split(monkeypatch, n.images, n.classes)
    assert data_identity("imagenet", imagenet).paper
    _paper_split(monkeypatch, n.images, 1000)
    assert not data_identity("imagenet", imagenet).paper  # same size, other class count


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
    ident = data_identity(dataset, root)
    assert 0 < ident.images < PAPER[dataset][0] and not ident.paper and not ident.fills
    assert ident.expected_images == PAPER[dataset][0] and ident.check == "paper-split"


def test_the_not_papers_data_text_names_the_size() -> None:
    config = {"data_identity": {"images": 32, "classes": 4, "expected_classes": 1000, "paper": False}}
    assert identity.not_paper_text(config) == "not the paper's data (32 images in 4 classes)"
    assert not identity.is_paper_data({}) and identity.is_paper_data({"data_identity": {"paper": True}})
    assert not fills_cells({"dataset": "imagenet"})  # a paper dataset's run without a record fills nothing
    assert not fills_cells({"dataset": "no-such-dataset", "data_identity": {"paper": True}})


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cabench.data.base import write_fixture

    return write_fixture("digits-tiny", tmp_path_factory.mktemp("digits") / "d")


def test_generated_digits_are_identified_by_their_manifest(digits: Path, tmp_path: Path) -> None:
    manifest = json.loads((digits / "manifest.json").read_text())
    for name in ("digits-classify", "digits-detection", "digits-segmentation"):
        ident = data_identity(name, digits)
        assert ident.check == "manifest" and ident.fills and not ident.paper and ident.images > 0
        assert ident.fingerprint == f"sha256:{manifest['fingerprint']}" and ident.expected_images is None
    copy = tmp_path / "copy"
    shutil.copytree(digits, copy)
    changed = next((copy / "classify" / "val").rglob("*.png"))
    changed.write_bytes(changed.read_bytes() + b"\0")  # one evaluation image no longer the generated one
    ident = data_identity("digits-classify", copy)
    assert not ident.fills and "is not the generated file" in ident.detail
    assert "not the data its manifest lists" in identity.not_paper_text({"data_identity": ident.as_dict()})
    assert data_identity("digits-detection", copy).fills  # the other layouts are untouched


def test_a_digits_run_recorded_before_identities_fills_by_its_manifest_fingerprint() -> None:
    assert fills_cells({"dataset": "digits-classify", "data_fingerprint": {"fingerprint": "ab12"}})
    assert fills_cells({"data_fingerprint": {"fingerprint": "ab12"}}, dataset="digits-classify")
    assert not fills_cells({"dataset": "digits-classify", "data_fingerprint": None})


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
    assert config["data_identity"]["images"] == data_identity("imagenet", imagenet).images


@pytest.mark.slow
def test_the_papers_split_fills_the_cell(tmp_path: Path, imagenet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = data_identity("imagenet", imagenet)
    _paper_split(monkeypatch, n.images, n.classes)
    cell, page, _ = _eval_into_report(tmp_path, imagenet)
    assert cell["profile"] == "eval" and cell["reproduced"] != "" and "not the paper's data" not in page
