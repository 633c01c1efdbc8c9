"""An attention block of your own, put through cabench's protocol beside SE, CBAM and CA.

cabench builds it as ``GatedPool(channels, reduction=R)`` wherever the architecture places attention
(in MobileNetV2: after the depthwise 3x3 of every inverted residual block, on the expanded channels).
It must return a module whose output has its input's shape. ``default_reduction`` is used when a suite
row gives no ``reduction``.

Three ways to use it (README, "Bring your own block"):

* by import path, with nothing registered: ``attention: "my_block:GatedPool"`` in a suite row;
* as a plugin: ``--plugin my_block`` (or ``CABENCH_PLUGINS=my_block``) and ``attention: gated-pool``;
* from an installed package whose ``cabench.plugins`` entry point names this module.
"""

from __future__ import annotations

import torch
from torch import nn

import cabench


@cabench.register_attention("gated-pool")
class GatedPool(nn.Module):
    """A channel gate: global average pool, 1x1 conv down, ReLU, 1x1 conv up, sigmoid (SE-like, conv-based)."""

    default_reduction = 16

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
