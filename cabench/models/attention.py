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

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cabench.models.ca_autograd import coordinate_attention_train
from cabench.models.ca_compiled import compile_ca_blocks, compiled_forward

__all__ = [
    "ATTENTION_KINDS",
    "CBAM",
    "CoordinateAttention",
    "DirectionalAttention",
    "SqueezeExcite",
    "compile_ca_blocks",
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


def _round_up(value: int, multiple: int = 16) -> int:
    return (value + multiple - 1) // multiple * multiple


@functools.lru_cache(maxsize=256)
def _constant(kind: str, a: int, b: int, c: int, d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Small constant tensors of the CA inference path, made once per shape, dtype and device.

    ``("ones", w, 0, 0, 0)``: a vector of ``w`` ones; ``("fill", w, 0, 0, 0)``: ``w`` values ``1 / w``;
    ``("zeros", rows, cols, 0, 0)``: a zero matrix; ``("pool", h, w, offset, length)``: the ``(h * w, length)``
    matrix ``P`` with ``x.view(C, h * w) @ P`` = the row means at columns ``[0, h)`` and the column means at
    columns ``[offset, offset + w)``, zeros elsewhere. Made outside inference mode (usable in and out of it), never
    part of a state dict, never trained.
    """
    with torch.inference_mode(False), torch.no_grad():
        if kind == "ones":
            t = torch.ones(a, dtype=torch.float64)
        elif kind == "fill":
            t = torch.full((a,), 1.0 / a, dtype=torch.float64)
        elif kind == "zeros":
            t = torch.zeros(a, b, dtype=torch.float64)
        elif kind == "pool":
            h, w, offset, length = a, b, c, d
            t = torch.zeros(h, w, length, dtype=torch.float64)
            i = torch.arange(h)
            t[i, :, i] = 1.0 / w  # z^h(i): mean over the width of row i (Eq. 4)
            j = torch.arange(w)
            t[:, j, offset + j] = 1.0 / h  # z^w(j): mean over the height of column j (Eq. 5)
            t = t.view(h * w, length)
        else:
            raise ValueError(kind)
        return t.to(dtype=dtype, device=device)


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

    Two ways to compute the same function (tested against a from-scratch Eq. 4-9
    reference to 1e-5):

    * **Module path** (training, anything that needs gradients, batches of more
      than one image, non-contiguous inputs such as channels_last, tracing for
      operation counts): both pooled strips concatenated to ``(N, C, H + W, 1)``,
      then the ``conv1``/``bn1``/``conv_h``/``conv_w`` modules. In training,
      BatchNorm takes its statistics over both strips together, as Eq. 6 reads.
    * **Inference path** (eval mode, gradients off, one contiguous image): the
      same arithmetic with fewer and cheaper eager operations, for latency.
      Pooling is a matrix-vector product (row sums) and one reduction (column
      sums), or for maps of at most 64 pixels one matrix product with a constant
      pooling matrix; ``conv1`` is one ``addmm`` over the concatenated strips
      (the 1/W of the means folded into its ``alpha``), BatchNorm is applied with
      ``F.batch_norm`` to the ``mip x (H + W)`` result, both gate convs run as one
      batched product with one in-place sigmoid, and the gates are applied with
      two full-size operations (the rank-one gate map ``g^h g^w`` then an
      in-place product with ``x``; for maps wider than 28, ``x * g^h`` then an
      in-place ``* g^w``). Strips are zero-padded to a multiple of 16 columns,
      which keeps CPU BLAS on its fast kernels; padded columns are computed and
      dropped. Nothing is cached between calls, so changed weights, BatchNorm
      statistics or modes take effect at once.

    Opt-in: :func:`compile_ca_blocks` makes a block run its inference path as
    TorchInductor-compiled code instead (``cabench.models.ca_compiled``).
    """

    kind = "ca"
    # Widths up to this apply the gates through the rank-one gate map (cheaper than two broadcast
    # products when rows are short); pooling is one matrix product for maps of at most this many pixels.
    _GATE_MAP_MAX_WIDTH = 28
    _POOL_GEMM_MAX_PIXELS = 64
    # Set per block by compile_ca_blocks (inference path through cabench.models.ca_compiled).
    _ca_compiled = False
    _ca_autotune = True

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cheapest tests first: this runs once per block per call. Tracing (fvcore's operation counts) takes
        # the module path so that counts are the convolutions' own.
        if (
            not self.training
            and not torch.is_grad_enabled()
            and x.shape[0] == 1
            and x.is_contiguous()
            and not torch.jit.is_tracing()
        ):
            if self._ca_compiled:
                y = compiled_forward(self, x)
                if y is not None:
                    return y
            return self._forward_inference(x)
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # counts / Inductor fuse the plain ops
            return self._forward_modules(x)
        # Training and anything with gradients: hand-written backward passes (cabench.models.ca_autograd).
        return coordinate_attention_train(x, self.conv1, self.bn1, self.conv_h, self.conv_w)

    def _forward_modules(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4-9 through the block's modules, on the concatenated strips (any mode, differentiable)."""
        h, w = x.shape[-2:]
        z_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1), Eq. 4
        z_w = x.mean(dim=2, keepdim=True)  # (N, C, 1, W), Eq. 5
        # BatchNorm statistics (training) are taken over both strips together (Eq. 6).
        f = self.act(self.bn1(self.conv1(torch.cat([z_h, z_w.transpose(2, 3)], dim=2))))
        f_h, f_w = torch.split(f, [h, w], dim=2)
        g_h = torch.sigmoid(self.conv_h(f_h))  # (N, C, H, 1), Eq. 7
        g_w = torch.sigmoid(self.conv_w(f_w.transpose(2, 3)))  # (N, C, 1, W), Eq. 8
        return x * g_h * g_w  # Eq. 9

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4-9 for one contiguous image, eval mode, no autograd (see the class docstring)."""
        _, c, h, w = x.shape
        dtype, device = x.dtype, x.device
        # Parameters straight from the registries: nn.Module attribute lookup costs ~1 us per name.
        mods = self._modules
        conv1, bn = mods["conv1"]._parameters, mods["bn1"]
        gate_h, gate_w = mods["conv_h"]._parameters, mods["conv_w"]._parameters
        w1 = conv1["weight"]
        mip = w1.shape[0]
        w1 = w1.view(mip, c)
        # Column layout of the strips: compact [h | w | pad] (conv1 and both gate convs over all `length`
        # columns: 3 * mip * C * length multiply-adds) or split [h | pad | w | pad], two halves of hp columns
        # (conv1 over 2 hp columns, each gate conv over its hp: 4 * mip * C * hp), whichever is cheaper.
        hp = _round_up(max(h, w))
        length = _round_up(h + w)
        compact = 3 * length < 4 * hp
        if not compact:
            length = 2 * hp
        w_offset = h if compact else hp
        if h * w <= self._POOL_GEMM_MAX_PIXELS:
            pool = _constant("pool", h, w, w_offset, length, dtype, device)
            f = torch.addmm(conv1["bias"].view(mip, 1), w1, torch.mm(x.view(c, h * w), pool))
        else:
            if h == w:  # sums; the 1/W of both means goes into addmm's alpha
                z_h = torch.mv(x.view(c * h, w), _constant("ones", w, 0, 0, 0, dtype, device))
                z_w = x.sum(dim=2)
                alpha = 1.0 / w
            else:
                z_h = torch.mv(x.view(c * h, w), _constant("fill", w, 0, 0, 0, dtype, device))
                z_w = x.mean(dim=2)
                alpha = 1.0
            parts = [z_h.view(c, h)]
            if w_offset > h:
                parts.append(_constant("zeros", c, w_offset - h, 0, 0, dtype, device))
            parts.append(z_w.view(c, w))
            if length > w_offset + w:
                parts.append(_constant("zeros", c, length - w_offset - w, 0, 0, dtype, device))
            f = torch.addmm(conv1["bias"].view(mip, 1), w1, torch.cat(parts, dim=1), alpha=alpha)
        bn_params, bn_buffers = bn._parameters, bn._buffers
        f = F.batch_norm(
            f.unsqueeze(0),
            bn_buffers["running_mean"],
            bn_buffers["running_var"],
            bn_params["weight"],
            bn_params["bias"],
            False,
            0.0,
            bn.eps,
        )
        f = F.hardswish(f, inplace=True)  # (1, mip, length)
        weights = torch.stack([gate_h["weight"].view(c, mip), gate_w["weight"].view(c, mip)])  # (2, C, mip)
        biases = torch.stack([gate_h["bias"], gate_w["bias"]]).unsqueeze(2)  # (2, C, 1)
        if compact:  # both gate convs over every column: rows [0, C) are conv_h's, rows [C, 2C) conv_w's
            a = torch.addmm(biases.view(2 * c, 1), weights.view(2 * c, mip), f[0])  # (2C, length)
            row, g_w_offset = length, c * length + h
        else:  # conv_h over the first half of the columns, conv_w over the second
            a = torch.baddbmm(biases, weights, f.as_strided((2, mip, hp), (hp, length, 1)))  # (2, C, hp)
            row, g_w_offset = hp, c * hp
        a = a.sigmoid_()
        g_h = a.as_strided((1, c, h, 1), (c * row, row, 1, 1))  # Eq. 7
        g_w = a.as_strided((1, c, 1, w), (c * row, row, 1, 1), g_w_offset)  # Eq. 8
        if a.dtype != x.dtype:  # e.g. under autocast: let type promotion decide, as x * g_h * g_w does
            return x * g_h * g_w
        if w <= self._GATE_MAP_MAX_WIDTH:
            return torch.mul(g_h, g_w).mul_(x)  # Eq. 9
        return torch.mul(x, g_h).mul_(g_w)


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
