"""Training settings: a recipe's training fields plus run knobs, and the interruption the loop raises."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cabench.engine.distributed import get_world_size

__all__ = ["EvalSetup", "TrainSettings", "TrainingDiverged", "TrainingInterrupted"]

_RECIPE_FIELDS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "weight_decay_norm",
    "nesterov",
    "rmsprop_decay",
    "optimizer_eps",
    "batch_size",
    "epochs",
    "iterations",
    "schedule",
    "warmup_epochs",
    "warmup_iterations",
    "step_gamma",
    "step_epochs",
    "milestones",
    "poly_power",
    "sync_bn",
    "label_smoothing",
    "ema",
    "ema_decay",
)


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C after saving a checkpoint; running again resumes it."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        self.step = step
        self.checkpoint = checkpoint
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint written by this process"
        super().__init__(f"training interrupted at step {step}; {where}; run the same command again to resume")


class LeaseLost(RuntimeError):
    """Another process took this run over (this one was suspended past its lease): stop without writing."""

    def __init__(self, run_dir: Path, step: int) -> None:
        self.run_dir, self.step = run_dir, step
        super().__init__(
            f"{run_dir}: another process has taken this run over (this one was suspended longer than its lease); "
            f"stopped at step {step} without writing, the other process's checkpoints and results stand"
        )


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; training stopped at that step (the last checkpoint is from before it)."""

    def __init__(self, step: int, loss: float, run_dir: Path | None = None) -> None:
        self.step, self.loss = step, loss
        where = f"; the run is left unfinished in {run_dir}" if run_dir is not None else ""
        super().__init__(
            f"training diverged: the loss is {loss} at step {step}{where} (lower the learning rate, or check the data)"
        )


@dataclass(frozen=True)
class EvalSetup:
    """How a model is evaluated: batch per process, loader workers, device, autocast (``amp``), channels-last
    input, pinned memory and the loader's seed (:func:`cabench.engine.sampling.eval_loader`)."""

    batch_size: int
    workers: int = 0
    device: Any = "cpu"
    amp: str = "off"
    channels_last: bool = False
    pin_memory: bool = False
    seed: int = 0


@dataclass
class TrainSettings:
    """A recipe's training fields (see :class:`cabench.recipe.Recipe`) plus run knobs."""

    # --- from the recipe -----------------------------------------------------------------------
    optimizer: str = "sgd"  # sgd | rmsprop
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    weight_decay_norm: bool = True  # False: no weight decay on normalization-layer parameters
    nesterov: bool = False
    rmsprop_decay: float = 0.9
    optimizer_eps: float | None = None
    batch_size: int = 256  # GLOBAL batch, all processes together
    epochs: int | None = 1  # ignored when iterations is set
    iterations: int | None = None  # length in global steps (detection/segmentation recipes)
    schedule: str = "cosine"  # cosine | step | multistep | poly
    warmup_epochs: float = 0.0
    warmup_iterations: int = 0
    step_gamma: float | None = None
    step_epochs: float | None = None
    milestones: tuple[int, ...] = ()  # multistep: global steps where lr *= step_gamma
    poly_power: float = 0.9
    label_smoothing: float = 0.0
    ema: bool = False
    ema_decay: float = 0.9999
    # --- run knobs -----------------------------------------------------------------------------
    max_steps: int | None = None  # None: all epochs
    ckpt_every_steps: int = 0  # 0: only at epoch ends
    seed: int = 0
    workers: int = 0  # DataLoader workers per process
    pin_memory: bool = False
    persistent_workers: bool = False
    amp: str = "off"  # off | bf16 | fp16 (fp16 on CUDA only)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False  # needs CUDA with more than one process
    deterministic: bool | None = None  # None: True on CPU, False on CUDA
    log_every: int = 10
    tensorboard: bool = False  # also write TensorBoard event files to run_dir/tensorboard (needs tensorboard)
    eval_batch_size: int | None = None  # per process; None: batch_size // world_size
    eval_every_epochs: int = 0  # 0: evaluate only at the end
    device: str | None = None  # None: cuda:<local_rank> if available, else cpu
    config: dict[str, Any] = field(default_factory=dict)  # context to record (recipe id, model, overrides)

    @classmethod
    def from_recipe(cls, recipe: Any, **knobs: Any) -> TrainSettings:
        """Settings from a :class:`~cabench.recipe.Recipe` and run knobs (``None`` knobs keep defaults)."""
        if getattr(recipe, "mixup", False):
            raise ValueError(f"recipe {recipe.id}: mixup is not implemented by the engine")
        values = {name: getattr(recipe, name) for name in _RECIPE_FIELDS}
        values["milestones"] = tuple(values["milestones"] or ())
        values.update({k: v for k, v in knobs.items() if v is not None})
        config = dict(values.pop("config", {}) or {})
        config.setdefault("recipe", recipe.model_dump())
        return cls(**values, config=config)

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"optimizer must be sgd or rmsprop, not {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "multistep", "poly"):
            raise ValueError(f"schedule must be cosine, step, multistep or poly, not {self.schedule!r}")
        if self.schedule == "step" and (self.step_gamma is None or self.step_epochs is None):
            raise ValueError("schedule 'step' needs step_gamma and step_epochs")
        if self.schedule == "multistep" and (self.step_gamma is None or not self.milestones):
            raise ValueError("schedule 'multistep' needs step_gamma and milestones")
        if self.iterations is None and (self.epochs is None or self.epochs < 1):
            raise ValueError("a run needs epochs >= 1 or iterations >= 1")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be positive, not {self.iterations}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp must be off, bf16 or fp16, not {self.amp!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, not {self.max_steps}")
        if self.log_every < 1 or self.ckpt_every_steps < 0 or self.workers < 0:
            raise ValueError("log_every must be >= 1; ckpt_every_steps and workers >= 0")

    def eval_setup(self, device: Any) -> EvalSetup:
        """How this run evaluates on ``device``: per process, ``eval_batch_size``, else this process's share of the
        global training batch; the run's loader workers, autocast and memory format."""
        batch = self.eval_batch_size or max(1, self.batch_size // get_world_size())
        return EvalSetup(batch, self.workers, device, amp=self.amp, channels_last=self.channels_last)

    def resolved(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
