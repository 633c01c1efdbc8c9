"""The exponential moving average of the weights, as ``torch.optim.swa_utils.AveragedModel``.

The decay follows TensorFlow's ``ExponentialMovingAverage(decay, num_updates=step)`` (the EfficientNet
recipe's): ``min(decay, (1 + step) / (10 + step))`` at 0-based optimizer step ``step``. The average starts at
the initial weights, which count as its first member, so before the update of step ``step`` the model has
averaged ``n_averaged == step + 1`` weight sets and the decay is computed from that counter (saved in the
state dict). Buffers (BatchNorm statistics) are copied from the trained model, not averaged
(``use_buffers=False``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["build_ema", "ema_decay_at", "load_ema_state", "tf_ema_multi_avg_fn"]


def ema_decay_at(step: int, decay: float) -> float:
    """The decay applied by the update after 0-based optimizer step ``step``."""
    return min(decay, (1.0 + step) / (10.0 + step))


def tf_ema_multi_avg_fn(decay: float, counter: AveragedModel | None = None) -> Any:
    """An ``AveragedModel`` ``multi_avg_fn``: torch's EMA update with the step-dependent decay.

    ``counter``: the ``AveragedModel`` whose ``n_averaged`` (a CPU tensor unless moved) gives the step, read at
    each call; ``AveragedModel`` hands the function a copy on the weights' device, whose value would cost a CUDA
    synchronisation per step. Without it, that copy is read."""

    def update(ema: list[Tensor], current: list[Tensor], n_averaged: Tensor | int) -> None:
        step = int(counter.n_averaged if counter is not None else n_averaged) - 1
        get_ema_multi_avg_fn(ema_decay_at(step, decay))(ema, current, n_averaged)

    return update


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (in eval mode, no gradients) that starts at ``model``'s weights."""
    ema = AveragedModel(model, use_buffers=False)
    ema.multi_avg_fn = tf_ema_multi_avg_fn(decay, counter=ema)
    ema.requires_grad_(False)
    ema.eval()
    ema.update_parameters(model)  # n_averaged = 1: the initial weights
    return ema


@torch.no_grad()
def load_ema_state(ema: AveragedModel, state: dict[str, Any], step: int) -> None:
    """Load a checkpoint's EMA; one written before ``AveragedModel`` (the bare module's state dict) gets
    ``n_averaged = step + 1``, which is what the new one would hold at that step."""
    if "n_averaged" in state:
        ema.load_state_dict(state)
        return
    ema.module.load_state_dict(state)
    ema.n_averaged.fill_(step + 1)
