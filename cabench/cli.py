"""The ``cabench`` command: a thin layer over the library (parse, call, render).

Errors a user can cause (a bad suite, an unknown architecture, ...) end in one
line on stderr and exit code 2, with nothing written. ``cabench check`` exits 1
when a count drifts, and only then. An unexpected error exits 3 with one line
naming the log file that holds its traceback (:mod:`cabench.crash`).
"""

from __future__ import annotations

import errno
import inspect
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from cabench.check import check_suites
from cabench.columns import COLUMNS
from cabench.crash import crash_line, user_code_line
from cabench.data.base import FIXTURES
from cabench.data.errors import DatasetError
from cabench.data.roots import parse_data_option
from cabench.launch import INLINE, LAUNCHERS, launch, launch_settings
from cabench.launch.records import read_records
from cabench.launch.settings import LAUNCH_OPTIONS
from cabench.launch.status import STATES, statuses
from cabench.locate import set_suites_dir
from cabench.measure import DEFAULT_BENCH_ROWS
from cabench.models.registry import ModelSpec, architectures, validate_spec
from cabench.profiles.base import PROFILES, Hooks, Request, profile_options
from cabench.profiles.evaluate import evaluate_checkpoint
from cabench.profiles.workers import default_workers
from cabench.registry import RegistryError, load_plugins
from cabench.store import Store
from cabench.suite import Suite, all_suite_files, check_row_selection, find_suite, load_suite, suite_group


class _PluginGroup(TyperGroup):
    """Loads every ``--plugin MODULE`` (repeatable, anywhere before ``--``) before the command line is parsed,
    so a plugin's attention blocks, architectures, datasets, tasks and profiles (with their options) exist
    for every command."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        argv, modules = _take_plugins(list(sys.argv[1:] if args is None else args))
        try:
            if _startup_error:
                raise RegistryError(_startup_error[0])
            if modules:
                load_plugins(modules)
                self.commands["run"] = _run_command()
        except RegistryError as e:
            err.print(f"cabench: error: {e}", markup=False)
            sys.exit(EXIT_USAGE)
        try:
            return super().main(argv, *rest, **kwargs)
        except Exception as e:  # a bug or the environment (disk full, ...): one line, the traceback to a log
            if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:  # bad input, wherever the path was given
                name = str(e.filename or "")
                err.print(f"cabench: error: a path is too long for this system: {name[:80]}…", markup=False)
                sys.exit(EXIT_USAGE)
            if (line := user_code_line(e)) is not None:  # a plugin's or a block's own error: bad input, not a bug
                err.print(f"cabench: error: {line}", markup=False)
                sys.exit(EXIT_USAGE)
            err.print(f"cabench: error: {crash_line(e)}", markup=False)
            sys.exit(EXIT_CRASH)


def _take_plugins(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its ``--plugin MODULE`` / ``--plugin=MODULE`` options, and those modules."""
    rest: list[str] = []
    modules: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == "--plugin" and i + 1 < len(argv):
            modules.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--plugin="):
            modules.append(arg.partition("=")[2])
        else:
            rest.append(arg)
        i += 1
    return rest, modules


_startup_error: list[str] = []

app = typer.Typer(
    name="cabench",
    cls=_PluginGroup,
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

EXIT_DRIFT = 1  # count drift from `cabench check`, and nothing else
EXIT_USAGE = 2  # bad input: one line naming it
EXIT_CRASH = 3  # unexpected error: one line naming the log with the traceback (cabench.crash)
EXIT_JOBS_FAILED = 4  # --launcher local: a job failed (each named above with its log's last line and path)
EXIT_BUSY = 75  # every selected row is being trained by another process now (EX_TEMPFAIL: run again later)


def _print_version(value: bool) -> None:
    if value:
        import cabench

        out.print(f"cabench {cabench.__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _plugins(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Import MODULE first, so the attention blocks, architectures, datasets, tasks or profiles it "
            "registers exist (repeatable; also after the command, and from CABENCH_PLUGINS and the "
            "`cabench.plugins` entry points). Workers started by --nproc get them too.",
        ),
    ] = None,
    suites_dir: Annotated[
        Path | None,
        typer.Option(
            "--suites",
            help="Look for suites, recipes and the counts lock in DIR first, then $CABENCH_SUITES, ./suites and "
            "the packaged ones.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print cabench's version and exit."),
    ] = False,
) -> None:
    """Rebuild the tables of the paper (see `cabench run --help`)."""
    with user_errors():
        set_suites_dir(suites_dir)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit 2, no traceback."""
    err.print(f"cabench: error: {message}", markup=False)
    raise typer.Exit(EXIT_USAGE)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except (ValueError, FileNotFoundError) as e:  # SuiteError is a ValueError
        fail(str(e))


def _load_suites(names: list[str], probe: bool = True) -> list[Suite]:
    """The suites named (ids, groups, paths; none or ``all``: every suite); ``probe=False`` for listing."""
    if not names or names == ["all"]:
        return [load_suite(p, probe=probe) for p in all_suite_files().values()]
    expanded = [m for n in names for m in (suite_group(n) or [n])]
    return [load_suite(find_suite(n), probe=probe) for n in expanded]


def _progress(label: str) -> tuple[Progress, Callable[..., None]]:
    """A transient progress display on stderr (off when stderr is not a terminal) and its ``update(done, total,
    info, **fields)``; the task's description starts as ``label``."""
    progress = Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task(label, total=None, info="")

    def update(done: int, total: int | None, info: str, **fields: Any) -> None:
        progress.update(task, completed=done, total=total, info=info, **fields)

    return progress, update


