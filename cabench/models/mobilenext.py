"""MobileNeXt (Zhou et al., ECCV 2020) with a pluggable attention block.

Architecture (every fact below is taken from the MobileNeXt authors' released
definition, ``yitu-opensource/MobileNeXt: mobilenext/codebase/models/mnext.py``,
which ``houqb/ssdlite-pytorch-mobilenext: ssd/modeling/backbone/mobilenext.py``,
the CA authors' detection backbone, repeats layer for layer):

* **Stem**: 3x3 conv, stride 2, BN, ReLU6, ``make_divisible(32 * width, 8)``
  channels (divisor 4 at width 0.1).
* **Stages** ``(t, c, n, s)``: ``(2, 96, 1, 2)``, ``(6, 144, 1, 1)``,
  ``(6, 192, 3, 2)``, ``(6, 288, 3, 2)``, ``(6, 384, 4, 1)``,
  ``(6, 576, 4, 2)``, ``(6, 960, 3, 1)``, ``(6, 1280, 1, 1)`` (the MobileNeXt
  paper's architecture table). ``t`` is the sandglass *reduction* ratio, ``c``
  is scaled by ``width`` and rounded with ``make_divisible(., 8)``, except the
  1280-wide last stage, which stays 1280 for ``width < 1``.
* **Sandglass block** ``cin -> cout``: depthwise 3x3 (BN, ReLU6) -> 1x1
  reduce to ``hidden`` (BN, linear) -> 1x1 expand to ``cout`` (BN, ReLU6) ->
  depthwise 3x3 with the block's stride (BN, linear); identity shortcut on the
  high-dimensional tensor when ``cin == cout`` and stride 1. ``hidden`` is
  ``cin // t``, raised to ``make_divisible(ceil(cout / 6), 16)`` when below
  ``cout / 6``.
* **Block variants in the authors' code.** The first block of a stage whose
  width changes drops depthwise convs: with stride 1 it is only the two 1x1
  convs (``features[9]`` and ``features[17]``); with stride 2 it is the two 1x1
  convs then the strided depthwise (``features[3]``, ``[6]``, ``[13]``). A
  single-block stride-1 stage (``(6, 144, 1, 1)`` and ``(6, 1280, 1, 1)``) keeps
  both depthwise convs but has no shortcut; the ``t = 2`` first block keeps
  both and has no shortcut. The identity covers all channels (the authors'
  ``identity_div = 1``).
* **Head**: global average pooling, dropout 0.2, linear classifier on 1280
  channels. There is no extra 1x1 conv: the last stage already outputs 1280.

Attention sits after the first depthwise 3x3 (and its ReLU6) of each block
that has one, on that conv's ``cin`` channels, the high-dimensional input. The
CA authors' README says: "When applied to MobileNeXt, adding the attention
block after the first depthwise 3x3 convolution works better". Blocks the
authors built without a first depthwise conv carry no attention, as the t=1
block of MobileNetV2 carries none. In blocks that have a first depthwise conv,
``attention="none"`` puts an ``nn.Identity`` in that slot, so state dict keys
stay the same for every attention kind. The reduction ratio divides ``cin``
(see :mod:`cabench.models.attention`).

Known count discrepancies with the CA paper's Table 3 (evidence in
``notes/mobilenext_counts.md``):

* The baseline rows (3.5M/300M, 2.5M/210M, 2.1M/110M) are the MobileNeXt
  README's figures. The authors' code gives 3.535M/311.3M, 2.766M/207.9M and
  2.152M/103.3M, but 6.126M/588.3M at width 1.4, which matches the README's
  6.1M/590M. So the architecture is right, and the published figures for the
  smaller widths do not follow from the released code.
* "+SE 3.89M / 300M" is exactly the MobileNetV2+SE figure of Tables 1, 2 and 4.
  This model gives 3.914M.
* The CA madds (+30M at width 1.0) do not follow from r = 32 under any
  placement we tried: this model adds 5.0M.

``features`` has 21 entries at every width and for every attention kind:
``features[0]`` is the stem and ``features[1:]`` are the sandglass blocks, at
the same indices as in the authors' code. :attr:`MobileNeXt.stage_ends` maps each output stride to
the last ``features`` index at that stride: ``{2: 0, 4: 2, 8: 5, 16: 12, 32:
20}``. The authors' SSDLite taps the inside of blocks: the output of
``features[13].before_last_dw`` (576 channels at OS16, the up-projection before
the strided depthwise) and of ``features[20].before_last_dw`` (1280 channels at
OS32). See :data:`SSDLITE_TAPS`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cabench.models.blocks import AttentionLike, create_attention
from cabench.models.mobilenetv2 import conv_bn_act, init_weights, make_divisible

__all__ = [
    "MOBILENEXT_SETTINGS",
    "SSDLITE_TAPS",
    "MobileNeXt",
    "SandglassBlock",
    "sandglass_hidden",
]

# t (reduction ratio), c (output channels), n (repeats), s (stride of the first repeat)
MOBILENEXT_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 3, 2),
    (6, 288, 3, 2),
    (6, 384, 4, 1),
    (6, 576, 4, 2),
    (6, 960, 3, 1),
    (6, 1280, 1, 1),
)

# The ``features`` indices whose ``before_last_dw`` output the authors' SSDLite
# uses as its two backbone feature maps (OS16 and OS32).
SSDLITE_TAPS: tuple[int, int] = (13, 20)


def sandglass_hidden(cin: int, cout: int, reduction: int) -> int:
    """Width of the bottleneck between the two 1x1 convs (authors' rule).

    ``cin // reduction``, raised to ``make_divisible(ceil(cout / 6), 16)`` when
    that is below ``cout / 6``.
    """
    hidden = cin // reduction
    if hidden < cout / 6.0:
        hidden = make_divisible(math.ceil(cout / 6.0), 16)
    return hidden


class SandglassBlock(nn.Module):
    """Sandglass block; attention after the first depthwise conv (see module docstring).

    ``conv`` is one ``Sequential``. In the full variant it holds
    ``dw, bn, relu6, attention, pw-reduce, bn, pw-expand, bn, relu6, dw, bn``.
    Where the first depthwise conv is absent, the leading four layers are
    missing too (and the trailing ``dw, bn`` as well, at stride 1).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        reduction_ratio: int,
        keep_3x3: bool = False,
        attention: AttentionLike = "none",
        reduction: int | None = None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = sandglass_hidden(cin, cout, reduction_ratio)
        self.hidden_dim = hidden
        # The authors' four branches (mnext.py, SGBlock.__init__).
        full = reduction_ratio == 2 or cin == cout or keep_3x3
        if full and stride != 1 and reduction_ratio != 2:
            raise ValueError("a full sandglass block with a shortcut must have stride 1")
        self.has_first_dw = full
        self.has_last_dw = full or stride != 1
        self.use_residual = full and reduction_ratio != 2 and not keep_3x3 and cin == cout and stride == 1

        layers: list[nn.Module] = []
        if self.has_first_dw:
            layers += list(conv_bn_act(cin, cin, 3, groups=cin))
            layers.append(create_attention(attention, cin, reduction))
        layers += list(conv_bn_act(cin, hidden, kernel_size=1, act=False))
        layers += list(conv_bn_act(hidden, cout, kernel_size=1))
        self._last_dw_at = len(layers)
        if self.has_last_dw:
            layers += list(conv_bn_act(cout, cout, 3, stride, groups=cout, act=False))
        self.conv = nn.Sequential(*layers)

    @property
    def before_last_dw(self) -> nn.Sequential:
        """The layers up to the up-projection's ReLU6, i.e. before the last depthwise conv.

        Its output is the ``cout``-wide tensor at the block's input resolution;
        the authors' SSDLite takes its detection features here.
        """
        return self.conv[: self._last_dw_at]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNeXt(nn.Module):
    """MobileNeXt classifier; ``width`` scales every layer but the 1280-wide last stage (for width < 1)."""

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        attention: AttentionLike = "none",
        reduction: int | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        divisor = 4 if width == 0.1 else 8
        cin = make_divisible(32 * width, divisor)
        layers: list[nn.Module] = [conv_bn_act(3, cin, 3, stride=2)]
        stride = 2
        stage_ends: dict[int, int] = {stride: 0}
        for t, c, n, s in MOBILENEXT_SETTINGS:
            cout = 1280 if c == 1280 and width < 1 else make_divisible(c * width, divisor)
            for i in range(n):
                first = i == 0
                block = SandglassBlock(
                    cin,
                    cout,
                    s if first else 1,
                    t,
                    keep_3x3=first and n == 1 and s == 1,
                    attention=attention,
                    reduction=reduction,
                )
                layers.append(block)
                stride *= s if first else 1
                stage_ends[stride] = len(layers) - 1
                cin = cout
        self.features = nn.Sequential(*layers)
        #: Output stride -> index of the last ``features`` entry at that stride.
        self.stage_ends: dict[int, int] = stage_ends
        self.last_channel = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling (``last_channel`` channels, output stride 32)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.classifier(x)


def mobilenext(**kwargs: object) -> MobileNeXt:
    """MobileNeXt classifier with sandglass blocks (Table 3)."""
    return MobileNeXt(**kwargs)  # type: ignore[arg-type]
