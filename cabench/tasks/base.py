"""What a task declares to the rest of cabench, and the registry of tasks.

A task module (``cabench/tasks/<name>.py``, or a plugin) registers a :class:`TaskInfo`: its metric
columns with labels and units, the metrics a run summary shows first, how large its batches are when
nothing else says so, whether it takes a backbone checkpoint, the per-image outcome kinds its evaluators
write with the statistic that recomputes each metric from them (:mod:`cabench.outcomes`), the floor its
suites' floor rows compute (:mod:`cabench.floors`), and how to build the engine task (loss and evaluation,
:class:`cabench.engine.Task`) for a suite. Nothing outside the task compares against
its name or its metric names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cabench.columns import ColumnInfo, register_column
from cabench.registry import Registry, import_object

__all__ = ["TASKS", "TaskInfo", "loss_on_probe", "register_task", "statistic_for"]

# A hook is a callable, or the "pkg.mod:obj" path of one, imported on first use: a task's declaration names its
# implementation (the built-in tasks: cabench.tasks._impl) without importing torch, so listing suites stays fast.
Hook = Callable[..., Any] | str


@dataclass(frozen=True)
class TaskInfo:
    name: str  # a suite's and a recipe's `task:`
    title: str
    metrics: tuple[ColumnInfo, ...]  # the report columns its evaluation fills
    headline: tuple[tuple[str, str], ...]  # (metric, label) a run summary and `cabench eval` show
    smoke_batch: int  # global training batch of a smoke run
    eval_batch: int  # evaluation batch per process (`cabench eval`)
    takes_backbone: bool  # whether rows start from an ImageNet backbone checkpoint (--backbone-checkpoint)
    build: Hook  # the suite's column keys -> the engine task
    default_recipe: str | None = None  # what `cabench eval ARCH` evaluates a bare architecture with
    # per-image outcome kind its evaluators write -> {metric: statistic} (cabench.outcomes.Statistic)
    outcomes: Mapping[str, Mapping[str, Callable[..., float]]] = field(default_factory=dict)
    floors: tuple[str, ...] = ()  # registered floors (cabench.floors) its suites' floor rows may name
    recipe_fields: frozenset[str] = frozenset()  # recipe fields only this task reads (refused for other tasks)
    requires: tuple[str, ...] = ()  # recipe fields this task cannot run without
    # What a recipe decides for this task (read by cabench.pipeline; None: nothing of the kind):
    # (model, recipe, image size or None) -> None: set what the recipe decides on a freshly built model
    apply_recipe: Hook | None = None
    # recipe -> the protocol the engine task evaluates with (cabench.pipeline.configure_task)
    protocol: Hook | None = None
    # recipe -> (train transform, evaluation transform), as the datasets' builders make them
    transforms: Hook | None = None
    # (model, settings) -> what the loss is, read from the built objects (the run's config.json)
    describe_loss: Hook | None = None

    @property
    def headline_metric(self) -> str:
        """The metric a floor fills and a one-number summary shows: the first of :attr:`headline`."""
        return self.headline[0][0]

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The hook ``name`` (``build``, ``apply_recipe``, ``protocol``, ``transforms``, ``describe_loss``) as a
        callable, its declared path imported now; None when the task declares none."""
        value = getattr(self, name)
        return import_object(value) if isinstance(value, str) else value

    def make(self, columns: tuple[str, ...] = ()) -> Any:
        """The engine task (loss, evaluation) for a suite with these columns."""
        build = self.hook("build")
        assert build is not None
        return build(tuple(columns))


TASKS = Registry[TaskInfo]("task", builtin_modules=("cabench.tasks.*",))


def register_task(info: TaskInfo) -> TaskInfo:
    """Register a task and its metric columns."""
    for column in info.metrics:
        register_column(column)
    TASKS.register(info.name, info)
    return info


def loss_on_probe(engine_task: Any, logits: Any, batch: Any, settings: Any) -> float:
    """An engine task's loss when its network outputs ``logits`` on ``batch`` (shows what the loss computes)."""
    import torch

    return round(float(engine_task.loss(lambda _: logits, batch, torch.device("cpu"), settings)), 6)


def statistic_for(kind: str, metric: str) -> Callable[..., float] | None:
    """How to recompute ``metric`` from per-image outcomes of ``kind`` on a resample, as the task that writes that
    kind declares it (:attr:`TaskInfo.outcomes`); None where no registered task declares one."""
    for _, task in TASKS.items():
        if kind in task.outcomes:
            return task.outcomes[kind].get(metric)
    return None
