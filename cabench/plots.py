"""PNG figures for the reproduction report.

Two kinds of figure are drawn from the long ``cells`` frame (one row per table cell,
published next to reproduced value and a status):

* :func:`draw_suite_figure` -- one figure per paper table: a dumbbell panel per column,
  published (grey) joined to reproduced (colored by status) for every row of the table.
* :func:`draw_figure1` -- the paper's Figure 1: MobileNetV2 / +SE / +CBAM / +CA on ImageNet,
  VOC 2012 segmentation and COCO detection, published and reproduced bars side by side.

matplotlib is imported lazily (Agg backend) inside the drawing functions, so importing this
module stays cheap and never touches a display. Output is deterministic: fixed size and dpi,
no ``Software`` metadata, so rerunning on the same data and matplotlib version gives the same bytes.
Colors follow the Okabe-Ito colorblind-safe palette.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cabench.columns import COLUMNS
from cabench.store import atomic_write_bytes
from cabench.suite import SUITES_DIR, SuiteError
from cabench.tasks.base import TASKS
from cabench.yamlio import read_yaml_mapping

__all__ = [
    "COLUMN_KIND_ORDER",
    "FIGURE1_CATEGORIES",
    "FIGURE1_PANELS",
    "PROBE_FIGURE1_PANELS",
    "STATUS_COLORS",
    "Figure1Panel",
    "ProbePanel",
    "draw_claims_figure",
    "draw_figure1",
    "draw_probe_figure1",
    "draw_suite_figure",
]

# --------------------------------------------------------------------------- constants

DPI = 150
"""Resolution of every PNG written by this module."""

PUBLISHED_COLOR = "#7F7F7F"
"""Published values: neutral grey."""

REPRODUCED_COLOR = "#0072B2"
"""Reproduced values in bar charts: Okabe-Ito blue."""

CITED_COLOR = "#C8C8C8"
"""Values the paper cites from other work (not reproduced): light grey."""

STATUS_COLORS: dict[str, str] = {
    "match": "#0072B2",  # blue
    "noted": "#E69F00",  # amber / orange
    "drift": "#D55E00",  # vermillion
    "pending": PUBLISHED_COLOR,
    "cited": CITED_COLOR,
    "new": "#009E73",  # bluish green: measured, nothing published to compare with
    "inconclusive": "#56B4E9",  # sky blue: a latency ratio whose interval straddles a band edge
}
"""Marker / line color of a reproduced value, by cell status."""

STATUSES: tuple[str, ...] = tuple(STATUS_COLORS)
"""Every status a cell can have; the report's marks (cabench.report.STATUS_MARKS) cover the same set (tested)."""

COLUMN_KIND_ORDER: tuple[str, ...] = ("accuracy", "count", "latency")
"""Panel order in suite figures by column kind: accuracy metrics first, then cost; the suite's order within."""


def _kind_rank(column: str) -> int:
    """Accuracy columns first, then counts, then latency; unknown columns last."""
    known = COLUMNS.registered(column) or (COLUMNS.get(column) if column in COLUMNS else None)
    return COLUMN_KIND_ORDER.index(known.kind) if known else len(COLUMN_KIND_ORDER)


REQUIRED_COLUMNS: tuple[str, ...] = (
    "suite",
    "row",
    "row_label",
    "order",
    "column",
    "column_label",
    "published",
    "reproduced",
    "delta",
    "status",
)

MAX_PANELS_PER_ROW = 4


@dataclass(frozen=True)
class Figure1Panel:
    """One panel of Figure 1: which suite and which rows (one per category). The column drawn is the suite's
    headline metric, as its task declares it (:func:`headline_column`)."""

    title: str
    suite: str
    rows: tuple[str, ...]


@dataclass(frozen=True)
class ProbePanel(Figure1Panel):
    """A Figure 1 panel of the handwritten-digits probe: no published bars; the suite's ``floor`` row is drawn
    as a dashed line."""

    floor: str = "floor"


