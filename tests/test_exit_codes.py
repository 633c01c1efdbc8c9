"""Exit codes mean one thing each (1 drift, 2 bad input, 3 unexpected error with a log), options are bounded
before any work, `cabench data check` lists every bad image, and two `cabench run`s share a runs directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.fixtures import write_imagenet_fixture

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def _one_line(result, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cabench: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "table1", "--profile", "latency", "--threads", "0"], "--threads 0: expected a value in [1, 1024]"),
        (["run", "table1", "--profile", "latency", "--rounds", "-3"], "--rounds -3"),
        (["run", "table1", "--profile", "smoke", "--lr", "inf"], "--lr inf: expected a finite number"),
        (["run", "table1", "--profile", "smoke", "--lr", "nan"], "--lr nan: expected a finite number"),
        (["run", "table1", "--profile", "smoke", "--batch-size", "100000000"], "--batch-size 100000000"),
        (["run", "table1", "--profile", "smoke", "--workers", "-1"], "--workers -1"),
        (["count", "mobilenetv2", "--width", "inf"], "width must be a number in (0, 4]"),
        (["count", "mobilenetv2", "--width", "nan"], "width must be a number in (0, 4]"),
        (["count", "mobilenetv2", "--num-classes", "1000000000000"], "num_classes must be an integer in"),
        (["count", "mobilenetv2", "--input-size", "1000000"], "input size must be 32-4096 pixels"),
        (["bench", "--threads", "0"], "--threads 0"),
    ],
)
def test_out_of_range_options_are_one_line_before_any_work(tmp_path: Path, args: list[str], expected: str) -> None:
    start = time.perf_counter()
    line = _one_line(runner.invoke(app, [*args, *(["--runs-dir", str(tmp_path / "runs")] if args[0] == "run" else [])]))
    assert expected in line, line
    assert not (tmp_path / "runs").exists()
    assert time.perf_counter() - start < 60  # refused, not attempted


def test_check_refuses_a_missing_lock_with_exit_2(tmp_path: Path) -> None:
    line = _one_line(runner.invoke(app, ["check", "table1", "--lock", str(tmp_path / "typo.json")]))
    assert "typo.json" in line and "no such file" in line


def test_an_unexpected_error_is_exit_3_with_its_traceback_in_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setenv("CABENCH_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr("cabench.cli.load_suite", broken)
    line = _one_line(runner.invoke(app, ["show", "table1"]), code=3)
    assert "unexpected error (RuntimeError: disk on fire); traceback in " in line
    log = Path(line.rsplit(" ", 1)[1])
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text() and "disk on fire" in log.read_text()


def test_data_check_lists_every_bad_image_and_records_the_fingerprint(tmp_path: Path) -> None:
    root = write_imagenet_fixture(tmp_path / "imagenet", train_per_class=4, val_per_class=2)
    runs = tmp_path / "runs"
    ok = runner.invoke(app, ["data", "check", f"imagenet={root}", "--runs-dir", str(runs), "--workers", "2"])
    assert ok.exit_code == 0, ok.output
    record = json.loads((runs / "_data" / "imagenet.json").read_text())
    files = sorted(root.rglob("*.JPEG"))
    assert record["files"] == len(files) and record["bad"] == [] and len(record["fingerprint"]) == 64
    files[0].write_bytes(files[0].read_bytes()[:100])
    files[-1].write_text("not an image")
    bad = runner.invoke(app, ["data", "check", f"imagenet={root}", "--runs-dir", str(runs)])
    assert bad.exit_code == 2
    listed = [ln for ln in bad.stderr.splitlines() if ln.startswith("BAD ")]
    assert [ln.split(": ", 1)[0][4:] for ln in listed] == [str(files[0]), str(files[-1])]
    assert "2 image file(s) do not decode" in bad.stderr.splitlines()[-1]
    assert len(json.loads((runs / "_data" / "imagenet.json").read_text())["bad"]) == 2
    assert runner.invoke(app, ["data", "check", f"imagenet={tmp_path}"]).exit_code == 2  # not the layout


SUITE = """\
id: pair
title: "Two rows"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
columns:
  top1: {unit: "%", tolerance: 0.3}
rows:
  - name: Baseline
    id: baseline
    model: {arch: mobilenetv2, width: 0.5, attention: none}
    published: {top1: 65.4}
  - name: "+ CA"
    id: ca
    model: {arch: mobilenetv2, width: 0.5, attention: ca}
    published: {top1: 67.0}
"""


@pytest.mark.slow
def test_two_runs_on_one_store_train_each_row_seed_once(tmp_path: Path) -> None:
    """Two real `cabench run --profile paper` processes, started together on the same rows and seeds."""
    root = write_imagenet_fixture(tmp_path / "imagenet", train_per_class=4, val_per_class=2)
    suite = tmp_path / "pair.yaml"
    suite.write_text(SUITE)
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "cabench.cli", "run", str(suite), "--profile", "paper", "--seeds", "0,1"]
    args += ["--data", f"imagenet={root}", "--epochs", "1", "--batch-size", "8", "--workers", "0"]
    args += ["--runs-dir", str(runs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr.decode()
    done = {}
    for metrics in runs.glob("pair/*/paper/*/metrics.json"):
        config = json.loads((metrics.parent / "config.json").read_text())
        key = (config["row"], config["seed"])
        assert key not in done, f"{key} trained twice: {done.get(key)} and {metrics.parent}"
        done[key] = metrics.parent
    assert sorted(done) == [("baseline", 0), ("baseline", 1), ("ca", 0), ("ca", 1)]  # no result lost
    assert not list(runs.glob("pair/*/paper/.seed-*.lease"))
    started = [d for d in runs.glob("pair/*/paper/*") if d.is_dir()]
    assert len(started) == 4, started  # no second run directory for any row-seed


@pytest.mark.parametrize("make", [lambda long: ["run", f"{long}.yaml"], lambda long: ["show", f"/tmp/{long}"]])
def test_a_path_too_long_for_the_filesystem_is_bad_input(make) -> None:  # type: ignore[no-untyped-def]
    # Issue 22: a file name over 255 bytes exited 3 (ENAMETOOLONG) as if cabench had crashed.
    result = CliRunner().invoke(app, make("b" * 300))
    assert result.exit_code == 2 and "a path is too long for this system" in result.stderr, result.output