@app.command("list")
def list_suites(
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print suites and profiles as JSON (for scripts).")
    ] = False,
) -> None:
    """List the suites (one per paper table), their rows, and what each profile fills."""
    with user_errors():
        suites = _load_suites([], probe=False)  # listing builds no model: no torch import
    if as_json:
        payload = {
            "suites": [{"id": s.id, "title": s.title, "file": str(s.path), "rows": len(s.rows)} for s in suites],
            "profiles": [
                {"name": n, "description": p.description, "fills": sorted(p.fills)} for n, p in PROFILES.items()
            ],
        }
        print(json.dumps(payload, indent=2))
        return
    table = Table(title="Suites", title_justify="left")
    for col in ("suite", "rows", "run", "cited", "columns", "title"):
        table.add_column(col, overflow="fold")
    for s in suites:
        cited = sum(r.cited for r in s.rows)
        table.add_row(s.id, str(len(s.rows)), str(len(s.rows) - cited), str(cited), ", ".join(s.columns), Text(s.title))
    out.print(table)
    profiles = Table(title="Profiles", title_justify="left")
    for col in ("profile", "fills", "what it does"):
        profiles.add_column(col)
    for name, p in PROFILES.items():
        fills = [key for key, column in COLUMNS.items() if column.kind in p.fills]
        profiles.add_row(name, ", ".join(fills) or "no cell", p.description)
    out.print(profiles)


@app.command()
def show(
    suite: Annotated[str, typer.Argument(help="Suite id (table1 ... table9) or path to a suite YAML.")],
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the suite as JSON (for scripts).")] = False,
) -> None:
    """Show a suite's rows (with the ids `--rows` and `ROW=CKPT` take), models and published values."""
    with user_errors():
        s = load_suite(find_suite(suite), probe=False)  # showing builds no model: no torch import
    if as_json:
        print(json.dumps(_suite_json(s), indent=2, default=str))
        return
    table = Table(title=Text(f"{s.id}: {s.title}"), title_justify="left")
    table.add_column("#")
    table.add_column("id", overflow="fold")
    table.add_column("row")
    table.add_column("model", overflow="fold")
    for key in s.columns:
        table.add_column(Text(s.column_label(key)), justify="right")
    for i, row in enumerate(s.rows, 1):
        if row.model is None:
            model = f"floor: {row.floor}" if row.floor else "cited"
        else:
            model = " ".join(f"{k}={v}" for k, v in row.model.spec().as_dict().items())
        values = []
        for key in s.columns:
            v = row.published.get(key)
            text = "–" if v is None else (f"{v[0]}-{v[1]}" if isinstance(v, tuple) else str(v))
            values.append(text + (" *" if key in row.notes else ""))
        table.add_row(str(i), Text(row.key), Text(row.name), Text(model), *(Text(v) for v in values))
    out.print(table)
    out.print(f"Source: {s.source}. * = the cell carries a note. File: {s.path}", markup=False)
    if s.cost is not None:
        from cabench.data.subsets import estimate

        with user_errors():
            found = estimate(s)
        if found is not None:
            images, hours = found
            out.print(
                f"Cost: about {hours:.1f} GPU-hours per row-seed ({images:,} training images at "
                f"{s.cost.img_per_s:,} img/s: {s.cost.basis}); {len(s.rows)} rows.",
                markup=False,
            )


def _suite_json(s: Suite) -> dict[str, Any]:
    def value(v: Any) -> Any:
        return [str(v[0]), str(v[1])] if isinstance(v, tuple) else str(v)

    return {
        "id": s.id,
        "title": s.title,
        "file": str(s.path),
        "columns": list(s.columns),
        "rows": [
            {
                "id": r.key,
                "name": r.name,
                "cited": r.cited,
                "model": r.model.spec().as_dict() if r.model else None,
                "published": {k: value(v) for k, v in r.published.items()},
            }
            for r in s.rows
        ],
    }


DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="Dataset roots as NAME=PATH, repeatable (imagenet=/datasets/imagenet). Also read from "
        "CABENCH_DATA_IMAGENET (any NAME) or a [data] table in ~/.config/cabench/config.toml (or $CABENCH_CONFIG).",
    ),
]

