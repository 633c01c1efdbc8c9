"""SSDLite320 detectors for Tables 6 and 7, built on torchvision's SSD.

The builders return a :class:`cabench.models.ssd_protocol.ProtocolSSD`, a
torchvision :class:`~torchvision.models.detection.SSD` whose loss (multibox or
sigmoid focal), default boxes and post-processing a recipe's detection protocol
sets (:func:`~cabench.models.ssd_protocol.configure_ssd`); torchvision's
matching, box coding and NMS are used unchanged. Only the backbone (feature
extractor plus extra layers) is cabench's; the head is torchvision's
:class:`~torchvision.models.detection.ssdlite.SSDLiteHead`. Built without a
recipe (counting, ``cabench count``) the detector has torchvision's SSDLite320
settings; the paper recipes switch to the authors' (see
``suites/recipes/*-ssdlite320-paper.yaml``), which changes no parameter.

Architecture (MobileNetV2 variant, ``ssdlite320_mobilenetv2``)
----------------------------------------------------------------
Six feature maps at 320x320 input, 20/10/5/3/2/1 pixels wide:

1. **OS16 tap**: the output of ``features[13]``, the last inverted residual at
   output stride 16 (96 channels at width 1.0), i.e. the result of the last
   pointwise (projection) convolution of the stride-16 stage.
2. **OS32 tap**: the last 1x1 conv (``conv``, 1280 channels).
3. **Four extra layers** on top of the 1280-wide map, each a stride-2 inverted
   residual (1x1 expansion + BN + ReLU6, depthwise 3x3 stride 2 + BN + ReLU6,
   attention, 1x1 linear projection + BN): 1280->512 (hidden 256),
   512->256 (hidden 256), 256->256 (hidden 128), 256->64 (hidden 128).
   They are :class:`cabench.models.mobilenetv2.InvertedResidual` blocks and
   carry the backbone's attention block like every other block (see below).

With ``small_input`` the trunk's stem and ``features[2]`` stride 1
(:class:`~cabench.models.mobilenetv2.MobileNetV2`): the same taps at output
strides 4 and 8, the extras at 16-128; no parameter changes.

The head predicts, on every map, class logits and box offsets with a
depthwise-separable 3x3 conv (depthwise 3x3 + BN + ReLU6, then a 1x1 conv with
bias), torchvision's SSDLite head, six boxes per location on every map. The
default boxes of a build without a recipe are those of torchvision's
``ssdlite320_mobilenet_v3_large``: aspect ratios {2, 3} on all six maps,
scales spread linearly from 0.2 to 0.95. The paper recipes use the authors'
min/max sizes and steps instead (COCO 45..315 px, VOC 45..320 px).

Sources of each fact
--------------------
* CA paper, Section 4.4.1: "we connect the first and second layers of SSDLite
  to the last pointwise convolutions with output stride of 16 and 32,
  respectively and add the rest SSDLite layers on top of the last
  convolutional layer"; the code is "based on PyTorch and SSDLite [34, 26]".
* The authors' detection code, ``houqb/ssdlite-pytorch-mobilenext`` (linked
  from the CA README for detection): ``ssd/modeling/backbone/mobilenet.py``
  runs ``features[0..13]`` and takes that output (96 channels) as the first
  map, the 1280-wide last conv as the second, then four extras
  ``InvertedResidual(1280, 512, 2, 0.2)``, ``(512, 256, 2, 0.5)``,
  ``(256, 256, 2, 0.5)``, ``(256, 64, 2, 0.5)``;
  ``configs/mobilenet_v2_ssd320_*.yaml`` give OUT_CHANNELS
  ``(96, 1280, 512, 256, 256, 64)`` and feature maps ``[20, 10, 5, 3, 2, 1]``.
  Its README reports 22.3 COCO AP for this MobileNetV2 model, the AP of
  Table 6 row 2. ``ssd/modeling/backbone/se_mbv2.py`` builds its extras from
  the same inverted-residual class as its backbone, so they carry SE too: the
  reason the extras here carry the attention block.
* Head: ``ssd/modeling/box_head/box_predictor.py`` (``SSDLiteBoxPredictor``)
  uses depthwise-separable 3x3 predictors (depthwise conv, BN, ReLU6, 1x1
  conv) on every map but the last, which gets a plain 1x1 conv; COCO configs
  use 6/6/6/6/6/4 boxes per location, VOC configs 6 everywhere.

Choices and alternatives (counts in ``notes/dense_counts.md``)
---------------------------------------------------------------
* **OS16 tap.** MobileNetV2's own SSDLite (Sandler et al., Section 6.2, and
  torchvision's SSDLite) attaches the first layer to the *expansion* of the
  first stride-32 block (``features[14]``'s 1x1 expansion, 576 channels). The
  CA text is ambiguous between the two; the authors' code takes the 96-channel
  block output, and so does this module by default. ``c4_tap="expansion"``
  builds the other reading: +0.26M parameters and +0.10B multiply-adds on
  every row, 4.57/4.96/4.97/5.03M, no COCO row of Table 6 matched (with the
  TF-style extras below too, i.e. MobileNetV2's SSDLite throughout:
  4.48/4.87/4.87/4.93M, still none).
* **Extras.** The TF/torchvision SSDLite extras (1x1 to half width, depthwise
  3x3 stride 2, 1x1 to 512/256/256/128, all with ReLU6) give 4.23/4.61/4.61/
  4.67M with the 96-channel tap: every row short by 0.1M. The authors'
  inverted-residual extras of ``mobilenet.py`` match. (``se_mbv2.py`` uses
  hidden ratios 0.25/0.25 for the second and fourth extras; that gives
  4.19/4.57M, which do not match either.)
* **Attention in the extras** (``extra_attention=True``, default): follows
  ``se_mbv2.py``. Without it CA gives 4.758M, still 4.8M at printed precision.
* **Head.** torchvision's SSDLite head differs from the authors' in three
  parameter-visible ways, each under 0.01M: no bias on the depthwise conv
  (BN follows it), a separable predictor also on the last map (the authors
  use a 1x1 conv there) and six boxes per location on the last map (the
  authors' COCO configs use four). Kept for a standard torchvision detector.
* **Default boxes.** Set by the recipe (box geometry changes no parameter or
  multiply-add): the paper recipes use the authors' sizes and steps, the
  ``*-torchvision`` recipes torchvision's SSDLite320 boxes (scales 0.2-0.95).
  The number of boxes per location must stay six on every map: it sets the
  head's size, so the authors' four boxes on the last COCO map are refused
  rather than changing the counted head (see the COCO recipe's note).

Counts (81 classes, 320x320; exact numbers in ``notes/dense_counts.md``):
4.31/4.71/4.71/4.78M parameters for none/SE/CBAM/CA, Table 6's 4.3/4.7/4.7/4.8M
at printed precision. Multiply-adds are 0.748/0.749/0.751/0.757B: CBAM and CA
print as Table 6's 0.8B, the baseline and SE fall 2M (0.3%) short of the 0.75B
rounding edge and print as 0.7B. The 4.3M/0.8B of the baseline are also the
figures of MobileNetV2's SSDLite (Sandler et al., Table 6). Table 7 (VOC) prints
the COCO parameter counts again, but with 21 classes the classification
predictors shrink and the models have 0.89M fewer parameters (3.42/3.82/3.82/
3.89M): Table 7 evidently repeats the 81-class counts.

MobileNeXt variant (``ssdlite320_mobilenext``)
----------------------------------------------
Built on :class:`cabench.models.mobilenext.MobileNeXt` with the authors' taps and
extras (``ssd/modeling/backbone/mobilenext.py``, ``configs/mobilenext_ssd320_*.yaml``):
576 channels at OS16 inside ``features[13]``, 1280 at OS32 inside
``features[20]``, four sandglass-style extras to 512/256/256/128; see
:class:`SSDLiteMobileNeXtFeatures`. Attention, when asked for, sits where the
MobileNeXt blocks carry it (after the first depthwise conv), in the extras too.
Counts: 4.56M parameters and 0.844B multiply-adds vs Table 6's 4.4M/0.8B. The
parameter drift is not the head: the authors' own head (biased depthwise
convs, a 1x1 predictor with four boxes on the last map) on the same backbone
gives 4.54M. Table 6's 4.4M is the figure the MobileNeXt paper prints for this
detector, which its released code does not reproduce.

Counting
--------
The registered ``counting_view`` wraps the built SSD in :class:`SSDCountingView`,
whose ``forward(images)`` runs the backbone and the head on an already
normalised ``(N, 3, 320, 320)`` batch and returns the two head tensors; the
resizing transform, default boxes and post-processing (none of which has
parameters or multiply-adds of the paper's kind) are left out.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Literal

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

from cabench.models.blocks import AttentionLike, create_attention
from cabench.models.layers import conv_bn_act, init_weights
from cabench.models.mobilenetv2 import InvertedResidual, MobileNetV2
from cabench.models.mobilenext import SSDLITE_TAPS, MobileNeXt, SandglassBlock
from cabench.models.ssd_protocol import ProtocolSSD

__all__ = [
    "SSDCountingView",
    "SSDLiteMobileNeXtFeatures",
    "SSDLiteMobileNetV2Features",
    "SandglassExtra",
    "build_ssdlite320",
    "set_ssd_input_size",
    "ssd_counting_view",
    "ssdlite320_mobilenetv2",
    "ssdlite320_mobilenext",
]

IMAGE_SIZE: tuple[int, int] = (320, 320)

# (in, out, expansion ratio) of the four extra layers of the authors' MobileNetV2 SSDLite
# (houqb/ssdlite-pytorch-mobilenext, ssd/modeling/backbone/mobilenet.py).
MOBILENETV2_EXTRAS: tuple[tuple[int, int, float], ...] = (
    (1280, 512, 0.2),
    (512, 256, 0.5),
    (256, 256, 0.5),
    (256, 64, 0.5),
)

# Index of the last MobileNetV2 block at output stride 16 (the 3rd 96-channel block).
MOBILENETV2_OS16_INDEX = 13

C4Tap = Literal["output", "expansion"]

# (in, out, reduction ratio of the hidden width) of the four extra layers of the
# authors' MobileNeXt SSDLite (houqb/ssdlite-pytorch-mobilenext, ssd/modeling/backbone/mobilenext.py).
MOBILENEXT_EXTRAS: tuple[tuple[int, int, float], ...] = (
    (1280, 512, 0.2),
    (512, 256, 0.25),
    (256, 256, 0.5),
    (256, 128, 0.5),
)


class SSDLiteMobileNetV2Features(nn.Module):
    """MobileNetV2 trunk plus SSDLite extra layers: six feature maps for SSDLite320.

    ``features`` and ``conv`` are those of :class:`~cabench.models.mobilenetv2.MobileNetV2`
    (same module names, so a cabench MobileNetV2 ImageNet state dict loads with
    ``strict=False``, only ``classifier.*`` unused).

    Args:
        width: MobileNetV2 width multiplier. The extras keep their output widths; the
            first one reads the trunk's last width (1280 up to width 1.0).
        attention: attention block in every inverted residual (``create_attention`` kinds).
        reduction: reduction ratio of the attention block (default: the kind's).
        c4_tap: ``"output"`` (default): the first map is ``features[13]``'s output,
            as in the authors' code. ``"expansion"``: ``features[14]``'s 1x1
            expansion, as in MobileNetV2's SSDLite.
        extra_attention: whether the extra layers carry the attention block too.
        small_input: the trunk's stem and first downsampling stage at stride 1 (taps at output stride 4 and 8).
    """

    def __init__(
        self,
        width: float = 1.0,
        attention: AttentionLike = "none",
        reduction: int | None = None,
        c4_tap: C4Tap = "output",
        extra_attention: bool = True,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if c4_tap not in ("output", "expansion"):
            raise ValueError(f"c4_tap must be 'output' or 'expansion', not {c4_tap!r}")
        trunk = MobileNetV2(width=width, attention=attention, reduction=reduction, small_input=small_input)
        self.features = trunk.features
        self.conv = trunk.conv
        self.c4_tap = c4_tap
        next_block = self.features[MOBILENETV2_OS16_INDEX + 1]
        assert isinstance(next_block, InvertedResidual) and not next_block.use_residual
        c4_channels = next_block.conv[0].in_channels if c4_tap == "output" else next_block.hidden_dim
        extra_kind = attention if extra_attention else "none"
        # The first extra reads the trunk's last width (1280; wider only at width > 1).
        ins = [trunk.last_channel] + [c for _, c, _ in MOBILENETV2_EXTRAS[:-1]]
        self.extras = nn.ModuleList(
            InvertedResidual(cin, cout, 2, ratio, extra_kind, reduction)
            for cin, (_, cout, ratio) in zip(ins, MOBILENETV2_EXTRAS, strict=True)
        )
        init_weights(self.extras)
        self.out_channels: list[int] = [c4_channels, trunk.last_channel] + [c for _, c, _ in MOBILENETV2_EXTRAS]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps: list[Tensor] = []
        x = self.features[: MOBILENETV2_OS16_INDEX + 1](x)
        block = self.features[MOBILENETV2_OS16_INDEX + 1]
        if self.c4_tap == "expansion":
            # The block after the tap has stride 2, hence no residual: running its
            # layers one part at a time equals running the block.
            x = block.conv[:3](x)
            maps.append(x)
            x = block.conv[3:](x)
        else:
            maps.append(x)
            x = block(x)
        x = self.conv(self.features[MOBILENETV2_OS16_INDEX + 2 :](x))
        maps.append(x)
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class SandglassExtra(nn.Sequential):
    """Stride-2 sandglass-style extra layer of the MobileNeXt SSDLite.

    Depthwise 3x3 stride 2 + BN + ReLU6, attention (as in a MobileNeXt block,
    after the first depthwise conv), 1x1 reduce to ``int(cin * ratio)`` + BN
    (linear), 1x1 expand to ``cout`` + BN + ReLU6.
    """

    def __init__(
        self, cin: int, cout: int, ratio: float, attention: AttentionLike = "none", reduction: int | None = None
    ):
        hidden = int(cin * ratio)
        super().__init__(
            *conv_bn_act(cin, cin, 3, stride=2, groups=cin),
            create_attention(attention, cin, reduction),
            *conv_bn_act(cin, hidden, kernel_size=1, act=False),
            *conv_bn_act(hidden, cout, kernel_size=1),
        )


class SSDLiteMobileNeXtFeatures(nn.Module):
    """MobileNeXt trunk plus SSDLite extra layers: six feature maps for SSDLite320.

    Taps (the authors' ``ssd/modeling/backbone/mobilenext.py``): inside
    ``features[13]`` (first block at output stride 32, stride 2) after its two
    1x1 convs, i.e. before its strided depthwise conv: 576 channels at OS16;
    inside ``features[20]`` (the 1280-wide last block) before its last
    depthwise conv: 1280 channels at OS32 (see
    :data:`cabench.models.mobilenext.SSDLITE_TAPS`). The extras run on the
    full output of ``features[20]`` and are :class:`SandglassExtra` layers
    1280->512 (hidden 256), 512->256 (128), 256->256 (128), 256->128 (128).
    ``features`` is the classifier's, so a cabench MobileNeXt state dict loads
    with ``strict=False``.
    """

    def __init__(
        self,
        width: float = 1.0,
        attention: AttentionLike = "none",
        reduction: int | None = None,
        extra_attention: bool = True,
    ) -> None:
        super().__init__()
        trunk = MobileNeXt(width=width, attention=attention, reduction=reduction)
        self.features = trunk.features
        self.taps = SSDLITE_TAPS
        tap_channels = []
        for index in self.taps:
            block = self.features[index]
            # Splitting a block at its last depthwise conv is exact only without a shortcut.
            assert isinstance(block, SandglassBlock) and not block.use_residual
            norms = [m for m in block.before_last_dw if isinstance(m, nn.BatchNorm2d)]
            tap_channels.append(norms[-1].num_features)
        assert self.taps[1] == len(self.features) - 1
        extra_kind = attention if extra_attention else "none"
        ins = [trunk.last_channel] + [c for _, c, _ in MOBILENEXT_EXTRAS[:-1]]
        self.extras = nn.ModuleList(
            SandglassExtra(cin, cout, ratio, extra_kind, reduction)
            for cin, (_, cout, ratio) in zip(ins, MOBILENEXT_EXTRAS, strict=True)
        )
        init_weights(self.extras)
        self.out_channels: list[int] = tap_channels + [c for _, c, _ in MOBILENEXT_EXTRAS]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps: list[Tensor] = []
        start = 0
        for index in self.taps:
            x = self.features[start:index](x)
            block = self.features[index]
            head = block.before_last_dw
            x = head(x)
            maps.append(x)
            x = block.conv[len(head) :](x)
            start = index + 1
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def build_ssdlite320(backbone: nn.Module, out_channels: list[int], num_classes: int) -> ProtocolSSD:
    """Wrap a six-map feature extractor into torchvision's SSD (as :class:`ProtocolSSD`) with an SSDLite head.

    Default boxes, head and inference settings are those of torchvision's
    ``ssdlite320_mobilenet_v3_large`` (its BatchNorm settings in the head
    included): the build without a recipe. A recipe's detection protocol
    (:func:`cabench.models.ssd_protocol.configure_ssd`) then sets the loss,
    default boxes and post-processing; none of them has parameters. Images are
    normalised with the ImageNet mean and standard deviation (SSD's default),
    as the classification backbones are trained.
    """
    anchor_generator = DefaultBoxGenerator([[2, 3] for _ in range(len(out_channels))], min_ratio=0.2, max_ratio=0.95)
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead(out_channels, anchor_generator.num_anchors_per_location(), num_classes, norm_layer)
    model = ProtocolSSD(
        backbone,
        anchor_generator,
        IMAGE_SIZE,
        num_classes,
        head=head,
        score_thresh=0.001,
        nms_thresh=0.55,
        detections_per_img=300,
    )
    model.candidates_per_class = 300
    return model


def set_ssd_input_size(ssd: SSD, size: int) -> None:
    """Make ``ssd`` resize every image to ``size`` x ``size`` (in place) instead of 320x320.

    A recipe's ``train_size`` is the detector's fixed input (Section 4.4.1 trains and tests at 320); a smaller
    one (the CPU probe) keeps the architecture and the default boxes, which torchvision places relative to the
    image, so only the feature-map sizes shrink. Counting still uses the arch's registered 320x320.
    """
    if size < 1:
        raise ValueError(f"SSD input size must be positive, not {size}")
    ssd.size = (size, size)
    ssd.transform.min_size = (size,)
    ssd.transform.max_size = size
    ssd.transform.fixed_size = (size, size)


class SSDCountingView(nn.Module):
    """Backbone + head of an SSD, for counting: ``forward(images) -> (box_regression, cls_logits)``.

    Shares its modules with the SSD it wraps (no copy). The input is the
    normalised, already resized batch the SSD's transform would produce.
    """

    def __init__(self, ssd: SSD) -> None:
        super().__init__()
        self.backbone = ssd.backbone
        self.head = ssd.head

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = list(self.backbone(images).values())
        out = self.head(features)
        return out["bbox_regression"], out["cls_logits"]


def ssd_counting_view(model: nn.Module) -> nn.Module:
    """The registry's ``counting_view`` for SSD archs: an :class:`SSDCountingView` of ``model``."""
    if not isinstance(model, SSD):
        raise TypeError(f"expected a torchvision SSD, got {type(model).__name__}")
    return SSDCountingView(model)


def ssdlite320_mobilenetv2(
    num_classes: int = 81,
    width: float = 1.0,
    attention: AttentionLike = "none",
    reduction: int | None = None,
    small_input: bool = False,
    *,
    c4_tap: C4Tap = "output",
    extra_attention: bool = True,
) -> SSD:
    """SSDLite320 with a MobileNetV2 backbone (Tables 6-7); torchvision SSD."""
    backbone = SSDLiteMobileNetV2Features(width, attention, reduction, c4_tap, extra_attention, small_input)
    return build_ssdlite320(backbone, backbone.out_channels, num_classes)


def ssdlite320_mobilenext(
    num_classes: int = 81,
    width: float = 1.0,
    attention: AttentionLike = "none",
    reduction: int | None = None,
    *,
    extra_attention: bool = True,
) -> SSD:
    """SSDLite320 with a MobileNeXt backbone (Table 6 row 5); torchvision SSD."""
    backbone = SSDLiteMobileNeXtFeatures(width, attention, reduction, extra_attention)
    return build_ssdlite320(backbone, backbone.out_channels, num_classes)
