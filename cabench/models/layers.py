"""Layers shared by the backbones: channel rounding, conv-BN-activation, weight initialisation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

__all__ = ["ReLU6", "conv_bn_act", "init_weights", "make_divisible"]


class ReLU6(nn.ReLU6):
    """``nn.ReLU6`` whose in-place form does not copy its input when it trains.

    Autograd's ``hardtanh_`` keeps a copy of the input for its backward: a full pass over every activation of
    the network, 7% of a MobileNetV2 training step on the probe's inputs. The gradient needs only where the input
    lay strictly inside (0, 6), which the output tells as well (it equals the input there and is 0 or 6 elsewhere),
    so the training path clamps in place and hands the output to the same ``hardtanh_backward`` kernel: forward
    and gradients are bitwise those of ``nn.ReLU6(inplace=True)``. Tracing and compiling take the plain module,
    as does everything without gradients.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        training = self.inplace and x.requires_grad and torch.is_grad_enabled()
        if training and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            return _ClampInPlace.apply(x)
        return super().forward(x)


class _ClampInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(0.0, 6.0)  # what hardtanh_ runs
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)


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
    activation: type[nn.Module] = ReLU6,
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