_RUN_HELP = """Run a profile for every row of the given suites and record each result under `runs/`.

`cabench run all` counts every model of Tables 1-9 (each distinct model once) in seconds on a CPU.
`cabench run table2 --profile paper --data imagenet=PATH` trains the rows that lack a result, resuming
an interrupted run; `--profile smoke` does the same for a few steps on generated data and fills no cell.
`--seeds 0,1,2` (or `--seeds 3`) trains each row once per seed; seeds already done are skipped.
`--nproc 4` runs under torchrun (global batch and lr kept); for several machines, see the README's
multi-node torchrun line. Options are grouped by the profiles that take them; `--plugin MODULE` loads a plugin.
"""


_LAUNCH_PANEL = "Launcher: each row x seed as a job (--launcher local or slurm)"


def _run_options(
    suites: Annotated[list[str], typer.Argument(help="Suite ids, suite file paths, or `all`.")],
    profile: Annotated[str, typer.Option(help="count, latency, smoke, paper, ... (`cabench list`).")] = "count",
    rows: Annotated[
        list[str] | None, typer.Option("--rows", help="Only these rows (row id or printed name); repeatable.")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories go.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the runs as JSON (for scripts).")] = False,
    launcher: Annotated[
        str,
        typer.Option(
            help="inline (this process, the default), local (a job per row x seed, local processes) or slurm "
            "(a SLURM job array). `cabench status` shows the jobs.",
            rich_help_panel=_LAUNCH_PANEL,
        ),
    ] = "inline",
) -> None:
    """`cabench run`'s own options; :func:`_run_signature` adds the launchers' and the profiles' declared ones."""


def _run_signature() -> inspect.Signature:
    """`cabench run`'s parameters: :func:`_run_options`, then each launcher option (``LAUNCH_OPTIONS``) and each
    registered profile's options (``Profile.options``), as they are declared."""

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [p.replace(kind=kw) for p in inspect.signature(_run_options, eval_str=True).parameters.values()]
    for name, kind, default, text in LAUNCH_OPTIONS:
        option = typer.Option(
            help=text + " Also read from [launcher] in the config file.", rich_help_panel=_LAUNCH_PANEL
        )
        params.append(inspect.Parameter(name, kw, default=default, annotation=Annotated[kind, option]))
    try:
        options = profile_options()
    except RegistryError as e:  # a broken plugin: reported as one line when the command runs
        _startup_error.append(str(e))
        options = {}
    for name, (option, owners) in options.items():
        panel = f"Options of {', '.join(owners)}"
        flag = {"metavar": ""} if option.type is bool else {}  # typer prints "<bool>" after a flag otherwise
        annotation = Annotated[option.type, typer.Option(help=option.help, rich_help_panel=panel, **flag)]
        params.append(inspect.Parameter(name, kw, default=option.default, annotation=annotation))
    return inspect.Signature(params)


def run(**given: Any) -> None:
    suites, profile_name, rows, runs_dir, as_json = (
        given.pop(k) for k in ("suites", "profile", "rows", "runs_dir", "as_json")
    )
    launcher = given.pop("launcher")
    launch_given = {name: given.pop(name) for name, *_ in LAUNCH_OPTIONS}
    start = time.perf_counter()
    with user_errors():
        profile = PROFILES.get(profile_name)
        options = _profile_option_values(profile, given, profile_options())
        if launcher != "inline" or any(v is not None for v in launch_given.values()):
            _launch(launcher, launch_given, profile, suites, rows, runs_dir, options)
            return

        # Rows are checked against the catalogue (a model off it, a plugin's block or an import path, is built and
        # checked in full), so a row typo, --seeds abc or an unknown --data key is found before torch is imported,
        # and counting with every count cached needs no torch at all.
        loaded = _load_suites(suites, probe=False)
        check_row_selection(loaded, rows)
        profile.check_options(options)
        request = Request(
            loaded,
            Store(runs_dir),
            set(rows) if rows else None,
            options,
            all_suites=suites == ["all"],
            argv=tuple(sys.argv[1:]),
        )
        outcome = _run_profile(profile, request)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)
    if outcome.busy and not outcome.records:
        err.print(
            f"cabench: nothing to do now: another process is training every selected row ({'; '.join(outcome.busy)});"
            " run the same command again once it finishes to collect the results",
            markup=False,
        )
        raise typer.Exit(EXIT_BUSY)
    if rows and not outcome.records:
        fail(f"no row matches --rows {', '.join(rows)} in {', '.join(s.id for s in loaded)}")
    if not outcome.records:
        fail(f"nothing to run: {', '.join(s.id for s in loaded) or 'no suite'} has no row for profile {profile.name}")
    if as_json:
        print(json.dumps([_record_json(r) for r in outcome.records], indent=2, default=str))
        return
    _summary(profile.name, outcome, time.perf_counter() - start, runs_dir)


