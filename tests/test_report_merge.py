"""`cabench report SUITE` merges into reports/README.md and results.csv instead of dropping the other suites."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from cabench.cli import app
from cabench.store import Store

runner = CliRunner()

SUITE = """\
id: {id}
title: "{title}"
source: "test"
task: classify
columns:
  params: {{unit: M}}
rows:
  - name: Baseline
    id: baseline
    model: {{arch: mobilenetv2, width: 1.0, attention: none}}
    published: {{params: 3.5}}
"""


def _suite(tmp_path: Path, sid: str) -> Path:
    path = tmp_path / f"{sid}.yaml"
    path.write_text(SUITE.format(id=sid, title=f"Suite {sid.upper()}"))
    return path


def _record(store: Store, sid: str) -> None:
    # A hand-written run record: this test is about how reports merge, not about counting.
    config = {"suite": sid, "row": "baseline", "profile": "count", "model_key": "mobilenetv2-w1-none-c1000"}
    store.write_run(sid, "baseline", "count", config, {"params": 3_504_872})


def _report(tmp_path: Path, *suites: Path) -> list[dict[str, str]]:
    out = tmp_path / "reports"
    args = ["report", *map(str, suites), "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--no-figures"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(out / "results.csv") as fh:
        return list(csv.DictReader(fh))


def test_reporting_one_suite_keeps_the_others(tmp_path: Path) -> None:
    a, b = _suite(tmp_path, "alpha"), _suite(tmp_path, "beta")
    store = Store(tmp_path / "runs")
    _record(store, "alpha")
    _record(store, "beta")
    both = _report(tmp_path, a, b)
    assert sorted({c["suite"] for c in both}) == ["alpha", "beta"]
    only_b = _report(tmp_path, b)  # the trap: this used to rewrite README.md and results.csv with beta alone
    assert [c["suite"] for c in only_b] == [c["suite"] for c in both]
    assert [c for c in only_b if c["suite"] == "alpha"] == [c for c in both if c["suite"] == "alpha"]
    index = (tmp_path / "reports" / "README.md").read_text()
    assert "| [alpha](alpha.md) | Suite ALPHA |" in index and "| [beta](beta.md) | Suite BETA |" in index
    assert (tmp_path / "reports" / "alpha.md").is_file()


def test_reporting_a_new_suite_appends_it(tmp_path: Path) -> None:
    a, b = _suite(tmp_path, "alpha"), _suite(tmp_path, "beta")
    store = Store(tmp_path / "runs")
    _record(store, "alpha")
    _record(store, "beta")
    _report(tmp_path, a)
    cells = _report(tmp_path, b)
    assert [c["suite"] for c in cells] == ["alpha", "beta"]


def test_report_with_no_runs_says_where_it_looked_and_writes_nothing(tmp_path: Path) -> None:
    a = _suite(tmp_path, "alpha")
    out = tmp_path / "reports"
    result = runner.invoke(app, ["report", str(a), "--runs-dir", str(tmp_path / "nowhere"), "--out", str(out)])
    assert result.exit_code == 2
    assert "no runs of alpha under" in result.stderr and "nowhere" in result.stderr
    assert not out.exists()
