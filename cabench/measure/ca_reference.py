"""A straightforward Coordinate Attention block, for latency comparisons only.

:class:`AuthorsStyleCoordinateAttention` computes Eq. 4-9 step by step, the way the paper's description (and
the usual module-by-module implementation) reads: adaptive average pooling to ``(H, 1)`` and to ``(1, W)``, a
permute of the width strip so both strips stack along one axis, concatenation, the shared 1x1 conv, BatchNorm
and h_swish, a split, the permute back, the two gate convs with sigmoids, and the product of the input with both
gates expanded to the full map. It has the parameter names of :class:`cabench.models.attention.CoordinateAttention`
(``conv1``, ``bn1``, ``conv_h``, ``conv_w``), so one state dict loads into either; it is written here from the
equations to serve as the "authors'-style" row (``authors_ca``) of ``cabench bench``, not used by any model.
"""

from __future__ import annotations

import torch
from torch import nn

from cabench.models.attention import CoordinateAttention, reduced_channels

__all__ = ["AuthorsStyleCoordinateAttention", "swap_in_authors_style"]


class _HSigmoid(nn.Module):
    """relu6(x + 3) / 6."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class _HSwish(nn.Module):
    """x * h_sigmoid(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = _HSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(x)


class AuthorsStyleCoordinateAttention(nn.Module):
    """Eq. 4-9 computed the straightforward way (pool, permute, cat, conv, BN, h_swish, split, gates, expand)."""

    def __init__(self, channels: int, reduction: int = 32, mip: int | None = None) -> None:
        super().__init__()
        if mip is None:
            mip = reduced_channels("ca", channels, reduction)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))  # Eq. 4: average over the width -> (N, C, H, 1)
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))  # Eq. 5: average over the height -> (N, C, 1, W)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, stride=1, padding=0, bias=True)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = _HSwish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0, bias=True)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        _, _, h, w = x.size()
        x_h = self.pool_h(x)  # (N, C, H, 1)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)  # (N, C, 1, W) -> (N, C, W, 1)
        y = torch.cat([x_h, x_w], dim=2)  # (N, C, H + W, 1)
        y = self.act(self.bn1(self.conv1(y)))  # Eq. 6
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)  # back to (N, mip, 1, W)
        a_h = self.conv_h(x_h).sigmoid()  # Eq. 7: (N, C, H, 1)
        a_w = self.conv_w(x_w).sigmoid()  # Eq. 8: (N, C, 1, W)
        return identity * a_w.expand(-1, -1, h, w) * a_h.expand(-1, -1, h, w)  # Eq. 9


def swap_in_authors_style(model: nn.Module) -> int:
    """Replace every :class:`CoordinateAttention` in ``model`` (in place) by an authors'-style block with the
    same weights and buffers; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is CoordinateAttention:
                new = AuthorsStyleCoordinateAttention(child.conv1.in_channels, mip=child.conv1.out_channels)
                new.load_state_dict(child.state_dict(), strict=True)
                new.to(device=child.conv1.weight.device, dtype=child.conv1.weight.dtype)
                new.train(child.training)
                setattr(parent, name, new)
                replaced += 1
    return replaced