FIGURES_DIR = SUITES_DIR / "figures"


def load_figure1_layout(name: str, directory: Path = FIGURES_DIR) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """``(categories, panels)`` of ``suites/figures/<name>.yaml``: panels with a ``floor`` are :class:`ProbePanel`,
    the others :class:`Figure1Panel`; each names as many rows as there are categories."""
    path = directory / f"{name}.yaml"
    data = read_yaml_mapping(path, "figure layout", SuiteError)
    categories, panels = data.get("categories"), data.get("panels")
    if set(data) != {"categories", "panels"} or not isinstance(categories, list) or not isinstance(panels, list):
        raise SuiteError(f"{path}: expected categories: [label, ...] and panels: [{{title, suite, rows}}, ...]")
    made: list[Figure1Panel] = []
    for k, panel in enumerate(panels):
        keys = {"title", "suite", "rows"} | ({"floor"} if isinstance(panel, dict) and "floor" in panel else set())
        if not isinstance(panel, dict) or set(panel) != keys or len(panel["rows"]) != len(categories):
            raise SuiteError(f"{path}: panels[{k}]: expected title, suite, one row per category (and a floor)")
        cls = ProbePanel if "floor" in panel else Figure1Panel
        made.append(cls(**{**panel, "rows": tuple(panel["rows"])}))
    return tuple(str(c) for c in categories), tuple(made)


FIGURE1_CATEGORIES, FIGURE1_PANELS = load_figure1_layout("figure1")
"""The paper's Figure 1 (``suites/figures/figure1.yaml``): x-axis categories and three panels."""
_, PROBE_FIGURE1_PANELS = load_figure1_layout("figure1-probe")
"""Figure 1's three tasks on the handwritten-digits probe (``suites/figures/figure1-probe.yaml``)."""

_RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "cabench",
}

# --------------------------------------------------------------------------- helpers


def _pyplot() -> Any:
    """Select the non-interactive Agg backend and return ``matplotlib.pyplot``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_columns(cells: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in cells.columns]
    if missing:
        raise ValueError(f"cells frame lacks column(s): {', '.join(missing)}")


def _num(value: Any) -> float:
    """A cell value as float, NaN for missing (None, NaN, pd.NA)."""
    if value is None or value is pd.NA:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _decimals(values: Sequence[float], at_least: int = 0, at_most: int = 2) -> int:
    """Decimals needed to print ``values`` as the paper does (e.g. 72.3 -> 1, 73.32 -> 2), clamped."""
    needed = at_least
    for value in values:
        if math.isnan(value):
            continue
        text = f"{value:.{at_most}f}".rstrip("0")
        needed = max(needed, len(text.split(".")[1]) if "." in text else 0)
    return min(needed, at_most)


def _fmt(value: float, decimals: int) -> str:
    """``value`` with a fixed number of decimals."""
    return f"{value:.{decimals}f}"


def _fmt_delta(value: float, decimals: int) -> str:
    return f"Δ{'+' if value >= 0 else '−'}{_fmt(abs(value), decimals)}"


def _legend_layout(labels: Sequence[str], width_in: float) -> tuple[int, int]:
    """(columns, rows) of a figure legend so that its entries fit in ``width_in`` inches."""
    entry_in = max(0.45 + 0.068 * len(label) for label in labels)
    ncol = max(1, min(len(labels), int((width_in - 0.2) // entry_in)))
    return ncol, math.ceil(len(labels) / ncol)


def _status(value: Any) -> str:
    status = str(value).strip().lower()
    if status not in STATUSES:
        raise ValueError(f"unknown cell status {value!r}; expected one of {', '.join(STATUSES)}")
    return status


def _save(fig: Any, path: Path) -> Path:
    """Render to memory, then write atomically: a kill mid-write leaves the previous PNG whole, and a symlink at
    ``path`` is replaced by the file rather than written through (its target is never touched)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _padded_limits(values: Sequence[float], frac: float = 0.12) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    span = hi - lo
    pad = span * frac if span > 0 else max(abs(hi) * 0.05, 0.5)
    return lo - pad, hi + pad


