"""Reproduced-vs-published tables: ``reports/<suite>.md``, ``reports/README.md``, ``reports/results.csv``,
rendered from the cells :mod:`cabench.cells` fills (which run, which status, which provenance), with the figures
(:mod:`cabench.plots`) and the claims' verdicts (:mod:`cabench.claims_report`).

Results carry their evidence: the report reads the runs of ``runs/`` together with the copies committed
under ``reports/records/`` (a second, read-only store of the same layout, ``runs/`` winning where both hold
a run id), and writes such a copy (config.json, env.json, metrics.json; nothing else) of every trained or
evaluated run whose numbers it shows. A fresh clone without ``runs/`` reproduces the same pages from them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd

from cabench.cells import Cell, build_cells, decimals, published_text
from cabench.claims import Verdict
from cabench.claims_report import claims_csv, claims_frame, judge_claims, render_claims_section, render_claims_summary
from cabench.columns import COLUMNS
from cabench.locate import display_path
from cabench.replicates import counting_profiles, replicate_key
from cabench.store import LayeredStore, RunRecord, Store, atomic_write_bytes, atomic_write_text
from cabench.suite import Suite, known_claim_files, load_claim_file

__all__ = [
    "CSV_COLUMNS",
    "RECORDS_DIR",
    "RECORD_FILES",
    "STATUS_MARKS",
    "reading_store",
    "write_reports",
]

RECORDS_DIR = "records"  # reports/records/<suite>/<row>/<profile>/<run-id>/, the layout of runs/
RECORD_FILES = ("config.json", "env.json", "metrics.json")  # metrics.json last: a record is complete once it is

CSV_COLUMNS = [
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
    "n",
    "sd",
    "ci_low",
    "ci_high",
    "seeds",
    "published_in_ci",
    "seed_values",
    "seed_run_ids",
    "name",
    "model",
    "seed",
    "latency_ratio",
    "latency_ratio_ci_low",
    "latency_ratio_ci_high",
]
STATUS_MARKS = {
    "match": "✅",
    "noted": "📝",
    "drift": "❌",
    "pending": "⏳",
    "cited": "📖",
    "new": "🆕",
    "inconclusive": "❔",
}


def cells_frame(cells: Sequence[Cell]) -> pd.DataFrame:
    """Cells as a DataFrame (the schema ``cabench.plots`` draws from)."""
    rows = []
    for c in cells:
        rows.append(
            {
                "suite": c.suite,
                "row": c.row,
                "row_name": c.row_name,
                "row_label": c.row_label,
                "order": c.order,
                "column": c.column,
                "column_label": c.column_label,
                "unit": c.unit,
                "published": float(c.published) if isinstance(c.published, Decimal) else float("nan"),
                "reproduced": c.reproduced if c.reproduced is not None else float("nan"),
                "exact": c.exact,
                "delta": c.delta if c.delta is not None else float("nan"),
                "status": c.status,
                "profile": c.profile,
                "run_id": c.run_id,
                "n": c.n,
                "ci_low": c.ci_low if c.ci_low is not None else float("nan"),
                "ci_high": c.ci_high if c.ci_high is not None else float("nan"),
                "values": list(c.values),
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["exact"] = frame["exact"].astype("Int64")
    return frame


def results_csv(cells: Sequence[Cell]) -> str:
    buf = io.StringIO()
    frame = pd.DataFrame(
        [
            {
                "suite": c.suite,
                "row": c.row,
                "column": c.column,
                "unit": c.unit,
                "published": published_text(c.published),
                "reproduced": "" if c.reproduced is None else f"{c.reproduced:.6g}",
                "exact": "" if c.exact is None else str(c.exact),
                "delta": "" if c.delta is None else f"{c.delta:.6g}",
                "status": c.status,
                "profile": c.profile,
                "run_id": c.run_id,
                "n": str(c.n) if c.n else "",
                "sd": "" if c.sd is None else f"{c.sd:.6g}",
                "ci_low": "" if c.ci_low is None else f"{c.ci_low:.6g}",
                "ci_high": "" if c.ci_high is None else f"{c.ci_high:.6g}",
                "seeds": " ".join(c.seeds),
                "published_in_ci": "" if c.published_in_ci is None else str(c.published_in_ci).lower(),
                "seed_values": " ".join(f"{v:.6g}" for v in c.values),
                "seed_run_ids": " ".join(c.run_ids),
                "name": c.row_label,
                "model": c.model,
                "seed": "" if c.seed is None else str(c.seed),
                **dict(zip(CSV_COLUMNS[-3:], [f"{v:.6g}" for v in c.ratio] if c.ratio else ["", "", ""], strict=True)),
            }
            for c in cells
        ],
        columns=CSV_COLUMNS,
    )
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def _format_cell(c: Cell, footnote: int | None) -> str:
    mark = STATUS_MARKS[c.status]
    ref = f" [{footnote}]" if footnote else ""
    pub = published_text(c.published) or "–"
    if c.display:
        return f"{c.display} · {pub} {mark}{ref}"
    if c.reproduced is None:
        return f"{pub} {mark}{ref}" if c.status == "cited" else f"— · {pub} {mark}{ref}"
    d = decimals(c.published) + 1
    value = f"**{c.reproduced:.{d}f}**" + _spread(c, d)
    ci = "" if c.published_in_ci is None else (" ∈ CI" if c.published_in_ci else " ∉ CI")
    if c.delta is not None:
        return f"{value} · {pub} ({c.delta:+.{d}f}) {mark}{ci}{ref}"
    return f"{value} · {pub} {mark}{ci}{ref}"


def _spread(c: Cell, d: int) -> str:
    """' ± sd (n=3)' for a cell of several runs, ' (n=1)' for one; nothing for counts and latency."""
    if c.n == 0:
        return ""
    if c.n == 1:
        return " (n=1)"
    return f" ± {c.sd:.{d}f} (n={c.n})"


def suite_summary(cells: Sequence[Cell]) -> dict[str, int]:
    out = dict.fromkeys(STATUS_MARKS, 0)
    for c in cells:
        out[c.status] += 1
    return out


def render_suite(
    suite: Suite,
    cells: Sequence[Cell],
    figure: str | None = None,
    runs_dir: str = "runs",
    verdicts: Sequence[Verdict] = (),
) -> str:
    table, notes = _suite_table(suite, cells)
    lines = [*_suite_header(suite), *table]
    if notes:
        lines += ["", "**Notes**", ""]
        lines += [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    lines += _suite_sections(suite, cells)
    lines += render_claims_section(verdicts)
    if figure:
        lines += ["", f"![{suite.id}: published vs reproduced]({figure})"]
    lines += _produced_by(suite, cells, runs_dir)
    return "\n".join(lines) + "\n"


def _suite_header(suite: Suite) -> list[str]:
    """The title, the source and how to read a cell."""
    return [
        f"# {suite.title}",
        "",
        f"Source: {suite.source}. Suite: `{display_path(suite.path) if suite.path else suite.id}`.",
        "",
        "Each cell: **reproduced** · published (Δ) status. "
        + " ".join(f"{m} {s}" for s, m in STATUS_MARKS.items())
        + ". Param. and M-Adds come from the `count` profile (fvcore; multiply-adds of conv and linear layers). "
        "An accuracy cell is the mean ± sd of its runs (n, one per seed); ∈ CI / ∉ CI: the published value "
        "lies inside / outside the t-based 95% CI of that mean.",
        "",
    ]


def _suite_table(suite: Suite, cells: Sequence[Cell]) -> tuple[list[str], list[str]]:
    """The Markdown table, one line per suite row, and the notes its cells and block names refer to by number."""
    by_row: dict[str, dict[str, Cell]] = {}
    for c in cells:
        by_row.setdefault(c.row, {})[c.column] = c
    columns = list(suite.columns)
    head = ["Settings", *suite.settings, *(suite.column_label(k) for k in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    notes: list[str] = []
    note_index: dict[str, int] = {}

    def ref(text: str) -> int:
        if text not in note_index:
            notes.append(text)
            note_index[text] = len(notes)
        return note_index[text]

    for row in suite.rows:
        row_cells = by_row.get(row.key, {})
        settings = [
            "–" if row.model is None or getattr(row.model, f) is None else str(getattr(row.model, f))
            for f in suite.settings.values()
        ]
        values = []
        for k in columns:
            c = row_cells.get(k)
            text = None if c is None else c.note if c.note and c.status in ("noted", "drift", "match") else c.provenance
            values.append("–" if c is None else _format_cell(c, ref(text) if text else None))
        name = row.name + (" *(cited)*" if row.cited else "")
        block = next((c.block for c in row_cells.values() if c.block), None)
        if block:
            name += f" [{ref(block)}]"
        lines.append("| " + " | ".join([name, *settings, *values]) + " |")
    return lines, notes


def _suite_sections(suite: Suite, cells: Sequence[Cell]) -> list[str]:
    """Per-seed values, results on other data, the suite's notes and its cited rows, each when there are any."""
    columns = list(suite.columns)
    lines: list[str] = []
    per_seed = [c for c in sorted(cells, key=lambda c: (c.order, columns.index(c.column))) if c.values]
    if per_seed:
        lines += ["", "**Per-seed values** (the runs behind each mean)", ""]
        lines += [f"- {c.row_label}, {c.column_label}: {_per_seed_text(c)}" for c in per_seed]
    other = [c for c in cells if c.other_data]
    if other:
        lines += ["", "**Results on other data** (kept on their own line, never marked against the paper)", ""]
        lines += [f"- {c.row_label}, {c.column_label}: {c.other_data}" for c in other]
    if suite.notes:
        lines += ["", "**About this table**", ""]
        lines += [f"- {n}" for n in suite.notes]
    cited = [r for r in suite.rows if r.cited and r.source]
    if cited:
        lines += ["", "**Cited rows**", ""]
        lines += [f"- {r.name}: {r.source}" for r in cited]
    return lines


