"""A researcher's first hour (issue 12): each trap, reproduced, now one clear line or the right output."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from test_jobs import SUITE as TINY  # the same two rows of Table 1
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.fixtures import write_imagenet_fixture
from cabench.models.mobilenetv2 import MobileNetV2

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _refused(args: list[str], runs: Path, *expected: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, [*args, "--runs-dir", str(runs)], env=env)
    line = result.stderr.strip()
    assert result.exit_code == 2, result.output
    assert "\n" not in line and "Traceback" not in result.output
    for text in expected:
        assert text in line, line
    assert not runs.exists()  # validated before any directory is made
    return line


def test_version() -> None:
    import cabench

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"cabench {cabench.__version__}"


def test_show_prints_row_ids_uncut_and_json() -> None:
    result = runner.invoke(app, ["show", "table4"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    text = result.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    for row_id in ("se-r24", "se-r12", "cbam-r12", "ca-r16"):
        assert row_id in text  # the ids --rows and ROW=CKPT take, never cut to "se-r…"
    assert "…" not in result.stdout.split("Source:")[0].split("\n", 3)[-1].split("model")[0]
    data = json.loads(runner.invoke(app, ["show", "table4", "--json"]).stdout)
    assert [r["id"] for r in data["rows"]][:2] == ["baseline", "se-r24"]


def test_list_json() -> None:
    data = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    assert "table1" in [s["id"] for s in data["suites"]] and "count" in [p["name"] for p in data["profiles"]]


def test_rows_matching_several_rows_is_refused(tmp_path: Path) -> None:
    _refused(["run", "table4", "--rows", "+ SE"], tmp_path / "runs", "matches 2 rows of table4 (se-r24, se-r12)")


def test_an_unknown_data_key_is_refused(tiny: Path, tmp_path: Path) -> None:
    args = ["run", str(tiny), "--profile", "smoke", "--data", f"imagnet={tmp_path}"]
    _refused(args, tmp_path / "runs", "unknown dataset key 'imagnet' (did you mean 'imagenet'?)", "cityscapes")


def test_an_unknown_backbone_row_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "b.pth"
    ckpt.write_bytes(b"")
    args = ["run", "table6", "--profile", "paper", "--backbone-checkpoint", f"ssdlite-mbv2-caa={ckpt}"]
    _refused(args, tmp_path / "runs", "--backbone-checkpoint ssdlite-mbv2-caa=...: no such row", "ssdlite-mbv2-ca")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[data]\nimagnet = "/x"\n', "[data] imagnet: unknown dataset key 'imagnet'"),
        ('[dta]\nimagenet = "/x"\n', "unknown config key 'dta'"),
    ],
)
def test_an_unknown_config_key_is_refused(tiny: Path, tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    env = {"CABENCH_CONFIG": str(config)}
    _refused(["run", str(tiny), "--profile", "smoke"], tmp_path / "runs", expected, env=env)


def test_a_bad_keep_checkpoints_value_is_refused(tiny: Path, tmp_path: Path) -> None:
    args = ["run", str(tiny), "--profile", "smoke", "--keep-checkpoints", "all"]
    _refused(args, tmp_path / "runs", "--keep-checkpoints 'all': expected one of last, best, none")


def test_workers_default_to_what_the_host_has() -> None:
    from cabench.profiles.workers import default_workers

    assert default_workers() == min(8, len(os.sched_getaffinity(0)))
    assert "--workers" in runner.invoke(app, ["eval", "--help"]).stdout


def test_keep_best_keeps_the_weights_alone(tmp_path: Path) -> None:
    from cabench.checkpoint import save_checkpoint
    from cabench.profiles.train import _retain

    model = MobileNetV2(width=0.5)
    for keep, left in (("last", {"checkpoint.pt"}), ("best", {"model.pt"}), ("none", set())):
        run_dir = tmp_path / keep
        save_checkpoint(run_dir / "checkpoint.pt", {"model": model.state_dict(), "optimizer": {}})
        _retain(run_dir, keep)
        assert {p.name for p in run_dir.iterdir()} == left
    weights = torch.load(tmp_path / "best" / "model.pt", weights_only=True)["model"]
    assert weights.keys() == model.state_dict().keys()


def test_a_wrong_block_checkpoint_names_the_block_it_was_trained_with(tiny: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    torch.save({"model": MobileNetV2(width=0.5, attention="se").state_dict()}, run_dir / "checkpoint.pt")
    config = {"model": {"arch": "mobilenetv2", "width": 0.5, "attention": "se"}}
    (run_dir / "config.json").write_text(json.dumps(config))
    data = write_imagenet_fixture(tmp_path / "fx", classes=2, train_per_class=1, val_per_class=1)
    args = ["eval", str(tiny), "--row", "ca", "--checkpoint", str(run_dir / "checkpoint.pt")]
    _refused(
        [*args, "--data", f"imagenet={data}"], tmp_path / "runs", "trained as arch=mobilenetv2 width=0.5 attention=se"
    )


def test_a_second_ctrl_c_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from cabench.engine import runtime

    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(runtime.os, "_exit", fake_exit)
    with pytest.raises(SystemExit), runtime.DeferSigint():
        os.kill(os.getpid(), signal.SIGINT)  # first: held until the step ends
        assert exits == []
        os.kill(os.getpid(), signal.SIGINT)  # second: out now
    assert exits == [130]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_run_json_and_latency_with_a_confidence_interval(tiny: Path, tmp_path: Path) -> None:
    import csv

    runs, reports = tmp_path / "runs", tmp_path / "reports"
    args = ["run", str(tiny), "--profile", "latency", "--rounds", "4", "--runs-dir", str(runs), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    ca = next(r for r in records if r["row"] == "ca")["metrics"]
    assert ca["latency_ratio_ci_low"] <= ca["latency_ratio"] <= ca["latency_ratio_ci_high"]
    assert ca["latency_ratio_rounds"] == 4
    result = runner.invoke(app, ["report", str(tiny), "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    assert result.exit_code == 0, result.output
    with open(reports / "results.csv") as fh:
        cell = next(c for c in csv.DictReader(fh) if (c["row"], c["column"]) == ("ca", "latency"))
    assert float(cell["latency_ratio_ci_low"]) <= float(cell["latency_ratio"]) <= float(cell["latency_ratio_ci_high"])
    assert cell["name"] == "+ CA" and cell["model"].startswith("mobilenetv2-w0.5-ca")
    page = (reports / "tiny.md").read_text()
    assert "4 interleaved rounds, 1 thread(s), per-round ratio spread" in page


def test_a_latency_interval_straddling_an_edge_is_inconclusive(tiny: Path, tmp_path: Path) -> None:
    from cabench.cells import build_cells
    from cabench.store import Store
    from cabench.suite import load_suite

    suite, store = load_suite(tiny), Store(tmp_path / "runs")
    # Hand-written latency records: this test is about the status rule, not a measurement.
    # Allowed ratios for "+ CA": [17/16, 19/14] = [1.0625, 1.357].
    for row, ratio, low, high in (("baseline", 1.0, 1.0, 1.0), ("ca", 1.08, 1.03, 1.12)):
        metrics = {"latency": 10 * ratio, "latency_ratio": ratio, "latency_ratio_ci_low": low}
        metrics |= {"latency_ratio_ci_high": high, "latency_ratio_spread": 0.1}
        store.write_run("tiny", row, "latency", {"rounds": 30, "threads": 1}, metrics)
    cells = {(c.row, c.column): c for c in build_cells([suite], store)}
    assert cells[("ca", "latency")].status == "inconclusive"  # the point is inside, the CI is not
    assert cells[("baseline", "latency")].status == "match"