# --------------------------------------------------------------------------- suite figure


def _legend_handles(statuses: set[str], published: bool = True) -> list[Any]:
    """The legend of a suite figure: the statuses drawn, and the published dot only when a value is published."""
    from matplotlib.lines import Line2D

    def dot(label: str, face: str, edge: str | None = None) -> Any:
        return Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=7,
            markerfacecolor=face,
            markeredgecolor=edge or face,
            markeredgewidth=1.5,
            label=label,
        )

    handles = [dot("published", PUBLISHED_COLOR)] if published else []
    if "match" in statuses:
        handles.append(dot("reproduced: match", STATUS_COLORS["match"]))
    if "noted" in statuses:
        handles.append(dot("reproduced: noted difference", STATUS_COLORS["noted"]))
    if "drift" in statuses:
        handles.append(dot("reproduced: drift (Δ shown)", STATUS_COLORS["drift"]))
    if "pending" in statuses:
        handles.append(dot("pending (not yet run)", "none", PUBLISHED_COLOR))
    if "cited" in statuses:
        handles.append(dot("cited from other work", CITED_COLOR))
    if "new" in statuses:
        handles.append(dot("measured, nothing published", STATUS_COLORS["new"]))
    if "inconclusive" in statuses:
        handles.append(dot("reproduced: interval straddles the band", STATUS_COLORS["inconclusive"]))
    return handles


def _draw_spread(ax: Any, rec: Any, y: float, color: str) -> list[float]:
    """A cell of several runs: its 95% CI as an error bar and each seed's value as a small dot."""
    xs: list[float] = []
    lo, hi = _num(getattr(rec, "ci_low", None)), _num(getattr(rec, "ci_high", None))
    if not math.isnan(lo) and not math.isnan(hi):
        ax.plot([lo, hi], [y, y], "-", color=color, lw=1.2, zorder=3)
        ax.plot(
            [lo, lo, math.nan, hi, hi], [y - 0.18, y + 0.18, math.nan, y - 0.18, y + 0.18], "-", color=color, lw=1.2
        )
        xs += [lo, hi]
    values = getattr(rec, "values", None)
    if isinstance(values, list | tuple) and len(values) > 1:
        ax.plot(list(values), [y + 0.22] * len(values), ".", ms=3.5, color=color, alpha=0.8, zorder=4)
        xs += [float(v) for v in values]
    return xs


