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

from cabench.suite import Suite, SuiteError, find_suite, known_suites, load_suite

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


DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="Dataset roots as NAME=PATH, repeatable (imagenet=/datasets/imagenet). Also read from "
        "CABENCH_DATA_<NAME> or a [data] table in ~/.config/cabench/config.toml (or $CABENCH_CONFIG).",
    ),
]


@app.command()
def run(
    suites: Annotated[list[str], typer.Argument(help="Suite ids, suite file paths, or `all`.")],
    profile: Annotated[
        str, typer.Option(help="count (Param./M-Adds), latency, smoke (pipeline check), paper (full recipe).")
    ] = "count",
    rows: Annotated[
        list[str] | None, typer.Option("--rows", help="Only these rows (row id or printed name); repeatable.")
    ] = None,
    data: DataOpt = None,
    epochs: Annotated[
        int | None, typer.Option(help="Override the recipe's epochs (recorded; marked in reports).")
    ] = None,
    iterations: Annotated[
        int | None,
        typer.Option(help="Override the recipe's iterations (detection/segmentation recipes; marked in reports)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the recipe's GLOBAL batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override the recipe's initial learning rate.")] = None,
    workers: Annotated[int, typer.Option(help="DataLoader workers per process.")] = 4,
    amp: Annotated[str, typer.Option(help="off, bf16 or fp16 (fp16 on CUDA only).")] = "off",
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format (GPU).")] = False,
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    sync_bn: Annotated[bool, typer.Option(help="SyncBatchNorm across processes (CUDA).")] = False,
    ckpt_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: at epoch ends only).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    backbone_checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--backbone-checkpoint",
            help="Detection/segmentation: initialise the backbone from an ImageNet checkpoint (cabench or the "
            "authors' MobileNetV2+CA state dict). PATH for every selected row, or ROW=PATH per row; repeatable. "
            "Recorded with its sha256; cells trained without one are marked 'from scratch'.",
        ),
    ] = None,
    tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard logs (needs tensorboard).")] = False,
    nproc: Annotated[int, typer.Option(help="Launch this many processes with torchrun (DDP).")] = 1,
    threads: Annotated[int, typer.Option(help="latency: CPU threads (pinned and recorded).")] = 1,
    rounds: Annotated[int, typer.Option(help="latency: timed rounds, rows interleaved (median taken).")] = 40,
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories go.")] = Path("runs"),
) -> None:
    """Run a profile for every row of the given suites and record each result under `runs/`.

    `cabench run all` counts every model of Tables 1-9 (each distinct model once) in seconds on a CPU.
    `cabench run table2 --profile paper --data imagenet=PATH` trains the rows that lack a result, resuming
    an interrupted run; `--profile smoke` does the same for a few steps on generated data and fills no cell.
    `--nproc 4` runs under torchrun (global batch and lr kept); for several machines, see the README's
    multi-node torchrun line.
    """
    from cabench.store import Store

    if nproc > 1:
        from cabench.tasks.distributed import launch_torchrun, under_torchrun

        if not under_torchrun():
            raise typer.Exit(launch_torchrun(nproc, sys.argv[1:]))
    start = time.perf_counter()
    store = Store(runs_dir)
    with user_errors():
        loaded = _load_suites(suites)
        if profile == "count":
            from cabench.runner import run_suites

            progress, update = _progress(f"{profile}")
            with progress:
                records = run_suites(loaded, store, profile, set(rows) if rows else None, update)
        elif profile == "latency":
            from cabench.jobs import run_latency

            loaded = [s for s in loaded if "latency" in s.columns] if suites == ["all"] else loaded
            with err.status("timing rows, interleaved ..."):
                records = run_latency(loaded, store, set(rows) if rows else None, threads=threads, rounds=rounds)
        elif profile in ("smoke", "paper"):
            records = _train(loaded, store, profile, rows, data, locals())
        else:
            fail(f"unknown profile {profile!r}; expected count, latency, smoke or paper")
    if rows and not records:
        fail(f"no row matches --rows {', '.join(rows)} in {', '.join(s.id for s in loaded)}")
    elapsed = time.perf_counter() - start
    _summary(profile, records, elapsed, runs_dir, len(loaded))


