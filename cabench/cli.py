"""The ``cabench`` command: a thin layer over the library (parse, call, render).

Errors a user can cause (a bad suite, an unknown architecture, ...) end in one
line on stderr and exit code 2, with nothing written. ``cabench check`` exits 1
when a count drifts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cabench.suite import COLUMNS, Suite, SuiteError, find_suite, known_suites, load_suite

app = typer.Typer(
    name="cabench",
    help="Rebuild the tables of 'Coordinate Attention for Efficient Mobile Network Design' (CVPR 2021).\n\n"
    "Start with `cabench run all && cabench report`: it counts the parameters and multiply-adds of every "
    "model in Tables 1-9 and writes reports/README.md with each cell beside its published value.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_DRIFT = 1
EXIT_USAGE = 2


def fail(message: str) -> NoReturn:
    """One line on stderr, exit 2, no traceback."""
    err.print(f"cabench: error: {message}", markup=False)
    raise typer.Exit(EXIT_USAGE)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except (SuiteError, ValueError, FileNotFoundError) as e:
        fail(str(e))


def _load_suites(names: list[str]) -> list[Suite]:
    if not names or names == ["all"]:
        return [load_suite(p) for p in known_suites().values()]
    return [load_suite(find_suite(n)) for n in names]


def _progress(label: str) -> tuple[Progress, Callable[[int, int, str], None]]:
    progress = Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[model]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task(label, total=None, model="")

    def update(done: int, total: int, model: str) -> None:
        progress.update(task, completed=done, total=total, model=model)

    return progress, update


@app.command("list")
def list_suites() -> None:
    """List the suites (one per paper table), their rows, and what each profile fills."""
    from cabench.runner import PROFILES

    with user_errors():
        suites = _load_suites([])
    table = Table(title="Suites", title_justify="left")
    for col in ("suite", "rows", "run", "cited", "columns", "title"):
        table.add_column(col)
    for s in suites:
        cited = sum(r.cited for r in s.rows)
        table.add_row(s.id, str(len(s.rows)), str(len(s.rows) - cited), str(cited), ", ".join(s.columns), s.title)
    out.print(table)
    profiles = Table(title="Profiles", title_justify="left")
    for col in ("profile", "fills", "what it does"):
        profiles.add_column(col)
    for p in PROFILES.values():
        profiles.add_row(p.name, ", ".join(p.fills) or "no cell", p.description)
    out.print(profiles)


@app.command()
def show(suite: Annotated[str, typer.Argument(help="Suite id (table1 ... table9) or path to a suite YAML.")]) -> None:
    """Show a suite's rows, models and published values."""
    with user_errors():
        s = load_suite(find_suite(suite))
    table = Table(title=f"{s.id}: {s.title}", title_justify="left")
    table.add_column("#")
    table.add_column("row")
    table.add_column("model")
    for key in s.columns:
        table.add_column(s.column_label(key), justify="right")
    for i, row in enumerate(s.rows, 1):
        model = (
            "cited"
            if row.cited and row.model is None
            else " ".join(f"{k}={v}" for k, v in row.model.spec().as_dict().items())
        )
        values = []
        for key in s.columns:
            v = row.published.get(key)
            text = "–" if v is None else (f"{v[0]}-{v[1]}" if isinstance(v, tuple) else str(v))
            values.append(text + (" *" if key in row.notes else ""))
        table.add_row(str(i), row.name, model, *values)
    out.print(table)
    out.print(f"Source: {s.source}. * = the cell carries a note. File: {s.path}")