def _produced_by(suite: Suite, cells: Sequence[Cell], runs_dir: str) -> list[str]:
    """Where the runs behind the page are, and where their committed records are."""
    run_ids = sorted({r for c in cells for r in (c.run_id, *c.run_ids) if r})
    if not run_ids:
        return []
    line = (
        f"Produced by {len(run_ids)} run(s) under `{runs_dir}/{suite.id}/`, latest `{run_ids[-1]}`; "
        "each run directory holds config.json, env.json and metrics.json."
    )
    recorded = {r.run_id for c in cells for r in c.runs if _recorded(r)}
    if recorded:
        line += (
            f" Those files of the {len(recorded)} trained or evaluated run(s) are committed under "
            f"[`{RECORDS_DIR}/{suite.id}/`]({RECORDS_DIR}/{suite.id}/) (same layout), which `cabench report` "
            "reads when `runs/` does not hold them."
        )
    return ["", line]


def _per_seed_text(c: Cell) -> str:
    """'10.949, 9.736, 10.931 (seeds 0, 1, 2)': each replicate's value, in the order of its key."""
    d = decimals(c.published) + 1
    values = ", ".join(f"{v:.{d}f}" for v in c.values)
    what = "seed" if all(k.lstrip("-").isdigit() for k in c.seeds) else "replicate"
    return f"{values} ({what}{'s' if len(c.seeds) > 1 else ''} {', '.join(c.seeds)})"