def _draw_dumbbell_panel(ax: Any, panel: pd.DataFrame, ypos: dict[str, int], cited_rows: set[str]) -> None:
    """Draw one column of a table as a dumbbell chart on ``ax``."""
    xs: list[float] = []
    decimals = _decimals([_num(v) for v in panel["published"]], at_least=1)
    notes: list[tuple[float, int, str, str]] = []  # (x, y, text, color) drawn after limits are known
    for rec in panel.itertuples(index=False):
        y = ypos[rec.row]
        pub = _num(rec.published)
        rep = _num(rec.reproduced)
        status = _status(rec.status)
        if status == "cited":
            if not math.isnan(pub):
                ax.plot(pub, y, "o", ms=6, color=CITED_COLOR, mec="#A0A0A0", mew=0.8, zorder=3)
                xs.append(pub)
                if rec.row not in cited_rows:  # row not marked "(cited)" on the axis: mark the point
                    notes.append((pub, y, "(cited)", "#808080"))
            continue
        if status == "pending":
            if not math.isnan(pub):
                ax.plot(pub, y, "o", ms=7, mfc="white", mec=PUBLISHED_COLOR, mew=1.5, zorder=3)
                xs.append(pub)
            continue
        color = STATUS_COLORS[status]
        if not math.isnan(pub) and not math.isnan(rep):
            ax.plot([pub, rep], [y, y], "-", color=color, lw=2.2, alpha=0.75, solid_capstyle="round", zorder=2)
        if not math.isnan(pub):
            ax.plot(pub, y, "o", ms=7, color=PUBLISHED_COLOR, zorder=3)
            xs.append(pub)
        if not math.isnan(rep):
            xs += _draw_spread(ax, rec, y, color)
            ax.plot(rep, y, "o", ms=7, color=color, mec="white", mew=0.6, zorder=4)
            xs.append(rep)
        if status == "drift":
            delta = _num(rec.delta)
            if math.isnan(delta) and not math.isnan(pub) and not math.isnan(rep):
                delta = rep - pub
            if not math.isnan(delta):
                anchor = max(v for v in (pub, rep) if not math.isnan(v))
                notes.append((anchor, y, _fmt_delta(delta, decimals), color))

    if xs:
        lo, hi = _padded_limits(xs)
        if notes:  # room on the right for the annotations
            hi += (hi - lo) * 0.35
        ax.set_xlim(lo, hi)
        offset = (hi - lo) * 0.03
        for x, y, text, color in notes:
            ax.text(x + offset, y, text, va="center", ha="left", fontsize=7, color=color, zorder=5)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.grid(axis="x", color="#E5E5E5", lw=0.6, zorder=0)
    ax.grid(axis="y", color="#F2F2F2", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", length=0)


def _suite_panels(
    cells: pd.DataFrame, suite_id: str
) -> tuple[list[str], pd.DataFrame, list[str], list[str], set[str]] | None:
    """What a suite's figure draws: its panel columns (those with a published value, or new), the cells drawn,
    row ids in paper order, their labels, and the rows cited throughout; None when nothing is plottable."""
    suite = cells[cells["suite"] == suite_id]
    if suite.empty:
        return None
    suite = suite.assign(
        _pub=[_num(v) for v in suite["published"]],
        _rep=[_num(v) for v in suite["reproduced"]],
        _status=[_status(v) for v in suite["status"]],
    )
    plottable = suite[(suite["_status"] != "cited") & (suite["_pub"].notna() | (suite["_status"] == "new"))]
    present = list(dict.fromkeys(plottable["column"]))
    if not present:
        return None
    columns = sorted(present, key=lambda c: (_kind_rank(c), present.index(c)))
    drawn = suite[suite["column"].isin(columns) & (suite["_pub"].notna() | suite["_rep"].notna())]
    rows = drawn.sort_values(["order", "row"], kind="stable").drop_duplicates("row")
    row_ids: list[str] = list(rows["row"])
    cited_rows = {r for r, grp in drawn.groupby("row", sort=False) if (grp["_status"] == "cited").all()}
    labels = [
        str(lbl) + (" (cited)" if rid in cited_rows else "")
        for rid, lbl in zip(row_ids, rows["row_label"], strict=True)
    ]
    return columns, drawn, row_ids, labels, cited_rows


def draw_suite_figure(suite_id: str, title: str, cells: pd.DataFrame, out_dir: Path) -> Path | None:
    """Draw one paper table as a PNG of dumbbell panels, one panel per column.

    A column gets a panel when at least one of its non-cited cells has a published value.
    Rows run top to bottom in paper order and are labelled with ``row_label``. In each panel a
    grey dot marks the published value and a dot colored by status marks the reproduced value
    (blue = match, amber = noted, vermillion = drift with its Δ printed), joined by a line;
    pending cells show a hollow grey ring at the published value only; cited cells show a light
    grey published dot, and rows cited throughout get a "(cited)" suffix on their label.

    Args:
        suite_id: suite to draw (value of the ``suite`` column); also the file stem.
        title: figure title.
        cells: the long cells frame (one row per table cell).
        out_dir: directory for the PNG, created if needed.

    Returns:
        ``out_dir / f"{suite_id}.png"``, or None when the suite has nothing to plot.
    """
    _check_columns(cells)
    picked = _suite_panels(cells, suite_id)
    if picked is None:
        return None
    columns, drawn, row_ids, labels, cited_rows = picked
    ypos = {rid: i for i, rid in enumerate(row_ids)}

    n_panels = len(columns)
    ncols = min(n_panels, MAX_PANELS_PER_ROW)
    nrows = math.ceil(n_panels / ncols)
    label_in = 0.3 + 0.062 * max(len(lbl) for lbl in labels)
    panel_w, panel_h = 2.7, 0.6 + 0.32 * len(row_ids)
    fig_w = max(label_in + panel_w * ncols + 0.3, 6.5)
    handles = _legend_handles(set(drawn["_status"]), published=bool(drawn["_pub"].notna().any()))
    legend_ncol, legend_rows = _legend_layout([h.get_label() for h in handles], fig_w)
    legend_in = 0.15 + 0.25 * legend_rows
    # The title wrapped to the figure's width (about 10 characters an inch at 12 pt), not cut off at its edge.
    wrapped = textwrap.fill(title, width=max(40, int(fig_w * 10)))
    fig_h = panel_h * nrows + 0.25 * (nrows - 1) + 0.3 + 0.2 * (wrapped.count("\n") + 1) + legend_in

    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(fig_w, fig_h), dpi=DPI, sharey=True, squeeze=False)
        try:
            flat = list(axes.ravel())
            for ax, column in zip(flat, columns, strict=False):
                panel = drawn[drawn["column"] == column]
                _draw_dumbbell_panel(ax, panel, ypos, cited_rows)
                labels_col = panel["column_label"].dropna()
                ax.set_title(str(labels_col.iloc[0]) if len(labels_col) else column, loc="left", fontweight="bold")
            for ax in flat[n_panels:]:
                ax.set_visible(False)
            ax0 = flat[0]
            ax0.set_yticks(range(len(row_ids)), labels)
            ax0.set_ylim(len(row_ids) - 0.5, -0.5)  # paper order, top to bottom
            for ax in flat:
                ax.tick_params(axis="y", labelleft=ax.get_subplotspec().is_first_col())

            fig.suptitle(wrapped, fontsize=12, fontweight="bold", x=0.01, ha="left")
            fig.legend(
                handles=handles,
                loc="lower center",
                ncol=legend_ncol,
                frameon=False,
                bbox_to_anchor=(0.5, 0.0),
                handletextpad=0.3,
                columnspacing=1.2,
            )
            # tight_layout makes room for the suptitle itself, not for a figure legend.
            fig.tight_layout(rect=(0.0, legend_in / fig_h, 1.0, 1.0))
            return _save(fig, Path(out_dir) / f"{suite_id}.png")
        finally:
            plt.close(fig)