@app.command()
def run(
    suites: Annotated[list[str], typer.Argument(help="Suite ids, suite file paths, or `all`.")],
    profile: Annotated[str, typer.Option(help="What to run: `count` fills Param./M-Adds.")] = "count",
    rows: Annotated[
        list[str] | None, typer.Option("--rows", help="Only these rows (row id or printed name); repeatable.")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories go.")] = Path("runs"),
) -> None:
    """Run a profile for every row of the given suites and record each result under `runs/`.

    `cabench run all` counts every model of Tables 1-9 (each distinct model once) in seconds on a CPU.
    """
    from cabench.runner import run_suites
    from cabench.store import Store

    start = time.perf_counter()
    with user_errors():
        loaded = _load_suites(suites)
        progress, update = _progress(f"{profile}")
        with progress:
            records = run_suites(loaded, Store(runs_dir), profile, set(rows) if rows else None, update)
    if rows and not records:
        fail(f"no row matches --rows {', '.join(rows)} in {', '.join(s.id for s in loaded)}")
    elapsed = time.perf_counter() - start
    models = len({r.config["model_key"] for r in records})
    out.print(
        f"{profile}: {len(records)} rows of {len(loaded)} suite(s), {models} distinct models, "
        f"{elapsed:.1f} s -> {runs_dir}/. Next: cabench report"
    )


@app.command()
def report(
    suites: Annotated[list[str] | None, typer.Argument(help="Suites to report (default: all).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Report directory.")] = Path("reports"),
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories are.")] = Path("runs"),
    figures: Annotated[bool, typer.Option(help="Draw PNG figures under reports/figures/.")] = True,
) -> None:
    """Write `reports/SUITE.md`, `reports/README.md`, `reports/results.csv` and figures from the latest runs."""
    from cabench.report import build_cells, suite_summary, write_reports
    from cabench.store import Store

    with user_errors():
        loaded = _load_suites(suites or [])
        store = Store(runs_dir)
        paths = write_reports(loaded, store, out_dir, figures=figures)
    table = Table(title=f"Report -> {out_dir}/README.md", title_justify="left")
    for col in ("suite", "match", "noted", "drift", "pending", "cited"):
        table.add_column(col)
    cells = build_cells(loaded, store)
    for s in loaded:
        summary = suite_summary([c for c in cells if c.suite == s.id])
        table.add_row(s.id, *(str(summary[k]) for k in ("match", "noted", "drift", "pending", "cited")))
    out.print(table)
    out.print(f"{len(paths)} files written.")


@app.command()
def check(
    suites: Annotated[list[str] | None, typer.Argument(help="Suite ids or paths (default: all).")] = None,
    lock: Annotated[Path | None, typer.Option(help="Exact-counts lock file.")] = None,
    update_lock: Annotated[bool, typer.Option("--update-lock", help="Rewrite the lock from this count.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """CI gate: recount, then exit 1 if a count cell drifts without a note or differs from the lock.

    Exit codes: 0 all counts hold; 1 drift; 2 bad input.
    """
    from cabench.check import DEFAULT_LOCK, check_suites

    with user_errors():
        loaded = _load_suites(suites or [])
        progress, update = _progress("check")
        with progress:
            result = check_suites(loaded, lock or DEFAULT_LOCK, update_lock, update)
    if as_json:
        payload = {
            "ok": result.ok,
            "cells": result.cells,
            "matched": result.matched,
            "noted": result.noted,
            "failures": result.failures,
            "lock_checked": result.lock_checked,
            "unlocked": result.unlocked,
        }
        print(json.dumps(payload, indent=2))
    else:
        for line in result.failures:
            err.print(f"DRIFT {line}", markup=False)
        for key in result.unlocked:
            err.print(f"note: {key} is not in the lock (run with --update-lock to add it)", markup=False)
        verdict = "ok" if result.ok else f"{len(result.failures)} failure(s)"
        out.print(
            f"check: {verdict}; {result.cells} count cells: {result.matched} match, {result.noted} drift with a "
            f"note; {result.lock_checked} models match the lock exactly" + (" (lock updated)" if update_lock else "")
        )
    if not result.ok:
        raise typer.Exit(EXIT_DRIFT)


@app.command()
def count(
    arch: Annotated[str, typer.Argument(help="mobilenetv2, mobilenext, efficientnet_b0, ssdlite320_..., ...")],
    width: Annotated[float, typer.Option(help="Width multiplier.")] = 1.0,
    attention: Annotated[str | None, typer.Option(help="none, se, cbam, ca, x, y (default: the arch's own).")] = None,
    reduction: Annotated[int | None, typer.Option(help="Reduction ratio r (default: per attention).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes (default: per arch).")] = None,
    output_stride: Annotated[int | None, typer.Option(help="8 or 16 (segmentation).")] = None,
    input_size: Annotated[
        int | None, typer.Option(help="Square input side for M-Adds (default: the paper's for this arch).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: params, madds, fvcore_total, ...")] = False,
) -> None:
    """Count one model's parameters and multiply-adds (paper convention: conv + linear, via fvcore)."""
    from cabench.measure.complexity import count_model
    from cabench.models.registry import ModelSpec, arch_info

    with user_errors():
        spec = ModelSpec(arch, width, attention, reduction, num_classes, output_stride)
        info = arch_info(arch)
        size = (input_size, input_size) if input_size else info.input_size
        c = count_model(spec, madds=True, input_size=size)
    payload = {"arch": arch, "model": spec.as_dict(), "key": spec.key(), **c.as_dict()}
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    table = Table(title=spec.key(), title_justify="left", show_header=False)
    table.add_row("parameters", f"{c.params:,}  ({c.params / 1e6:.3f} M)")
    table.add_row(f"multiply-adds @ {size[0]}x{size[1]}", f"{c.madds:,}  ({c.madds / 1e6:.1f} M)")
    table.add_row("fvcore total (adds BN, pooling, ...)", f"{c.fvcore_total:,}")
    table.add_row("ops fvcore skipped", ", ".join(f"{k.split('::')[-1]}×{v}" for k, v in c.skipped_ops.items()) or "–")
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("cabench: interrupted")
        sys.exit(130)


__all__ = ["COLUMNS", "app", "main"]
