"""Attention blocks compared in the paper, behind one factory.

Every block maps ``(N, C, H, W) -> (N, C, H, W)`` and is built with
:func:`create_attention` from one keyword vocabulary (``none``, ``se``,
``cbam``, ``ca``, ``x``, ``y``), the way timm's ``create_attn`` works.

The choices below decide whether the parameter counts of Tables 1-4 match, so
they are written down here and in the README:

* **Which channel count the reduction ratio divides.** Always the channel count
  of the tensor the block sits on. In MobileNetV2 and MobileNeXt that is the
  hidden (expanded) dimension of the block, because the block sits after the
  depthwise 3x3 (Figure 3 and the authors' ``mbv2_ca.py``).
* **Floors.** ``ca``, ``x`` and ``y``: ``mip = max(8, C // r)``, as in the
  authors' ``coordatt.py``. ``se`` and ``cbam``: ``C // r`` with no floor (the
  authors' SE for MobileNetV2 uses ``inp // 24``); a floor of 1 only keeps a
  tiny model from building a zero-width layer, and no model of the paper hits
  it.
* **Biases.** Every 1x1 conv / linear layer inside an attention block has a
  bias (authors' code for CA and SE; Woo et al.'s reference code for CBAM's
  shared MLP). CBAM's 7x7 spatial conv has no bias and is followed by
  BatchNorm, as in Woo et al.'s reference code.
* **Activations.** ``ca``/``x``/``y``: BatchNorm then h_swish after the shared
  1x1 conv (Eq. 6, the authors' README: "h_swish works better than ReLU6").
  ``se``: ReLU between the two linear maps (Eq. 3; the authors' detection code
  uses ReLU6 there, which has the same parameters and multiply-adds).
  ``cbam``: ReLU in the shared MLP. All gates are sigmoids.
* **Default reduction ratios** are the ones of Table 1: 24 for ``se``,
  ``cbam``, ``x`` and ``y``; 32 for ``ca``.

``x`` is the horizontal attention of Table 1: its gate varies along the width
axis (the X coordinate), from features average-pooled over the height. ``y``
is the vertical attention: its gate varies along the height axis, from features
pooled over the width. Both use the CA block's layers for one direction only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTENTION_KINDS",
    "CBAM",
    "CoordinateAttention",
    "DirectionalAttention",
    "SqueezeExcite",
    "create_attention",
    "default_reduction",
    "reduced_channels",
]


def reduced_channels(kind: str, channels: int, reduction: int) -> int:
    """Width of the bottleneck inside an attention block (see module docstring)."""
    if kind in ("ca", "x", "y"):
        return max(8, channels // reduction)
    return max(1, channels // reduction)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al.; the paper's Eq. 1-3).

    ``x * sigmoid(W2 relu(W1 avgpool(x) + b1) + b2)`` with ``W1: C -> C // r``.
    """

    kind = "se"

    def __init__(self, channels: int, reduction: int = 24) -> None:
        super().__init__()
        mid = reduced_channels(self.kind, channels, reduction)
        self.fc1 = nn.Conv2d(channels, mid, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(mid, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(z))))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018).

    Channel attention: a shared MLP (``C -> C // r -> C``, with biases) over the
    average- and max-pooled descriptors, summed, sigmoid. Then spatial
    attention: channel-wise max and mean maps, concatenated in that order, a 7x7
    conv (no bias) with BatchNorm, sigmoid.
    """

    kind = "cbam"

    def __init__(self, channels: int, reduction: int = 24, kernel_size: int = 7) -> None:
        super().__init__()
        mid = reduced_channels(self.kind, channels, reduction)
        self.mlp = nn.Sequential(
            nn.Linear(channels, mid, bias=True),
            nn.ReLU(inplace=True),
            nn.Linear(mid, channels, bias=True),
        )
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        avg = self.mlp(x.mean(dim=(2, 3)))
        mx = self.mlp(x.amax(dim=(2, 3)))
        x = x * torch.sigmoid(avg + mx).view(n, c, 1, 1)
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_bn(self.spatial_conv(pooled)))


class CoordinateAttention(nn.Module):
    """Coordinate Attention (Section 3.2, Eq. 4-9).

    ``z^h``: average over the width (one value per row); ``z^w``: average over
    the height (one value per column). They are concatenated along the spatial
    axis, sent through a shared 1x1 conv ``conv1`` (C -> mip, bias), ``bn1`` and
    h_swish, split back, and mapped to gates ``g^h = sigmoid(conv_h(f^h))`` and
    ``g^w = sigmoid(conv_w(f^w))``; ``y = x * g^h * g^w``.

    Module names follow the authors' ``coordatt.py``. Their released
    MobileNetV2 weights (``mbv2_ca.py``) call ``conv_h``/``conv_w``
    ``conv2``/``conv3``; the block accepts those names too when loading a state
    dict, so ``model.load_state_dict(authors_state)`` works as it is.

    Because BatchNorm and the 1x1 convs act on each spatial position alone, the
    height and width strips can go through ``conv1``/``bn1`` separately with the
    same result as the concatenated tensor; the forward pass does this to avoid
    the transpose, concatenation and split of the reference implementation.
    """

    kind = "ca"

    def __init__(self, channels: int, reduction: int = 32) -> None:
        super().__init__()
        mip = reduced_channels(self.kind, channels, reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, bias=True)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, bias=True)

    # The authors' mbv2_ca.py names of the gate convs -> ours.
    _AUTHORS_NAMES = (("conv2.", "conv_h."), ("conv3.", "conv_w."))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for old, new in self._AUTHORS_NAMES:
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _embed(self, strips: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv1(strips)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        z_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        z_w = x.mean(dim=2, keepdim=True)  # (N, C, 1, W)
        if self.training:
            # BatchNorm statistics must be taken over both strips together (Eq. 6).
            f = self._embed(torch.cat([z_h, z_w.transpose(2, 3)], dim=2))
            f_h, f_w = torch.split(f, [h, w], dim=2)
            f_w = f_w.transpose(2, 3)
        else:
            f_h, f_w = self._embed(z_h), self._embed(z_w)
        return x * torch.sigmoid(self.conv_h(f_h)) * torch.sigmoid(self.conv_w(f_w))


class DirectionalAttention(nn.Module):
    """Coordinate attention along one direction only (Table 1's X / Y Attention).

    ``direction="x"``: the gate varies along the width, from features pooled
    over the height (``conv_w``). ``direction="y"``: the gate varies along the
    height, from features pooled over the width (``conv_h``).
    """

    def __init__(self, channels: int, reduction: int = 24, direction: str = "x") -> None:
        super().__init__()
        if direction not in ("x", "y"):
            raise ValueError(f"direction must be 'x' or 'y', got {direction!r}")
        self.kind = direction
        mip = reduced_channels(direction, channels, reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, bias=True)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        gate = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        if direction == "x":
            self.conv_w = gate
        else:
            self.conv_h = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "x":
            f = self.act(self.bn1(self.conv1(x.mean(dim=2, keepdim=True))))
            return x * torch.sigmoid(self.conv_w(f))
        f = self.act(self.bn1(self.conv1(x.mean(dim=3, keepdim=True))))
        return x * torch.sigmoid(self.conv_h(f))


def _identity(channels: int, reduction: int) -> nn.Module:
    return nn.Identity()


_FACTORIES: dict[str, tuple[Callable[[int, int], nn.Module], int]] = {
    "none": (_identity, 1),
    "se": (SqueezeExcite, 24),
    "cbam": (CBAM, 24),
    "ca": (CoordinateAttention, 32),
    "x": (lambda c, r: DirectionalAttention(c, r, "x"), 24),
    "y": (lambda c, r: DirectionalAttention(c, r, "y"), 24),
}

ATTENTION_KINDS: tuple[str, ...] = tuple(_FACTORIES)


def default_reduction(kind: str) -> int:
    """The reduction ratio a block uses when none is given (Table 1's ``r``)."""
    _check_kind(kind)
    return _FACTORIES[kind][1]


def _check_kind(kind: str) -> None:
    if kind not in _FACTORIES:
        raise ValueError(f"unknown attention {kind!r}; expected one of {', '.join(ATTENTION_KINDS)}")


def create_attention(kind: str, channels: int, reduction: int | None = None) -> nn.Module:
    """Build the attention block ``kind`` for a ``channels``-wide feature map.

    ``kind="none"`` returns ``nn.Identity`` so a network's layout (and its state
    dict keys) does not depend on which attention it carries.
    """
    _check_kind(kind)
    factory, default = _FACTORIES[kind]
    return factory(channels, reduction if reduction is not None else default)