def render_index(
    suites: Sequence[Suite],
    cells: Sequence[Cell],
    figures: dict[str, str],
    env: dict,
    verdicts: Sequence[Verdict] = (),
    scopes: Sequence[tuple[str, str]] = (),
) -> str:
    lines = [
        "# cabench reports",
        "",
        "What cabench reproduces today of *Coordinate Attention for Efficient Mobile Network Design* "
        "(Hou, Zhou, Feng, CVPR 2021). Generated by `cabench report`; do not edit by hand.",
        "",
        "| Table | Title | ✅ match | 📝 noted | ❌ drift | ⏳ pending | 📖 cited |",
        "|---|---|---|---|---|---|---|",
    ]
    for suite in suites:
        s = suite_summary([c for c in cells if c.suite == suite.id])
        lines.append(
            f"| [{suite.id}]({suite.id}.md) | {suite.title} | {s['match']} | {s['noted']} | {s['drift']} "
            f"| {s['pending']} | {s['cited']} |"
        )
    counted = [c for c in cells if COLUMNS[c.column].kind == "count" and c.status != "cited"]
    cs = suite_summary(counted)
    lines += [
        "",
        f"**Count cells (Param., M-Adds):** {cs['match']} match, {cs['noted']} drift with a note, "
        f"{cs['drift']} drift without a note, {cs['pending']} pending, of {len(counted)}.",
        "",
        "Accuracy and latency cells stay ⏳ pending until a `paper`/`latency` run fills them; "
        "a `smoke` run never fills them.",
        "",
        f"Environment of the latest runs: torch {env.get('torch')}, torchvision {env.get('torchvision')}, "
        f"fvcore {env.get('fvcore')}, {env.get('device') or 'counts from the cache'}{_cpu_text(env)}, "
        f"cabench {env.get('cabench')} "
        f"(commit {env.get('git_commit') or 'unknown'}).",
    ]
    if verdicts:
        lines += render_claims_summary(verdicts, scopes or [(s.id, s.id) for s in suites])
        if "claims" in figures:
            lines += ["", f"![Claims: reproduced Δ with 95% CI beside the published Δ]({figures['claims']})"]
    if "figure1" in figures:
        lines += ["", "## Figure 1", "", f"![Figure 1: published vs reproduced]({figures['figure1']})"]
    if "figure1-probe" in figures:
        lines += ["", "## Figure 1 on the handwritten-digits probe", ""]
        lines += [f"![Figure 1's tasks on digit scenes: mean, 95% CI, seeds, floor]({figures['figure1-probe']})"]
    per_table = [s for s in suites if s.id in figures]
    if per_table:
        lines += ["", "## Published vs reproduced, per table", ""]
        lines += [f"![{s.id}]({figures[s.id]})" for s in per_table]
    return "\n".join(lines) + "\n"


