"""The Coordinate Attention training path: Eq. 4-9 with hand-written backward passes over the full-size tensor.

Autograd through ``x.mean(3)``, ``x.mean(2)`` and ``x * g_h * g_w`` walks the full ``(N, C, H, W)`` tensor many
times in the backward pass: each product's backward materialises two full-size products and a reduction, each
mean's backward materialises a full-size expanded gradient, and the three gradients of ``x`` are summed pass by
pass; the forward also saves the intermediate ``x * g_h`` (one more full-size tensor kept alive). Here:

* :class:`StripPool` returns both strip means in one ``(N, C, H + W)`` tensor (Eq. 4-5, joined in the plain
  layout of :mod:`cabench.models.ca_layout`); its backward writes the gradient of ``x`` as one broadcast sum.
* :class:`CoordinateGate` computes ``y = x * g_h * g_w`` (Eq. 9) saving only ``x`` and the two gates; its
  backward forms ``gy * x`` once and reads the two gate gradients off it with two batched matrix-vector
  products, and writes the gradient of ``x`` with one product and one in-place product.
* :func:`coordinate_attention_train` runs the small part (shared 1x1 conv, BatchNorm, h_swish, the two gate
  convs) on the joined ``(N, C, H + W)`` strip tensor with batched matrix products instead of 1x1 convolutions
  over ``(N, C, H + W, 1)`` images. BatchNorm's batch statistics are taken over ``N x (H + W)`` positions, the
  same positions as BatchNorm2d on the concatenated strips (Eq. 6), and the running statistics are updated once.

Outputs and gradients equal the module path's to float rounding (tests: 1e-5 in float32 against the block's
module path on random inputs, square and non-square). Double backward is not supported (``once_differentiable``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from cabench.models.ca_layout import join_strips, split_strips

__all__ = ["CoordinateGate", "StripPool", "coordinate_attention_train"]


class StripPool(torch.autograd.Function):
    """``x (N, C, H, W) -> z (N, C, H + W)``: the row means (Eq. 4) then the column means (Eq. 5)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.hw = x.shape[2:]
        return join_strips(x.mean(dim=3), x.mean(dim=2), dim=2)

    @staticmethod
    @once_differentiable
    def backward(ctx, gz: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h, w = ctx.hw
        gz_h, gz_w = split_strips(gz, h, dim=2)
        g_rows = (gz_h * (1.0 / w)).unsqueeze(3)  # (N, C, H, 1)
        g_cols = (gz_w * (1.0 / h)).unsqueeze(2)  # (N, C, 1, W)
        return g_rows + g_cols


class CoordinateGate(torch.autograd.Function):
    """``y = x * g_h * g_w`` with ``g_h (N, C, H, 1)`` and ``g_w (N, C, 1, W)`` (Eq. 9)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g_h: torch.Tensor, g_w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, g_h, g_w)
        y = x * g_h
        y.mul_(g_w)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x, g_h, g_w = ctx.saved_tensors
        p = gy * x  # (N, C, H, W)
        if p.is_contiguous():  # batched matrix-vector products over the rows / columns of each (n, c) map
            d_h = torch.matmul(p, g_w.transpose(2, 3))  # sum over the width of gy * x * g_w: (N, C, H, 1)
            d_w = torch.matmul(g_h.transpose(2, 3), p)  # sum over the height of gy * x * g_h: (N, C, 1, W)
        else:  # channels_last and other layouts: reductions that keep the layout
            d_h = (p * g_w).sum(dim=3, keepdim=True)
            d_w = (p * g_h).sum(dim=2, keepdim=True)
        gx = torch.mul(gy, g_h, out=p) if p.dtype == torch.result_type(gy, g_h) else gy * g_h  # reuses p's memory
        gx.mul_(g_w)
        return gx, d_h.to(g_h.dtype), d_w.to(g_w.dtype)


def coordinate_attention_train(
    x: torch.Tensor,
    conv1: nn.Conv2d,
    bn: nn.BatchNorm2d,
    conv_h: nn.Conv2d,
    conv_w: nn.Conv2d,
) -> torch.Tensor:
    """Eq. 4-9 for any batch, differentiable, with BatchNorm in the module's current mode (see module docstring)."""
    c, h = x.shape[1], x.shape[2]
    mip = conv1.out_channels
    z = StripPool.apply(x)  # (N, C, H + W)
    f = _pointwise(conv1, z, mip, c)  # (N, mip, H + W)
    f = _batch_norm(f, bn)
    f = F.hardswish(f)
    f_h, f_w = split_strips(f, h, dim=2)
    g_h = torch.sigmoid(_pointwise(conv_h, f_h, c, mip))  # (N, C, H)
    g_w = torch.sigmoid(_pointwise(conv_w, f_w, c, mip))  # (N, C, W)
    return CoordinateGate.apply(x, g_h.unsqueeze(3), g_w.unsqueeze(2))


def _pointwise(conv: nn.Conv2d, z: torch.Tensor, out: int, inp: int) -> torch.Tensor:
    """A 1x1 conv with bias on ``(N, inp, L)``: ``W z + b``, the sum in the product's dtype (under autocast the
    product's, as the convolution would), so the block's output keeps the input's dtype."""
    y = torch.matmul(conv.weight.view(out, inp), z)
    return y + conv.bias.view(out, 1).to(y.dtype)


def _batch_norm(f: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn`` applied to ``(N, mip, L)`` as BatchNorm2d would to ``(N, mip, L, 1)`` (same statistics, same updates)."""
    return bn(f.unsqueeze(3)).squeeze(3)
