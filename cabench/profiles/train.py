"""The training profiles: ``smoke`` (a few steps on generated data) and ``paper`` (the suite's recipe).

Both train every selected row of a suite with its recipe through the shared engine, once per seed.
``smoke`` trains each row a few steps on the generated fixture in the real on-disk format (or the
data given with ``--data``) and evaluates it: its metrics are recorded, but the report only ever
shows "pipeline ok (smoke)" for it. ``paper`` needs the real data, resumes an unfinished run of the
same configuration and seed, and skips row-seeds already done, so adding seeds later adds runs.

Everything a user can get wrong (recipe, dataset, backbone checkpoints, seeds) is checked for every
suite and row before the first step of training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cabench.data.base import DATASETS, DatasetInfo, data_identity
from cabench.data.roots import data_root, parse_data_option
from cabench.floors import FLOORS, spread_images
from cabench.models.blocks import attention_provenance
from cabench.models.registry import build_model
from cabench.models.weights import load_backbone, sha256_of
from cabench.profiles.base import Option, Outcome, Profile, Request, RowSeed, register_profile
from cabench.profiles.workers import default_workers
from cabench.recipe import load_recipe
from cabench.store import RunRecord
from cabench.suite import find_suite, load_suite
from cabench.tasks.base import TASKS, TaskInfo

if TYPE_CHECKING:
    from cabench.recipe import Recipe
    from cabench.suite import Row, Suite

__all__ = ["SMOKE_STEPS", "TrainProfile", "parse_seeds"]

SMOKE_STEPS = 3
# A smoke floor is fitted on about this many images per split (spread over the classes): it proves the path; the
# logistic floor on all 10,064 digit scenes is a 30 s fit that smoke does not need.
SMOKE_FLOOR_IMAGES = 500
# What a seed decides in a run: the engine seeds each of these from it (cabench.engine).
SEEDED = ("weight initialisation", "data order", "augmentation")
_OVERRIDES = ("epochs", "iterations", "batch_size", "lr")
# Settings that may differ when an unfinished run is resumed: they change how fast or how visibly it
# runs, not what it computes. Any other difference (amp, batch, lr, ...) refuses the resume.
RESUME_FREE = frozenset(
    {"workers", "pin_memory", "persistent_workers", "log_every", "tensorboard", "ckpt_every_steps", "config"}
)
_KNOBS = {  # option -> engine setting
    "workers": "workers",
    "amp": "amp",
    "channels_last": "channels_last",
    "compile": "compile",
    "sync_bn": "sync_bn",
    "ckpt_every": "ckpt_every_steps",
    "tensorboard": "tensorboard",
}

TRAIN_OPTIONS = (
    Option(
        "data",
        list[str] | None,
        None,
        "Dataset roots as NAME=PATH, repeatable (imagenet=/datasets/imagenet). Also read from "
        "CABENCH_DATA_IMAGENET (any NAME) or a [data] table in ~/.config/cabench/config.toml (or $CABENCH_CONFIG).",
    ),
    Option("seeds", str | None, None, "Seeds to train: a list (0,1,2) or a count (3 = 0,1,2); one run each."),
    Option("seed", int | None, None, "One seed (the same as --seeds with that one value; default 0).", 0, 2**32 - 1),
    Option("epochs", int | None, None, "Override the recipe's epochs (recorded; marked in reports).", 1, 100_000),
    Option(
        "iterations", int | None, None, "Override the recipe's iterations (dense recipes; marked in reports).", 1, 1e9
    ),
    Option("batch_size", int | None, None, "Override the recipe's GLOBAL batch size.", 1, 65_536),
    Option("lr", float | None, None, "Override the recipe's initial learning rate.", 1e-12, 100),
    Option(
        "workers",
        int,
        default_workers(),
        "DataLoader workers per process (default: the CPUs it may use, max 8).",
        0,
        256,
    ),
    Option("amp", str, "off", "off, bf16 or fp16 (fp16 on CUDA only)."),
    Option("channels_last", bool, False, "channels_last memory format (GPU; on CPU 1.3-1.6x faster for the probe)."),
    Option("compile", bool, False, "torch.compile the model."),
    Option("sync_bn", bool, False, "SyncBatchNorm across processes (CUDA)."),
    Option("ckpt_every", int, 0, "Also checkpoint every N steps (0: at epoch ends only).", 0, 1e9),
    Option(
        "backbone_checkpoint",
        list[str] | None,
        None,
        "Detection/segmentation: initialise the backbone from an ImageNet checkpoint (cabench or the authors' "
        "MobileNetV2+CA state dict). PATH for every selected row, or ROW=PATH per row; repeatable. Recorded with "
        "its sha256; cells trained without one are marked 'from scratch'.",
    ),
    Option(
        "keep_checkpoints",
        str | None,
        None,
        "What a finished run keeps of its checkpoint: last (the resumable checkpoint.pt; paper's default), best "
        "(the evaluated weights alone, model.pt: the engine evaluates once, at the end) or none (smoke's default).",
    ),
    Option("tensorboard", bool, False, "Also write TensorBoard logs (needs tensorboard)."),
    Option("nproc", int, 1, "Launch this many processes with torchrun (DDP).", 1, 1024),
)


def parse_seeds(seeds: str | None, seed: int | None) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ``"3"`` -> [0, 1, 2]; nothing -> ``[seed or 0]``."""
    if seeds is None:
        return [seed if seed is not None else 0]
    if seed is not None:
        raise ValueError("give --seeds or --seed, not both")
    parts = [p.strip() for p in seeds.strip().removesuffix(",").split(",")]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"--seeds {seeds!r}: expected a count (3) or a list of non-negative integers (0,1,2)")
    values = [int(p) for p in parts]
    if len(values) == 1 and "," not in seeds:
        if values[0] < 1:
            raise ValueError(f"--seeds {seeds!r}: a count of seeds must be at least 1 (for seed 0 alone: --seed 0)")
        return list(range(values[0]))
    if len(set(values)) != len(values):
        raise ValueError(f"--seeds {seeds!r}: a seed is listed twice")
    return values


