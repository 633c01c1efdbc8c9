"""Training, latency and evaluation profiles through the CLI, on generated ImageNet-format data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.fixtures import write_imagenet_fixture
from cabench.models.mobilenetv2 import MobileNetV2

runner = CliRunner()

SUITE = """\
id: tiny
title: "Two rows of Table 1"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
baseline: baseline
columns:
  params: {unit: M}
  latency: {unit: ms}
  top1: {unit: "%", tolerance: 0.3}
rows:
  - name: Baseline
    id: baseline
    model: {arch: mobilenetv2, width: 0.5, attention: none}
    published: {params: 2.0, latency: "14-16", top1: 65.4}
  - name: "+ CA"
    id: ca
    model: {arch: mobilenetv2, width: 0.5, attention: ca}
    published: {params: 2.1, latency: "17-19", top1: 67.0}
"""


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_fixture(tmp_path_factory.mktemp("data") / "imagenet", train_per_class=8, val_per_class=4)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE)
    return path


def _assert_outcomes_give(run_dir: Path, metric: str) -> None:
    """The run's per-image outcomes recompute its metric exactly."""
    import json

    import numpy as np

    from cabench import outcomes
    from cabench.tasks.base import statistic_for

    got = outcomes.load(run_dir)
    assert got is not None
    stat = statistic_for(got.kind, metric)
    assert stat is not None
    value = json.loads((run_dir / "metrics.json").read_text())[metric]
    assert stat(got, np.ones(got.n)) == pytest.approx(value, abs=1e-9)


def _cells(report_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(report_dir / "results.csv") as fh:
        return {(c["row"], c["column"]): c for c in csv.DictReader(fh)}


@pytest.mark.slow
def test_smoke_runs_end_to_end_and_never_fills_an_accuracy_cell(tmp_path: Path, suite: Path, imagenet: Path) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    result = runner.invoke(
        app, ["run", str(suite), "--profile", "smoke", "--data", f"imagenet={imagenet}", "--runs-dir", str(runs)]
    )
    assert result.exit_code == 0, result.output
    run_dir = next((runs / "tiny" / "ca" / "smoke").iterdir())
    assert {"config.json", "env.json", "metrics.json", "log.jsonl"} <= {p.name for p in run_dir.iterdir()}
    _assert_outcomes_give(run_dir, "top1")
    result = runner.invoke(app, ["report", str(suite), "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    assert result.exit_code == 0, result.output
    cell = _cells(reports)[("ca", "top1")]
    assert cell["status"] == "pending" and cell["reproduced"] == "" and cell["profile"] == "smoke"
    assert "pipeline ok (smoke) · 67.0 ⏳" in (reports / "tiny.md").read_text()


def test_latency_profile_fills_the_ratio_to_the_baseline(tmp_path: Path, suite: Path) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    result = runner.invoke(app, ["run", str(suite), "--profile", "latency", "--rounds", "3", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    runner.invoke(app, ["report", str(suite), "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    cells = _cells(reports)
    assert float(cells[("ca", "latency")]["reproduced"]) > 0
    assert "1.00× (" in (reports / "tiny.md").read_text()  # the baseline's own ratio


@pytest.mark.slow
def test_eval_fills_a_cell_from_a_checkpoint_and_says_so(
    tmp_path: Path, suite: Path, imagenet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cabench.data.base import DATASETS, data_identity

    # Only the paper's evaluation split fills a cell (tests/test_data_identity.py): let the fixture stand for it.
    n = data_identity("imagenet", imagenet)
    check = DATASETS.get("imagenet").identity
    monkeypatch.setattr(check, "images", n.images)
    monkeypatch.setattr(check, "classes", n.classes)
    ckpt = tmp_path / "mbv2_ca.pth"
    torch.save({"model": MobileNetV2(width=0.5, attention="ca").state_dict()}, ckpt)
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    args = ["eval", str(suite), "--row", "ca", "--checkpoint", str(ckpt), "--data", f"imagenet={imagenet}"]
    result = runner.invoke(app, [*args, "--workers", "0", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "top-1" in result.stdout
    runner.invoke(app, ["report", str(suite), "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    cell = _cells(reports)[("ca", "top1")]
    assert cell["profile"] == "eval" and cell["reproduced"] != ""
    _assert_outcomes_give(next((runs / "tiny" / "ca" / "eval").iterdir()), "top1")
    assert "evaluated from checkpoint" in (reports / "tiny.md").read_text()


def test_a_checkpoint_that_does_not_fit_names_the_first_mismatching_key(tmp_path: Path, imagenet: Path) -> None:
    ckpt = tmp_path / "wrong_width.pth"
    torch.save(MobileNetV2(width=0.5).state_dict(), ckpt)
    args = ["eval", "mobilenetv2", "--checkpoint", str(ckpt), "--data", f"imagenet={imagenet}"]
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "features.0.0.weight: shape (16, 3, 3, 3)" in line
    assert not (tmp_path / "runs").exists()


def test_finite_but_huge_weights_write_no_metric(tmp_path: Path, imagenet: Path) -> None:
    # Issue 22: weights scaled by 1e30 are finite, so they load; their logits overflow, and val_loss NaN was
    # written to metrics.json with exit 0.
    state = MobileNetV2(width=0.5).state_dict()
    ckpt = tmp_path / "huge.pth"
    torch.save({k: v * 1e30 if v.is_floating_point() and k.endswith("weight") else v for k, v in state.items()}, ckpt)
    args = ["eval", "mobilenetv2", "--width", "0.5", "--checkpoint", str(ckpt), "--data", f"imagenet={imagenet}"]
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "the validation loss is nan" in result.stderr, result.output
    assert not list((tmp_path / "runs").rglob("metrics.json"))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: None, "dataset root does not exist"),
        (lambda root: (root / "train" / "n0").mkdir(parents=True), "val"),
    ],
    ids=["missing", "no-val"],
)
def test_a_bad_dataset_is_one_line_before_any_work(tmp_path: Path, suite: Path, make, expected: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "imagenet"
    make(root)
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["run", str(suite), "--profile", "paper", "--data", f"imagenet={root}", "--runs-dir", str(runs)]
    )
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not runs.exists()


def test_paper_profile_without_data_says_how_to_give_it(tmp_path: Path, suite: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CABENCH_DATA_IMAGENET", raising=False)
    monkeypatch.setenv("CABENCH_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    result = runner.invoke(app, ["run", str(suite), "--profile", "paper", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "--data imagenet=PATH" in result.stderr


def test_fixtures_command_writes_an_imagefolder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fixtures", "imagenet", str(tmp_path / "fx")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "fx" / "val").rglob("*.JPEG"))) > 0
    again = runner.invoke(app, ["fixtures", "imagenet", str(tmp_path / "fx")])
    assert again.exit_code == 2 and len(again.stderr.strip().splitlines()) == 1


def test_a_row_seed_whose_submission_got_no_job_id_is_missing_not_failed(tmp_path: Path) -> None:
    # Issue 22: status said "failed" with no log for a row-seed that never ran (its submission got no job id).
    from cabench.launch.status import statuses
    from cabench.profiles.base import RowSeed
    from cabench.store import Store

    unit = RowSeed("table1", "table1", "ca", "paper", 0, "key")
    (status,) = statuses(Store(tmp_path / "runs"), [(unit, {"launcher": "none-such", "id": ""})])
    assert status.state == "missing" and status.log is None
