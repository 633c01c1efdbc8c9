"""Row-level jobs beyond counting: train (smoke/paper), latency, and evaluation from a checkpoint.

* ``smoke`` trains each row a few steps on generated ImageFolder data (or the
  fixture given with ``--data``) and evaluates it, through the same engine as
  ``paper``. Its metrics are recorded, but the report only ever shows
  "pipeline ok (smoke)" for it.
* ``paper`` trains each row with its suite's recipe on real data, resuming an
  unfinished run of the same configuration and skipping rows already done.
* ``latency`` times every row of a suite at batch 1, eval mode, rounds
  interleaved, and records milliseconds and the ratio to the suite's baseline.
* :func:`evaluate_checkpoint` fills a cell from a checkpoint (``eval`` profile).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cabench.models.registry import ModelSpec, arch_info, build_model
from cabench.store import RunRecord, Store
from cabench.suite import Row, Suite

if TYPE_CHECKING:
    from cabench.data.sources import DataSource
    from cabench.tasks.engine import Task

__all__ = [
    "SMOKE",
    "TrainOptions",
    "evaluate_checkpoint",
    "load_backbone",
    "load_weights",
    "make_task",
    "run_latency",
    "run_training",
]

EventFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SmokeSettings:
    """How small the smoke profile runs: seconds per row on a CPU."""

    steps: int = 3
    batch_size: int = 8  # classification; dense tasks use dense_batch_size
    dense_batch_size: int = 4
    image_size: int = 64


SMOKE = SmokeSettings()


@dataclass(frozen=True)
class TrainOptions:
    """What the user asked for on the command line."""

    data: dict[str, Path]
    overrides: dict[str, Any]  # recipe overrides: epochs, iterations, batch_size, lr, ...
    knobs: dict[str, Any]  # run knobs: workers, amp, channels_last, compile, sync_bn, ckpt_every_steps, seed
    fixtures_dir: Path = Path("runs/_fixtures")
    # Backbone initialisation for detection/segmentation rows: row key (or "*" for every row) -> checkpoint.
    backbones: dict[str, Path] = field(default_factory=dict)


def _selected(suite: Suite, rows: set[str] | None) -> list[Row]:
    return [r for r in suite.rows if r.model is not None and not r.cited and (not rows or {r.key, r.name} & rows)]


def _data_root(source: DataSource, profile: str, options: TrainOptions) -> Path:
    """The validated root of ``source``: given, configured, or (not for ``paper``) the generated fixture."""
    from cabench.data.imagenet import resolve_data_root
    from cabench.data.sources import write_fixture

    root = resolve_data_root(source.data_key, options.data)
    if root is None:
        if profile in ("paper", "eval"):
            key, who = source.data_key, "the paper profile" if profile == "paper" else "evaluation"
            raise ValueError(
                f"{who} needs {source.title}: pass --data {key}=PATH "
                f"(or set CABENCH_DATA_{key.upper()}, or [data] {key} in the config file)"
            )
        root = options.fixtures_dir / source.fixture
        if not root.exists():
            write_fixture(source.fixture, root)
    source.validate(root)
    return root


def _resume_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_task(suite: Suite) -> Task:
    """The engine task for a suite: its loss and its evaluator."""
    if suite.task == "classify":
        from cabench.tasks.classification import ClassificationTask

        return ClassificationTask()
    if suite.task == "detect":
        from cabench.tasks.detection import DetectionTask

        return DetectionTask(headline=tuple(c for c in ("ap", "map") if c in suite.columns) or ("ap",))
    from cabench.tasks.segmentation import SegmentationTask

    return SegmentationTask()


def _backbone_for(row: Row, options: TrainOptions) -> Path | None:
    return options.backbones.get(row.key) or options.backbones.get(row.name) or options.backbones.get("*")


def run_training(
    suites: Sequence[Suite],
    store: Store,
    profile: str,
    options: TrainOptions,
    rows: set[str] | None = None,
    on_row: Callable[[Suite, Row, str], None] | None = None,
    on_step: EventFn | None = None,
) -> list[RunRecord]:
    """Train and evaluate every selected row of ``suites`` with its recipe; return the completed runs.

    Everything a user can get wrong (recipe, dataset, backbone checkpoints) is checked for every suite
    and row before the first step of training.
    """
    import torch

    from cabench.data.sources import DATA_SOURCES
    from cabench.recipe import load_recipe
    from cabench.tasks import distributed
    from cabench.tasks.engine import TrainSettings, train

    smoke = profile == "smoke"
    if options.knobs.get("tensorboard"):
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")
    plans = []
    for suite in suites:
        if suite.recipe is None:
            raise ValueError(f"{suite.path or suite.id}: recipe: the suite names no training recipe")
        recipe, applied = load_recipe(suite.recipe).with_overrides(**options.overrides)
        source = DATA_SOURCES[recipe.dataset]
        if recipe.task != suite.task or source.task != suite.task:
            raise ValueError(
                f"{suite.path or suite.id}: recipe {recipe.id} is for {recipe.task}, the suite is {suite.task}"
            )
        selected = _selected(suite, rows)
        if suite.task == "classify" and any(_backbone_for(r, options) for r in selected):
            raise ValueError("--backbone-checkpoint applies to detection and segmentation rows only")
        backbones = {}
        for row in selected:
            path = _backbone_for(row, options)
            if path is not None:
                assert row.model is not None
                backbones[row.key] = (path, load_backbone(build_model(row.model.spec()), path, row=row.key))
        plans.append((suite, recipe, applied, source, selected, backbones))
    roots = {name: _data_root(DATA_SOURCES[name], profile, options) for name in {p[1].dataset for p in plans}}
    distributed.init_distributed()  # under torchrun: every rank joins before choosing run directories
    records: list[RunRecord] = []
    for suite, recipe, applied, source, selected, backbones in plans:
        root = roots[recipe.dataset]
        train_ds, val_ds = source.build(root, recipe, smoke)
        task = make_task(suite)
        for row in selected:
            assert row.model is not None
            spec = row.model.spec()
            knobs = dict(options.knobs)
            if smoke:
                batch = SMOKE.batch_size if suite.task == "classify" else SMOKE.dense_batch_size
                knobs.update(max_steps=SMOKE.steps, log_every=1, batch_size=batch, workers=0)
            settings = TrainSettings.from_recipe(recipe, **knobs)
            backbone = None
            if row.key in backbones:
                path, sha = backbones[row.key]
                backbone = {"path": str(path), "sha256": sha}
            config = {
                "suite": suite.id,
                "row": row.key,
                "profile": profile,
                "task": suite.task,
                "model": spec.as_dict(),
                "model_key": spec.key(),
                "recipe": recipe.id,
                "overrides": applied,
                "data": {source.data_key: str(root)},
                "dataset": recipe.dataset,
                "image_size": SMOKE.image_size if smoke and suite.task == "classify" else recipe.train_size,
                "backbone_checkpoint": backbone,
                "seed": settings.seed,
                "settings": settings.resolved() | {"config": None},
            }
            key = _resume_key(
                {
                    k: config[k]
                    for k in ("model_key", "recipe", "overrides", "data", "image_size", "backbone_checkpoint")
                }
            )
            config["resume_key"] = key
            done = store.latest(suite.id, row.key, profile)
            if done is not None and done.config.get("resume_key") == key and not smoke:
                if on_row:
                    on_row(suite, row, "done already, skipped")
                records.append(done)
                continue
            run_dir = None
            if distributed.is_main():
                run_dir = store.unfinished(suite.id, row.key, profile, key) or store.begin_run(
                    suite.id, row.key, profile, config
                )
            run_dir = distributed.broadcast_path(run_dir)
            if on_row:
                on_row(suite, row, f"training -> {run_dir}")
            torch.manual_seed(settings.seed)  # a row's initial weights depend on its seed only, not on earlier rows
            model = build_model(spec)
            if backbone is not None:
                load_backbone(model, Path(backbone["path"]), row=row.key)
            metrics = train(model, train_ds, val_ds, settings, run_dir, task, progress=on_step)
            if distributed.is_main():
                store.finish_run(run_dir, {**metrics, "pipeline": "ok"})
            records.append(RunRecord(suite.id, row.key, profile, run_dir.name, run_dir, metrics, config))
    return records


def run_latency(
    suites: Sequence[Suite],
    store: Store,
    rows: set[str] | None = None,
    threads: int = 1,
    rounds: int = 40,
    warmup: int = 10,
) -> list[RunRecord]:
    """Time every selected row of each suite (interleaved) and record ms and the ratio to the baseline row."""
    from cabench.measure.latency import measure_latency

    records = []
    for suite in suites:
        if "latency" not in suite.columns:
            raise ValueError(f"{suite.id}: the suite has no latency column")
        selected = _selected(suite, rows)
        baseline = next((r for r in suite.rows if r.key == suite.baseline), None)
        if baseline is not None and baseline not in selected:
            selected.insert(0, baseline)  # the ratio needs the baseline measured in the same run
        models = {r.key: build_model(r.model.spec()).eval() for r in selected if r.model is not None}
        size = arch_info(selected[0].model.spec().arch).input_size if selected and selected[0].model else (224, 224)
        results = measure_latency(models, input_size=size, threads=threads, warmup=warmup, rounds=rounds)
        base_ms = results[baseline.key].median_ms if baseline is not None else None
        for row in selected:
            assert row.model is not None
            r = results[row.key]
            metrics = {"latency": r.median_ms, **{f"latency_{k}": v for k, v in r.as_dict().items()}}
            if base_ms:
                metrics["latency_ratio"] = r.median_ms / base_ms
            config = {
                "suite": suite.id,
                "row": row.key,
                "profile": "latency",
                "model": row.model.spec().as_dict(),
                "input_size": list(size),
                "batch_size": 1,
                "threads": threads,
                "rounds": rounds,
                "warmup": warmup,
                "baseline": suite.baseline,
                "interleaved_with": sorted(models),
            }
            records.append(store.write_run(suite.id, row.key, "latency", config, metrics))
    return records


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_state(path: Path) -> dict[str, Any]:
    """The state dict inside a cabench checkpoint or a plain / DataParallel / authors' state-dict file."""
    import torch

    from cabench.models.mobilenetv2 import unwrap_state_dict

    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    state = blob.get("model", blob) if isinstance(blob, dict) else blob
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state dict inside")
    return unwrap_state_dict(state)