def _cpu_text(env: dict) -> str:
    """' (CPU Intel(R) Xeon(R) ..., torch dispatching AVX512)' from an env.json that records them; '' otherwise."""
    parts = [f"CPU {env['cpu_model']}"] if env.get("cpu_model") else []
    if env.get("cpu_capability"):
        parts.append(f"torch dispatching {env['cpu_capability']}")
    return f" ({', '.join(parts)})" if parts else ""


def _inside(out_dir: Path, path: Path) -> Path:
    """``path`` if it lies inside the report folder; ValueError (one line) otherwise."""
    if not path.resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"{path}: outside the report folder {out_dir}; a suite id must be a name, not a path")
    return path


@dataclass(frozen=True)
class _Heading:
    """A suite as the index lists it: id and title (a suite reported earlier need not be loadable now)."""

    id: str
    title: str


@dataclass(frozen=True)
class _KeptCell:
    """A cell of an earlier report, kept as its results.csv line says."""

    suite: str
    column: str
    status: str
    run_id: str
    line: dict[str, str]


_INDEX_LINE = re.compile(r"^\| \[([^\]]+)\]\(\1\.md\) \| (.*?) \| \d")


def _earlier_report(out_dir: Path, rebuilt: set[str]) -> tuple[list[_Heading], list[_KeptCell]]:
    """The suites and cells of the report already in ``out_dir`` that this run does not rebuild."""
    titles: dict[str, str] = {}
    index = out_dir / "README.md"
    if index.is_file():
        for line in index.read_text().splitlines():
            if m := _INDEX_LINE.match(line):
                titles[m.group(1)] = m.group(2)
    kept: list[_KeptCell] = []
    order: list[str] = []
    csv_path = out_dir / "results.csv"
    if csv_path.is_file():
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        for line in frame.to_dict("records"):
            sid = line.get("suite", "")
            if sid in rebuilt or line.get("column") not in COLUMNS:
                continue
            kept.append(_KeptCell(sid, line["column"], line.get("status", "pending"), line.get("run_id", ""), line))
            if sid not in order:
                order.append(sid)
    for sid in titles:
        if sid not in order and sid not in rebuilt:
            order.append(sid)
    return [_Heading(sid, titles.get(sid, sid)) for sid in order], kept


def _merged_order(earlier: Sequence[_Heading], suites: Sequence[Suite]) -> list[_Heading | Suite]:
    """Earlier suites in their order, each rebuilt one in its old place, new ones appended."""
    new = {s.id: s for s in suites}
    old_ids = [h.id for h in earlier]
    merged: list[_Heading | Suite] = []
    for h in earlier:
        merged.append(new.get(h.id, h))
    merged += [s for s in suites if s.id not in old_ids]
    return merged


def _draw_figures(
    suites: Sequence[Suite], cells: Sequence[Cell], out_dir: Path, verdicts: Sequence[Verdict] = ()
) -> list[Path]:
    from cabench import plots

    frame = cells_frame(cells)
    fig_dir = out_dir / "figures"
    written = []
    for suite in suites:
        p = plots.draw_suite_figure(suite.id, suite.title, frame[frame["suite"] == suite.id], fig_dir)
        _keep_or_remove(p, fig_dir / f"{suite.id}.png", written)
    # Figure 1 spans three tables: redraw it only when all of them are rebuilt, else keep the earlier one.
    if {panel.suite for panel in plots.FIGURE1_PANELS} <= {s.id for s in suites}:
        _keep_or_remove(plots.draw_figure1(frame, fig_dir), fig_dir / "figure1.png", written)
    if {panel.suite for panel in plots.PROBE_FIGURE1_PANELS} <= {s.id for s in suites}:  # as Figure 1
        _keep_or_remove(plots.draw_probe_figure1(frame, fig_dir), fig_dir / "figure1-probe.png", written)
    p = plots.draw_claims_figure(claims_frame(verdicts), fig_dir)
    if p is not None:
        written.append(p)
    return written


