"""Triplet attention (Misra, Nalamada, Arasanipalai, Hou. Rotate to Attend: Convolutional Triplet Attention Module.
WACV 2021).

Three branches, each capturing the interaction of two of the three axes
``(C, H, W)``; the third axis is pooled away:

* **C-W branch**: rotate so that ``H`` is the leading axis, Z-pool over ``H``
  -> a ``2 x C x W`` map, 7x7 conv -> BN -> sigmoid -> gate ``(C, W)``.
* **C-H branch**: rotate so that ``W`` is the leading axis, Z-pool over ``W``
  -> ``2 x H x C``, conv -> BN -> sigmoid -> gate ``(H, C)``.
* **H-W branch** (spatial): Z-pool over ``C`` -> ``2 x H x W``, conv -> BN ->
  sigmoid -> gate ``(H, W)``.

``y = (x * g_cw + x * g_ch + x * g_hw) / 3``: each branch gates the input,
and the three results are averaged.

Sizing choices and their sources:

* **Z-pool** is the max and the mean over the pooled axis, concatenated in that
  order (``ZPool`` in the authors' ``triplet_attention.py``; Section 3.2).
* **Kernel size 7** for every branch's conv, 2 -> 1 channels, stride 1, padding
  3 (Section 3.2; the authors' ``AttentionGate`` and their ResNet-50 model, "k =
  7"). Their MobileNetV2 model used ``k = 3``; ``kernel_size: 3`` selects it.
* **No bias** in the convs, each followed by BatchNorm (the authors'
  ``BasicConv(..., bn=True, bias=False)``, with ``eps=1e-5`` and PyTorch
  ``momentum=0.01``), no activation before the sigmoid (``relu=False``).
* **No reduction ratio** and no channel-dependent layer: 3 x (2 * k * k + 2)
  parameters per block (300 at ``k = 7``), whatever the width.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AttentionGate", "TripletAttention", "z_pool"]


def z_pool(x: torch.Tensor) -> torch.Tensor:
    """Max and mean over axis 1, concatenated (``(N, D, A, B) -> (N, 2, A, B)``)."""
    return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class AttentionGate(nn.Module):
    """One branch: Z-pool over axis 1, ``k x k`` conv (2 -> 1, no bias), BatchNorm, sigmoid, gate."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.bn(self.conv(z_pool(x))))


class TripletAttention(nn.Module):
    """Triplet attention: C-W, C-H and H-W gates, each from a rotated Z-pool, averaged (see module docstring)."""

    kind = "triplet"

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, not {kernel_size}")
        self.cw = AttentionGate(kernel_size)
        self.hc = AttentionGate(kernel_size)
        self.hw = AttentionGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, H, C, W): H pooled, the gate spans (C, W).
        y_cw = self.cw(x.transpose(1, 2)).transpose(1, 2)
        # (N, C, H, W) -> (N, W, H, C): W pooled, the gate spans (H, C).
        y_hc = self.hc(x.transpose(1, 3)).transpose(1, 3)
        y_hw = self.hw(x)  # C pooled, the gate spans (H, W)
        return (y_cw + y_hc + y_hw) / 3