def _record_json(r: Any) -> dict[str, Any]:
    return {
        "suite": r.suite,
        "row": r.row,
        "profile": r.profile,
        "run_id": r.run_id,
        "path": str(r.path),
        "seed": r.config.get("seed"),
        "model": r.config.get("model_key"),
        "metrics": r.metrics,
    }


run.__signature__ = _run_signature()  # type: ignore[attr-defined]
run.__doc__ = _RUN_HELP
app.command("run")(run)


def _launch(
    launcher: str,
    given: dict[str, Any],
    profile: Any,
    suites: list[str],
    rows: list[str] | None,
    runs_dir: Path,
    options: dict[str, Any],
) -> None:
    """`cabench run ... --launcher local|slurm`: a job per row-seed missing or failed (cabench.launch)."""
    if launcher == INLINE:
        flag = next("--" + k.replace("_", "-") for k, v in given.items() if v is not None)
        raise ValueError(f"{flag} applies to a launcher: add --launcher local or --launcher slurm")
    chosen = LAUNCHERS.get(launcher)
    settings = launch_settings(launcher, given, chosen.takes)
    loaded = _load_suites(suites)
    request = Request(loaded, Store(runs_dir), set(rows) if rows else None, options, all_suites=suites == ["all"])
    start = time.perf_counter()
    outcome = launch(profile, request, settings, lambda line: err.print(line, markup=False, highlight=False))
    if not outcome.before and not outcome.without_a_job:
        fail(f"nothing to run: no row of {', '.join(s.id for s in loaded)} matches for profile {profile.name}")
    counts = {s: sum(u.state == s for u in outcome.before) for s in ("done", "running", "queued")}
    already = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none done, running or queued"
    where = "" if runs_dir == Path("runs") else f" --runs-dir {runs_dir}"  # the hint must find the same runs
    status = f"cabench status {' '.join(s.id for s in loaded)}{where}"
    out.print(
        f"{launcher}: {outcome.submitted} job(s) submitted of {len(outcome.before)} row-seed(s) ({already} before); "
        f"{time.perf_counter() - start:.1f} s. `{status}` shows them.",
        markup=False,
    )
    if outcome.exit_code:
        err.print(
            f"cabench: error: some jobs failed (named above with their logs); `{status}` shows them", markup=False
        )
        raise typer.Exit(EXIT_JOBS_FAILED)


@app.command()
def status(
    suites: Annotated[
        list[str] | None, typer.Argument(help="Suite ids or files (default: every suite a launcher planned).")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories go.")] = Path("runs"),
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print JSON: one object per row and seed.")
    ] = False,
) -> None:
    """Each row x seed a launcher planned (`cabench run ... --launcher local|slurm`): done, running (job id),
    queued, failed (the last line of its log and the log's path) or missing. Submitting again submits only
    what is missing or failed."""
    with user_errors():
        loaded = _load_suites(suites) if suites else []
        store = Store(runs_dir)
        order = {(s.id, r.key): i for s in loaded for i, r in enumerate(s.rows)}
        planned = read_records(store, [s.id for s in loaded] if loaded else None)
        planned.sort(key=lambda p: (p[0].suite, order.get((p[0].suite, p[0].row), 0), p[0].profile, p[0].seed))
        found = statuses(store, planned)
    if as_json:
        print(json.dumps([s.as_dict() for s in found], indent=2))
        return
    if not found:
        out.print(f"nothing planned in {runs_dir}: `cabench run SUITE --launcher local|slurm` plans and submits")
        return
    table = Table(title=f"Jobs in {runs_dir}", title_justify="left")
    for col in ("suite", "row", "profile", "seed", "state", "job", "run or last log line"):
        table.add_column(col)
    for s in found:
        detail = s.run or (f"{s.last_line} ({s.log})" if s.log else "")
        table.add_row(s.unit.suite, s.unit.row, s.unit.profile, str(s.unit.seed), s.state, s.job or "", Text(detail))
    out.print(table)
    counts = [f"{sum(s.state == state for s in found)} {state}" for state in STATES]
    out.print(", ".join(counts), markup=False)


def _run_command() -> Any:
    """The click command of `cabench run`, rebuilt with the options of every profile registered now."""
    run.__signature__ = _run_signature()  # type: ignore[attr-defined]
    info = next(c for c in app.registered_commands if c.callback is run)
    return typer.main.get_command_from_info(
        info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
    )


def _profile_option_values(profile: Any, given: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """The chosen profile's options; an option of another profile set to a non-default value is refused."""
    mine = {o.name for o in profile.options}
    for name, value in given.items():
        option, owners = known[name]
        if name not in mine and value != option.default:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} does not apply to profile {profile.name!r} (it applies to {', '.join(owners)})")
        option.check(value)
    return {name: given[name] for name in mine}