def _authors_name(key: str, own: dict[str, Any]) -> str:
    """The authors' CA names ``conv2``/``conv3`` are cabench's ``conv_h``/``conv_w``."""
    if key in own:
        return key
    renamed = key.replace(".conv2.", ".conv_h.").replace(".conv3.", ".conv_w.")
    return renamed if renamed in own else key


def load_weights(model: Any, path: Path) -> str:
    """Load a cabench checkpoint or a plain/authors' state dict into ``model``; return the file's sha256.

    Raises ``ValueError`` with one line naming the first key that does not fit.
    """
    state = _read_state(path)
    own = model.state_dict()
    renamed = {_authors_name(k, own): k for k in state}
    for key, tensor in own.items():
        source = renamed.get(key)
        if source is None:
            raise ValueError(f"{path}: missing key {key!r} for this model")
        if tuple(state[source].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{path}: {source}: shape {tuple(state[source].shape)} does not fit the model's {tuple(tensor.shape)}"
            )
    extra = [source for key, source in renamed.items() if key not in own]
    if extra:
        raise ValueError(f"{path}: unexpected key {extra[0]!r} for this model")
    model.load_state_dict({key: state[source] for key, source in renamed.items()})
    return sha256_of(path)


# Classifier parameters that a dense model replaces with its own head.
_CLASSIFIER_PREFIXES = ("classifier.", "fc.", "head.")


