"""Results carry their evidence: `cabench report` commits each trained run's config, env and metrics under
reports/records/ and reads them back, so a clone without runs/ reproduces the same pages."""

from __future__ import annotations

import csv
import itertools
import shutil
from pathlib import Path

import pytest
from scipy import stats
from typer.testing import CliRunner

from cabench.cli import app
from cabench.report import write_reports
from cabench.store import LayeredStore, Store, StoreError, environment
from cabench.suite import Suite, load_suite

SUITE = """\
id: mini
title: "Mini table"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
baseline: se
columns:
{columns}
rows:
  - {{name: "+ SE", id: se, model: {{arch: mobilenetv2, width: 0.5, attention: se}}, published: {{top1: 73.5}}}}
  - {{name: "+ Y", id: y, model: {{arch: mobilenetv2, width: 0.5, attention: y}}, published: {{top1: 73.5}}}}
  - {{name: "+ CA", id: ca, model: {{arch: mobilenetv2, width: 0.5, attention: ca}}, published: {{top1: 74.3}}}}
  - {{name: "Floor", id: floor, floor: logistic-pixels}}
claims:
  - {{id: ca-beats-se, metric: top1, relation: greater, a: ca, b: se, source: 'T: "CA is best."'}}
  - {{id: y-equals-se, metric: top1, relation: equal, margin: 0.3, a: y, b: se, source: 'T: "Y is SE."'}}
"""
TOP1 = '  top1: {unit: "%", tolerance: 0.3}'
PARAMS = "  params: {unit: M}"

# Per seed. y - se: the 95% CI of the difference reaches past +0.3, its 90% CI (the one TOST decides on) does not.
SEEDS = {"se": [73.5, 73.6, 73.4], "y": [73.6, 73.7, 73.5], "ca": [74.3, 74.5, 74.4]}
PAPER_DATA = {"dataset": "imagenet", "images": 50_000, "paper": True}  # stand-in: the paper's split

_ids = itertools.count()


def _run_id() -> str:
    """Run ids in the order the runs are written (write_run's own ids tie within a second)."""
    n = next(_ids)
    return f"20260101-{n // 60:04d}{n % 60:02d}-abcdef"


def _suite(tmp_path: Path, *columns: str) -> Suite:
    path = tmp_path / "mini.yaml"
    path.write_text(SUITE.format(columns="\n".join(columns or (TOP1,))))
    return load_suite(path)


def _train(store: Store, row: str, seed: int, top1: float, profile: str = "paper", **extra: object) -> str:
    config = {"seed": seed, "model_key": row, "recipe": "imagenet-mbv2-paper", "overrides": {}, "profile": profile}
    config |= {"data_identity": PAPER_DATA, **extra}
    files = {"per_image.npz": b"outcomes", "log.jsonl": b"{}\n", "checkpoint.pt": b"weights"}  # never recorded
    return store.write_run("mini", row, profile, config, {"top1": top1}, run_id=_run_id(), files=files).run_id


def _floor(store: Store, top1: float = 12.0) -> str:
    config = {"floor": "logistic-pixels", "recipe": "imagenet-mbv2-paper", "profile": "paper"}
    config["data_identity"] = PAPER_DATA
    return store.write_run("mini", "floor", "paper", config, {"top1": top1}, run_id=_run_id()).run_id


def _fill(store: Store) -> None:
    for row, values in SEEDS.items():
        for seed, v in enumerate(values):
            _train(store, row, seed, v)
    _floor(store)


def _lines(path: Path, column: str = "top1") -> dict[str, dict[str, str]]:
    """results.csv's lines of ``column`` by row, or claims.csv's lines by claim."""
    with open(path) as fh:
        lines = list(csv.DictReader(fh))
    if lines and "claim" in lines[0]:
        return {r["claim"]: r for r in lines}
    return {r["row"]: r for r in lines if r["column"] == column}


def _records(out: Path) -> dict[str, set[str]]:
    """Each record folder (relative to reports/records) and the files in it."""
    root = out / "records"
    return {str(d.relative_to(root)): {p.name for p in d.iterdir()} for d in root.glob("*/*/*/*")}