def _backbones(entries: list[str]) -> dict[str, Path]:
    """``PATH`` (every row, key ``*``) or ``ROW=PATH`` entries of --backbone-checkpoint."""
    out: dict[str, Path] = {}
    for entry in entries:
        row, sep, path = entry.partition("=")
        key, value = (row.strip(), path.strip()) if sep and row.strip() else ("*", entry.strip())
        if not value:
            raise ValueError(f"--backbone-checkpoint {entry!r}: expected PATH or ROW=PATH")
        if key in out:
            raise ValueError(f"--backbone-checkpoint: {key if key != '*' else 'a plain PATH'} given twice")
        out[key] = Path(value).expanduser()
    return out


def _train(loaded, store, profile, rows, data, opts) -> list:  # type: ignore[no-untyped-def]
    from cabench.data.errors import DatasetError
    from cabench.data.imagenet import parse_data_option
    from cabench.jobs import TrainOptions, run_training
    from cabench.tasks.classification import TrainingInterrupted

    options = TrainOptions(
        data=parse_data_option(data or []),
        overrides={k: opts[k] for k in ("epochs", "iterations", "batch_size", "lr") if opts[k] is not None},
        knobs={
            "workers": opts["workers"],
            "amp": opts["amp"],
            "channels_last": opts["channels_last"],
            "compile": opts["compile"],
            "sync_bn": opts["sync_bn"] or None,  # off: keep the recipe's
            "ckpt_every_steps": opts["ckpt_every"],
            "seed": opts["seed"],
            "tensorboard": opts["tensorboard"],
        },
        fixtures_dir=store.root / "_fixtures",
        backbones=_backbones(opts["backbone_checkpoint"] or []),
    )
    progress = Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[ips]} img/s"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task(profile, total=None, loss="-", lr="-", ips="-", eta="-")

    def on_row(suite: Suite, row, what: str) -> None:  # type: ignore[no-untyped-def]
        progress.update(task, description=f"{suite.id}/{row.key}", completed=0)
        err.print(f"{suite.id}/{row.key}: {what}", markup=False, highlight=False)

    def on_step(event: dict) -> None:
        progress.update(
            task,
            completed=event.get("step", 0),
            total=event.get("total_steps"),
            loss=f"{event.get('loss', float('nan')):.3f}",
            lr=f"{event.get('lr', float('nan')):.4g}",
            ips=f"{event.get('img_per_s', 0):.0f}",
            eta=_duration(event["eta_s"]) if "eta_s" in event else "-",
        )

    try:
        with progress:
            return run_training(loaded, store, profile, options, set(rows) if rows else None, on_row, on_step)
    except DatasetError as e:
        fail(str(e))
    except TrainingInterrupted as e:
        err.print(f"cabench: interrupted; checkpoint saved ({e}). Run the same command again to resume.")
        raise typer.Exit(130) from None


def _duration(seconds: float) -> str:
    """``1d 02:03:04`` / ``02:03:04`` / ``03:04``."""
    s = max(0, round(seconds))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    clock = f"{h:02d}:{m:02d}:{s:02d}" if h or days else f"{m:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def _summary(profile: str, records: list, elapsed: float, runs_dir: Path, n_suites: int) -> None:  # type: ignore[type-arg]
    if profile == "count":
        models = len({r.config["model_key"] for r in records})
        out.print(
            f"{profile}: {len(records)} rows of {n_suites} suite(s), {models} distinct models, "
            f"{elapsed:.1f} s -> {runs_dir}/. Next: cabench report"
        )
        return
    table = Table(title=f"{profile}: {len(records)} rows, {elapsed:.1f} s -> {runs_dir}/", title_justify="left")
    headline = [k for k in ("top1", "top5", "ap", "ap50", "map", "miou") if any(k in r.metrics for r in records)]
    keys = {"latency": ("latency", "latency_ratio"), "smoke": ("train_loss", "steps", "img_per_s")}.get(
        profile, (*headline, "steps", "img_per_s")
    )
    for col in ("suite", "row", *keys, "run"):
        table.add_column(col)
    for r in records:
        vals = [r.metrics.get(k) for k in keys]
        table.add_row(r.suite, r.row, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals), r.run_id)
    out.print(table)
    if profile == "smoke":
        out.print("smoke proves the pipeline only: reports show 'pipeline ok (smoke)', never these numbers.")


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


