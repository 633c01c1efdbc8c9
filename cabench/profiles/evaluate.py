"""The ``eval`` profile (``cabench eval``): the metrics of a given checkpoint, recorded as a suite cell.

With a suite, its recipe names the dataset (COCO val, VOC07 test, VOC12 val, Cityscapes val, ImageNet
val) and its task the metrics; a bare architecture is evaluated with its task's default recipe (a
classifier: ImageNet val). The data root must be given (``--data`` or its configured default): an
evaluation never falls back to generated data. The report footnotes the cell with the checkpoint's
sha256.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cabench.data.base import DATASETS, data_identity
from cabench.data.roots import data_root
from cabench.models.blocks import attention_provenance
from cabench.models.registry import ModelSpec, arch_info, build_model
from cabench.models.weights import load_weights
from cabench.profiles.base import Outcome, Profile, Request, register_profile
from cabench.recipe import load_recipe
from cabench.tasks.base import TASKS

if TYPE_CHECKING:
    from cabench.store import RunRecord, Store
    from cabench.suite import Row, Suite

__all__ = ["EvalProfile", "evaluate_checkpoint"]


class EvalProfile(Profile):
    name = "eval"
    description = "`cabench eval`: the metrics of a given checkpoint, footnoted with its sha256"
    fills = frozenset({"accuracy"})

    def run(self, request: Request) -> Outcome:
        raise ValueError("the eval profile runs through `cabench eval TARGET --checkpoint PATH`")

    def replicate(self, run: RunRecord) -> Any:
        return "ckpt:" + str((run.config.get("checkpoint") or {}).get("sha256", run.run_id))[:12]

    def footnote(self, run: RunRecord) -> str | None:
        ckpt = run.config.get("checkpoint", {})
        return f"evaluated from checkpoint {ckpt.get('path', '?')} (sha256 {str(ckpt.get('sha256', '?'))[:12]}…)"


def evaluate_checkpoint(
    spec: ModelSpec,
    checkpoint: Path,
    data: dict[str, Path],
    workers: int = 0,
    store: Store | None = None,
    suite: Suite | None = None,
    row: Row | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[dict[str, Any], RunRecord | None, list[tuple[str, str]]]:
    """A checkpoint's metrics on the evaluation split of its dataset, the run record, and the metrics to show.

    ``progress(images_done, images_total, what)`` follows the evaluation batch by batch.

    Raises ``ValueError`` (one line) for a checkpoint that does not fit, a dataset that is not there, or a
    bare architecture whose task has no default recipe.
    """
    import torch

    from cabench import outcomes
    from cabench.engine import TrainSettings
    from cabench.engine.sampling import eval_progress

    if suite is not None and suite.recipe is not None:
        recipe, task = load_recipe(suite.recipe), TASKS.get(suite.task)
    else:
        task = TASKS.get(arch_info(spec.arch).task)
        if task.default_recipe is None:
            raise ValueError(
                f"{spec.arch} is a {task.title} model: evaluate it through its suite (e.g. cabench eval table6 "
                "--row ROW), whose recipe names the dataset"
            )
        recipe = load_recipe(task.default_recipe)
    dataset = DATASETS.get(recipe.dataset)
    root = data_root(dataset, data, None, "evaluation", validate=dataset.eval_only is None)
    val_ds = dataset.eval_only(root, recipe) if dataset.eval_only is not None else None
    identity = data_identity(recipe.dataset, root)  # which split the number is on: the report decides what it fills
    from cabench.pipeline import apply_recipe, configure_task

    model = apply_recipe(build_model(spec), recipe)
    sha = load_weights(model, checkpoint)
    if val_ds is None:
        _, val_ds = dataset.build(root, recipe)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = TrainSettings(batch_size=1, eval_batch_size=batch_size or task.eval_batch, workers=workers)
    engine_task = configure_task(task.make(tuple(suite.columns) if suite else ()), recipe)
    report = None if progress is None else (lambda done, total: progress(done, total, "images"))
    with eval_progress(report):
        metrics, per_image = outcomes.split(engine_task.evaluate(model.to(device), val_ds, settings, device))
    config = {
        "profile": "eval",
        "task": task.name,
        "model": spec.as_dict(),
        "model_key": spec.key(),
        "attention_block": attention_provenance(spec.attention),
        "checkpoint": {"path": str(checkpoint), "sha256": sha},
        "data": {dataset.data_key: str(root)},
        "dataset": recipe.dataset,
        "data_identity": identity.as_dict(),
        "recipe": None,
    }
    record = None
    if store is not None:
        suite_id, row_key = (suite.id, row.key) if suite and row else ("_eval", spec.key())
        files = {outcomes.FILE_NAME: per_image.to_bytes()} if per_image is not None else {}
        config = config | {"suite": suite_id, "row": row_key}
        record = store.write_run(suite_id, row_key, "eval", config, metrics, files=files)
    return metrics, record, list(task.headline)


register_profile(EvalProfile())