# --------------------------------------------------------------------------- figure 1


@dataclass(frozen=True)
class _Bar:
    category: str
    published: float
    reproduced: float
    status: str


def headline_column(cells: pd.DataFrame, suite: str) -> str | None:
    """The suite's headline metric among its cells' columns: the column that comes first in a registered task's
    ``headline`` (ties: the suite's column order); None when the suite has no such column."""
    rank = {}
    for _, task in TASKS.items():
        for i, (metric, _label) in enumerate(task.headline):
            rank[metric] = min(i, rank.get(metric, i))
    columns = [c for c in cells.loc[cells["suite"] == suite, "column"].drop_duplicates() if c in rank]
    return min(columns, key=lambda c: rank[c]) if columns else None


def _figure1_bars(cells: pd.DataFrame, panel: Figure1Panel) -> list[_Bar]:
    column = headline_column(cells, panel.suite)
    if column is None:
        return []
    sub = cells[(cells["suite"] == panel.suite) & (cells["column"] == column)]
    bars: list[_Bar] = []
    for category, row_id in zip(FIGURE1_CATEGORIES, panel.rows, strict=True):
        hit = sub[sub["row"] == row_id]
        if hit.empty:
            continue
        rec = hit.iloc[0]
        pub, rep = _num(rec["published"]), _num(rec["reproduced"])
        if math.isnan(pub) and math.isnan(rep):
            continue
        bars.append(_Bar(category, pub, rep, _status(rec["status"])))
    return bars