@app.command("eval")
def eval_(
    target: Annotated[str, typer.Argument(help="An architecture (mobilenetv2, ...) or a suite (table2).")],
    checkpoint: Annotated[Path, typer.Option(help="cabench checkpoint, or a state dict (the authors' layout too).")],
    row: Annotated[str | None, typer.Option(help="With a suite: the row whose cell this fills.")] = None,
    data: DataOpt = None,
    width: Annotated[float, typer.Option(help="Width multiplier (with an architecture).")] = 1.0,
    attention: Annotated[str | None, typer.Option(help="none, se, cbam, ca, x, y.")] = None,
    reduction: Annotated[int | None, typer.Option(help="Reduction ratio r.")] = None,
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 4,
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories go.")] = Path("runs"),
) -> None:
    """A checkpoint's accuracy; with a suite and --row, fills that cell ("eval" profile, footnoted with its sha256).

    An architecture is evaluated on ImageNet val (top-1/top-5). A suite row is evaluated on its table's dataset
    with its metrics: COCO val AP (table6), VOC07 test mAP (table7), VOC12 val or Cityscapes val mIoU (table8-9).
    """
    from cabench.data.errors import DatasetError
    from cabench.data.imagenet import parse_data_option
    from cabench.jobs import TrainOptions, evaluate_checkpoint
    from cabench.models.registry import ModelSpec, architectures
    from cabench.store import Store

    with user_errors():
        suite = row_obj = None
        if target in architectures():
            spec = ModelSpec(target, width, attention, reduction)
        else:
            suite = load_suite(find_suite(target))
            if row is None:
                fail(f"{target} is a suite: name the row with --row (one of {', '.join(r.key for r in suite.rows)})")
            try:
                row_obj = suite.row(row)
            except KeyError:
                fail(f"{suite.path}: no row {row!r}; rows: {', '.join(r.key for r in suite.rows)}")
            if row_obj.model is None:
                fail(f"{suite.path}: row {row!r} is cited; there is no model to evaluate")
            spec = row_obj.model.spec()
        options = TrainOptions(data=parse_data_option(data or []), overrides={}, knobs={"workers": workers})
        try:
            with err.status(f"evaluating {checkpoint} ..."):
                metrics, record = evaluate_checkpoint(spec, checkpoint, options, Store(runs_dir), suite, row_obj)
        except DatasetError as e:
            fail(str(e))
    names = {"top1": "top-1", "top5": "top-5", "ap": "AP", "ap50": "AP50", "map": "mAP", "miou": "mIoU"}
    shown = "  ".join(f"{label} {metrics[k]:.2f}%" for k, label in names.items() if k in metrics)
    n = metrics.get("val_n", metrics.get("n"))
    out.print(f"{spec.key()}: {shown}  on {n} images" + (f" -> {record.path}" if record else ""), markup=False)


@app.command()
def fixtures(
    kind: Annotated[str, typer.Argument(help="Which dataset format: imagenet, coco, voc or cityscapes.")],
    directory: Annotated[Path, typer.Argument(help="Where to write it (must not exist or be empty).")],
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same bytes.")] = 0,
) -> None:
    """Write a tiny dataset in a real on-disk format (real JPEG/PNG files, real annotation files).

    The smoke profile and the tests train and evaluate on these through the real loaders and evaluators.
    """
    from cabench.data.errors import DatasetError
    from cabench.data.sources import FIXTURES, write_fixture

    if kind not in FIXTURES:
        fail(f"unknown fixture {kind!r}; available: {', '.join(FIXTURES)}")
    try:
        root = write_fixture(kind, directory, seed=seed)
    except DatasetError as e:
        fail(str(e))
    files = sum(1 for p in root.rglob("*") if p.is_file())
    _, layout, command = FIXTURES[kind]
    out.print(f"{kind} fixture: {files} files in {root} ({layout}). Try: {command.format(root=root)}", markup=False)


@app.command()
def bench(
    threads: Annotated[int, typer.Option(help="CPU threads for the latency runs.")] = 1,
    rounds: Annotated[int, typer.Option(help="Timed rounds, models interleaved.")] = 40,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    compiled_ca: Annotated[
        bool,
        typer.Option(
            "--compiled-ca/--no-compiled-ca",
            help="Also time cabench CA with its CA blocks compiled by TorchInductor (rest eager; needs a C++ "
            "compiler; minutes to compile with a cold inductor cache, not timed).",
        ),
    ] = False,
) -> None:
    """CA block benchmark: MobileNetV2 vs authors'-style CA vs cabench CA latency (ratios), and training img/s."""
    from cabench.measure.ca_benchmark import format_ca_benchmark, run_ca_benchmark

    result = run_ca_benchmark(threads=threads, rounds=rounds, compiled_ca=compiled_ca)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        out.print(format_ca_benchmark(result))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("cabench: interrupted")
        sys.exit(130)


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
