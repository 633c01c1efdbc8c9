"""The learning rate as a function of the global step (see :mod:`cabench.engine`)."""

from __future__ import annotations

import math

from cabench.engine.settings import TrainSettings

__all__ = ["lr_at", "total_steps_of"]


def total_steps_of(s: TrainSettings, steps_per_epoch: int) -> int:
    """The schedule's length in global steps: ``iterations``, else ``epochs * steps_per_epoch``."""
    if s.iterations is not None:
        return s.iterations
    assert s.epochs is not None
    return s.epochs * steps_per_epoch


def lr_at(step: int, s: TrainSettings, steps_per_epoch: int) -> float:
    """The learning rate for global step ``step`` (0-based) under ``s``'s schedule."""
    total = total_steps_of(s, steps_per_epoch)
    warmup = s.warmup_iterations or round(s.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return s.lr * (step + 1) / warmup
    if s.schedule == "step":
        assert s.step_gamma is not None and s.step_epochs is not None
        return s.lr * s.step_gamma ** math.floor(step / (s.step_epochs * steps_per_epoch))
    if s.schedule == "multistep":
        assert s.step_gamma is not None
        return s.lr * s.step_gamma ** sum(1 for m in s.milestones if step >= m)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if s.schedule == "cosine":
        return 0.5 * s.lr * (1.0 + math.cos(math.pi * t))
    return s.lr * (1.0 - t) ** s.poly_power