def _draw_figure1_panel(ax: Any, panel: Figure1Panel, bars: list[_Bar]) -> bool:
    """Draw one Figure 1 panel; return True when a drift bar was drawn."""
    width = 0.38
    pubs = [b.published for b in bars if not math.isnan(b.published)]
    reps = [b.reproduced for b in bars if not math.isnan(b.reproduced)]
    values = pubs + reps
    lo = math.floor(min(pubs) - 2) if pubs else math.floor(min(values) - 2)
    if reps and min(reps) - 1 < lo:  # never hide a reproduced bar below the axis
        lo = math.floor(min(reps) - 1)
    hi = max(values)
    top = hi + (hi - lo) * 0.22
    any_drift = False
    decimals = _decimals(pubs, at_least=1)

    for i, bar in enumerate(bars):
        x_pub, x_rep = i - width / 2, i + width / 2
        if not math.isnan(bar.published):
            ax.bar(x_pub, bar.published - lo, width, bottom=lo, color=PUBLISHED_COLOR, zorder=2)
            label = " " + _fmt(bar.published, decimals)
            ax.text(x_pub, bar.published, label, ha="center", va="bottom", fontsize=7, rotation=90)
        if math.isnan(bar.reproduced):
            ax.text(
                x_rep,
                lo + (top - lo) * 0.02,
                "not yet reproduced",
                ha="center",
                va="bottom",
                rotation=90,
                fontsize=7,
                style="italic",
                color="#666666",
            )
            continue
        drift = bar.status == "drift"
        any_drift = any_drift or drift
        ax.bar(
            x_rep,
            bar.reproduced - lo,
            width,
            bottom=lo,
            color=REPRODUCED_COLOR,
            edgecolor=STATUS_COLORS["drift"] if drift else REPRODUCED_COLOR,
            linewidth=2.0 if drift else 0.0,
            zorder=2,
        )
        ax.text(
            x_rep,
            bar.reproduced,
            " " + _fmt(bar.reproduced, decimals),
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=90,
            color=STATUS_COLORS["drift"] if drift else "black",
        )

    ax.set_xticks(range(len(bars)), [b.category for b in bars])
    ax.set_xlim(-0.6, len(bars) - 0.4)
    ax.set_ylim(lo, top)
    ax.set_title(panel.title, fontweight="bold")
    ax.grid(axis="y", color="#E5E5E5", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", length=0)
    return any_drift


def draw_figure1(cells: pd.DataFrame, out_dir: Path) -> Path | None:
    """Redraw the paper's Figure 1 with published and reproduced results side by side.

    Three panels (see :data:`FIGURE1_PANELS`): ImageNet top-1 (table2), VOC 2012 mIoU (table8)
    and COCO AP (table6), each over MobileNetV2, +SE, +CBAM and +CA. Each category has a grey
    published bar and a blue reproduced bar (outlined in vermillion when the cell drifts); a
    missing reproduced value leaves the slot empty with a "not yet reproduced" note. The y axis
    is zoomed as in the paper (starting about 2 points below the lowest published value).
    Missing suites or rows are skipped; a panel with no data is left out.

    Args:
        cells: the long cells frame (one row per table cell).
        out_dir: directory for the PNG, created if needed.

    Returns:
        ``out_dir / "figure1.png"``, or None when none of the panels has any data.
    """
    _check_columns(cells)
    panels = [(panel, bars) for panel in FIGURE1_PANELS if (bars := _figure1_bars(cells, panel))]
    if not panels:
        return None

    plt = _pyplot()
    from matplotlib.patches import Patch

    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6), dpi=DPI, squeeze=False)
        try:
            any_drift = False
            for ax, (panel, bars) in zip(axes[0], panels, strict=True):
                any_drift = _draw_figure1_panel(ax, panel, bars) or any_drift
            handles = [
                Patch(facecolor=PUBLISHED_COLOR, label="published (paper)"),
                Patch(facecolor=REPRODUCED_COLOR, label="reproduced"),
            ]
            if any_drift:
                handles.append(
                    Patch(
                        facecolor=REPRODUCED_COLOR,
                        edgecolor=STATUS_COLORS["drift"],
                        linewidth=2.0,
                        label="reproduced, drift",
                    )
                )
            fig.suptitle("Figure 1: attention blocks on MobileNetV2", fontsize=12, fontweight="bold")
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 0.0))
            fig.tight_layout(rect=(0.0, 0.08, 1.0, 1.0))
            return _save(fig, Path(out_dir) / "figure1.png")
        finally:
            plt.close(fig)


