"""Run directories with known per-seed values -> the Claims section, claims.csv, results.csv and the README summary."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cabench import outcomes
from cabench.report import write_reports
from cabench.store import Store
from cabench.suite import load_suite

SUITE = """\
id: mini
title: "Mini table"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
baseline: baseline
columns:
  top1: {unit: "%", tolerance: 0.3}
rows:
  - {name: Baseline, id: baseline, model: {arch: mobilenetv2, width: 0.5, attention: none}, published: {top1: 72.3}}
  - {name: "+ SE", id: se, model: {arch: mobilenetv2, width: 0.5, attention: se}, published: {top1: 73.5}}
  - {name: "+ X", id: x, model: {arch: mobilenetv2, width: 0.5, attention: x}, published: {top1: 73.5}}
  - {name: "+ Y", id: y, model: {arch: mobilenetv2, width: 0.5, attention: y}, published: {top1: 73.5}}
  - {name: "+ CA", id: ca, model: {arch: mobilenetv2, width: 0.5, attention: ca}, published: {top1: 74.3}}
claims:
  - {id: ca-beats-se, metric: top1, relation: greater, a: ca, b: se, published: 0.8, source: 'T: "CA is best."'}
  - {id: baseline-beats-ca, metric: top1, relation: greater, a: baseline, b: ca, source: 'T: "reversed."'}
  - {id: y-equals-se, metric: top1, relation: equal, margin: 0.3, a: y, b: se, source: 'T: "Y is SE."'}
  - {id: se-beats-baseline, metric: top1, relation: greater, a: se, b: baseline, source: 'T: "SE helps."'}
  - {id: x-beats-baseline, metric: top1, relation: greater, a: x, b: baseline, source: 'T: "X helps."'}