def _run_profile(profile: Any, request: Any) -> Any:
    """Run ``profile`` with progress shown on stderr; an interrupted training says how to resume."""
    display, request.hooks = _display(profile.name)
    try:
        with display:
            return profile.run(request)
    except DatasetError as e:
        from cabench.data.images import one_line_dataset_error

        fail(one_line_dataset_error(e))
    except Exception as e:
        if "cabench.engine" not in sys.modules:  # nothing trained: not a stop of the engine's (and no torch import)
            raise
        from cabench.engine import LeaseLost, TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            err.print(f"cabench: {e}", markup=False)  # it says where the checkpoint is and how to resume
            raise typer.Exit(130) from None
        if isinstance(e, LeaseLost):
            err.print(f"cabench: {e}", markup=False)
            raise typer.Exit(EXIT_BUSY) from None
        raise


def _display(label: str) -> tuple[Progress, Any]:
    """One progress display on stderr and the hooks through which a profile drives it."""
    progress, update = _progress(label)
    plain = _PlainProgress(label) if not err.is_terminal else None  # under nohup, a pipe, a CI log

    def on_row(suite: str, row: str, what: str) -> None:
        update(0, None, "", description=f"{suite}/{row}")
        if plain:
            plain.label = f"{suite}/{row}"
        err.print(f"{suite}/{row}: {what}", markup=False, highlight=False)

    def on_step(event: dict) -> None:
        completed, total, info = step_view(event)
        update(completed, total, info)
        if plain:
            plain.show(completed, total, info)

    return progress, Hooks(progress=update, row=on_row, step=on_step)


class _PlainProgress:
    """Without a terminal, the progress bar's text as one stderr line at most every ``every_s`` seconds (and at the
    last step), so that a run under nohup or in a CI log shows it is alive and how far it is."""

    def __init__(self, label: str, every_s: float = 60.0) -> None:
        self.label, self.every_s, self.last = label, every_s, time.monotonic()

    def show(self, completed: int, total: int | None, info: str) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and completed != total:
            return
        self.last = now
        err.print(f"{self.label}: {completed:,}/{total or '?'} {info}", markup=False, highlight=False)


def step_view(event: dict) -> tuple[int, int | None, str]:
    """What the progress bar shows for an engine event: (completed, total, text).

    Training: steps, with loss, lr, speed and ETA. The evaluation: its own images done / total (it has no loss
    or lr to show).
    """
    if event.get("phase") == "eval":
        done, total = event.get("images_done"), event.get("images_total")
        if not isinstance(done, int) or not isinstance(total, int):
            return 0, None, "evaluating ..."
        return done, total, f"evaluating: {done:,}/{total:,} images"
    eta = _duration(event["eta_s"]) if "eta_s" in event else "-"
    info = (
        f"loss {event.get('loss', float('nan')):.3f} lr {event.get('lr', float('nan')):.4g} "
        f"{event.get('img_per_s', 0):.0f} img/s ETA {eta}"
    )
    return event.get("step", 0), event.get("total_steps"), info


def _duration(seconds: float) -> str:
    """``1d 02:03:04`` / ``02:03:04`` / ``03:04``."""
    s = max(0, round(seconds))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    clock = f"{h:02d}:{m:02d}:{s:02d}" if h or days else f"{m:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def _summary(profile: str, outcome: Any, elapsed: float, runs_dir: Path) -> None:
    records = outcome.records
    head = f"{profile}: {outcome.summary or f'{len(records)} rows'}, {elapsed:.1f} s -> {runs_dir}/"
    if not outcome.columns:
        out.print(head + "".join(f". {n}" for n in outcome.notes), markup=False)
        return
    table = Table(title=head, title_justify="left")
    for col in ("suite", "row", *outcome.columns, "run"):
        table.add_column(col, overflow="fold")  # a narrow terminal wraps an id, never cuts it
    for r in records:
        vals = [r.metrics.get(k, r.config.get(k)) for k in outcome.columns]
        table.add_row(r.suite, r.row, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals), r.run_id)
    out.print(table)
    for note in outcome.notes:
        out.print(note, markup=False)


@app.command()
def report(
    suites: Annotated[list[str] | None, typer.Argument(help="Suites to report (default: all).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Report directory.")] = Path("reports"),
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories are.")] = Path("runs"),
    figures: Annotated[bool, typer.Option(metavar="", help="Draw PNG figures under reports/figures/.")] = True,
) -> None:
    """Write `reports/SUITE.md`, `reports/README.md`, `reports/results.csv` and figures from the latest runs.

    Runs are read from RUNS and from the records committed under `reports/records/` (RUNS wins on a run id in
    both); the config, env and metrics of each trained or evaluated run shown are copied there."""
    from cabench.cells import build_cells
    from cabench.report import reading_store, suite_summary, write_reports

    with user_errors():
        loaded = _load_suites(suites or [], probe=False)  # rows checked against the catalogue: no torch to report
        store = reading_store(Store(runs_dir), out_dir)
        say = lambda line: out.print(line, markup=False)  # noqa: E731
        try:
            paths = write_reports(loaded, store, out_dir, figures=figures, log=say)
        except OSError as e:  # FileNotFoundError too: a parent that cannot be made (/proc/x), a file in the path
            fail(f"--out {out_dir}: cannot write the report there ({e.strerror or e}: {e.filename or out_dir})")
    table = Table(title=f"Report -> {out_dir}/README.md", title_justify="left")
    for col in ("suite", "match", "noted", "drift", "pending", "cited"):
        table.add_column(col)
    cells = build_cells(loaded, store)
    for s in loaded:
        summary = suite_summary([c for c in cells if c.suite == s.id])
        table.add_row(s.id, *(str(summary[k]) for k in ("match", "noted", "drift", "pending", "cited")))
    out.print(table)
    for line in store.problems:
        err.print(f"cabench: warning: {line}", markup=False)
    out.print(f"{len(paths)} files written.")