def load_backbone(model: Any, path: Path, row: str | None = None) -> str:
    """Initialise a detector's or segmenter's backbone from a classification checkpoint; return its sha256.

    Every non-classifier tensor of the checkpoint (a cabench checkpoint or the authors' released
    state dict) must find the same name in the model, directly or under ``backbone.`` (the SSD's
    feature extractor), with the same shape; the classifier head is dropped. Raises ``ValueError``
    with one line naming the first tensor that does not fit (another architecture, width or
    attention block than the row's).
    """
    state = _read_state(path)
    own = model.state_dict()
    where = f"{path}" + (f" (row {row})" if row else "")
    loaded: dict[str, Any] = {}
    for key, tensor in state.items():
        if key.startswith(_CLASSIFIER_PREFIXES):
            continue
        target = next(
            (t for t in (_authors_name(key, own), _authors_name(f"backbone.{key}", own)) if t in own),
            None,
        )
        if target is None:
            raise ValueError(f"{where}: {key!r} has no counterpart in this model's backbone")
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise ValueError(
                f"{where}: {key}: shape {tuple(tensor.shape)} does not fit the backbone's {tuple(own[target].shape)}"
            )
        loaded[target] = tensor
    if not loaded:
        raise ValueError(f"{where}: no backbone tensors inside")
    model.load_state_dict(loaded, strict=False)
    return sha256_of(path)