def _keep_or_remove(drawn: Path | None, path: Path, written: list[Path]) -> None:
    """A figure redrawn is listed as written; one with nothing left to draw is removed with its table's data, so a
    page never embeds a picture of runs it no longer shows."""
    if drawn is not None:
        written.append(drawn)
    elif path.is_file() and not path.is_symlink():
        path.unlink()


def _figure_links(out_dir: Path, ids: Sequence[str]) -> dict[str, str]:
    """Figures present in ``out_dir/figures`` (just drawn or kept from an earlier report)."""
    links = {sid: f"figures/{sid}.png" for sid in ids if (out_dir / "figures" / f"{sid}.png").is_file()}
    for name in ("figure1", "figure1-probe", "claims"):
        if (out_dir / "figures" / f"{name}.png").is_file():
            links[name] = f"figures/{name}.png"
    return links


def reading_store(store: Store, out_dir: Path) -> Store:
    """What a report into ``out_dir`` reads: ``store`` and, beneath it, the records committed under
    ``out_dir/records/`` (read-only; a run id in both is read from ``store``)."""
    root = out_dir / RECORDS_DIR
    if isinstance(store, LayeredStore) and any(layer.root.resolve() == root.resolve() for layer in store.layers):
        return store
    return LayeredStore(store, Store(root))


def _recorded(run: RunRecord) -> bool:
    """Whether the report commits a run's record: a trained or evaluated run (``paper``, ``eval``, a floor).
    Counts and latencies are measured again by ``cabench run``; a smoke run shows no number."""
    return run.profile in counting_profiles()


def _replaces(run: RunRecord) -> object:
    """What a newer run of the same suite, row and profile replaces: the same seed (checkpoint for ``eval``);
    for a floor, which has no seed, the same floor."""
    floor = run.config.get("floor")
    return ("floor", str(floor)) if floor else replicate_key(run)


def _no_links(base: Path, path: Path) -> Path:
    """``path`` when no part of it below ``base`` is a symlink; ValueError (one line) otherwise."""
    here = base
    for part in path.relative_to(base).parts:
        here = here / part
        if here.is_symlink():
            raise ValueError(f"{here}: a symlink; records are never written or removed through one")
    return path


def _write_records(store: Store, out_dir: Path, runs: Sequence[RunRecord], log: Callable[[str], None]) -> list[Path]:
    """Copy config.json, env.json and metrics.json of every recorded run in ``runs`` to
    ``out_dir/records/<suite>/<row>/<profile>/<run-id>/``; return the files written.

    A record that is already there with the same bytes is left alone. A record no run of this report uses stays
    (evidence is never dropped silently), unless a newer run used now replaces it (:func:`_replaces`): that one
    is removed, with a line to ``log``.
    """
    root = out_dir / RECORDS_DIR
    records = Store(root)
    records.problems = store.problems
    chosen = {(r.suite, r.row, r.profile, r.run_id): r for r in runs if _recorded(r)}
    written: list[Path] = []
    for (suite, row, profile, run_id), run in sorted(chosen.items()):
        target = _no_links(out_dir, records.cell_dir(suite, row, profile) / run_id)
        if run.path.resolve() == target.resolve():
            continue  # read from its record: nothing to copy
        payload: dict[str, bytes] = {}
        for name in RECORD_FILES:
            src = run.path / name
            if src.is_symlink() or (name != "env.json" and not src.is_file()):
                store.note_problem(f"{src}: not a regular file; run {run_id} is not recorded")
                payload = {}
                break
            if src.is_file():
                payload[name] = src.read_bytes()
        for name, data in payload.items():  # metrics.json last: until it is there the record reads as unfinished
            dst = _no_links(out_dir, target / name)
            if dst.is_file() and dst.read_bytes() == data:
                continue
            atomic_write_bytes(dst, data)
            written.append(dst)
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for (suite, row, profile, _), run in chosen.items():
        groups.setdefault((suite, row, profile), []).append(run)
    for (suite, row, profile), used in sorted(groups.items()):
        for old in records.runs(suite, row, profile):
            if (suite, row, profile, old.run_id) in chosen:
                continue
            newer = [r for r in used if r.run_id > old.run_id and _replaces(r) == _replaces(old)]
            if not newer:
                continue
            _no_links(out_dir, old.path)
            extra = sorted(p.name for p in old.path.iterdir() if p.name not in RECORD_FILES)
            if extra:
                store.note_problem(f"{old.path}: holds {', '.join(extra)} beside a record's files; left in place")
                continue
            for name in RECORD_FILES:
                (old.path / name).unlink(missing_ok=True)
            old.path.rmdir()
            new = max(newer, key=lambda r: r.run_id)
            log(f"record {old.path} removed: replaced by run {new.run_id} ({_replaces(old)})")
    return written