@app.command()
def check(
    suites: Annotated[list[str] | None, typer.Argument(help="Suite ids or paths (default: all).")] = None,
    lock: Annotated[Path | None, typer.Option(help="Exact-counts lock file.")] = None,
    update_lock: Annotated[
        bool, typer.Option("--update-lock", metavar="", help="Rewrite the lock from this count.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the result as JSON.")] = False,
    cache: Annotated[
        bool,
        typer.Option("--cache/--no-cache", metavar="", help="Reuse cached traced counts (key: code, versions, model)."),
    ] = True,
) -> None:
    """CI gate: recount, then exit 1 if a count cell drifts without a note or differs from the lock.

    Exit codes: 0 all counts hold; 1 drift; 2 bad input.
    """
    with user_errors():
        # Catalogue-checked (a model off the catalogue is checked in full): with every count cached, no torch.
        loaded = _load_suites(suites or [], probe=False)
        progress, update = _progress("check")
        with progress:
            result = check_suites(loaded, lock, update_lock, update, cache=cache)
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
            f"note; {result.lock_checked} models match the lock exactly"
            + (f" (lock updated: {result.lock_path})" if update_lock else "")
        )
    if not result.ok:
        raise typer.Exit(EXIT_DRIFT)


def _key_values(items: list[str], option: str) -> dict[str, object]:
    """``["act=relu", "softmax=true"] -> {"act": "relu", "softmax": True}`` (values read as YAML scalars)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {item!r}: expected KEY=VALUE")
        value = yaml.safe_load(text) if text.strip() else ""
        if not isinstance(value, (str, bool, int, float)):
            raise ValueError(f"{option} {item!r}: the value must be a string, number or true/false")
        out[key.strip()] = value
    return out


@app.command()
def count(
    arch: Annotated[str, typer.Argument(help="mobilenetv2, mobilenext, efficientnet_b0, ssdlite320_..., ...")],
    width: Annotated[float, typer.Option(help="Width multiplier.")] = 1.0,
    attention: Annotated[
        str | None,
        typer.Option(
            help="A block name (none, se, cbam, ca, x, y, eca, triplet, ...) or an import path "
            "pkg.module:Block (default: the arch's own)."
        ),
    ] = None,
    reduction: Annotated[int | None, typer.Option(help="Reduction ratio r (default: per attention).")] = None,
    attention_arg: Annotated[
        list[str] | None,
        typer.Option("--attention-arg", help="KEY=VALUE argument of the block, e.g. act=relu (repeatable)."),
    ] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes (default: per arch).")] = None,
    output_stride: Annotated[int | None, typer.Option(help="8 or 16 (segmentation).")] = None,
    small_input: Annotated[
        bool,
        typer.Option(
            "--small-input",
            metavar="",
            help="Stride pattern for 32x32 inputs: stem and first downsampling stage at stride 1 (output stride 8).",
        ),
    ] = False,
    input_size: Annotated[
        int | None,
        typer.Option(help="Square input side for M-Adds (default: the paper's for this arch; 32 with --small-input)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print JSON: params, madds, fvcore_total, ...")
    ] = False,
) -> None:
    """Count one model's parameters and multiply-adds (paper convention: conv + linear, via fvcore)."""
    with user_errors():
        args = _key_values(attention_arg or [], "--attention-arg")
        spec = ModelSpec(
            arch,
            width=width,
            attention=attention,
            reduction=reduction,
            num_classes=num_classes,
            output_stride=output_stride,
            attention_args=args,
            small_input=small_input,
        )
        validate_spec(spec, probe=False)  # a bad width or reduction before torch is imported
        from cabench.measure.complexity import count_model

        c = count_model(spec, madds=True, input_size=(input_size, input_size) if input_size else None)
    payload = {"arch": arch, "model": spec.as_dict(), "key": spec.key(), **c.as_dict()}
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    table = Table(title=spec.key(), title_justify="left", show_header=False)
    table.add_row("parameters", f"{c.params:,}  ({c.params / 1e6:.3f} M)")
    table.add_row(f"multiply-adds @ {c.input_size[0]}x{c.input_size[1]}", f"{c.madds:,}  ({c.madds / 1e6:.1f} M)")
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
    workers: Annotated[
        int, typer.Option(help="DataLoader workers (default: the CPUs this process may use, at most 8).")
    ] = default_workers(),
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Where run directories go.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the metrics and the run as JSON.")] = False,
) -> None:
    """A checkpoint's accuracy; with a suite and --row, fills that cell ("eval" profile, footnoted with its sha256).

    An architecture is evaluated on ImageNet val (top-1/top-5). A suite row is evaluated on its table's dataset
    with its metrics: COCO val AP (table6), VOC07 test mAP (table7), VOC12 val or Cityscapes val mIoU (table8-9).
    """
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
        given = parse_data_option(data or [])
        try:
            display, report = _progress(f"evaluating {checkpoint.name}")
            with display:
                metrics, record, shown = evaluate_checkpoint(
                    spec, checkpoint, given, workers, Store(runs_dir), suite, row_obj, progress=report
                )
        except DatasetError as e:
            fail(str(e))
    if as_json:
        payload = {"model": spec.key(), "metrics": metrics, "run": _record_json(record) if record else None}
        print(json.dumps(payload, indent=2, default=str))
        return
    text = "  ".join(f"{label} {metrics[k]:.2f}%" for k, label in shown if k in metrics)
    n = metrics.get("val_n", metrics.get("n"))
    out.print(f"{spec.key()}: {text}  on {n} images" + (f" -> {record.path}" if record else ""), markup=False)


