"""ECA: Efficient Channel Attention (Wang, Wu, Zhu, Li, Zuo, Hu. ECA-Net. CVPR 2020).

``y = x * sigmoid(conv1d_k(GAP(x)))``: global average pooling to one value per
channel, a 1-D convolution of kernel size ``k`` across the channel axis (one
kernel shared by all channels, no dimensionality reduction), a sigmoid, and
the channel-wise product.

Sizing choices and their sources:

* **Kernel size** ``k = psi(C) = |log2(C) / gamma + b / gamma|_odd`` with
  ``gamma = 2`` and ``b = 1`` (ECA-Net, Section 3.2.3, Eq. 12 and the values
  used in all its experiments), where ``|t|_odd`` is the odd number nearest to
  ``t``. Computed as ``t = int((log2(C) + b) / gamma)``, then ``t + 1`` if ``t``
  is even (the ECA-Net authors' code); for ``t >= 0`` this equals
  ``2 * floor(t / 2) + 1``, the nearest odd number (ties going up). For the
  hidden widths of MobileNetV2-1.0 this gives ``k = 3`` at 96 channels and
  ``k = 5`` at 144 to 960 channels.
* **No bias** in the 1-D convolution, ``padding = (k - 1) // 2`` so the channel
  count is kept (the ECA-Net authors' ``eca_module.py``).
* **No reduction ratio**: ECA avoids dimensionality reduction by design
  (Section 3.2.1), so the block declares no ``default_reduction`` and takes no
  ``reduction``; it has ``k`` parameters per block.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """``|log2(C) / gamma + b / gamma|_odd`` (ECA-Net Eq. 12): the odd number nearest to ``(log2 C + b) / gamma``."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """ECA block: GAP, a 1-D conv of adaptive size ``k`` across channels (no bias), sigmoid, channel gate."""

    kind = "eca"

    def __init__(self, channels: int, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        self.kernel_size = eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        z = x.mean(dim=(2, 3)).view(n, 1, c)  # GAP, channels as the 1-D sequence
        return x * torch.sigmoid(self.conv(z)).view(n, c, 1, 1)
