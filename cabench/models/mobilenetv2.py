"""MobileNetV2 (Sandler et al., CVPR 2018) with a pluggable attention block.

Attention sits after the depthwise 3x3 of each inverted residual, on the
hidden (expanded) dimension (Figure 3a). As in the authors' ``mbv2_ca.py``,
the first block (expansion ratio 1, no pointwise expansion) carries no
attention.

The module layout follows the authors' released MobileNetV2+CA weights, so
their state dict loads as it is (``model.load_state_dict(state)``; CA accepts
the authors' names for its gate convs), or through :func:`load_authors_state_dict`,
which also unwraps checkpoints saved from DataParallel:

* ``features.0``: stem conv-BN-ReLU6 (stride 2);
* ``features.1`` ... ``features.17``: inverted residuals, each a ``conv``
  ``Sequential``: ``[pw, bn, relu6,] dw, bn, relu6, attention, pw-linear, bn``
  (the bracketed part absent when the expansion ratio is 1; ``attention`` is
  ``nn.Identity`` for the baseline so keys do not move);
* ``conv``: the last 1x1 conv-BN-ReLU6 to 1280 channels;
* ``classifier``: dropout then linear.

Without attention the parameter count equals torchvision's ``mobilenet_v2``
at every width (tested).

``small_input=True`` is the stride pattern of the CIFAR literature for 32x32
inputs: the stem and ``features.2`` (the first 24-channel block, the first
stride-2 stage) at stride 1, so the output stride is 8 instead of 32 (a 4x4
map at 32x32). Only strides change: parameters and module names are the same.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from cabench.models.blocks import AttentionLike, create_attention
from cabench.models.layers import conv_bn_act, init_weights, make_divisible

__all__ = [
    "InvertedResidual",
    "MobileNetV2",
    "conv_bn_act",
    "init_weights",
    "load_authors_state_dict",
    "make_divisible",
    "unwrap_state_dict",
]

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# The stage kept at stride 1 with small_input (the first 24-channel stage, features.2 onwards).
SMALL_INPUT_STAGE = 1


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck; attention after the depthwise conv."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        expand_ratio: float,
        attention: AttentionLike = "none",
        reduction: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_residual = stride == 1 and cin == cout
        self.hidden_dim = hidden
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += list(conv_bn_act(cin, hidden, kernel_size=1))
            block_attention = attention
        else:
            block_attention = "none"
        layers += list(conv_bn_act(hidden, hidden, 3, stride, groups=hidden, dilation=dilation))
        if expand_ratio != 1:
            layers.append(create_attention(block_attention, hidden, reduction))
        layers += list(conv_bn_act(hidden, cout, kernel_size=1, act=False))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier; ``width`` scales every layer but the last 1280-wide conv.

    ``small_input``: stem and first downsampling stage at stride 1 (output stride 8, for 32x32 inputs).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        attention: AttentionLike = "none",
        reduction: int | None = None,
        dropout: float = 0.2,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        cin = make_divisible(32 * width)
        layers: list[nn.Module] = [conv_bn_act(3, cin, 3, stride=1 if small_input else 2)]
        for stage, (t, c, n, s) in enumerate(MOBILENETV2_SETTINGS):
            cout = make_divisible(c * width)
            if small_input and stage == SMALL_INPUT_STAGE:
                s = 1
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, attention, reduction))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.last_channel = make_divisible(1280 * max(1.0, width))
        self.conv = conv_bn_act(cin, self.last_channel, kernel_size=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.classifier(x)


def unwrap_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's plain state dict: unwraps ``{"state_dict": ...}``, strips DataParallel's ``module.``."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # type: ignore[assignment]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_authors_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load the authors' released MobileNetV2+CA weights (strict).

    The layout is already cabench's; the CA blocks accept the authors' names for
    their gate convs (``conv2``/``conv3``) themselves.
    """
    model.load_state_dict(unwrap_state_dict(state), strict=True)


def mobilenetv2(**kwargs: object) -> MobileNetV2:
    """MobileNetV2 classifier (Tables 1, 2, 4)."""
    return MobileNetV2(**kwargs)  # type: ignore[arg-type]