@app.command()
def fixtures(
    kind: Annotated[str, typer.Argument(help="Which dataset format (imagenet, coco, voc, cityscapes, ...).")],
    directory: Annotated[Path, typer.Argument(help="Where to write it (must not exist or be empty).")],
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same bytes.")] = 0,
) -> None:
    """Write a tiny dataset in a real on-disk format (real JPEG/PNG files, real annotation files).

    The smoke profile and the tests train and evaluate on these through the real loaders and evaluators.
    """
    with user_errors():
        fixture = FIXTURES.get(kind)
    try:
        root = fixture.write(directory, seed=seed)
    except DatasetError as e:
        fail(str(e))
    files = sum(1 for p in root.rglob("*") if p.is_file())
    hint = fixture.hint.format(root=root)
    out.print(f"{kind} fixture: {files} files in {root} ({fixture.layout}). Try: {hint}", markup=False)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"{option}: expected comma-separated integers, got {text!r}")
    return values


@app.command()
def bench(
    rounds: Annotated[
        int, typer.Option(help="Timed rounds per measurement, rows interleaved (bounds the runtime).")
    ] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed calls per row before each measurement.")] = 1,
    rows: Annotated[
        str, typer.Option(help="Comma-separated rows (baseline is required); see cabench.measure.bench_rows.")
    ] = ",".join(DEFAULT_BENCH_ROWS),
    latency_batches: Annotated[str, typer.Option(help="Inference batch sizes ('' to skip).")] = "1,32",
    train_batches: Annotated[str, typer.Option(help="Training batch sizes ('' to skip).")] = "32,64",
    threads: Annotated[int, typer.Option(help="CPU threads for inference.")] = 1,
    train_threads: Annotated[int, typer.Option(help="CPU threads for training (0: torch's default).")] = 2,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    amp: Annotated[str, typer.Option(help="Autocast dtype: none, bf16 or fp16 (fp16: CUDA only).")] = "none",
    channels_last: Annotated[
        bool, typer.Option("--channels-last", metavar="", help="Model and inputs in NHWC.")
    ] = False,
    compile_: Annotated[
        bool, typer.Option("--compile", metavar="", help="torch.compile every row (compile time untimed).")
    ] = False,
    data: Annotated[
        list[str] | None,
        typer.Option(help="imagenet=PATH: also measure the training input pipeline (img/s per worker) on its JPEGs."),
    ] = None,
    pipeline_images: Annotated[int, typer.Option(help="Images per pipeline measurement.")] = 200,
    autoaugment: Annotated[
        bool, typer.Option("--autoaugment", metavar="", help="Pipeline: add AutoAugment (ImageNet policy).")
    ] = False,
    gpu_decode: Annotated[
        bool, typer.Option("--gpu-decode", metavar="", help="Pipeline: also nvjpeg decode + GPU transforms.")
    ] = False,
    models_: Annotated[bool, typer.Option("--models/--no-models", metavar="", help="Measure the model rows.")] = True,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print JSON.")] = False,
) -> None:
    """Inference latency and training img/s of baseline / SE / CBAM / CA variants as ratios to the baseline
    (one run, rows interleaved, medians and p10-p90); with --data imagenet=PATH, the input pipeline's img/s."""
    from cabench.measure.bench import BenchOptions, format_bench, run_bench

    if not 1 <= threads <= 1024 or rounds > 100_000:
        fail(f"--threads {threads} --rounds {rounds}: expected threads in [1, 1024] and rounds at most 100000")
    result: dict[str, object] = {}
    if models_:
        opts = BenchOptions(
            rows=tuple(r.strip() for r in rows.split(",") if r.strip()),
            latency_batches=_int_list(latency_batches, "--latency-batches"),
            train_batches=_int_list(train_batches, "--train-batches"),
            rounds=rounds,
            warmup=warmup,
            threads=threads,
            train_threads=train_threads or None,
            device=device,
            amp=None if amp == "none" else amp,
            channels_last=channels_last,
            compile=compile_,
        )
        with user_errors(), _bench_progress("bench") as progress:
            from cabench.measure.bench_rows import BENCH_ROWS

            for name in opts.rows:
                if name not in BENCH_ROWS:
                    fail(f"--rows: {BENCH_ROWS.unknown(name)}")
            result = run_bench(opts, progress=progress)
    if data:
        result["pipeline"] = _bench_pipeline(data, pipeline_images, autoaugment, gpu_decode)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if "sections" in result:
        typer.echo(format_bench(result))
    if "pipeline" in result:
        from cabench.measure.pipeline import format_pipeline

        typer.echo(format_pipeline(result["pipeline"]))


