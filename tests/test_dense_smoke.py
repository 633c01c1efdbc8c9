"""Tables 6-9 end to end on generated data: fixtures in the real layouts, a few training steps per row, the real
evaluators (pycocotools, VOC07 mAP, mIoU), and a report that shows "pipeline ok (smoke)", never a number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cabench.cli import app

pytestmark = pytest.mark.slow  # end-to-end runs in subprocesses: the full tier only

runner = CliRunner()

# table, fixture kind / --data key, rows (the baseline and CA keep the test short; `cabench run` does every row),
# accuracy columns, the evaluator's keys in metrics.json
CASES = [
    (
        "table6",
        "coco",
        ["ssdlite-mbv2", "ssdlite-mbv2-ca"],
        ["ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l"],
        {"ap", "ap_l"},
    ),
    ("table7", "voc", ["ssdlite-mbv2", "ssdlite-mbv2-ca"], ["map"], {"map", "per_class_ap"}),
    ("table8", "voc", ["mbv2-os16", "mbv2-os16-ca"], ["miou"], {"miou", "per_class_iou", "pixel_acc"}),
    ("table9", "cityscapes", ["mbv2-os8", "mbv2-os8-ca"], ["miou"], {"miou", "per_class_iou"}),
]


def _assert_outcomes_give(run_dir: Path, metric: str, metrics: dict) -> None:
    """The final evaluation's per-image outcomes recompute its metric (COCO keeps its detections)."""
    import numpy as np

    from cabench import outcomes
    from cabench.tasks.base import statistic_for

    got = outcomes.load(run_dir)
    assert got is not None and got.n == metrics["val_n"]
    stat = statistic_for(got.kind, metric)
    if got.kind == "coco":
        assert stat is None and len(got.arrays["det_box"]) == len(got.arrays["det_score"])
        return
    assert stat is not None and stat(got, np.ones(got.n)) == pytest.approx(metrics[metric], abs=1e-9)


