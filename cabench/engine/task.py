"""What a task adds to the engine (:class:`Task`): its batches, its loss, its evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cabench.engine.settings import TrainSettings

__all__ = ["ProgressFn", "Task"]

ProgressFn = Callable[[dict[str, Any]], None]


class Task(Protocol):
    """What a task adds to the engine: its batches, its loss, its evaluation.

    ``name`` tags checkpoints (a detection checkpoint never resumes a classification run).
    ``headline`` names the metrics that :func:`train` also reports for the non-EMA weights
    (``<name>_raw``) when EMA is on.
    """

    name: str
    headline: tuple[str, ...]

    def collate(self, samples: list[Any]) -> Any:
        """Batch a list of dataset items (``None``-like default: ``torch.utils.data.default_collate``)."""
        ...

    def loss(self, net: nn.Module, batch: Any, device: torch.device, settings: TrainSettings) -> Tensor:
        """Move ``batch`` to ``device``, run ``net`` (under autocast, already entered) and return the scalar loss."""
        ...

    def evaluate(self, model: nn.Module, ds: Dataset, settings: TrainSettings, device: torch.device) -> dict[str, Any]:
        """Metrics of ``model`` on ``ds``; collective in a process group, every rank returns the same numbers."""
        ...
