"""DeepLabV3 with a MobileNetV2 backbone, for Tables 8 and 9.

Architecture (the CA paper, Section 4.4.2)
------------------------------------------
* **Backbone**: :class:`cabench.models.mobilenetv2.MobileNetV2` at width 1.0 (``width`` scales it; the CPU
  probe uses 0.5),
  with its attention block in every inverted residual, without the classifier
  ("we discard the last linear operator"). Its module names (``features``,
  ``conv``) are the classifier's, so an ImageNet state dict loads with
  ``strict=False``.
* **Output stride** 16 or 8: the strides of the last one or two stride-2
  blocks (``features[14]``; ``features[7]`` too at OS8) become 1 and the
  depthwise 3x3 convs after them are dilated, the atrous scheme of DeepLab's
  MobileNetV2 feature extractor (TF ``mobilenet.py``'s ``output_stride``) and
  of torchvision's ``_replace_stride_with_dilation`` for ResNets: the block
  whose stride is removed keeps the rate it had, every later block multiplies
  the rate by the removed stride (OS16: blocks 15-17 at rate 2; OS8: blocks
  8-14 at rate 2, 15-17 at rate 4). Dilation changes no parameter and no
  multiply-add count. With ``small_input`` (the backbone's stem and
  ``features[2]`` at stride 1, :class:`~cabench.models.mobilenetv2.MobileNetV2`)
  the trunk is already at output stride 8: only OS8 is possible, and nothing
  is dilated.
* **ASPP** on the last convolutional operator, the 1280-channel 1x1 conv
  ("connect the ASPP to the last convolutional operator"). Branches, 256
  channels each ("the output channels for each branch in ASPP are set to
  256"): a 1x1 conv + BN + ReLU; three atrous 3x3 branches made depthwise
  separable ("we replace the standard 3x3 convolutional operators with the
  depthwise separable convolutions in the ASPP"): depthwise 3x3 at rate r +
  BN + ReLU, then pointwise 1x1 to 256 + BN + ReLU, the separable conv of
  DeepLab's reference code (``split_separable_conv2d``/``aspp_with_separable_conv``);
  the image-pooling branch (global average pool, 1x1 conv + BN + ReLU,
  bilinear upsampling). Rates {6, 12, 18} at OS16, {12, 24, 36} at OS8.
  The five branches are concatenated and projected by a 1x1 conv to 256 +
  BN + ReLU + dropout 0.5 (torchvision's DeepLabV3 ASPP).
* **Classifier**: 1x1 conv (with bias) to ``num_classes``, then bilinear
  upsampling to the input size.

Parameter counts vs Tables 8-9 (exact numbers in ``notes/dense_counts.md``)
-------------------------------------------------------------------------
This model has 4.24/4.62/4.63/4.69M parameters (none/SE/CBAM/CA, 21 classes;
19 classes: 514 fewer), against 4.5/4.9/4.9/5.0M printed: a constant shortfall
of ~0.27M. The attention increments (+0.38/+0.39/+0.45M) are the printed
ones. Readings the text leaves open, tried (``aspp_input``, ``separable`` and
``depthwise_bn`` build them):

* no BN/ReLU between depthwise and pointwise: 4.23M (-7,680);
* ASPP on the 320-channel last block (1280 conv dropped), separable: 2.57M;
* ASPP on the 320-channel last block with *standard* 3x3 atrous convs:
  **4.52M/4.91/4.91/4.97M, all four printed counts**. That is exactly the
  DeepLabV3 model of the MobileNetV2 paper (Sandler et al., Table 7,
  "MNet V2* + ASPP": heads on the second-to-last feature map, 4.52M), i.e.
  the published counts fit MobileNetV2's own configuration, not the one the
  CA paper's text describes;
* ASPP on the 1280 conv with standard 3x3 convs: 12.06M.

The default follows the paper's text.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cabench.models.blocks import AttentionLike
from cabench.models.layers import conv_bn_act
from cabench.models.mobilenetv2 import InvertedResidual, MobileNetV2

__all__ = ["ASPP", "DeepLabV3MobileNetV2", "deeplabv3_mobilenetv2", "dilate_mobilenetv2"]

ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}

AsppInput = Literal["last_conv", "last_block"]


def _conv_bn_relu(cin: int, cout: int, kernel_size: int = 1, dilation: int = 1, groups: int = 1) -> list[nn.Module]:
    return list(conv_bn_act(cin, cout, kernel_size, dilation=dilation, groups=groups, activation=nn.ReLU))


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pool, 1x1 conv + BN + ReLU, upsample."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with depthwise-separable atrous branches.

    Args:
        cin: input channels.
        rates: the three atrous rates.
        cout: channels of every branch and of the projection.
        separable: depthwise-separable atrous branches (the CA paper); False:
            DeepLabV3's standard 3x3 atrous convs.
        depthwise_bn: BN + ReLU between the depthwise and the pointwise conv
            of a separable branch.
        dropout: dropout after the projection.
    """

    def __init__(
        self,
        cin: int,
        rates: tuple[int, int, int],
        cout: int = 256,
        separable: bool = True,
        depthwise_bn: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(cin, cout))]
        for rate in rates:
            if not separable:
                branches.append(nn.Sequential(*_conv_bn_relu(cin, cout, 3, rate)))
                continue
            if depthwise_bn:
                depthwise = _conv_bn_relu(cin, cin, 3, rate, groups=cin)
            else:
                depthwise = [nn.Conv2d(cin, cin, 3, padding=rate, dilation=rate, groups=cin, bias=False)]
            branches.append(nn.Sequential(*depthwise, *_conv_bn_relu(cin, cout)))
        branches.append(ASPPPooling(cin, cout))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(cout * len(branches), cout), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