def backbone_entries(entries: list[str]) -> dict[str, Path]:
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


def resume_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class _Plan:
    """One suite, checked and ready to train: its recipe, dataset, task, rows and backbones."""

    suite: Suite
    recipe: Recipe
    applied: dict[str, Any]
    dataset: DatasetInfo
    task: TaskInfo
    rows: list[Row]
    backbones: dict[str, tuple[Path, str]]


class TrainProfile(Profile):
    options = TRAIN_OPTIONS

    def __init__(self, name: str, description: str, *, smoke: bool) -> None:
        self.name, self.description, self.smoke = name, description, smoke
        self.floor_images = SMOKE_FLOOR_IMAGES if smoke else None  # floors on all the data, or on a spread sample
        self.fills = frozenset() if smoke else frozenset({"accuracy"})
        self.placeholder = "pipeline ok (smoke)" if smoke else None
        # Rows of a suite with backbone_from start from that suite's runs (smoke keeps no checkpoint: from scratch).
        self.follows_backbones = not smoke
        self._sources: dict[tuple[str, str, str], tuple[_Plan, Path, Any]] = {}  # (suite, store, --data) -> plan

    def run(self, request: Request) -> Outcome:
        from cabench.engine import check_runnable, distributed

        o = request.options
        if o["nproc"] > 1 and not distributed.under_torchrun():
            return Outcome([], exit_code=distributed.launch_torchrun(o["nproc"], list(request.argv)))
        seeds, plans, roots = self._prepare(request)
        distributed.init_distributed()  # under torchrun: every rank joins before choosing run directories
        from cabench.pipeline import configure_task

        records: list[RunRecord] = []
        busy: list[str] = []
        for plan in plans:
            root = roots[plan.recipe.dataset]
            train_ds, val_ds = plan.dataset.build(root, plan.recipe)
            check_runnable(self._settings(plan, o, seeds[0]), train_ds)  # before any run directory is made
            if distributed.is_main():
                records += run_floors(plan, request, self.name, (train_ds, val_ds), root, self.floor_images)
            engine_task = configure_task(plan.task.make(tuple(plan.suite.columns)), plan.recipe)
            for row in plan.rows:
                for seed in seeds:
                    config, settings = self._config(plan, row, seed, root, request, (train_ds, val_ds))
                    run = self._train_row(plan, row, config, settings, (train_ds, val_ds), engine_task, request)
                    if isinstance(run, str):
                        busy.append(f"{plan.suite.id}/{row.key} seed {seed}: {run}")
                    elif run is not None:
                        records.append(run)
        return self._outcome(records, plans, tuple(busy))

    def units(self, request: Request) -> list[RowSeed]:
        """Every selected row-seed with the key of its run (checked as :meth:`run` checks, before any job)."""
        seeds, plans, roots = self._prepare(request)
        units = []
        for plan in plans:
            root = roots[plan.recipe.dataset]
            data = plan.dataset.build(root, plan.recipe)
            for row in plan.rows:
                for seed in seeds:
                    config, _ = self._config(plan, row, seed, root, request, data)
                    path = str(Path(plan.suite.path).resolve()) if plan.suite.path else plan.suite.id
                    units.append(RowSeed(plan.suite.id, path, row.key, self.name, seed, config["resume_key"]))
        return units

    def runs_without_a_job(self, request: Request) -> list[RunRecord]:
        """The selected floor rows (a function of the data, no seed, seconds): computed here, not as jobs."""
        if not any(row.floor for suite in request.suites for row in suite.rows):
            return []  # no second pass over the datasets (units() has checked them) for suites without floors
        _seeds, plans, roots = self._prepare(request)
        records: list[RunRecord] = []
        for plan in plans:
            if any(row.floor for row in plan.suite.rows):
                root = roots[plan.recipe.dataset]
                datasets = plan.dataset.build(root, plan.recipe)
                records += run_floors(plan, request, self.name, datasets, root, self.floor_images)
        return records

    def check_options(self, options: dict[str, Any]) -> None:
        parse_seeds(options["seeds"], options["seed"])
        keep = options["keep_checkpoints"]
        if keep is not None and keep not in KEEP_CHOICES:
            raise ValueError(f"--keep-checkpoints {keep!r}: expected one of {', '.join(KEEP_CHOICES)}")
        parse_data_option(options["data"] or [])  # an unknown dataset key
        backbone_entries(options["backbone_checkpoint"] or [])

    def _prepare(self, request: Request) -> tuple[list[int], list[_Plan], dict[str, Path]]:
        """The seeds, every suite's plan and the dataset roots: everything checked before the first step."""
        o = request.options
        self.check_options(o)
        seeds = parse_seeds(o["seeds"], o["seed"])
        _check_tensorboard(o)
        o["keep_checkpoints"] = o["keep_checkpoints"] or ("none" if self.smoke else "last")
        backbones = backbone_entries(o["backbone_checkpoint"] or [])
        _check_backbone_rows(backbones, request)
        plans = [self._plan(suite, request, backbones) for suite in request.suites]
        if not self.smoke:
            self._check_sources(plans, seeds, request)
        for plan in plans:  # a bad --amp (or any setting the engine refuses) before any run directory is made
            self._settings(plan, o, seeds[0]).validate()
        return seeds, plans, self._roots(plans, request)

    def _settings(self, plan: _Plan, options: dict[str, Any], seed: int) -> Any:
        """The engine settings of a plan's runs: the recipe's, with the command line's knobs (smoke: its own)."""
        from cabench.engine import TrainSettings

        knobs = {setting: options[option] for option, setting in _KNOBS.items()}
        knobs["sync_bn"] = knobs["sync_bn"] or None  # off: keep the recipe's
        knobs["seed"] = seed
        if self.smoke:
            knobs.update(max_steps=SMOKE_STEPS, log_every=1, batch_size=plan.task.smoke_batch, workers=0)
        return TrainSettings.from_recipe(plan.recipe, **knobs)

    def _plan(self, suite: Suite, request: Request, backbones: dict[str, Path]) -> _Plan:
        if suite.recipe is None:
            raise ValueError(f"{suite.path or suite.id}: recipe: the suite names no training recipe")
        recipe, applied = load_recipe(suite.recipe).with_overrides(**{k: request.options[k] for k in _OVERRIDES})
        dataset, task = DATASETS.get(recipe.dataset), TASKS.get(suite.task)
        if recipe.task != suite.task or dataset.task != suite.task:
            raise ValueError(
                f"{suite.path or suite.id}: recipe {recipe.id} is for {recipe.task}, the suite is {suite.task}"
            )
        rows = request.selected(suite)
        wanted = {r.key: p for r in rows if (p := _backbone_for(r, backbones)) is not None}
        if wanted and not task.takes_backbone:
            raise ValueError(
                f"--backbone-checkpoint: {suite.id} is {task.title}, whose rows take no backbone checkpoint"
            )
        loaded = {}
        for row in rows:
            if row.key in wanted:
                assert row.model is not None
                path = wanted[row.key]
                loaded[row.key] = (path, load_backbone(build_model(row.model.spec()), path, row=row.key))
        if self.smoke:  # what differs in smoke is carried by the recipe it trains, as the dataset decides
            recipe = dataset.at_smoke_sizes(recipe)
        return _Plan(suite, recipe, applied, dataset, task, rows, loaded)

    def _roots(self, plans: list[_Plan], request: Request) -> dict[str, Path]:
        given = parse_data_option(request.options["data"] or [])
        read = {p.dataset.data_key for p in plans}
        for key in sorted(set(given) - read):  # every option is consumed or refused: a root no row reads is a slip
            raise ValueError(
                f"--data {key}={given[key]}: no selected row reads it (their recipes read {', '.join(sorted(read))})"
            )
        fixtures = request.store.root / "_fixtures" if self.smoke else None
        who = f"the {self.name} profile"
        return {p.recipe.dataset: data_root(p.dataset, given, fixtures, who) for p in plans}

    def _config(
        self, plan: _Plan, row: Row, seed: int, root: Path, request: Request, data: tuple[Any, Any]
    ) -> tuple[dict[str, Any], Any]:
        """The run's config.json (with the key deciding done/resume and the effective pipeline, read from a model
        built as :meth:`_train_row` builds it) and its engine settings."""
        import torch

        from cabench.pipeline import apply_recipe, describe_pipeline

        assert row.model is not None
        spec = row.model.spec()
        options = request.options
        settings = self._settings(plan, options, seed)
        backbone = None
        if row.key in plan.backbones:
            path, sha = plan.backbones[row.key]
            backbone = {"path": str(path), "sha256": sha}
        elif plan.suite.backbone_from and not self.smoke:  # smoke keeps no checkpoint to start from
            backbone = self._source_backbone(plan.suite, row.key, seed, request)
        config: dict[str, Any] = {
            "suite": plan.suite.id,
            "row": row.key,
            "profile": self.name,
            "task": plan.suite.task,
            "model": spec.as_dict(),
            "model_key": spec.key(),
            "recipe": plan.recipe.id,
            "overrides": plan.applied,
            "data": {plan.dataset.data_key: str(root)},
            "dataset": plan.recipe.dataset,
            "data_fingerprint": plan.dataset.fingerprint(root) if plan.dataset.fingerprint else None,
            "data_identity": _identity(plan.recipe.dataset, root),
            "image_size": plan.dataset.input_size(plan.recipe),
            "backbone_checkpoint": backbone,
            "attention_block": attention_provenance(spec.attention),  # None for a built-in block
            "seed": seed,
            "seeded": list(SEEDED),
            "bad_images": _bad_image_policy(),
            "keep_checkpoints": options["keep_checkpoints"],
            "settings": settings.resolved() | {"config": None},
        }
        torch.manual_seed(seed)
        model = apply_recipe(build_model(spec), plan.recipe)
        config["pipeline"] = describe_pipeline(plan.recipe, model, *data, settings)
        keyed = ("model_key", "recipe", "overrides", "data", "image_size", "backbone_checkpoint", "seed")
        keyed += ("attention_block",)  # its sha256: editing a user's block reruns the row
        identity = {k: config[k] for k in keyed}
        if config["data_fingerprint"] is not None:  # generated data: a new dataset is a new run
            identity["data_fingerprint"] = config["data_fingerprint"]["fingerprint"]
        config["resume_key"] = resume_key(identity)
        return config, settings

    def _source_backbone(self, suite: Suite, row: str, seed: int, request: Request) -> dict[str, Any]:
        """What a row-seed of a ``backbone_from`` suite starts from: the checkpoint of the source suite's run of the
        same row and seed *as the source would be run now* (its resume key), the file's sha256 and the run."""
        from cabench.engine.loop import CHECKPOINT_NAME

        cache = (str(suite.backbone_from), str(request.store.root), str(request.options["data"]))
        if cache not in self._sources:  # the source suite as its own recipe says (this command's overrides are ours)
            plain = replace(request, options={**request.options, **dict.fromkeys(_OVERRIDES)})
            src_plan = self._plan(load_suite(find_suite(str(suite.backbone_from))), plain, {})
            root = self._roots([src_plan], request)[src_plan.recipe.dataset]
            self._sources[cache] = (src_plan, root, src_plan.dataset.build(root, src_plan.recipe))
        src_plan, root, data = self._sources[cache]
        want = self._config(src_plan, src_plan.suite.row(row), seed, root, request, data)[0]
        run = request.store.complete(src_plan.suite.id, row, self.name, want["resume_key"])
        if run is None:  # else the newest run of the same model, recipe, data and seed trained with overrides
            same = ("model_key", "recipe", "data_fingerprint", "seed")
            runs = request.store.runs(src_plan.suite.id, row, self.name)
            run = next((r for r in runs if all(r.config.get(k) == want[k] for k in same)), None)
        kept = [run.path / n for n in (CHECKPOINT_NAME, "model.pt") if (run.path / n).is_file()] if run else []
        if run is None or not kept:
            why = "" if run is None else f" (its run {run.path} kept no checkpoint)"
            raise ValueError(
                f"{suite.id}/{row} seed {seed} starts from {src_plan.suite.id}/{row} seed {seed}, which has no "
                f"finished run with a checkpoint at its recipe in {request.store.root}{why}: run `cabench run "
                f"{src_plan.suite.id} --seeds {seed}` first (or both suites in one command: {src_plan.suite.id} first)"
            )
        origin = {"suite": src_plan.suite.id, "row": row, "seed": seed, "run": run.run_id}
        if run.config.get("overrides"):
            origin["overrides"] = run.config["overrides"]
        return {"path": str(kept[0]), "sha256": sha256_of(kept[0]), "from": origin}

    def _check_sources(self, plans: list[_Plan], seeds: list[int], request: Request) -> None:
        """Every row-seed of a ``backbone_from`` suite has its source: a finished run now, or one an earlier suite
        of this command trains first. Checked before the first step, so a dense row never starts from scratch."""
        planned: set[tuple[str, str]] = set()
        for plan in plans:
            for row in plan.rows if plan.suite.backbone_from else ():
                if (plan.suite.backbone_from, row.key) not in planned:
                    for seed in seeds:
                        self._source_backbone(plan.suite, row.key, seed, request)
            planned |= {(plan.suite.id, row.key) for row in plan.rows}

    def _train_row(
        self,
        plan: _Plan,
        row: Row,
        config: dict[str, Any],
        settings: Any,
        data: tuple[Any, Any],
        task: Any,
        request: Request,
    ) -> RunRecord | str | None:
        """Train one row with one seed, unless a complete run with the same key exists (in this cell, or in
        another suite's cell: then it is recorded here as that run's twin); resume an unfinished one.

        When another process holds this row-seed's lease (it is training it now): who holds it, as a string."""
        import torch

        from cabench.engine import check_held, distributed, train
        from cabench.pipeline import apply_recipe

        store, suite, key, seed = request.store, plan.suite.id, config["resume_key"], config["seed"]
        say = request.hooks.row or (lambda *_: None)
        check_done = not self.smoke or request.skip_done  # smoke reruns unless asked (a launcher's job)
        done = store.complete(suite, row.key, self.name, key) if check_done else None
        if done is not None:
            say(suite, row.key, f"seed {seed}: done already, skipped")
            return done
        lease, choice = None, None
        if distributed.is_main():
            # One process per (row, profile, seed) in a shared runs directory; checked again once held.
            lease = store.lease(suite, row.key, self.name, seed)
            if lease is None:
                choice = ("busy", f"being trained by {store.lease_holder(suite, row.key, self.name, seed)}")
            elif check_done and (done := store.complete(suite, row.key, self.name, key)) is not None:
                choice = ("done", str(done.path))
            elif self._twin_allowed(store, suite, row, key) and (
                twin := store.same_run(self.name, key, (suite, row.key))
            ):
                choice = ("twin", str(store.record_twin(config, twin).config["same_run_as"]))
            else:
                choice = ("train", str(self._run_dir(store, plan, row, config)))
        try:
            what, where = distributed.broadcast_object(choice)
            if what == "busy":
                say(suite, row.key, f"seed {seed}: {where}; skipped (run again to collect it)")
                return where
            if what in ("done", "twin"):
                why = "done already" if what == "done" else f"the same run as {where} (recorded, not retrained)"
                say(suite, row.key, f"seed {seed}: {why}, skipped")
                return store.complete(suite, row.key, self.name, key)
            run_dir = Path(where)
            say(suite, row.key, f"seed {seed}: {_starting(run_dir)} -> {run_dir}")
            torch.manual_seed(seed)  # a row's initial weights depend on its seed only, not on earlier rows
            assert row.model is not None
            model = apply_recipe(build_model(row.model.spec()), plan.recipe)
            if config["backbone_checkpoint"] is not None:
                load_backbone(model, Path(config["backbone_checkpoint"]["path"]), row=row.key)
            held = lease.held if lease is not None else None  # a suspended holder whose lease was taken stops
            metrics = train(model, *data, settings, run_dir, task, progress=request.hooks.step, still_held=held)
            if distributed.is_main():
                check_held(held, run_dir, int(metrics.get("steps") or 0))
                store.finish_run(run_dir, {**metrics, "pipeline": "ok"})
                _retain(run_dir, config["keep_checkpoints"])
            return RunRecord(suite, row.key, self.name, run_dir.name, run_dir, metrics, config)
        finally:
            if lease is not None:
                lease.release()

    def _twin_allowed(self, store: Any, suite: str, row: Row, key: str) -> bool:
        """Whether a row-seed may be recorded from another suite's identical run: not in smoke (which fills
        nothing and reruns), and not when this cell holds an unfinished run of its own to resume."""
        return not self.smoke and store.unfinished(suite, row.key, self.name, key) is None

    def _run_dir(self, store: Any, plan: _Plan, row: Row, config: dict[str, Any]) -> Path:
        """The unfinished run to resume (refused if its run-changing settings differ) or a new one."""
        suite = plan.suite.id
        run_dir = store.unfinished(suite, row.key, self.name, config["resume_key"])
        if run_dir is None:
            return store.begin_run(suite, row.key, self.name, config)
        old = (store.read_config(run_dir) or {}).get("settings") or {}
        asked = json.loads(json.dumps(config["settings"], default=str))  # as config.json holds it (tuples: lists)
        for name, now in asked.items():
            if name not in RESUME_FREE and name in old and old[name] != now:
                raise ValueError(
                    f"{run_dir}: this unfinished run of {suite}/{row.key} seed {config['seed']} was started with "
                    f"{name}={old[name]!r}, this command asks {name}={now!r}; rerun with the same options to resume "
                    "it, or remove that folder to start over"
                )
        return run_dir

    def _outcome(self, records: list[RunRecord], plans: list[_Plan], busy: tuple[str, ...]) -> Outcome:
        notes = tuple(f"skipped, {b} (run again to collect it)" for b in busy)
        if self.smoke:
            note = "smoke proves the pipeline only: reports show 'pipeline ok (smoke)', never these numbers."
            columns: tuple[str, ...] = ("seed", "train_loss", "steps", "img_per_s")
            return Outcome(records, columns=columns, notes=(note, *notes), busy=busy)
        headline = dict.fromkeys(k for p in plans for k, _ in p.task.headline)
        shown = tuple(k for k in headline if any(k in r.metrics for r in records))
        return Outcome(records, columns=("seed", *shown, "steps", "img_per_s"), notes=notes, busy=busy)


