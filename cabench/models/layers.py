"""Layers shared by the backbones: channel rounding, conv-BN-activation, weight initialisation."""

from __future__ import annotations

import math

from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

__all__ = ["conv_bn_act", "init_weights", "make_divisible"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it (MobileNetV2's rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_bn_act(
    cin: int,
    cout: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    act: bool = True,
    activation: type[nn.Module] = nn.ReLU6,
) -> Conv2dNormActivation:
    """Conv (no bias, "same" padding for odd kernels) + BatchNorm (+ ``activation``, ReLU6 by default).

    torchvision's ``Conv2dNormActivation``: an ``nn.Sequential`` of exactly these modules (keys ``0``, ``1``,
    ``2``), so state dicts are those of a hand-built ``Sequential``.
    """
    return Conv2dNormActivation(
        cin,
        cout,
        kernel_size,
        stride,
        groups=groups,
        dilation=dilation,
        norm_layer=nn.BatchNorm2d,
        activation_layer=activation if act else None,
        inplace=True,
    )


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) convs, unit BatchNorm, N(0, 0.01) linear, zero biases (MobileNetV2's initialisation)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()