def dilate_mobilenetv2(features: nn.Sequential, output_stride: int) -> None:
    """Turn a MobileNetV2 ``features`` (stride 32) into an output-stride-``output_stride`` one, in place.

    Once the running stride reaches ``output_stride``, a block that would
    stride keeps stride 1 and the current rate, and the rate of every later
    depthwise conv is multiplied by the stride removed. The running stride starts at the stem's, so a
    ``small_input`` trunk (stride 8) is left as it is at 8; ``ValueError`` if the trunk cannot reach ``output_stride``.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, not {output_stride}")
    stem = features[0][0]
    assert isinstance(stem, nn.Conv2d)
    total = stem.stride[0] * math.prod(_depthwise(block).stride[0] for block in features[1:])
    if total < output_stride:
        raise ValueError(f"this MobileNetV2 trunk has output stride {total}, it cannot give {output_stride}")
    current, rate = stem.stride[0], 1
    for block in features[1:]:
        dw = _depthwise(block)
        stride = dw.stride[0]
        dw.dilation = dw.padding = (rate, rate)  # a block whose stride is removed keeps the current rate
        if current == output_stride:
            dw.stride = (1, 1)
            rate *= stride
        else:
            current *= stride


def _depthwise(block: nn.Module) -> nn.Conv2d:
    assert isinstance(block, InvertedResidual)
    return next(m for m in block.conv if isinstance(m, nn.Conv2d) and m.groups > 1)


class DeepLabV3MobileNetV2(nn.Module):
    """DeepLabV3 on MobileNetV2 (see the module docstring).

    Args:
        num_classes: output classes (21 for Pascal VOC, 19 for Cityscapes).
        width: MobileNetV2 width multiplier of the backbone (the paper: 1.0).
        attention: attention block of every inverted residual.
        reduction: its reduction ratio (default: the kind's).
        output_stride: 16 or 8.
        aspp_input: ``"last_conv"`` (default, the paper's text): ASPP on the
            1280-channel last 1x1 conv. ``"last_block"``: on the 320-channel
            last inverted residual, the last conv dropped (MobileNetV2 paper's
            "MNet V2*").
        separable: depthwise-separable atrous branches (default, the paper's text).
        depthwise_bn: BN + ReLU after the depthwise convs of separable branches.
        small_input: the backbone's stem and first downsampling stage at stride 1 (32x32 inputs); OS8 only.
    """

    def __init__(
        self,
        num_classes: int = 21,
        attention: AttentionLike = "none",
        reduction: int | None = None,
        output_stride: int = 16,
        aspp_input: AsppInput = "last_conv",
        separable: bool = True,
        depthwise_bn: bool = True,
        width: float = 1.0,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be 16 or 8, not {output_stride}")
        if small_input and output_stride != 8:
            raise ValueError(f"with small_input the output stride is 8, not {output_stride}")
        if aspp_input not in ("last_conv", "last_block"):
            raise ValueError(f"aspp_input must be 'last_conv' or 'last_block', not {aspp_input!r}")
        trunk = MobileNetV2(width=width, attention=attention, reduction=reduction, small_input=small_input)
        self.output_stride = output_stride
        self.features = trunk.features
        dilate_mobilenetv2(self.features, output_stride)
        if aspp_input == "last_conv":
            self.conv: nn.Module = trunk.conv
            aspp_in = trunk.last_channel
        else:
            self.conv = nn.Identity()
            last = self.features[-1]
            assert isinstance(last, InvertedResidual)
            aspp_in = last.conv[-1].num_features
        self.aspp = ASPP(aspp_in, ASPP_RATES[output_stride], 256, separable, depthwise_bn)
        self.classifier = nn.Conv2d(256, num_classes, kernel_size=1)
        # Of the final bilinear upsampling of the logits to the input size; a recipe's segmentation protocol sets it
        # (the ASPP pooling branch upsamples a 1x1 map, the same either way).
        self.align_corners = False
        self._init_head()

    def _init_head(self) -> None:
        for m in [*self.aspp.modules(), self.classifier]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        y = self.classifier(self.aspp(self.conv(self.features(x))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners)


def set_align_corners(model: nn.Module, align_corners: bool) -> None:
    """Set ``align_corners`` of a segmenter's final upsampling; ``ValueError`` if the model has none."""
    if not hasattr(model, "align_corners"):
        raise ValueError(f"{type(model).__name__} has no align_corners setting for its upsampling")
    model.align_corners = bool(align_corners)  # type: ignore[assignment]


def deeplabv3_mobilenetv2(
    num_classes: int = 21,
    width: float = 1.0,
    attention: AttentionLike = "none",
    reduction: int | None = None,
    output_stride: int = 16,
    small_input: bool = False,
    *,
    aspp_input: AsppInput = "last_conv",
    separable: bool = True,
    depthwise_bn: bool = True,
) -> DeepLabV3MobileNetV2:
    """DeepLabV3 with a MobileNetV2 backbone (Tables 8-9)."""
    return DeepLabV3MobileNetV2(
        num_classes,
        attention,
        reduction,
        output_stride,
        aspp_input,
        separable,
        depthwise_bn,
        width=width,
        small_input=small_input,
    )