def run_floors(
    plan: _Plan, request: Request, profile: str, datasets: tuple[Any, Any], root: Path, images: int | None
) -> list[RunRecord]:
    """Compute the suite's selected floor rows (:mod:`cabench.floors`) on its datasets; one run each.

    A floor is a function of the data only (no seed): a complete floor run on the same data is reused. With
    ``images`` (smoke), it is computed again on about that many images per split (:func:`spread_images`).
    """
    suite, dataset = plan.suite, plan.dataset
    records = []
    say = request.hooks.row or (lambda *_: None)
    for row in suite.rows:
        if row.floor is None or (request.rows and not {row.key, row.name} & request.rows):
            continue
        config: dict[str, Any] = {
            "suite": suite.id,
            "row": row.key,
            "profile": profile,
            "task": suite.task,
            "floor": row.floor,
            "recipe": suite.recipe,
            "data": {dataset.data_key: str(root)},
            "data_fingerprint": dataset.fingerprint(root) if dataset.fingerprint else None,
            "dataset": dataset.name,
            "data_identity": _identity(dataset.name, root),
        }
        config["resume_key"] = resume_key({k: config[k] for k in ("floor", "recipe", "data", "data_fingerprint")})
        if images is not None:
            config["floor_images"] = images  # per split, at most (smoke)
        done = request.store.complete(suite.id, row.key, profile, config["resume_key"])
        if done is not None and images is None:
            say(suite.id, row.key, "floor: done already, skipped")
            records.append(done)
            continue
        say(suite.id, row.key, f"floor {row.floor}")
        data = datasets if images is None else tuple(spread_images(d, images) for d in datasets)
        metrics = FLOORS.get(row.floor)(*data, plan.task)
        records.append(request.store.write_run(suite.id, row.key, profile, config, {**metrics, "pipeline": "ok"}))
    return records