def _probe_cells(cells: pd.DataFrame, panel: ProbePanel) -> tuple[list[tuple[str, Any]], float]:
    """``[(category, cell)]`` of the panel's rows that have a result, and the floor's value (NaN if none)."""
    column = headline_column(cells, panel.suite)
    if column is None:
        return [], math.nan
    sub = cells[(cells["suite"] == panel.suite) & (cells["column"] == column)]
    found = []
    for category, row_id in zip(FIGURE1_CATEGORIES, panel.rows, strict=True):
        hit = sub[sub["row"] == row_id]
        if not hit.empty and not math.isnan(_num(hit.iloc[0]["reproduced"])):
            found.append((category, hit.iloc[0]))
    floor = sub[sub["row"] == panel.floor]
    return found, (_num(floor.iloc[0]["reproduced"]) if not floor.empty else math.nan)


def _draw_probe_panel(ax: Any, panel: ProbePanel, found: list[tuple[str, Any]], floor: float) -> None:
    """Bars of the mean, the 95% CI as an error bar, each seed as a dot, the floor as a dashed line."""
    tops: list[float] = [floor] if not math.isnan(floor) else []
    for i, (_category, rec) in enumerate(found):
        mean = _num(rec["reproduced"])
        ax.bar(i, mean, 0.6, color=REPRODUCED_COLOR, alpha=0.85, zorder=2)
        lo, hi = _num(rec.get("ci_low")), _num(rec.get("ci_high"))
        if not math.isnan(lo) and not math.isnan(hi):
            ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=4, lw=1.1, zorder=4)
            tops.append(hi)
        values = [float(v) for v in (rec.get("values") or [])]
        if values:
            offsets = [0.12 * (k - (len(values) - 1) / 2) for k in range(len(values))]
            ax.plot([i + o for o in offsets], values, "o", ms=3.5, color="#E69F00", mec="black", mew=0.4, zorder=5)
            tops += values
        tops.append(mean)
        ax.text(
            i,
            0,
            f"{mean:.1f}\nn={int(rec.get('n') or len(values) or 1)}",
            ha="center",
            va="bottom",
            fontsize=7,
            color="white",
            zorder=6,
        )
    if not math.isnan(floor):
        ax.axhline(floor, color="#D55E00", ls="--", lw=1.2, zorder=3, label=f"floor: {floor:.1f}")
        ax.legend(loc="upper right", frameon=False, fontsize=7)
    ax.set_xticks(range(len(found)), [c for c, _ in found])
    ax.set_xlim(-0.6, len(found) - 0.4)
    ax.set_ylim(0, max(tops) * 1.25 if tops and max(tops) > 0 else 1)  # room for the floor's legend
    ax.set_title(panel.title, fontweight="bold")
    ax.grid(axis="y", color="#E5E5E5", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", length=0)


def draw_probe_figure1(cells: pd.DataFrame, out_dir: Path) -> Path | None:
    """Figure 1's three tasks on the handwritten-digits probe (:data:`PROBE_FIGURE1_PANELS`): per category the
    mean over seeds as a bar, its t-based 95% CI, each seed's value as a dot, and the suite's floor as a dashed
    line. Nothing published exists for the probe, so there is nothing to compare against.

    Returns ``out_dir / "figure1-probe.png"``, or None when no panel has a result.
    """
    _check_columns(cells)
    panels = [(p, found, floor) for p in PROBE_FIGURE1_PANELS for found, floor in [_probe_cells(cells, p)] if found]
    if not panels:
        return None
    plt = _pyplot()
    with plt.rc_context(_RC):
        width = max(4.4, 3.4 * len(panels))
        fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.0), dpi=DPI, squeeze=False)
        try:
            for ax, (panel, found, floor) in zip(axes[0], panels, strict=True):
                _draw_probe_panel(ax, panel, found, floor)
            fig.suptitle(
                "Figure 1 on the handwritten-digits probe\nmean, 95% CI, seeds as dots, floor dashed",
                fontsize=10,
                fontweight="bold",
            )
            fig.tight_layout()
            return _save(fig, Path(out_dir) / "figure1-probe.png")
        finally:
            plt.close(fig)


