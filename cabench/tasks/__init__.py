"""Training and evaluation tasks (classification first), DDP-aware; see :mod:`cabench.tasks.classification`.

The names below are imported on first use, so that declaring the tasks (their columns, for listing suites)
imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainSettings", "TrainingInterrupted", "evaluate_classifier", "lr_at", "train_classifier"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("cabench.tasks._impl.classification"), name)
    raise AttributeError(f"module 'cabench.tasks' has no attribute {name!r}")
