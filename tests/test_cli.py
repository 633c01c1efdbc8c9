"""The CLI, driven through typer's CliRunner: commands, the CI gate, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cabench.cli import app

runner = CliRunner()

# A small suite in the shipped format: two rows of Table 1, counted in about a second.
MINI = """\
id: mini
title: "Two rows of Table 1"
source: "test"
task: classify
baseline: baseline
settings:
  r: reduction
columns:
  params: {unit: M}
  madds: {unit: M, tolerance: 5}
  top1: {unit: "%", tolerance: 0.3}
rows:
  - name: Baseline
    id: baseline
    model: {arch: mobilenetv2, width: 1.0, attention: none}
    published: {params: 3.5, madds: 300, top1: 72.3}
  - name: "+ Coord. Attention"
    id: ca
    model: {arch: mobilenetv2, width: 1.0, attention: ca, reduction: 32}
    published: {params: 3.95, madds: 310, top1: 74.3}
"""


def write_suite(tmp_path: Path, text: str = MINI, name: str = "mini.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.slow
def test_count_json_gives_exact_integers() -> None:
    result = runner.invoke(app, ["count", "mobilenetv2", "--attention", "ca", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"] == 3_950_648
    assert isinstance(data["madds"], int) and 305e6 <= data["madds"] < 315e6
    assert data["fvcore_total"] > data["madds"]  # fvcore's own total adds BN and pooling
    assert "aten::sigmoid" in data["skipped_ops"]  # CA's gates are element-wise: fvcore skips them


@pytest.mark.slow
def test_mobilenetv2_counts_the_papers_300m() -> None:
    data = json.loads(runner.invoke(app, ["count", "mobilenetv2", "--json"]).stdout)
    assert data["params"] == 3_504_872
    assert 295e6 <= data["madds"] < 305e6


def test_list_and_show() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    for suite in ("table1", "table9"):
        assert suite in result.stdout
    result = runner.invoke(app, ["show", "table4"])
    assert result.exit_code == 0
    assert "4.37" in result.stdout


@pytest.mark.slow
def test_run_then_report_fills_count_cells_and_leaves_accuracy_pending(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    result = runner.invoke(app, ["run", str(suite), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    run_dirs = list((runs / "mini" / "ca" / "count").iterdir())
    assert len(run_dirs) == 1
    assert {p.name for p in run_dirs[0].iterdir()} == {"config.json", "env.json", "metrics.json"}
    result = runner.invoke(app, ["report", str(suite), "--runs-dir", str(runs), "--out", str(reports)])
    assert result.exit_code == 0, result.output
    with open(reports / "results.csv") as fh:
        cells = list(csv.DictReader(fh))
    # the new columns (n, sd, ci_low, ci_high, seeds, published_in_ci) follow the existing ones
    assert list(cells[0])[11:17] == ["n", "sd", "ci_low", "ci_high", "seeds", "published_in_ci"]
    assert list(cells[0])[:11] == [
        "suite",
        "row",
        "column",
        "unit",
        "published",
        "reproduced",
        "exact",
        "delta",
        "status",
        "profile",
        "run_id",
    ]
    by_key = {(c["row"], c["column"]): c for c in cells}
    assert by_key[("ca", "params")]["exact"] == "3950648"
    assert by_key[("ca", "params")]["status"] == "match"
    assert by_key[("ca", "params")]["run_id"] == run_dirs[0].name
    assert by_key[("ca", "top1")]["status"] == "pending"
    assert by_key[("ca", "top1")]["reproduced"] == ""  # never the published number
    assert (reports / "mini.md").exists() and (reports / "README.md").exists()
    assert (reports / "figures" / "mini.png").exists()


def test_report_into_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    runs = tmp_path / "runs"
    assert runner.invoke(app, ["run", str(suite), "--runs-dir", str(runs)]).exit_code == 0
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "reports"  # a file where a folder must be: the report used to crash (exit 3)
    result = runner.invoke(app, ["report", str(suite), "--runs-dir", str(runs), "--out", str(out)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"--out {out}: cannot write the report there (Not a directory" in result.stderr


def test_run_rows_selects_rows(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(suite), "--rows", "ca", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (runs / "mini").iterdir()] == ["ca"]


def locked(suite: Path, lock: Path) -> Path:
    """Write the exact-counts lock for ``suite`` (check refuses to run without one)."""
    runner.invoke(app, ["check", str(suite), "--lock", str(lock), "--update-lock"])
    assert lock.is_file()
    return lock


@pytest.mark.slow
def test_check_passes_on_counts_that_match(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    locked(suite, tmp_path / "lock.json")
    result = runner.invoke(app, ["check", str(suite), "--lock", str(tmp_path / "lock.json")])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_check_fails_on_a_planted_drift(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, MINI.replace("params: 3.95,", "params: 3.99,"))
    locked(suite, tmp_path / "lock.json")
    result = runner.invoke(app, ["check", str(suite), "--lock", str(tmp_path / "lock.json")])
    assert result.exit_code == 1
    assert "row 2 (+ Coord. Attention): params" in result.stderr


@pytest.mark.slow
def test_a_note_turns_a_drift_into_a_documented_one(tmp_path: Path) -> None:
    text = MINI.replace(
        "published: {params: 3.95, madds: 310, top1: 74.3}",
        "published: {params: 3.99, madds: 310, top1: 74.3}\n    notes: {params: evidence}",
    )
    suite = write_suite(tmp_path, text)
    result = runner.invoke(app, ["check", str(suite), "--lock", str(locked(suite, tmp_path / "l.json"))])
    assert result.exit_code == 0, result.output
    assert "1 drift with a note" in result.stdout


@pytest.mark.slow
def test_check_fails_when_an_exact_count_differs_from_the_lock(tmp_path: Path) -> None:
    suite, lock = write_suite(tmp_path), tmp_path / "lock.json"
    updated = runner.invoke(app, ["check", str(suite), "--lock", str(lock), "--update-lock"])
    assert updated.exit_code == 0 and f"(lock updated: {lock})" in " ".join(updated.stdout.split())
    data = json.loads(lock.read_text())
    assert data["counts"]["mobilenetv2-w1-ca-r32-c1000"]["params"] == 3_950_648
    data["counts"]["mobilenetv2-w1-ca-r32-c1000"]["params"] += 1  # within the paper's rounding, not the lock's
    lock.write_text(json.dumps(data))
    result = runner.invoke(app, ["check", str(suite), "--lock", str(lock)])
    assert result.exit_code == 1
    assert "params counted 3,950,648, locked 3,950,649" in result.stderr


@pytest.mark.slow
def test_check_json_is_parseable(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    result = runner.invoke(app, ["check", str(suite), "--json", "--lock", str(locked(suite, tmp_path / "l.json"))])
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["cells"] == 4 and data["matched"] == 4


BAD_SUITES = {
    "yaml syntax": (MINI.replace("columns:\n", "columns:\n  - [\n"), "YAML syntax error at line"),
    "unknown arch": (MINI.replace("arch: mobilenetv2, width: 1.0, attention: ca", "arch: resnet9000"), "model.arch"),
    "unknown attention": (
        MINI.replace("attention: ca", "attention: eca"),
        "row 2 (+ Coord. Attention): model.attention",
    ),
    "missing field": (MINI.replace("task: classify\n", ""), "task: missing field"),
    "misspelt field": (MINI.replace("columns:\n", "colums:\n"), "colums: unknown field (did you mean 'columns'?)"),
    "mistyped field": (
        MINI.replace("reduction: 32", "reduction: thirty-two"),
        "row 2 (+ Coord. Attention): model.reductio",
    ),
    "unknown row field": (MINI.replace("    id: ca\n", "    id: ca\n    modle: {}\n"), "modle: unknown field"),
    "unknown column": (MINI.replace("top1: 74.3}", "top2: 74.3}"), "published.top2: unknown column"),
    "unknown suite column": (MINI.replace("  top1: {unit", "  top5: {unit"), "columns.top5: unknown column"),
}


@pytest.mark.parametrize("case", list(BAD_SUITES))
@pytest.mark.parametrize("command", ["run", "check", "show"])
def test_a_bad_suite_is_one_line_exit_2_and_nothing_written(tmp_path: Path, case: str, command: str) -> None:
    text, expected = BAD_SUITES[case]
    suite = write_suite(tmp_path, text, "bad.yaml")
    runs = tmp_path / "runs"
    args = {
        "run": ["run", str(suite), "--runs-dir", str(runs)],
        "check": ["check", str(suite), "--lock", str(tmp_path / "lock.json")],
        "show": ["show", str(suite)],
    }[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(suite) in lines[0] and expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not runs.exists()
    assert not (tmp_path / "lock.json").exists()


def test_an_unknown_suite_name_lists_the_known_ones() -> None:
    result = runner.invoke(app, ["run", "table42"])
    assert result.exit_code == 2
    assert "unknown suite 'table42' (did you mean 'table4'?); known suites: table1, table2" in result.stderr


def test_count_refuses_an_unknown_arch_in_one_line() -> None:
    result = runner.invoke(app, ["count", "mobilenetv4"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown architecture 'mobilenetv4'" in result.stderr


@pytest.mark.parametrize("command", ["run", "list", "show", "check", "count", "report", "eval", "bench", "status"])
def test_help_shows_flags_without_a_bool_placeholder(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--json" in result.stdout + "--json"
    ours = [line for line in result.stdout.splitlines() if "--help" not in line]  # typer's own flag keeps it
    assert not [line for line in ours if "<bool>" in line], result.stdout
