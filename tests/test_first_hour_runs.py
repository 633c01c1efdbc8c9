"""Issue 12's traps that need a run: a bad --amp leaves no directory, smoke keeps no checkpoint, the run table keeps
its ids whole at 80 columns, and a `--profile paper` run on a fixture never fills a paper cell."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_data_identity import TINY  # the same one row of Table 1
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.fixtures import write_imagenet_fixture

runner = CliRunner()


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_fixture(tmp_path_factory.mktemp("d") / "imagenet", train_per_class=2, val_per_class=2)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_a_bad_amp_value_leaves_no_run_directory(suite: Path, imagenet: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["run", str(suite), "--profile", "paper", "--amp", "fp9", "--data", f"imagenet={imagenet}"]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "amp must be off, bf16 or fp16, not 'fp9'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not runs.exists()  # the trap: the run directory was made before the value was checked


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([], "training set of 8 images is smaller than one global batch of 256"),
        (["--batch-size", "4", "--amp", "fp16"], "amp fp16 needs CUDA"),
    ],
)
def test_what_the_engine_refuses_is_refused_before_any_run_directory(
    suite: Path, imagenet: Path, tmp_path: Path, extra: list[str], words: str
) -> None:
    # The trap: both were refused by the engine after `training -> runs/...`, leaving config.json behind, and the
    # same command without --amp fp16 was then refused as "started with amp='fp16'".
    runs = tmp_path / "runs"
    args = ["run", str(suite), "--profile", "paper", "--data", f"imagenet={imagenet}", *extra]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
    assert result.exit_code == 2 and words in result.stderr, result.output
    assert "training ->" not in result.output and not runs.exists()


def test_smoke_keeps_no_checkpoint_and_the_run_table_keeps_ids_whole(
    suite: Path, imagenet: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    args = ["run", str(suite), "--profile", "smoke", "--data", f"imagenet={imagenet}", "--runs-dir", str(runs)]
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    (run_dir,) = (runs / "tiny" / "ca" / "smoke").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["keep_checkpoints"] == "none"
    assert not (run_dir / "checkpoint.pt").exists() and (run_dir / "metrics.json").is_file()
    assert run_dir.name in result.stdout and "…" not in result.stdout  # rich used to cut ids at 80 columns


@pytest.mark.slow
def test_a_paper_run_on_a_fixture_never_fills_the_paper_cell(suite: Path, imagenet: Path, tmp_path: Path) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    args = ["run", str(suite), "--profile", "paper", "--data", f"imagenet={imagenet}", "--epochs", "1"]
    args += ["--batch-size", "8", "--workers", "0", "--keep-checkpoints", "none", "--runs-dir", str(runs)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = (runs / "tiny" / "ca" / "paper").iterdir()
    ident = json.loads((run_dir / "config.json").read_text())["data_identity"]
    assert ident["check"] == "paper-split" and not ident["paper"] and ident["expected_images"] == 50_000
    result = runner.invoke(app, ["report", str(suite), "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    assert result.exit_code == 0, result.output
    with open(reports / "results.csv") as fh:
        cell = next(c for c in csv.DictReader(fh) if (c["row"], c["column"]) == ("ca", "top1"))
    assert cell["reproduced"] == "" and cell["status"] == "pending"  # the trap: a fixture number marked ❌
    page = (reports / "tiny.md").read_text()
    line = next(x for x in page.splitlines() if x.startswith("- ") and "not the paper's data" in x)
    assert f"({ident['images']} images in {ident['classes']} classes)" in line and run_dir.name in line


@pytest.mark.slow
def test_eval_json_prints_the_metrics_and_the_run(suite: Path, imagenet: Path, tmp_path: Path) -> None:
    import torch

    from cabench.models.mobilenetv2 import MobileNetV2

    ckpt = tmp_path / "w.pth"
    torch.save({"model": MobileNetV2(width=0.5, attention="ca").state_dict()}, ckpt)
    args = ["eval", str(suite), "--row", "ca", "--checkpoint", str(ckpt), "--data", f"imagenet={imagenet}"]
    result = runner.invoke(app, [*args, "--workers", "0", "--json", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # for scripts: nothing but the JSON on stdout
    assert data["model"].startswith("mobilenetv2-w0.5-ca") and 0 <= data["metrics"]["top1"] <= 100
    assert data["run"]["row"] == "ca" and Path(data["run"]["path"]).is_dir()


def test_a_data_root_no_selected_row_reads_is_refused(suite: Path, imagenet: Path, tmp_path: Path) -> None:
    # The trap: a smoke run of a suite whose recipe reads ImageNet ignored the --data digits=... it was given.
    runs = tmp_path / "runs"
    args = ["run", str(suite), "--profile", "smoke", "--data", f"imagenet={imagenet}", "--data", f"digits={tmp_path}"]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
    assert result.exit_code == 2 and f"--data digits={tmp_path}: no selected row reads it" in result.stderr
    assert "(their recipes read imagenet)" in result.stderr and not (runs / "tiny").exists()