def write_reports(
    suites: Sequence[Suite],
    store: Store,
    out_dir: Path,
    figures: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the pages of ``suites`` and merge their lines into ``README.md`` and ``results.csv``; return the paths.

    Runs are read from ``store`` and from the records committed under ``out_dir/records/``
    (:func:`reading_store`), and the records of the trained and evaluated runs shown are written there
    (:func:`_write_records`; ``log`` gets a line per record a newer run replaced). Suites reported earlier into
    ``out_dir`` and not rebuilt now keep their pages, their lines in ``results.csv`` and their line in the index.
    Raises ``ValueError`` when neither holds a run for ``suites`` (nothing to report: the message says where it
    looked).
    """
    store = reading_store(store, out_dir)
    cells = build_cells(suites, store)
    if not any(c.run_id or c.other_data for c in cells):
        ids = ", ".join(s.id for s in suites)
        raise ValueError(
            f"no runs of {ids} under {store.root}/ (set by --runs-dir or CABENCH_RUNS) nor under "
            f"{out_dir / RECORDS_DIR}/: nothing to report; run `cabench run SUITE` first"
        )
    claim_files = [load_claim_file(p) for p in known_claim_files().values()]
    judged: list[RunRecord] = []
    verdicts = judge_claims(suites, store, claim_files, used=judged)
    earlier, kept = _earlier_report(out_dir, {s.id for s in suites})
    out_dir.mkdir(parents=True, exist_ok=True)
    evidence = [r for c in cells for r in c.runs] + judged
    written: list[Path] = _write_records(store, out_dir, evidence, log or (lambda _: None))
    if figures:
        written += _draw_figures(suites, cells, out_dir, verdicts)
    merged = _merged_order(earlier, suites)
    fig_paths = _figure_links(out_dir, [s.id for s in merged])
    newest = max((c for c in cells if c.run_id), key=lambda c: c.run_id, default=None)
    env = store.environment_of(newest.suite, newest.row, newest.profile, newest.run_id) if newest else {}
    for suite in suites:
        path = _inside(out_dir, out_dir / f"{suite.id}.md")
        own = [c for c in cells if c.suite == suite.id]
        mine = [v for v in verdicts if v.scope == suite.id]
        text = render_suite(suite, own, fig_paths.get(suite.id), runs_dir=str(store.root), verdicts=mine)
        atomic_write_text(path, text)
        written.append(path)
    position = {h.id: i for i, h in enumerate(merged)}
    index_cells = sorted([*cells, *kept], key=lambda c: position[c.suite])  # type: ignore[list-item]
    scopes = [(s.id, f"[{s.id}]({s.id}.md)") for s in merged] + [(f.id, f"{f.id} ({f.title})") for f in claim_files]
    index = out_dir / "README.md"
    text = render_index(merged, index_cells, fig_paths, env, verdicts, scopes)  # type: ignore[arg-type]
    atomic_write_text(index, text)
    csv = out_dir / "results.csv"
    atomic_write_text(csv, _merged_csv(results_csv(cells), kept, position))
    claims = out_dir / "claims.csv"
    atomic_write_text(claims, claims_csv(verdicts))
    return [*written, index, csv, claims]


def _merged_csv(fresh: str, kept: Sequence[_KeptCell], position: dict[str, int]) -> str:
    """``fresh`` (this run's lines) with the kept lines of other suites, in index order, one header."""
    if not kept:
        return fresh
    frame = pd.read_csv(io.StringIO(fresh), dtype=str, keep_default_na=False)
    old = pd.DataFrame([k.line for k in kept]).reindex(columns=frame.columns, fill_value="")
    both = pd.concat([old, frame], ignore_index=True)
    both = both.iloc[sorted(range(len(both)), key=lambda i: position.get(both["suite"].iat[i], len(position)))]
    buf = io.StringIO()
    both.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()