def test_a_clone_without_runs_reproduces_the_pages_from_the_committed_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = _suite(tmp_path)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    _fill(Store("runs"))
    write_reports([suite], Store("runs"), Path("reports"), figures=False)
    names = ("mini.md", "results.csv", "claims.csv")
    before = {n: (Path("reports") / n).read_text() for n in names}

    clone = tmp_path / "clone"  # a fresh clone: the committed records, no runs/, no pages yet
    shutil.copytree("reports/records", clone / "reports" / "records")
    shutil.rmtree("runs")
    monkeypatch.chdir(clone)
    write_reports([suite], Store("runs"), Path("reports"), figures=False)
    assert {n: (Path("reports") / n).read_text() for n in names} == before
    assert not Path("runs").exists()  # read only: the report made no runs directory
    cells = _lines(Path("reports/results.csv"))
    assert cells["ca"]["n"] == "3" and float(cells["ca"]["reproduced"]) == pytest.approx(74.4)
    assert float(cells["floor"]["reproduced"]) == 12.0 and cells["floor"]["status"] == "new"


def test_records_hold_exactly_config_env_and_metrics_of_the_runs_shown(tmp_path: Path) -> None:
    suite = _suite(tmp_path, TOP1, PARAMS)
    store = Store(tmp_path / "runs")
    _fill(store)
    count = {"suite": "mini", "row": "se", "profile": "count", "model_key": "se"}
    store.write_run("mini", "se", "count", count, {"params": 2_000_000}, run_id=_run_id())
    _train(store, "y", 0, 99.0, profile="smoke")  # no number on the page: not evidence
    out = tmp_path / "reports"
    write_reports([suite], store, out, figures=False)

    records = _records(out)
    expected = {str(d.relative_to(store.root)) for d in store.root.glob("mini/*/paper/*")}
    assert set(records) == expected and len(expected) == 10  # 3 rows x 3 seeds + the floor; no count, no smoke
    assert all(files == {"config.json", "env.json", "metrics.json"} for files in records.values())
    for rel in expected:
        for name in ("config.json", "env.json", "metrics.json"):
            assert (out / "records" / rel / name).read_bytes() == (store.root / rel / name).read_bytes()
    assert _lines(out / "results.csv", "params")["se"]["exact"] == "2000000"  # counts: from runs/, as before
    page = (out / "mini.md").read_text()
    assert "committed under [`records/mini/`](records/mini/)" in page


