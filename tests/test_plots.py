"""Tests for cabench.plots: PNG figures from a synthetic cells frame."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from cabench import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

COLUMNS = [
    "suite",
    "row",
    "row_name",
    "row_label",
    "order",
    "column",
    "column_label",
    "unit",
    "published",
    "reproduced",
    "exact",
    "delta",
    "status",
    "profile",
    "run_id",
]

LABELS = {
    "params": ("Param. (M)", "M"),
    "madds": ("M-Adds (B)", "B"),
    "top1": ("Top-1 Acc (%)", "%"),
    "ap": ("AP", "%"),
    "miou": ("mIoU (%)", "%"),
    "map": ("mAP (%)", "%"),
}

NAN = math.nan


def _cell(
    suite: str,
    row: str,
    row_name: str,
    row_label: str,
    order: int,
    column: str,
    published: float,
    reproduced: float,
    status: str,
    exact: int | None = None,
) -> dict[str, object]:
    label, unit = LABELS[column]
    delta = reproduced - published if not (math.isnan(published) or math.isnan(reproduced)) else NAN
    return {
        "suite": suite,
        "row": row,
        "row_name": row_name,
        "row_label": row_label,
        "order": order,
        "column": column,
        "column_label": label,
        "unit": unit,
        "published": published,
        "reproduced": reproduced,
        "exact": exact,
        "delta": delta,
        "status": status,
        "profile": "" if status in ("pending", "cited") else "full",
        "run_id": "" if math.isnan(reproduced) else f"run-{row}",
    }


def _frame(records: list[dict[str, object]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=COLUMNS)
    df["order"] = df["order"].astype(int)
    df["exact"] = df["exact"].astype("Int64")
    return df


def synthetic_cells() -> pd.DataFrame:
    """Four suites with every status, NaN reproduced values and a duplicated row_name."""
    t2 = [
        ("mbv2-1.0", "MobileNetV2", "MobileNetV2", 0, 3.5, 0.300, 72.3, 72.25, "match", "match"),
        ("mbv2-1.0-se", "+ SE", "+ SE", 1, 3.89, 0.300, 73.5, 72.6, "match", "drift"),
        ("mbv2-1.0-cbam", "+ CBAM", "+ CBAM", 2, 3.89, 0.300, 73.6, NAN, "match", "pending"),
        ("mbv2-1.0-ca", "+ CA", "+ CA", 3, 3.95, 0.310, 74.3, 74.0, "noted", "noted"),
    ]
    records = []
    for row, name, label, order, params, madds, top1, rep_top1, cost_status, acc_status in t2:
        records.append(
            _cell("table2", row, name, label, order, "params", params, params + 0.004, cost_status, int(params * 1e6))
        )
        records.append(_cell("table2", row, name, label, order, "madds", madds, madds, cost_status, int(madds * 1e9)))
        records.append(_cell("table2", row, name, label, order, "top1", top1, rep_top1, acc_status))
    # A row quoted from another paper: cited everywhere.
    records.append(_cell("table2", "mnasnet", "MnasNet", "MnasNet", 4, "top1", 74.0, NAN, "cited"))
    records.append(_cell("table2", "mnasnet", "MnasNet", "MnasNet", 4, "params", 3.9, NAN, "cited"))

    # Two rows share row_name "+ SE" (as in the paper's table4); row_label disambiguates.
    records += [
        _cell("table4", "r24", "+ SE", "+ SE (r=24)", 0, "top1", 72.6, 72.5, "match"),
        _cell("table4", "r12", "+ SE", "+ SE (r=12)", 1, "top1", 72.8, NAN, "pending"),
    ]

    t8 = [
        ("mbv2-os16", 70.84, 70.9, "match"),
        ("mbv2-os16-se", 71.69, 70.1, "drift"),
        ("mbv2-os16-cbam", 71.28, NAN, "pending"),
        ("mbv2-os16-ca", 73.32, 73.0, "noted"),
    ]
    for order, (row, pub, rep, status) in enumerate(t8):
        records.append(_cell("table8", row, row, row, order, "miou", pub, rep, status))

    t6 = [
        ("ssdlite-mbv2", 22.3, 22.1, "match"),
        ("ssdlite-mbv2-se", 23.7, NAN, "pending"),
        ("ssdlite-mbv2-cbam", 23.0, 22.0, "drift"),
        ("ssdlite-mbv2-ca", 24.5, 24.4, "match"),
    ]
    for order, (row, pub, rep, status) in enumerate(t6):
        records.append(_cell("table6", row, row, row, order, "ap", pub, rep, status))

    # A suite made of cited cells only.
    records += [
        _cell("table9", "other-a", "Other A", "Other A", 0, "top1", 75.0, NAN, "cited"),
        _cell("table9", "other-b", "Other B", "Other B", 1, "params", 4.0, NAN, "cited"),
    ]
    return _frame(records)


@pytest.fixture
def cells() -> pd.DataFrame:
    """The synthetic cells frame."""
    return synthetic_cells()


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


@pytest.mark.parametrize("suite_id", ["table2", "table4", "table6", "table8"])
def test_suite_figure_writes_png(cells: pd.DataFrame, tmp_path: Path, suite_id: str) -> None:
    out_dir = tmp_path / "figs" / "nested"  # does not exist yet
    path = plots.draw_suite_figure(suite_id, f"Table {suite_id[-1]}", cells, out_dir)
    assert path == out_dir / f"{suite_id}.png"
    _assert_png(path)


def test_suite_figure_none_for_cited_only_suite(cells: pd.DataFrame, tmp_path: Path) -> None:
    assert plots.draw_suite_figure("table9", "Cited only", cells, tmp_path) is None
    assert not (tmp_path / "table9.png").exists()


def test_suite_figure_none_for_unknown_suite(cells: pd.DataFrame, tmp_path: Path) -> None:
    assert plots.draw_suite_figure("table99", "Nothing", cells, tmp_path) is None


def test_suite_figure_is_deterministic(cells: pd.DataFrame, tmp_path: Path) -> None:
    a = plots.draw_suite_figure("table2", "Table 2", cells, tmp_path / "a")
    b = plots.draw_suite_figure("table2", "Table 2", cells, tmp_path / "b")
    assert a is not None and b is not None
    assert a.read_bytes() == b.read_bytes()


def test_figure1_writes_png(cells: pd.DataFrame, tmp_path: Path) -> None:
    path = plots.draw_figure1(cells, tmp_path / "out")
    assert path == tmp_path / "out" / "figure1.png"
    _assert_png(path)


def test_figure1_without_table6(cells: pd.DataFrame, tmp_path: Path) -> None:
    full = plots.draw_figure1(cells, tmp_path / "full")
    partial = plots.draw_figure1(cells[cells["suite"] != "table6"], tmp_path / "partial")
    assert full is not None and partial is not None
    _assert_png(partial)
    assert partial.read_bytes() != full.read_bytes()


def test_figure1_skips_missing_rows(cells: pd.DataFrame, tmp_path: Path) -> None:
    only_some = cells[(cells["suite"] == "table8") & (cells["row"] != "mbv2-os16-cbam")]
    path = plots.draw_figure1(only_some, tmp_path)
    assert path is not None
    _assert_png(path)


def test_figure1_none_without_data(cells: pd.DataFrame, tmp_path: Path) -> None:
    assert plots.draw_figure1(cells[cells["suite"] == "table4"], tmp_path) is None
    assert plots.draw_figure1(cells.iloc[0:0], tmp_path) is None


def test_figure1_rows_are_data() -> None:
    from cabench.suite import find_suite, load_suite

    suites = {panel.suite for panel in plots.FIGURE1_PANELS}
    assert suites == {"table2", "table6", "table8"}
    assert all(len(panel.rows) == len(plots.FIGURE1_CATEGORIES) for panel in plots.FIGURE1_PANELS)
    for panel in (*plots.FIGURE1_PANELS, *plots.PROBE_FIGURE1_PANELS):  # the YAML names rows its suites have
        suite = load_suite(find_suite(panel.suite))
        for row in (*panel.rows, *([panel.floor] if isinstance(panel, plots.ProbePanel) else [])):
            assert suite.row(row).key == row


def test_a_bad_figure_layout_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from cabench.suite import SuiteError

    (tmp_path / "bad.yaml").write_text("categories: [a, b]\npanels:\n  - {title: t, suite: table2, rows: [x]}\n")
    with pytest.raises(SuiteError, match=r"bad.yaml: panels\[0\]: expected title, suite, one row per category"):
        plots.load_figure1_layout("bad", tmp_path)


def test_no_figure_leak(cells: pd.DataFrame, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    plots.draw_suite_figure("table2", "Table 2", cells, tmp_path)
    plots.draw_figure1(cells, tmp_path)
    assert len(plt.get_fignums()) == before


def test_missing_columns_rejected(cells: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status"):
        plots.draw_suite_figure("table2", "Table 2", cells.drop(columns=["status"]), tmp_path)


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, cabench.plots; print('matplotlib.pyplot' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"


def _probe_frame(suite: str, column: str, means: dict[str, float], floor: float) -> pd.DataFrame:
    rows = []
    for order, (row, mean) in enumerate({**means, "floor": floor}.items()):
        values = [mean - 1.0, mean, mean + 1.0] if row != "floor" else [mean]
        rows.append(
            {
                **_cell(suite, row, row, row, order, column, NAN, mean, "new"),
                "n": len(values),
                "ci_low": mean - 2.5 if row != "floor" else NAN,
                "ci_high": mean + 2.5 if row != "floor" else NAN,
                "values": values,
            }
        )
    return pd.DataFrame(rows)


def test_probe_figure1_draws_each_task_with_a_result(tmp_path: Path) -> None:
    classify = _probe_frame("probe-classify", "top1", {"baseline": 60.0, "se": 61.0, "cbam": 59.0, "ca": 63.0}, 12.0)
    segment = _probe_frame("probe-segment", "miou", {"baseline": 40.0, "ca": 42.0}, 8.5)
    one = plots.draw_probe_figure1(classify, tmp_path / "one")
    two = plots.draw_probe_figure1(pd.concat([classify, segment], ignore_index=True), tmp_path / "two")
    assert one == tmp_path / "one" / "figure1-probe.png" and two is not None
    _assert_png(one)
    assert one.read_bytes() != two.read_bytes()


def test_probe_figure1_reads_rows_and_floor_from_the_suite() -> None:
    classify = _probe_frame("probe-classify", "top1", {"baseline": 60.0, "ca": 63.0}, 12.0)
    found, floor = plots._probe_cells(classify, plots.PROBE_FIGURE1_PANELS[0])
    assert [category for category, _ in found] == ["MobileNetV2", "+CA"]
    assert floor == 12.0


def test_probe_figure1_none_without_probe_results(cells: pd.DataFrame, tmp_path: Path) -> None:
    assert plots.draw_probe_figure1(cells, tmp_path) is None
    pending = _probe_frame("probe-detect", "map", {"baseline": NAN}, NAN)
    assert plots.draw_probe_figure1(pending, tmp_path) is None


def test_every_status_a_cell_can_take_is_one_the_report_and_its_figures_render() -> None:
    # The latency profile's ratio cells end inconclusive when their interval straddles a band edge: once, a
    # report after `cabench run table1 --profile latency` failed on that status.
    from cabench.cells import STATUSES_BY_KIND
    from cabench.columns import COLUMNS
    from cabench.measure.ratio import ratio_status
    from cabench.plots import STATUSES, _status
    from cabench.profiles.base import PROFILES
    from cabench.report import STATUS_MARKS

    latency = {ratio_status(low, high, 0.9, 1.1) for low, high in ((0.95, 1.05), (1.2, 1.3), (1.0, 1.2))}
    assert latency == {"match", "drift", "inconclusive"} and latency <= STATUSES_BY_KIND["latency"]
    assert {info.kind for _, info in COLUMNS.items()} <= set(STATUSES_BY_KIND)
    for name, profile in PROFILES.items():  # every registered profile, every kind of cell it fills
        for kind in profile.fills:
            statuses = STATUSES_BY_KIND[kind]
            assert statuses <= set(STATUS_MARKS) and statuses <= set(STATUSES), (name, kind)
    assert set(STATUSES) == set(STATUS_MARKS)
    assert all(_status(status) == status for status in STATUS_MARKS)


def test_a_figure_is_written_atomically_and_never_through_a_symlink(cells: pd.DataFrame, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not cabench's")
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "table4.png").symlink_to(outside)
    path = plots.draw_suite_figure("table4", "Table 4", cells, figures)
    assert path is not None and not path.is_symlink() and path.read_bytes().startswith(b"\x89PNG")
    assert outside.read_bytes() == b"not cabench's"  # the trap: report overwrote a link's target
    assert [p.name for p in figures.iterdir()] == ["table4.png"]  # no temporary file left behind