# --------------------------------------------------------------------------- claims figure

VERDICT_COLORS: dict[str, str] = {
    "supported": "#009E73",  # bluish green
    "contradicted": "#D55E00",  # vermillion
    "inconclusive": "#E69F00",  # amber
    "pending": PUBLISHED_COLOR,
    "Δ only": "#56B4E9",  # sky blue
}


def draw_claims_figure(claims: pd.DataFrame, out_dir: Path) -> Path | None:
    """Every claim on one axis: the reproduced Δ with its 95% CI (colored by verdict) beside the published Δ
    (grey diamond) and zero; ``claims`` is :func:`cabench.claims_report.claims_frame`. None when empty."""
    if claims.empty:
        return None
    labels = [f"{s}: {c}" for s, c in zip(claims["scope"], claims["claim"], strict=True)]
    n = len(labels)
    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.22 * n), dpi=DPI)
        try:
            ax.axvline(0.0, color="#404040", lw=0.8, zorder=1)
            for y, rec in enumerate(claims.itertuples(index=False)):
                pub = _num(rec.published_delta)
                if not math.isnan(pub):
                    ax.plot(pub, y, "D", ms=5, color=PUBLISHED_COLOR, zorder=3)
                delta, lo, hi = _num(rec.delta), _num(rec.ci_low), _num(rec.ci_high)
                color = VERDICT_COLORS.get(str(rec.verdict), PUBLISHED_COLOR)
                if not math.isnan(lo) and not math.isnan(hi):
                    ax.plot([lo, hi], [y, y], "-", color=color, lw=1.6, zorder=2)
                if not math.isnan(delta):
                    ax.plot(delta, y, "o", ms=5.5, color=color, mec="white", mew=0.5, zorder=4)
            ax.set_yticks(range(n), labels, fontsize=6.5)
            ax.set_ylim(n - 0.5, -0.5)
            ax.set_xlabel("Δ = a − b (points)")
            ax.grid(axis="x", color="#E5E5E5", lw=0.6, zorder=0)
            ax.set_title("Claims: reproduced Δ and 95% CI (by verdict) vs published Δ (◆)", loc="left", fontsize=10)
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], ls="none", marker="D", color=PUBLISHED_COLOR, label="published Δ")] + [
                Line2D([], [], ls="-", marker="o", color=c, label=k) for k, c in VERDICT_COLORS.items()
            ]
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6.5, frameon=False)
            fig.tight_layout()
            return _save(fig, Path(out_dir) / "claims.png")
        finally:
            plt.close(fig)
