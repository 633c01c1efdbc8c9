"""Which run fills each table cell, and what the cell then says: value, status, provenance, replicates.

A cell's reproduced value comes only from the latest complete run of the profile that fills its column (``count``
for Param. and M-Adds; accuracy cells: the mean of one run per seed). A published number is never copied into a
reproduced cell; a cell without a run is ``pending``. Statuses: ``match`` (within the column's tolerance),
``noted`` (beyond it, with a note giving the evidence), ``drift`` (beyond it, no note), ``pending`` (nothing
reproduced yet), ``cited`` (the paper quotes another paper; shown, not checked), ``new`` (measured for a row the
paper has no value for: a user's block, a fairness row; never marked against anything), ``inconclusive`` (a
latency ratio whose interval straddles the published range). Only runs on the paper's data fill a cell; others
are kept as "results on other data". :mod:`cabench.report` renders the cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from cabench.claims import summarize
from cabench.columns import COLUMNS
from cabench.data.base import fills_cells
from cabench.data.identity import is_paper_data, not_paper_text
from cabench.measure.ratio import ratio_status
from cabench.profiles.base import PROFILES
from cabench.recipe import suite_dataset
from cabench.replicates import replicate_key, replicates
from cabench.store import RunRecord, Store
from cabench.suite import UNIT_SCALE, Published, Row, Suite
from cabench.tasks.base import TASKS

__all__ = ["STATUSES_BY_KIND", "Cell", "build_cells", "decimals", "published_text"]


# The statuses a cell of each column kind can end in. Every profile fills columns of the kinds it declares
# (``Profile.fills``), so these are the statuses any profile can produce; a cell outside its kind's set is refused
# when the report is built, and tests check that every one is rendered (marks here, colours in plots.py).
_COMMON = frozenset({"match", "noted", "drift", "pending", "cited", "new"})
STATUSES_BY_KIND: dict[str, frozenset[str]] = {
    "count": _COMMON,
    "accuracy": _COMMON,
    "latency": _COMMON | {"inconclusive"},
}


@dataclass
class Cell:
    suite: str
    row: str
    row_name: str
    row_label: str
    order: int
    column: str
    column_label: str
    unit: str
    published: Published | None
    reproduced: float | None
    exact: int | None
    delta: float | None
    status: str
    profile: str
    run_id: str
    note: str | None
    tolerance: Decimal | None
    display: str | None = None  # replaces the number, e.g. "pipeline ok (smoke)"
    block: str | None = None  # the row's attention block when it is not built into cabench (footnoted)
    provenance: str | None = None  # how a non-paper number was produced (footnoted)
    # An accuracy cell filled by n runs (one per seed): reproduced is their mean.
    n: int = 0
    sd: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    seeds: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    run_ids: tuple[str, ...] = ()  # every run behind the cell (run_id is the newest)

    @property
    def published_in_ci(self) -> bool | None:
        """Whether the published value lies inside the 95% CI of the mean (None without a CI)."""
        if self.ci_low is None or self.ci_high is None or not isinstance(self.published, Decimal):
            return None
        return self.ci_low <= float(self.published) <= self.ci_high

    other_data: str | None = None  # a result on data that is not the paper's: its own line, never the cell
    model: str = ""  # the model spec's key (mobilenetv2-w1-ca-r32-c1000)
    seed: int | None = None
    ratio: tuple[float, float, float] | None = None  # latency: ratio to the baseline, CI low, CI high
    runs: tuple[RunRecord, ...] = ()  # every run whose number the cell shows (its evidence)


def published_text(p: Published | None) -> str:
    if p is None:
        return ""
    if isinstance(p, tuple):
        return f"{p[0]}-{p[1]}"
    return str(p)


def decimals(p: Published | None) -> int:
    if p is None or isinstance(p, tuple):
        return 2
    return max(-int(p.as_tuple().exponent), 0)


def _filled_by(kind: str) -> list[str]:
    """The profiles that may fill a column of ``kind`` (a smoke run fills nothing: it only earns an accuracy
    cell its placeholder, "pipeline ok (smoke)")."""
    return [name for name, profile in PROFILES.items() if kind in profile.fills]


def _usable(column: str, value: object) -> bool:
    """A value that may fill ``column``: a finite number (a whole, non-negative one for counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if COLUMNS[column].kind == "count":
        return isinstance(value, int) and value >= 0
    return math.isfinite(value)


def _filling_run(
    column: str, runs: dict[str, RunRecord | None], store: Store | None = None, dataset: str | None = None
) -> RunRecord | None:
    """The latest complete run of a profile allowed to fill ``column`` that has a usable value for it.

    A value that is not a finite number (NaN from a diverged model, a hand-edited string) never fills a
    cell; the run's metrics file is named in ``store.problems``. An accuracy fills only when the dataset's
    identity check admits the run's data (``dataset``: the suite's, for runs that do not name theirs).
    """
    candidates = []
    for p in _filled_by(COLUMNS[column].kind):
        r = runs.get(p)
        if r is None or r.metrics.get(column) is None:
            continue
        if not _usable(column, r.metrics[column]):
            if store is not None:
                store.note_problem(f"{r.path / 'metrics.json'}: {column} is {r.metrics[column]!r}, not a usable number")
        elif COLUMNS[column].kind != "accuracy" or fills_cells(r.config, dataset):
            candidates.append(
                r
            )  # else e.g. not the paper's split: its own line, never the cell (cabench.data.identity)
    return max(candidates, key=lambda r: r.run_id, default=None)


def _usable_replicates(store: Store, runs: list[RunRecord], column: str) -> list[RunRecord]:
    """Seeds' runs whose ``column`` is a finite number; the others are named in ``store.problems``."""
    usable = []
    for r in runs:
        if _usable(column, r.metrics[column]):
            usable.append(r)
        else:
            store.note_problem(f"{r.path / 'metrics.json'}: {column} is {r.metrics[column]!r}, not a usable number")
    return usable


def _candidates(column: str, runs: dict[str, RunRecord | None]) -> list[RunRecord]:
    return [
        r
        for p in _filled_by(COLUMNS[column].kind)
        if (r := runs.get(p)) is not None and r.metrics.get(column) is not None
    ]


def _other_data_run(column: str, runs: dict[str, RunRecord | None], dataset: str | None) -> RunRecord | None:
    """The latest accuracy result on data its dataset's identity check refuses (its own line, never a cell)."""
    if COLUMNS[column].kind != "accuracy":
        return None
    others = [r for r in _candidates(column, runs) if not fills_cells(r.config, dataset)]
    run = max(others, key=lambda r: r.run_id, default=None)
    if run is None or not _usable(column, run.metrics[column]):
        return None
    return run


def _other_data_line(column: str, run: RunRecord) -> str:
    return f"{float(run.metrics[column]):.2f} on {not_paper_text(run.config)}, {run.profile} run `{run.run_id}`"


def _provenance(suite: Suite, run: RunRecord) -> str | None:
    """A footnote when a cell was not produced by the suite's own recipe, as is."""
    own = PROFILES[run.profile].footnote(run) if run.profile in PROFILES else None
    if own is not None:
        return own
    parts = []
    recipe, overrides = run.config.get("recipe"), run.config.get("overrides") or {}
    if recipe != suite.recipe or overrides:
        changed = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        parts.append(f"recipe {recipe}" + (f" with overrides {changed}" if changed else "") + f", not {suite.recipe}")
    if TASKS[suite.task].takes_backbone:
        backbone = run.config.get("backbone_checkpoint")
        source = (backbone or {}).get("from")
        if isinstance(source, dict):  # another suite's run: named by suite, row and run id, not by a machine's path
            where = f"{source.get('suite')}/{source.get('row')} run {source.get('run')} (seed {source.get('seed')}"
            parts.append(f"backbone from {where}, sha256 {str(backbone['sha256'])[:12]}…)")
        elif backbone:
            parts.append(f"backbone from {backbone['path']} (sha256 {str(backbone['sha256'])[:12]}…)")
        else:
            parts.append("trained from scratch: no ImageNet-pretrained backbone (the paper's backbones are pretrained)")
    return "; ".join(parts) or None


def _row_labels(suite: Suite) -> dict[str, str]:
    """Unique labels: the printed name, disambiguated by the settings that differ."""
    names = [r.name for r in suite.rows]
    labels = {}
    for r in suite.rows:
        label = r.name
        if names.count(r.name) > 1 and r.model is not None:
            extras = [f"{lbl}={getattr(r.model, fld)}" for lbl, fld in suite.settings.items()]
            if not extras:
                extras = [f"w={r.model.width:g}"]
            label = f"{r.name} ({', '.join(extras)})"
        labels[r.key] = label
    return labels


def _cell(suite: Suite, row: Row, order: int, label: str, column: str, run: RunRecord | None) -> Cell:
    unit = suite.columns[column].unit
    published = row.published.get(column)
    if run is not None and COLUMNS[column].kind == "accuracy" and not is_paper_data(run.config):
        published = None  # data the paper never used (the probe's): nothing to mark against the paper
    note = row.notes.get(column)
    tol = suite.tolerance(column, published) if published is not None else None
    cell = Cell(
        suite=suite.id,
        row=row.key,
        row_name=row.name,
        row_label=label,
        order=order,
        column=column,
        column_label=suite.column_label(column),
        unit=unit,
        published=published,
        reproduced=None,
        exact=None,
        delta=None,
        status="pending",
        profile="",
        run_id="",
        note=note,
        tolerance=tol,
    )
    if run is not None and run.metrics.get(column) is not None:
        value = run.metrics[column]
        if COLUMNS[column].kind == "count":
            cell.exact = int(value)
            cell.reproduced = cell.exact / UNIT_SCALE[unit]
        else:
            cell.reproduced = float(value)
            if COLUMNS[column].kind == "accuracy":
                cell.provenance = _provenance(suite, run)
        cell.profile, cell.run_id = run.profile, run.run_id
        cell.seed = run.config.get("seed") if isinstance(run.config.get("seed"), int) else None
        cell.runs = (run,)
    if row.model is not None:
        cell.model = row.model.spec().key()
    if row.cited:
        cell.status = "cited"
    elif cell.reproduced is not None and published is not None and not isinstance(published, tuple):
        cell.delta = cell.reproduced - float(published)
        within = abs(Decimal(repr(cell.reproduced)) - published) <= tol
        cell.status = "match" if within else ("noted" if note else "drift")
    elif cell.reproduced is not None and published is None:
        cell.status = "new"  # measured, with nothing published to hold it against
    elif cell.reproduced is not None:
        cell.status = "noted" if note else "match"
    return cell


def build_cells(suites: Sequence[Suite], store: Store) -> list[Cell]:
    """Every cell of every suite, with its reproduced value from the store (if any)."""
    cells = []
    for suite in suites:
        labels = _row_labels(suite)
        dataset = suite_dataset(suite)
        row_cells: list[tuple[Row, Cell, RunRecord | None]] = []
        for order, row in enumerate(suite.rows):
            measured = row.model is not None or row.floor is not None  # a floor row is a run too
            runs = {p: store.latest(suite.id, row.key, p) for p in PROFILES.names()} if measured else {}
            for column in suite.columns:
                run = _filling_run(column, runs, store, dataset)
                if row.floor is not None and _counted(column):
                    continue
                reps = []
                if COLUMNS[column].kind == "accuracy" and row.model is not None and not row.cited:
                    found = [r for r in replicates(store, suite.id, row.key, column) if fills_cells(r.config, dataset)]
                    reps = _usable_replicates(store, found, column)
                    run = max(reps, key=lambda r: r.run_id) if reps else None
                ran = _placeholder_run(runs)
                shown = run is not None or _counted(column) or (ran is not None and COLUMNS[column].kind == "accuracy")
                if column not in row.published and (not measured or not shown):
                    continue  # nothing published, nothing measured: no cell (a smoke run's placeholder is a cell)
                cell = _cell(suite, row, order, labels[row.key], column, run)
                other = _other_data_run(column, runs, dataset)
                if other is not None:
                    cell.other_data = _other_data_line(column, other)
                    cell.runs += (other,)
                if reps:
                    _fill_replicates(suite, row, cell, reps)
                if COLUMNS[column].kind == "accuracy" and cell.reproduced is None and ran and not row.cited:
                    cell.display, cell.profile, cell.run_id = PROFILES[ran.profile].placeholder, ran.profile, ran.run_id
                cell.block = _block_note(runs)
                row_cells.append((row, cell, run))
        _latency_status(suite, row_cells)
        cells += [_checked_status(c) for _, c, _ in row_cells]
    return cells


def _checked_status(cell: Cell) -> Cell:
    kind = COLUMNS[cell.column].kind
    if cell.status not in STATUSES_BY_KIND[kind]:
        where = f"{cell.suite}/{cell.row}/{cell.column}"
        raise RuntimeError(f"{where}: status {cell.status!r} is not one a {kind} cell takes")
    return cell


def _block_note(runs: dict[str, RunRecord | None]) -> str | None:
    """The footnote for a row whose attention block is not built in, from the block its runs recorded."""
    for run in sorted((r for r in runs.values() if r is not None), key=lambda r: r.run_id, reverse=True):
        block = run.config.get("attention_block")
        if block:
            sha = str(block.get("sha256") or "?")[:12]
            where = f"{block.get('file')}, sha256 {sha}…"
            return f"attention block {block.get('import_path')} is not built into cabench ({where})"
    return None


def _counted(column: str) -> bool:
    return COLUMNS[column].kind == "count"


def _placeholder_run(runs: dict[str, RunRecord | None]) -> RunRecord | None:
    """The latest run of a profile that shows a placeholder instead of a number (smoke: "pipeline ok")."""
    shown = [r for name, r in runs.items() if r is not None and PROFILES[name].placeholder]
    return max(shown, key=lambda r: r.run_id, default=None)


def _fill_replicates(suite: Suite, row: Row, cell: Cell, runs: Sequence[RunRecord]) -> None:
    """Mean ± sd (n) of the replicates, their 95% CI, and the status of the mean against the paper."""
    values = [float(r.metrics[cell.column]) for r in runs]
    summary = summarize(values)
    cell.n, cell.sd, cell.ci_low, cell.ci_high = summary.n, summary.sd, summary.ci_low, summary.ci_high
    cell.values, cell.seeds = tuple(values), tuple(str(replicate_key(r)) for r in runs)
    cell.run_ids = tuple(r.run_id for r in runs)
    cell.runs = (*runs, *(r for r in cell.runs if r not in runs))
    cell.reproduced = summary.mean
    published = cell.published
    if row.cited or cell.reproduced is None or not isinstance(published, Decimal) or cell.tolerance is None:
        return
    cell.delta = cell.reproduced - float(published)
    within = abs(Decimal(repr(cell.reproduced)) - published) <= cell.tolerance
    cell.status = "match" if within else ("noted" if cell.note else "drift")


def _latency_status(suite: Suite, row_cells: list[tuple[Row, Cell, RunRecord | None]]) -> None:
    """Latency is compared as a ratio to the baseline row: the paper's milliseconds are a Pixel 4's.

    The published range allows the ratios [row low / baseline high, row high / baseline low]. The status comes
    from the measured ratio's 95% confidence interval (bootstrap over interleaved rounds, see
    :mod:`cabench.measure.ratio`): ``match`` inside, ``drift`` (``noted`` with a note) wholly outside,
    ``inconclusive`` when it straddles an edge or the run recorded no interval.
    """
    by_row = {row.key: (row, cell) for row, cell, _ in row_cells if COLUMNS[cell.column].kind == "latency"}
    base = by_row.get(suite.baseline or "")
    for r, cell, run in row_cells:
        if COLUMNS[cell.column].kind != "latency" or cell.reproduced is None or base is None or r.cited or run is None:
            continue
        m = run.metrics
        ratio, low, high = m.get("latency_ratio"), m.get("latency_ratio_ci_low"), m.get("latency_ratio_ci_high")
        pub, base_pub = cell.published, base[1].published
        if ratio is None:
            continue
        has_ci = low is not None and high is not None
        cell.ratio = (ratio, low, high) if has_ci else (ratio, float("nan"), float("nan"))
        interval = f", 95% CI {low:.2f}–{high:.2f}×" if has_ci else ", no CI"
        cell.display = f"{ratio:.2f}× ({cell.reproduced:.1f} ms{interval})"
        cell.provenance = _latency_footnote(run)
        if not isinstance(pub, tuple) or not isinstance(base_pub, tuple):
            continue
        lo, hi = float(pub[0]) / float(base_pub[1]), float(pub[1]) / float(base_pub[0])
        status = ratio_status(low, high, lo, hi) if has_ci else "inconclusive"
        cell.status = "noted" if status == "drift" and cell.note else status


def _latency_footnote(run: RunRecord) -> str:
    m, c = run.metrics, run.config
    parts = [f"{c.get('rounds', '?')} interleaved rounds", f"{c.get('threads', '?')} thread(s)"]
    if m.get("latency_ratio_spread") is not None:
        parts.append(f"per-round ratio spread (p90-p10)/median {m['latency_ratio_spread']:.1%}")
    if m.get("latency_ratio_ci_low") is not None:
        parts.append("[95% CI, bootstrap over rounds]")
    else:
        parts.append("no confidence interval recorded: status inconclusive")
    return "latency ratio to the baseline row: " + ", ".join(parts)
