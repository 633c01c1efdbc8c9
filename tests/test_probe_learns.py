"""The probe learns: MobileNetV2 trained through the real CLI on a slice of the flat digit scenes ends far above
the floor that needs no deep network; the dense probe rows start from the classification row's checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.fixtures.digits import PRESETS, TINY, write_digits

runner = CliRunner()

# 40 glyphs of each class in the train pool (x 8 renders = 3,200 scenes) and 30 of each in the val pool (x 2 = 600):
# about a minute of training on two cores.
SLICE = dataclasses.replace(
    PRESETS["flat"],
    preset="flat-slice",
    classify_glyphs_per_class=40,
    detect_train=8,
    detect_test=4,
    segment_train=8,
    segment_val=4,
)


def _metric(runs: Path, suite: str, row: str, name: str) -> float:
    (run,) = (runs / suite / row / "paper").iterdir()
    return float(json.loads((run / "metrics.json").read_text())[name])


@pytest.mark.slow
def test_mobilenetv2_learns_the_digit_scenes_far_above_the_pixel_floor(tmp_path: Path) -> None:
    data, runs = write_digits(tmp_path / "digits", seed=0, params=SLICE), tmp_path / "runs"
    args = ["run", "probe-classify", "--rows", "baseline", "--rows", "floor", "--profile", "paper"]
    args += ["--epochs", "3", "--channels-last", "--workers", "0", "--data", f"digits={data}", "--runs-dir", str(runs)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    learned = _metric(runs, "probe-classify", "baseline", "top1")
    floor = _metric(runs, "probe-classify", "floor", "top1")
    assert floor < 30.0, "the slice became linearly separable: the floor no longer needs no deep network"
    assert learned >= floor + 40.0, f"top-1 {learned:.1f}% is not 40 points above the pixel floor {floor:.1f}%"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits") / "d", seed=0, params=TINY)


@pytest.mark.slow
def test_a_dense_probe_row_starts_from_the_classification_checkpoint_of_its_row_and_seed(
    tiny: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    common = ["--rows", "ca", "--profile", "paper", "--workers", "0", "--batch-size", "4", "--seeds", "0,1"]
    common += ["--data", f"digits={tiny}", "--runs-dir", str(runs)]
    result = runner.invoke(app, ["run", "probe-classify", *common, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", "probe-segment", *common, "--iterations", "1"])
    assert result.exit_code == 0, result.output
    sources = {}
    for run in (runs / "probe-classify" / "ca" / "paper").iterdir():
        sources[json.loads((run / "config.json").read_text())["seed"]] = run
    for run in (runs / "probe-segment" / "ca" / "paper").iterdir():
        config = json.loads((run / "config.json").read_text())
        backbone, source = config["backbone_checkpoint"], sources[config["seed"]]
        origin = {"suite": "probe-classify", "row": "ca", "seed": config["seed"], "run": source.name}
        assert backbone["from"] == {**origin, "overrides": {"epochs": 1, "batch_size": 4}}
        assert Path(backbone["path"]).parent == source and len(backbone["sha256"]) == 64


def test_a_dense_probe_row_without_its_classification_run_is_refused_before_any_work(
    tiny: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    args = ["run", "probe-detect", "--rows", "baseline", "--profile", "paper", "--iterations", "1"]
    result = runner.invoke(app, [*args, "--data", f"digits={tiny}", "--runs-dir", str(runs)])
    assert result.exit_code == 2
    assert "starts from probe-classify/baseline seed 0" in result.output
    assert not (runs / "probe-detect").exists()


def test_dense_seeds_from_their_own_checkpoints_are_replicates_of_one_configuration(tmp_path: Path) -> None:
    from cabench.replicates import _configuration
    from cabench.store import RunRecord

    def run(seed: int) -> RunRecord:
        origin = {"suite": "probe-classify", "row": "ca", "seed": seed, "run": f"r{seed}"}
        config = {"model_key": "m", "seed": seed, "backbone_checkpoint": {"path": f"p{seed}", "sha256": f"{seed}" * 64}}
        config["backbone_checkpoint"]["from"] = origin
        return RunRecord("probe-detect", "ca", "paper", f"run{seed}", tmp_path, {"map": 1.0}, config)

    assert _configuration(run(0)) == _configuration(run(1))