def test_per_seed_values_are_on_the_page_and_in_results_csv(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    store = Store(tmp_path / "runs")
    _fill(store)
    out = tmp_path / "reports"
    write_reports([suite], store, out, figures=False)
    page = (out / "mini.md").read_text()
    assert "**74.40** ± 0.10 (n=3)" in page  # the mean ± sd stays
    assert "- + CA, Top-1 (%): 74.30, 74.50, 74.40 (seeds 0, 1, 2)" in page
    assert "- + SE, Top-1 (%): 73.50, 73.60, 73.40 (seeds 0, 1, 2)" in page
    ca = _lines(out / "results.csv")["ca"]
    assert ca["seeds"] == "0 1 2" and ca["seed_values"] == "74.3 74.5 74.4"
    ids = ca["seed_run_ids"].split()
    assert len(ids) == 3 and ca["run_id"] == max(ids)
    assert all((out / "records" / "mini" / "ca" / "paper" / i / "metrics.json").is_file() for i in ids)
    env = environment()
    assert f"CPU {env['cpu_model']}, torch dispatching {env['cpu_capability']}" in (out / "README.md").read_text()


def test_an_equivalence_claim_shows_the_90_percent_interval_tost_decides_on(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    store = Store(tmp_path / "runs")
    _fill(store)
    out = tmp_path / "reports"
    write_reports([suite], store, out, figures=False)
    claims = _lines(out / "claims.csv")
    eq, gt = claims["y-equals-se"], claims["ca-beats-se"]
    test = stats.ttest_ind(SEEDS["y"], SEEDS["se"], equal_var=False)
    ci90, ci95 = test.confidence_interval(0.90), test.confidence_interval(0.95)
    assert ci95.high > 0.3 > ci90.high  # only the 90% interval lies inside the margin: TOST says equal
    assert eq["verdict"] == "supported"
    assert (float(eq["tost_ci90_low"]), float(eq["tost_ci90_high"])) == pytest.approx((ci90.low, ci90.high), 1e-5)
    assert (float(eq["ci_low"]), float(eq["ci_high"])) == pytest.approx((ci95.low, ci95.high), 1e-5)
    assert gt["tost_ci90_low"] == "" and gt["ci_low"] != ""
    page = (out / "mini.md").read_text()
    assert f"[{ci90.low:+.2f}, {ci90.high:+.2f}] 90%" in page
    g95 = stats.ttest_ind(SEEDS["ca"], SEEDS["se"], equal_var=False).confidence_interval(0.95)
    assert f"[{g95.low:+.2f}, {g95.high:+.2f}] 95%" in page
    assert "the 90% CI that the two one-sided tests decide on" in page


def test_runs_win_over_records_and_a_newer_run_of_the_same_seed_replaces_its_record(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    runs, out = tmp_path / "runs", tmp_path / "reports"
    store = Store(runs)
    _fill(store)
    old_recipe = _train(store, "se", 7, 60.0, overrides={"epochs": 1})  # an older configuration, seed 7
    _fill(store)  # newer runs of every seed 0-2 (and a newer floor): the report uses them
    write_reports([suite], store, out, figures=False)
    records = Store(out / "records")
    assert len(records.runs("mini", "se", "paper")) == 3
    # A record an earlier report committed when seed 7 of the older configuration was shown; nothing shows it now.
    shutil.copytree(
        store.cell_dir("mini", "se", "paper") / old_recipe,
        records.cell_dir("mini", "se", "paper") / old_recipe,
        ignore=lambda _, names: [n for n in names if n not in ("config.json", "env.json", "metrics.json")],
    )

    shutil.rmtree(runs)  # from here on, runs/ holds only what the test writes next
    store = Store(runs)
    early = _train(store, "se", 0, 50.0)
    write_reports([suite], store, out, figures=False)  # seed 0 from runs/, seeds 1 and 2 from the records
    assert early in {r.run_id for r in records.runs("mini", "se", "paper")}

    later = _train(store, "se", 0, 73.5)  # seed 0 again, newer
    same = _train(store, "ca", 1, 74.5)
    (records.cell_dir("mini", "ca", "paper") / same).mkdir(parents=True)  # a stale copy of the same run id
    (records.cell_dir("mini", "ca", "paper") / same / "metrics.json").write_text('{"status": "complete", "top1": 1}')
    (records.cell_dir("mini", "ca", "paper") / same / "config.json").write_text('{"seed": 1}')
    lines: list[str] = []
    write_reports([suite], store, out, figures=False, log=lines.append)
    cells = _lines(out / "results.csv")
    assert cells["se"]["seed_values"].split()[0] == "73.5"  # seed 0: the newer run, not the replaced record's 50.0
    assert "74.5" in cells["ca"]["seed_values"].split()  # runs/ wins over the stale copy of the same run id
    assert (records.cell_dir("mini", "ca", "paper") / same / "metrics.json").read_bytes() == (
        store.cell_dir("mini", "ca", "paper") / same / "metrics.json"
    ).read_bytes()
    kept = {r.run_id for r in records.runs("mini", "se", "paper")}
    assert later in kept and early not in kept  # replaced for the same seed: removed, and said so
    assert old_recipe in kept  # seed 7 of an older configuration: no newer run replaced it, so it stays
    assert f"record {records.cell_dir('mini', 'se', 'paper') / early} removed: replaced by run {later} (0)" in lines
    assert len(lines) == 2 and f"replaced by run {same} (1)" in lines[0]  # and ca's older seed-1 record


def test_records_are_never_written_through_a_symlink(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    store = Store(tmp_path / "runs")
    _fill(store)
    out, elsewhere = tmp_path / "reports", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "records").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="symlink"):
        write_reports([suite], store, out, figures=False)
    assert list(elsewhere.iterdir()) == []


def test_the_report_command_reads_records_when_runs_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = _suite(tmp_path)
    monkeypatch.chdir(tmp_path)
    _fill(Store("runs"))
    args = ["report", str(suite.path), "--runs-dir", "runs", "--no-figures"]
    assert CliRunner().invoke(app, args).exit_code == 0
    page = Path("reports/mini.md").read_text()
    shutil.rmtree("runs")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Path("reports/mini.md").read_text() == page


def test_a_layered_store_is_read_only(tmp_path: Path) -> None:
    layered = LayeredStore(Store(tmp_path / "runs"), Store(tmp_path / "records"))
    with pytest.raises(StoreError, match="read-only"):
        layered.write_run("mini", "se", "paper", {}, {"top1": 1.0})


def test_the_environment_names_the_cpu_and_torchs_build() -> None:
    env = environment()
    assert isinstance(env["cpu_model"], str) and env["cpu_model"]
    assert isinstance(env["cpu_capability"], str) and env["cpu_capability"]  # e.g. AVX2, AVX512, DEFAULT
    assert {"torch_cuda", "torch_mkldnn", "torch_blas", "omp_num_threads"} <= set(env)
