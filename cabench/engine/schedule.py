"""The learning rate as a function of the global step (see :mod:`cabench.engine`), and the
``torch.optim.lr_scheduler.LambdaLR`` that applies it, so the schedule's state is checkpointed like the
optimizer's.

Every param group starts at the recipe's ``lr`` and the scheduler multiplies it by :func:`lr_factor`, so
``lr_at(step) == lr * lr_factor(step)`` is exactly what the optimizer uses at that step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from cabench.engine.settings import TrainSettings

__all__ = ["build_scheduler", "lr_at", "lr_factor", "restore_scheduler", "total_steps_of"]


def total_steps_of(s: TrainSettings, steps_per_epoch: int) -> int:
    """The schedule's length in global steps: ``iterations``, else ``epochs * steps_per_epoch``."""
    if s.iterations is not None:
        return s.iterations
    assert s.epochs is not None
    return s.epochs * steps_per_epoch


def lr_factor(step: int, s: TrainSettings, steps_per_epoch: int) -> float:
    """The multiple of ``s.lr`` used at global step ``step`` (0-based) under ``s``'s schedule."""
    total = total_steps_of(s, steps_per_epoch)
    warmup = s.warmup_iterations or round(s.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if s.schedule == "step":
        assert s.step_gamma is not None and s.step_epochs is not None
        return s.step_gamma ** math.floor(step / (s.step_epochs * steps_per_epoch))
    if s.schedule == "multistep":
        assert s.step_gamma is not None
        return s.step_gamma ** sum(1 for m in s.milestones if step >= m)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if s.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - t) ** s.poly_power


def lr_at(step: int, s: TrainSettings, steps_per_epoch: int) -> float:
    """The learning rate for global step ``step`` (0-based) under ``s``'s schedule."""
    return s.lr * lr_factor(step, s, steps_per_epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings, steps_per_epoch: int) -> LambdaLR:
    """A LambdaLR over :func:`lr_factor` (every group's lr is ``s.lr`` when built): step it once after each
    optimizer step. Building it sets step 0's lr; the lambda is a plain function, so the state dict holds only
    counters and lrs (weights-only loadable)."""

    def factor(step: int) -> float:
        return lr_factor(step, s, steps_per_epoch)

    return LambdaLR(optimizer, factor)


def restore_scheduler(scheduler: LambdaLR, state: dict[str, Any] | None, step: int) -> None:
    """Load a checkpoint's scheduler state (after the optimizer's). A checkpoint from before the scheduler
    (``{"kind", "step", "lr", ...}``) is brought to ``step``: the lr of the next step is set on every group."""
    if state is not None and "last_epoch" in state:
        scheduler.load_state_dict(state)
        return
    scheduler.last_epoch = step
    scheduler._step_count = step + 1  # type: ignore[attr-defined]  # as if stepped from the start
    lrs = [base * lr for base, lr in zip(scheduler.base_lrs, (f(step) for f in scheduler.lr_lambdas), strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs  # type: ignore[attr-defined]