# What each table's recipe protocol must show in the run's config.json (the authors' settings).
PIPELINE = {
    "table6": ['"kind": "focal"', "SizedDefaultBoxes(min_sizes=[45.0", '"score_threshold": 0.05', '"nms_iou": 0.5'],
    "table7": ['"kind": "multibox"', "max_sizes=[120.0", '"score_threshold": 0.01', '"nms_iou": 0.45'],
    "table8": ['"align_corners": true', '"eval_flip": true', '"eval_mode": "whole"'],
    # smoke: the sliding window shrinks with the crops (768 -> 64 pixels, stride 512 -> 43)
    "table9": ['"eval_mode": "sliding"', '"window": 64', '"stride": 43', '"align_corners": true'],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    out = {}
    for kind in ("coco", "voc", "cityscapes"):
        result = runner.invoke(app, ["fixtures", kind, str(root / kind)])
        assert result.exit_code == 0, result.output
        out[kind] = root / kind
    return out


@pytest.mark.parametrize(("table", "kind", "rows", "columns", "keys"), CASES, ids=[c[0] for c in CASES])
def test_smoke_trains_evaluates_and_reports_pipeline_ok(
    tmp_path: Path, data: dict[str, Path], table: str, kind: str, rows: list[str], columns: list[str], keys: set[str]
) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    args = ["run", table, "--profile", "smoke", "--data", f"{kind}={data[kind]}", "--runs-dir", str(runs)]
    args += ["--keep-checkpoints", "last"]  # smoke keeps none by default (tests/test_first_hour.py); this checks one
    for row in rows:
        args += ["--rows", row]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for row in rows:
        run_dir = next((runs / table / row / "smoke").iterdir())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert keys <= set(metrics) and metrics["steps"] == 3 and metrics["pipeline"] == "ok"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["data"] == {kind: str(data[kind])} and config["backbone_checkpoint"] is None
        pipeline = json.dumps(config["pipeline"])
        assert all(part in pipeline for part in PIPELINE[table]), (table, config["pipeline"])
        assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "log.jsonl").is_file()
        _assert_outcomes_give(run_dir, columns[0], metrics)
    result = runner.invoke(app, ["report", table, "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    assert result.exit_code == 0, result.output
    with open(reports / "results.csv") as fh:
        cells = {(c["row"], c["column"]): c for c in csv.DictReader(fh)}
    text = (reports / f"{table}.md").read_text()
    for row in rows:
        for column in columns:
            cell = cells[(row, column)]
            assert (cell["profile"], cell["reproduced"], cell["status"]) == ("smoke", "", "pending")
    assert text.count("pipeline ok (smoke)") >= len(rows)


def test_a_backbone_checkpoint_is_recorded_and_resumes_only_its_own_run(tmp_path: Path, data: dict[str, Path]) -> None:
    import torch

    from cabench.models.registry import ModelSpec, build_model

    ckpt = tmp_path / "mbv2_ca.pt"
    torch.save({"model": build_model(ModelSpec("mobilenetv2", attention="ca")).state_dict()}, ckpt)
    runs = tmp_path / "runs"
    base = [
        "run",
        "table9",
        "--profile",
        "smoke",
        "--data",
        f"cityscapes={data['cityscapes']}",
        "--runs-dir",
        str(runs),
    ]
    result = runner.invoke(app, [*base, "--rows", "mbv2-os8-ca", "--backbone-checkpoint", f"mbv2-os8-ca={ckpt}"])
    assert result.exit_code == 0, result.output
    run_dir = next((runs / "table9" / "mbv2-os8-ca" / "smoke").iterdir())
    recorded = json.loads((run_dir / "config.json").read_text())["backbone_checkpoint"]
    assert recorded["path"] == str(ckpt) and len(recorded["sha256"]) == 64
    # A checkpoint whose attention block does not fit the row: one line, exit 2, nothing trained.
    result = runner.invoke(app, [*base, "--rows", "mbv2-os8-se", "--backbone-checkpoint", str(ckpt)])
    assert result.exit_code == 2 and "has no counterpart" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (runs / "table9" / "mbv2-os8-se").exists()


@pytest.mark.parametrize("kind", ["coco", "voc", "cityscapes"])
def test_a_missing_dataset_is_one_line_before_any_work(tmp_path: Path, kind: str) -> None:
    table = {"coco": "table6", "voc": "table7", "cityscapes": "table9"}[kind]
    missing = tmp_path / "nowhere"
    result = runner.invoke(
        app, ["run", table, "--profile", "smoke", "--data", f"{kind}={missing}", "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and str(missing) in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_eval_fills_a_segmentation_cell_from_a_checkpoint(
    tmp_path: Path, data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from cabench.data.base import DATASETS, data_identity
    from cabench.models.registry import ModelSpec, build_model

    # Only the paper's evaluation split fills a cell (tests/test_data_identity.py): let the fixture stand for it.
    n = data_identity("cityscapes", data["cityscapes"]).images
    monkeypatch.setattr(DATASETS.get("cityscapes").identity, "images", n)

    ckpt = tmp_path / "deeplab.pt"
    model = build_model(ModelSpec("deeplabv3_mobilenetv2", attention="ca", num_classes=19, output_stride=8))
    torch.save({"model": model.state_dict()}, ckpt)
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    args = ["eval", "table9", "--row", "mbv2-os8-ca", "--checkpoint", str(ckpt), "--runs-dir", str(runs)]
    result = runner.invoke(app, [*args, "--data", f"cityscapes={data['cityscapes']}", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "on 4 images" in result.output
    metrics = json.loads((next((runs / "table9" / "mbv2-os8-ca" / "eval").iterdir()) / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 100.0 and len(metrics["per_class_iou"]) == 19
    runner.invoke(app, ["report", "table9", "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    assert "evaluated from checkpoint" in (reports / "table9.md").read_text()
    # No data root: one line, exit 2; an evaluation never falls back to generated data.
    result = runner.invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 2 and "evaluation needs Cityscapes" in result.output
    result = runner.invoke(app, ["eval", "ssdlite320_mobilenetv2", "--checkpoint", str(ckpt)])
    assert result.exit_code == 2 and "evaluate it through its suite" in result.output
