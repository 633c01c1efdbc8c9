"""Training recipes: plain data in ``suites/recipes/<id>.yaml``, validated here.

A recipe is what a paper says about training (optimizer, schedule, batch,
augmentation), with the source it was read from and notes on every reading
or deviation. Run knobs (steps, workers, AMP, ...) are not part of a recipe;
they live in :class:`cabench.engine.TrainSettings`.

``batch_size`` is the **global** batch: the engine divides it over processes
and keeps the learning rate, so a recipe means the same thing on 1 or 8 GPUs.
Command-line overrides go through :meth:`Recipe.with_overrides`, which returns
the overrides it applied so a run records them next to the recipe id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cabench.data.base import DATASETS
from cabench.locate import recipe_files
from cabench.recipe_protocols import DetectionProtocol, SegmentationProtocol
from cabench.suite import SUITES_DIR, Suite, check_id
from cabench.tasks.base import TASKS
from cabench.yamlio import first_validation_error, read_yaml_mapping

__all__ = ["RECIPES_DIR", "Recipe", "RecipeError", "known_recipes", "load_recipe", "suite_dataset"]

RECIPES_DIR = SUITES_DIR / "recipes"


# Bounds that keep a recipe runnable on one machine (checked before any allocation).
MAX_BATCH = 1 << 16
MIN_SIDE, MAX_SIDE = 32, 4096


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line naming the file and field."""


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    source: str
    task: str  # a registered task (cabench.tasks.base.TASKS)
    dataset: str = "imagenet"  # a registered dataset (cabench.data.base.DATASETS) of that task

    # Optimizer.
    optimizer: Literal["sgd", "rmsprop"]
    lr: float = Field(gt=0, le=100)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    weight_decay_norm: bool = True  # False: no weight decay on normalization-layer parameters
    nesterov: bool = False
    rmsprop_decay: float = Field(default=0.9, gt=0, lt=1)  # RMSProp's square-average decay (torch: alpha)
    optimizer_eps: float | None = Field(default=None, gt=0, le=1)  # None: the optimizer's default

    # Batch and schedule. batch_size is GLOBAL (all processes together). A run lasts either
    # `epochs` passes over the training set or `iterations` global steps (exactly one is set).
    batch_size: int = Field(gt=0, le=MAX_BATCH)
    epochs: int | None = Field(default=None, gt=0, le=100_000)
    iterations: int | None = Field(default=None, gt=0, le=10**9)
    schedule: Literal["cosine", "step", "multistep", "poly"]
    warmup_epochs: float = Field(default=0.0, ge=0, le=100_000)
    warmup_iterations: int = Field(default=0, ge=0, le=10**9)
    step_gamma: float | None = Field(default=None, gt=0, le=1)  # schedule step/multistep: lr *= step_gamma ...
    step_epochs: float | None = Field(default=None, gt=0, le=100_000)  # ... step: every step_epochs (fractional)
    # ... multistep: at these global steps
    milestones: list[Annotated[int, Field(gt=0, le=10**9)]] = Field(default_factory=list, max_length=1000)
    poly_power: float = Field(default=0.9, gt=0, le=100)  # schedule poly: lr * (1 - t) ** poly_power
    sync_bn: bool = False  # synchronized BatchNorm across processes (CUDA); `--sync-bn` also turns it on

    # Regularization.
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    dropout: float | None = Field(default=None, ge=0, lt=1)  # None: keep the model's own
    bn_momentum: float | None = Field(default=None, gt=0, lt=1)  # PyTorch convention; None: keep the model's
    ema: bool = False
    ema_decay: float = Field(default=0.9999, gt=0, lt=1)

    # Augmentation (applied by the data layer). Classification: train_size, eval_resize, random_resized_crop
    # (area range crop_scale), hflip, autoaugment (ImageNet policy), random_erasing (its probability), through
    # torchvision transforms.v2 (cabench.data.imagenet.train_transform). Detection: train_size is the detector's
    # fixed input; hflip. Segmentation: random scale in scale_range, crop_size crops, hflip, eval_size padding.
    train_size: int = Field(default=224, ge=MIN_SIDE, le=MAX_SIDE)
    eval_resize: int = Field(default=256, ge=MIN_SIDE, le=MAX_SIDE)
    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True
    autoaugment: bool = False
    mixup: bool = False  # not implemented: refused when true
    random_erasing: float = Field(default=0.0, ge=0, le=1)
    crop_size: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)
    scale_range: tuple[Annotated[float, Field(gt=0, le=16)], Annotated[float, Field(gt=0, le=16)]] | None = None
    eval_size: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE)

    # Task protocols (cabench.recipe_protocols): required by detection recipes; segmentation defaults to a
    # single whole-image pass with align_corners False and no flip.
    detection: DetectionProtocol | None = None
    segmentation: SegmentationProtocol | None = None

    notes: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value, "recipe id")

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.scale_range is not None and self.scale_range[0] > self.scale_range[1]:
            raise ValueError("scale_range must be ordered (low, high)")
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError("give exactly one of epochs and iterations")
        if self.schedule == "multistep" and (self.step_gamma is None or not self.milestones):
            raise ValueError("schedule 'multistep' needs step_gamma and milestones")
        if self.milestones and (self.schedule != "multistep" or self.milestones != sorted(self.milestones)):
            raise ValueError("milestones must be increasing and only apply to schedule 'multistep'")
        self._known_task_and_dataset()
        if self.schedule == "step" and (self.step_gamma is None or self.step_epochs is None):
            raise ValueError("schedule 'step' needs step_gamma and step_epochs")
        if self.schedule != "step" and self.step_epochs is not None:
            raise ValueError(f"step_epochs only applies to schedule 'step', not {self.schedule!r}")
        if self.schedule not in ("step", "multistep") and self.step_gamma is not None:
            raise ValueError(f"step_gamma only applies to schedules 'step' and 'multistep', not {self.schedule!r}")
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError("nesterov only applies to optimizer 'sgd'")
        self._check_applies()
        return self

    def _known_task_and_dataset(self) -> None:
        if self.task not in TASKS:
            raise ValueError(TASKS.unknown(self.task))
        if self.dataset not in DATASETS:
            raise ValueError(DATASETS.unknown(self.dataset))
        dataset = DATASETS.get(self.dataset)
        if dataset.task != self.task:
            raise ValueError(f"dataset {self.dataset!r} is for task {dataset.task!r}, not {self.task!r}")
        missing = [name for name in dataset.requires if getattr(self, name) is None]
        if missing:
            raise ValueError(f"dataset {self.dataset!r} needs {' and '.join(missing)} in the recipe")

    def _check_applies(self) -> None:
        """Refuse a field given where nothing would read it (every field is consumed or refused)."""
        given = self.model_fields_set
        if self.mixup:
            raise ValueError("mixup is not implemented by cabench; set mixup: false")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError("crop_scale must be [low, high] with 0 < low <= high <= 1")

        for task, info in TASKS.items():  # each task declares the recipe fields only it reads
            stray = sorted(
                n for n in info.recipe_fields & given if task != self.task and getattr(self, n) != _DEFAULTS[n]
            )
            if stray:
                raise ValueError(f"{', '.join(stray)} only apply to {task} recipes, not {self.task}")
        for name in TASKS.get(self.task).requires:
            if getattr(self, name) is None:
                raise ValueError(f"a recipe for {TASKS.get(self.task).title} needs a {name} protocol ({name}: ...)")
        conditional = (
            ("rmsprop_decay", self.optimizer == "rmsprop", "optimizer 'rmsprop'"),
            ("optimizer_eps", self.optimizer == "rmsprop", "optimizer 'rmsprop'"),
            ("poly_power", self.schedule == "poly", "schedule 'poly'"),
            ("ema_decay", self.ema, "ema: true"),
            ("crop_scale", self.random_resized_crop, "random_resized_crop: true"),
        )
        for name, applies, when in conditional:
            if name in given and not applies and getattr(self, name) != _DEFAULTS[name]:
                raise ValueError(f"{name} only applies with {when}")
        if self.warmup_epochs and self.warmup_iterations:
            raise ValueError("give warmup_epochs or warmup_iterations, not both")

    def with_overrides(self, **overrides: Any) -> tuple[Recipe, dict[str, Any]]:
        """Apply command-line overrides; ``None`` values mean "not given" and are dropped.

        Returns the validated new recipe and the overrides that changed something,
        to be recorded in the run's config. Raises :class:`RecipeError` (one line).
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(type(self).model_fields) - {"id", "source", "notes"})
        if unknown or {"id", "source", "notes"} & set(given):
            bad = unknown or sorted({"id", "source", "notes"} & set(given))
            raise RecipeError(f"recipe {self.id}: cannot override {', '.join(bad)}")
        data = self.model_dump()
        applied = {k: v for k, v in given.items() if data.get(k) != v}
        data.update(applied)
        try:
            recipe = Recipe.model_validate(data)
        except ValidationError as e:
            raise RecipeError(f"recipe {self.id} with overrides {applied}: {_first_error(e)}") from None
        return recipe, applied


_DEFAULTS: dict[str, Any] = {
    name: field.get_default(call_default_factory=True) for name, field in Recipe.model_fields.items()
}


def _first_error(e: ValidationError) -> str:
    loc, msg = first_validation_error(e)
    field = ".".join(str(p) for p in loc) or "(recipe)"
    return f"{field}: {msg}"


def known_recipes(directory: Path | None = None) -> dict[str, Path]:
    """Recipe id (file stem) -> path, for every ``*.yaml`` in ``directory`` (default: ``recipes/`` of every folder
    on the suite search path, see :mod:`cabench.locate`)."""
    if directory is None:
        return recipe_files()
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def load_recipe(name_or_path: str | Path, directory: Path | None = None) -> Recipe:
    """Load a recipe by id (``suites/recipes/<id>.yaml``) or by path.

    Raises :class:`RecipeError` (a ``ValueError``) with one line: the file, the field, the problem.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        known = known_recipes(directory)
        if str(name_or_path) not in known:
            raise RecipeError(
                f"unknown recipe {str(name_or_path)!r}; expected a file or one of {', '.join(known) or '(none)'}"
            )
        path = known[str(name_or_path)]
    where = str(path)
    data = read_yaml_mapping(path, "recipe", RecipeError)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"{where}: {_first_error(e)}") from None
    if recipe.id != path.stem:
        raise RecipeError(f"{where}: id: {recipe.id!r} differs from the file name {path.stem!r}")
    return recipe


def suite_dataset(suite: Suite) -> str | None:
    """The dataset of the suite's recipe (for runs whose config does not name theirs), if it loads."""
    try:
        return load_recipe(suite.recipe).dataset if suite.recipe else None
    except (ValueError, OSError):
        return None