def evaluate_checkpoint(
    spec: ModelSpec,
    checkpoint: Path,
    options: TrainOptions,
    store: Store | None = None,
    suite: Suite | None = None,
    row: Row | None = None,
    batch_size: int | None = None,
) -> tuple[dict[str, Any], RunRecord | None]:
    """A checkpoint's metrics on the evaluation split of its dataset; recorded as an ``eval`` run of a suite cell.

    With a suite, its recipe names the dataset (COCO val, VOC07 test, VOC12 val, Cityscapes val, ImageNet val)
    and its task the metrics; a bare architecture must be a classifier (ImageNet val, top-1/top-5). The data
    root must be given (``--data`` or its configured default): an evaluation never falls back to generated data.
    """
    import torch

    from cabench.data.sources import DATA_SOURCES
    from cabench.recipe import load_recipe
    from cabench.tasks.classification import ClassificationTask
    from cabench.tasks.engine import TrainSettings

    if suite is not None and suite.recipe is not None:
        recipe = load_recipe(suite.recipe)
        task: Task = make_task(suite)
    else:
        kind = arch_info(spec.arch).task
        if kind != "classify":
            raise ValueError(
                f"{spec.arch} is a {kind} model: evaluate it through its suite (e.g. cabench eval table6 --row ROW), "
                "whose recipe names the dataset"
            )
        recipe, task = load_recipe("imagenet-mbv2-paper"), ClassificationTask()
    source = DATA_SOURCES[recipe.dataset]
    root = _data_root(source, "eval", options)
    model = build_model(spec)
    sha = load_weights(model, checkpoint)
    _, val_ds = source.build(root, recipe, False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    per_task = {"classify": 100, "detect": 32, "segment": 8}
    settings = TrainSettings(
        batch_size=1, eval_batch_size=batch_size or per_task[task.name], workers=options.knobs.get("workers", 0)
    )
    metrics = task.evaluate(model.to(device), val_ds, settings, device)
    config = {
        "profile": "eval",
        "task": task.name,
        "model": spec.as_dict(),
        "model_key": spec.key(),
        "checkpoint": {"path": str(checkpoint), "sha256": sha},
        "data": {source.data_key: str(root)},
        "dataset": recipe.dataset,
        "recipe": None,
    }
    record = None
    if store is not None:
        suite_id, row_key = (suite.id, row.key) if suite and row else ("_eval", spec.key())
        record = store.write_run(suite_id, row_key, "eval", config | {"suite": suite_id, "row": row_key}, metrics)
    return metrics, record