def _bench_pipeline(data: list[str], images: int, autoaugment: bool, gpu_decode: bool) -> dict[str, object]:
    from cabench.measure.pipeline import DATA_KEY, PipelineError, run_pipeline_bench

    with user_errors():
        roots = parse_data_option(data)
    if DATA_KEY not in roots:
        fail(f"--data: the input pipeline benchmark needs {DATA_KEY}=PATH, got {', '.join(roots) or 'nothing'}")
    try:
        with _bench_progress("pipeline") as progress:
            return run_pipeline_bench(
                Path(roots[DATA_KEY]),
                images=images,
                autoaugment=autoaugment,
                gpu_decode=gpu_decode,
                progress=progress,
            )
    except PipelineError as e:
        fail(str(e))


@contextmanager
def _bench_progress(label: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on a terminal; otherwise one stderr line each time the measured section changes."""
    progress, update = _progress(label)
    last = [""]

    def report(what: str, done: int, total: int) -> None:
        update(done, total, what)
        section = what.split(":")[0]
        if not err.is_terminal and section != last[0]:
            last[0] = section
            err.print(f"cabench bench: {section} ...", markup=False)
        # The section's estimate, once its first round is timed.
        if not err.is_terminal and ": round 1/" in what and last[0] != f"{section} timed":
            last[0] = f"{section} timed"
            err.print(f"cabench bench: {what}", markup=False)

    with progress:
        yield report


data_app = typer.Typer(help="Dataset tools: `cabench data check imagenet=PATH` decodes every image first.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    items: Annotated[list[str], typer.Argument(help="NAME=PATH, e.g. imagenet=/datasets/imagenet; repeatable.")],
    workers: Annotated[int, typer.Option(help="Decoding threads (default: the CPU count).")] = 0,
    runs_dir: Annotated[Path, typer.Option(envvar="CABENCH_RUNS", help="Records go to RUNS/_data/.")] = Path("runs"),
) -> None:
    """Decode every image of a dataset in parallel, list the bad files, and record the data fingerprint.

    Bad-image policy: training stops at the first file that does not decode, with one line naming it
    (the last checkpoint stays; fix or remove the file and run again). This check finds all of them first.
    Exit 0 when every file decodes, 2 when the layout is wrong or any file is bad.
    """
    from cabench.data.verify import write_record

    if not 0 <= workers <= 1024:
        fail(f"--workers {workers}: expected 0 (the CPU count) to 1024")
    bad_total = 0
    with user_errors():
        for key, root in parse_data_option(items).items():
            try:
                result = _scan_dataset(key, root, workers or None)
            except DatasetError as e:
                fail(str(e))
            path = write_record(key, result, runs_dir / "_data")
            for bad, reason in result.bad:
                err.print(f"BAD {bad}: {reason}", markup=False)
            bad_total += len(result.bad)
            out.print(
                f"{key}: {result.files} files, {len(result.bad)} bad, {result.seconds:.1f} s "
                f"({result.images_per_s:.0f} img/s); fingerprint {result.fingerprint[:16]}… -> {path}",
                markup=False,
            )
    if bad_total:
        fail(f"{bad_total} image file(s) do not decode (listed above); training would stop at the first")


def _scan_dataset(key: str, root: Path, workers: int | None) -> Any:
    """check_dataset with a progress bar on stderr."""
    from cabench.data.verify import check_dataset

    progress = Progress(
        TextColumn(f"[bold]{key}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task(key, total=None)
    with progress:
        return check_dataset(key, root, workers, lambda d, t: progress.update(task, completed=d, total=t))


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