def _bad_image_policy() -> str:
    from cabench.data.images import BAD_IMAGE_POLICY  # PIL: not imported when the CLI only lists options

    return BAD_IMAGE_POLICY


_IDENTITIES: dict[tuple[str, str], dict[str, Any]] = {}


def _identity(dataset: str, root: Path) -> dict[str, Any]:
    """The evaluation split's identity (cabench.data.identity), taken once per dataset root and process."""
    key = (dataset, str(Path(root).resolve()))
    if key not in _IDENTITIES:
        _IDENTITIES[key] = data_identity(dataset, root).as_dict()
    return _IDENTITIES[key]


KEEP_CHOICES = ("last", "best", "none")


def _retain(run_dir: Path, keep: str) -> None:
    """Apply --keep-checkpoints to a finished run (a smoke run's ~30 MB checkpoint is not worth keeping)."""
    from cabench.engine.loop import CHECKPOINT_NAME

    ckpt = run_dir / CHECKPOINT_NAME
    if keep == "last" or not ckpt.exists():
        return
    if keep == "best":
        import torch

        from cabench.checkpoint import load_checkpoint

        state = load_checkpoint(ckpt)
        torch.save({"model": state["model"]}, run_dir / "model.pt")
    ckpt.unlink()


def _check_backbone_rows(backbones: dict[str, Path], request: Request) -> None:
    """Every ``ROW=PATH`` of --backbone-checkpoint names a selected row (a typo must not train from scratch)."""
    rows = [r for suite in request.suites for r in request.selected(suite)]
    known = {name for r in rows for name in (r.key, r.name)}
    for key in backbones:
        if key != "*" and key not in known:
            choices = ", ".join(dict.fromkeys(r.key for r in rows)) or "(none selected)"
            raise ValueError(f"--backbone-checkpoint {key}=...: no such row among the selected rows; rows: {choices}")


def _backbone_for(row: Row, backbones: dict[str, Path]) -> Path | None:
    return backbones.get(row.key) or backbones.get(row.name) or backbones.get("*")


def _check_tensorboard(options: dict[str, Any]) -> None:
    if options["tensorboard"]:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")


register_profile(
    TrainProfile("smoke", "train a few steps and evaluate on generated data, real loaders and evaluators", smoke=True)
)
register_profile(TrainProfile("paper", "the suite's recipe on real data (--data); resumable", smoke=False))


def _starting(run_dir: Path) -> str:
    """``training``, or ``resuming at step N`` for a run folder whose checkpoint an interruption left (the step from
    its log), ``resuming from its checkpoint`` for one that stopped otherwise."""
    from cabench.engine import CHECKPOINT_NAME, LOG_NAME

    if not (run_dir / CHECKPOINT_NAME).is_file():
        return "training"
    try:
        lines = (run_dir / LOG_NAME).read_text().splitlines()
        steps = [json.loads(line).get("step") for line in lines if '"interrupted"' in line]
    except (OSError, ValueError):
        steps = []
    return f"resuming at step {steps[-1]}" if steps and isinstance(steps[-1], int) else "resuming from its checkpoint"