"""

SEEDS = {"ca": [74.3, 74.5, 74.4], "se": [73.5, 73.6, 73.4]}


def _run(
    store: Store, row: str, seed: int, top1: float, profile: str = "paper", correct=None, suite: str = "mini"
) -> None:  # type: ignore[no-untyped-def]
    config = {"seed": seed, "model_key": row, "recipe": "imagenet-mbv2-paper", "overrides": {}, "profile": profile}
    config["data_identity"] = {"dataset": "imagenet", "images": 50_000, "paper": True}  # stand-in: the paper's split
    files = {}
    if correct is not None:
        files[outcomes.FILE_NAME] = outcomes.Outcomes(
            "classify", np.arange(len(correct)), {"correct1": correct}
        ).to_bytes()
    store.write_run(suite, row, profile, config, {"top1": top1}, files=files)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(SUITE)
    store = Store(tmp_path / "runs")
    for row, values in SEEDS.items():
        for seed, v in enumerate(values):
            _run(store, row, seed, v)
    rng = np.random.default_rng(0)
    base = rng.random(500) < 0.72
    x = base | (rng.random(500) < 0.2)  # X gets strictly more images right: a clear gain
    _run(store, "baseline", 0, 100 * base.mean(), correct=base)
    _run(store, "x", 0, 100 * x.mean(), correct=x)
    _run(store, "y", 0, 99.0, profile="smoke")  # smoke never counts
    _run(store, "y", 1, 99.0, profile="smoke")
    out = tmp_path / "reports"
    write_reports([load_suite(path)], store, out, figures=False)
    return out


def _claims(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "claims.csv") as fh:
        return {r["claim"]: r for r in csv.DictReader(fh)}


def test_claims_csv_has_each_claims_statistics(reports: Path) -> None:
    rows = _claims(reports)
    ca, se = SEEDS["ca"], SEEDS["se"]
    direct = stats.ttest_ind(ca, se, equal_var=False, alternative="greater")
    ci = stats.ttest_ind(ca, se, equal_var=False).confidence_interval(0.95)
    first = rows["ca-beats-se"]
    assert first["verdict"] == "supported" and float(first["p"]) == pytest.approx(direct.pvalue, rel=1e-5)
    assert float(first["delta"]) == pytest.approx(np.mean(ca) - np.mean(se), rel=1e-5)
    assert (float(first["ci_low"]), float(first["ci_high"])) == pytest.approx((ci.low, ci.high), rel=1e-5)
    assert (first["n_a"], first["n_b"], first["published_delta"]) == ("3", "3", "0.8")
    assert first["source"] == 'T: "CA is best."' and first["scope"] == "mini"
    assert rows["baseline-beats-ca"]["verdict"] == "inconclusive"  # n = 1 against n = 3
    assert rows["y-equals-se"]["verdict"] == "pending" and rows["y-equals-se"]["n_a"] == "0"  # smoke runs don't count
    assert rows["se-beats-baseline"]["verdict"] == "inconclusive"
    boot = rows["x-beats-baseline"]
    assert boot["verdict"] == "supported" and "evaluation noise only" in boot["test"] and boot["p"] == ""
    assert float(boot["ci_low"]) > 0 and (boot["n_a"], boot["n_b"]) == ("1", "1")


def test_cells_are_mean_sd_n_with_the_ci(reports: Path) -> None:
    with open(reports / "results.csv") as fh:
        cells = {r["row"]: r for r in csv.DictReader(fh)}
    ca = cells["ca"]
    lo, hi = stats.t.interval(0.95, df=2, loc=np.mean(SEEDS["ca"]), scale=stats.sem(SEEDS["ca"]))
    assert float(ca["reproduced"]) == pytest.approx(74.4) and ca["n"] == "3" and ca["seeds"] == "0 1 2"
    assert float(ca["sd"]) == pytest.approx(np.std(SEEDS["ca"], ddof=1), rel=1e-5)
    assert (float(ca["ci_low"]), float(ca["ci_high"])) == pytest.approx((lo, hi), rel=1e-5)
    assert ca["published_in_ci"] == "true" and ca["status"] == "match"
    assert (
        cells["baseline"]["n"] == "1"
        and cells["baseline"]["ci_low"] == ""
        and cells["baseline"]["published_in_ci"] == ""
    )
    assert cells["y"]["status"] == "pending" and cells["y"]["n"] == ""
    page = (reports / "mini.md").read_text()
    assert "**74.40** ± 0.10 (n=3) · 74.3 (+0.10) ✅ ∈ CI" in page
    assert "(n=1)" in page


def test_the_claims_section_and_the_readme_summary(reports: Path) -> None:
    page = (reports / "mini.md").read_text()
    section = page[page.index("## Claims") :]
    assert "| 1 | `ca-beats-se`: ca > se (top1) | +0.80 |" in section
    assert "✅ supported" in section and "⏳ pending" in section and "❔ inconclusive" in section
    assert "evaluation noise only" in section
    assert '1. T: "CA is best."' in section
    readme = (reports / "README.md").read_text()
    summary = readme[readme.index("## Claims") :]
    # supported: ca-beats-se, x-beats-baseline; inconclusive: 2; pending: 1
    assert "| [mini](mini.md) | 5 | 2 | 0 | 2 | 1 | 0 |" in summary
    assert "| **all** | 5 | **2** | **0** | **2** | **1** | **0** |" in summary


def test_figures_show_cis_seeds_and_the_claims(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "mini.yaml"
    path.write_text(SUITE)
    store = Store(tmp_path / "runs")
    for row, values in SEEDS.items():
        for seed, v in enumerate(values):
            _run(store, row, seed, v)
    out = tmp_path / "reports"
    written = {p.name for p in write_reports([load_suite(path)], store, out, figures=True)}
    assert {"mini.png", "claims.png", "claims.csv"} <= written
    assert Image.open(out / "figures" / "claims.png").size[1] > 100
    readme = (out / "README.md").read_text()
    assert "![Claims: reproduced Δ with 95% CI beside the published Δ](figures/claims.png)" in readme


@pytest.mark.slow
def test_smoke_runs_with_two_seeds_leave_every_claim_pending(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cabench.cli import app
    from cabench.data.fixtures import write_imagenet_fixture

    data = write_imagenet_fixture(tmp_path / "imagenet", train_per_class=4, val_per_class=2)
    runs, out = tmp_path / "runs", tmp_path / "reports"
    args = ["run", "table1", "--profile", "smoke", "--seeds", "0,1", "--data", f"imagenet={data}"]
    result = CliRunner().invoke(app, [*args, "--rows", "se", "--rows", "ca", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    for row in ("se", "ca"):
        dirs = list((runs / "table1" / row / "smoke").iterdir())
        assert len(dirs) == 2 and all((d / outcomes.FILE_NAME).is_file() for d in dirs)
    result = CliRunner().invoke(app, ["report", "table1", "--runs-dir", str(runs), "--out", str(out), "--no-figures"])
    assert result.exit_code == 0, result.output
    rows = _claims(out)
    assert len(rows) == 5 and {r["verdict"] for r in rows.values()} == {"pending"}


def test_a_claim_of_a_paper_suite_is_not_judged_on_fixture_data(tmp_path: Path) -> None:
    path = tmp_path / "mini.yaml"
    path.write_text(SUITE)
    store = Store(tmp_path / "runs")
    for row, top1 in (("ca", 50.0), ("se", 50.0)):  # what `cabench eval table1 --row ca/se` on a fixture leaves
        config = {"seed": 0, "model_key": row, "recipe": "imagenet-mbv2-paper", "overrides": {}, "profile": "paper"}
        config["data_identity"] = {"dataset": "imagenet", "images": 32, "classes": 4, "paper": False}
        store.write_run("mini", row, "paper", config, {"top1": top1})
    out = tmp_path / "reports"
    write_reports([load_suite(path)], store, out, figures=False)
    claim = _claims(out)["ca-beats-se"]
    assert claim["verdict"] == "pending" and claim["delta"] == ""
    assert "runs on other data do not count" in claim["note"] and "not the paper's data (32 images" in claim["note"]


def test_a_suite_with_only_smoke_runs_and_nothing_published_reports_pipeline_ok(tmp_path: Path) -> None:
    # The trap: `cabench run probe-classify --profile smoke` then `cabench report probe-classify` said "no runs",
    # and a user's block without published values showed "–" beside rows saying "pipeline ok (smoke)".
    path = tmp_path / "mine.yaml"
    path.write_text(SUITE.replace("id: mini", "id: mine").replace(", published: {top1: 74.3}", ""))
    store = Store(tmp_path / "runs")
    _run(store, "ca", 0, 9.0, profile="smoke", suite="mine")
    out = tmp_path / "reports"
    write_reports([load_suite(path)], store, out, figures=False)
    line = next(x for x in (out / "mine.md").read_text().splitlines() if x.startswith("| + CA"))
    assert "pipeline ok (smoke)" in line and "9.0" not in line


def test_a_figure_with_nothing_left_to_draw_is_removed_with_its_table(tmp_path: Path) -> None:
    # The trap: probe PNGs stayed embedded beside tables that said there were no runs.
    mini, mine = tmp_path / "mini.yaml", tmp_path / "mine.yaml"
    mini.write_text(SUITE)
    mine.write_text(re.sub(r", published: \{top1: [0-9.]+\}", "", SUITE.replace("id: mini", "id: mine")))
    store = Store(tmp_path / "runs")
    _run(store, "ca", 0, 74.4)
    out = tmp_path / "reports"
    (out / "figures").mkdir(parents=True)
    stale = out / "figures" / "mine.png"
    stale.write_bytes(b"an old picture of runs that are gone")
    write_reports([load_suite(mini), load_suite(mine)], store, out, figures=True)
    assert (out / "figures" / "mini.png").is_file() and not stale.exists()
    assert "figures/mine.png" not in (out / "mine.md").read_text()
