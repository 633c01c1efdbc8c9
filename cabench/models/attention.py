"""Attention blocks compared in the paper, declared by name in :mod:`cabench.models.catalogue` (which points here).

Every block maps ``(N, C, H, W) -> (N, C, H, W)`` and is built with
:func:`~cabench.models.blocks.create_attention` from one vocabulary (``none``,
``se``, ``cbam``, ``ca``, ``x``, ``y`` here; ``eca`` and ``triplet`` in their
own modules; any registered or importable block), the way timm's
``create_attn`` works.

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
  ``cbam``, ``x`` and ``y``; 32 for ``ca`` (each class's ``default_reduction``).
* **Activation option** (``act``, for ``se``, ``cbam`` and ``ca``): ``relu``,
  ``hswish`` or ``silu`` replaces the one activation inside the block, so that
  the blog review's fairness question (CA uses h_swish, SE and CBAM ReLU) can be
  run as data. The defaults are the paper's (above), so every count and every
  existing model is unchanged; the activations have no parameters, so counts do
  not depend on ``act``.

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

from cabench.models.blocks import ATTENTIONS, create_attention, default_reduction
from cabench.models.ca_autograd import coordinate_attention_train
from cabench.models.ca_layout import StripLayout, join_strips, split_strips

__all__ = [
    "ACTIVATIONS",
    "ATTENTIONS",
    "CBAM",
    "CoordinateAttention",
    "DirectionalAttention",
    "SqueezeExcite",
    "XAttention",
    "YAttention",
    "create_attention",
    "default_reduction",
    "fold_for_inference",
    "make_activation",
    "no_attention",
    "reduced_channels",
]

#: The ``act`` option of ``se``, ``cbam`` and ``ca``: name -> (module class, functional form with ``inplace``).
ACTIVATIONS: dict[str, tuple[type[nn.Module], Callable[..., torch.Tensor]]] = {
    "relu": (nn.ReLU, F.relu),
    "hswish": (nn.Hardswish, F.hardswish),
    "silu": (nn.SiLU, F.silu),
}


def make_activation(act: str, inplace: bool = False) -> nn.Module:
    """The activation module named ``act`` (``relu``, ``hswish`` or ``silu``)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    cls = ACTIVATIONS[act][0]
    return cls(inplace=True) if inplace else cls()


def no_attention(channels: int, reduction: int | None = None) -> nn.Module:
    """No attention: ``nn.Identity`` in the block's slot, so state dict keys do not move."""
    return nn.Identity()


def fold_for_inference(model: nn.Module) -> nn.Module:
    """``model`` with every attention block's own BatchNorm folded for inference: each module with a
    ``fold_batchnorm()`` method (the CA block; a plugin's block may define one) is asked to fold. One-way: the
    model then evaluates only. Returns ``model``."""
    for module in list(model.modules()):
        fold = getattr(module, "fold_batchnorm", None)
        if callable(fold):
            fold()
    return model


def reduced_channels(kind: str, channels: int, reduction: int) -> int:
    """Width of the bottleneck inside an attention block (see module docstring)."""
    if kind in ("ca", "x", "y"):
        return max(8, channels // reduction)
    return max(1, channels // reduction)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al.; the paper's Eq. 1-3).

    ``x * sigmoid(W2 relu(W1 avgpool(x) + b1) + b2)`` with ``W1: C -> C // r``;
    ``act`` replaces the ReLU (``hswish``, ``silu``).
    """

    kind = "se"
    default_reduction = 24

    def __init__(self, channels: int, reduction: int = 24, act: str = "relu") -> None:
        super().__init__()
        mid = reduced_channels(self.kind, channels, reduction)
        self.fc1 = nn.Conv2d(channels, mid, kernel_size=1, bias=True)
        self.act = make_activation(act, inplace=True)
        self.fc2 = nn.Conv2d(mid, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(z))))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018).

    Channel attention: a shared MLP (``C -> C // r -> C``, with biases) over the
    average- and max-pooled descriptors, summed, sigmoid. Then spatial
    attention: channel-wise max and mean maps, concatenated in that order, a 7x7
    conv (no bias) with BatchNorm, sigmoid. ``act`` replaces the MLP's ReLU.
    """

    kind = "cbam"
    default_reduction = 24

    def __init__(self, channels: int, reduction: int = 24, kernel_size: int = 7, act: str = "relu") -> None:
        super().__init__()
        mid = reduced_channels(self.kind, channels, reduction)
        self.mlp = nn.Sequential(
            nn.Linear(channels, mid, bias=True),
            make_activation(act, inplace=True),
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

    The inference, module and training paths join and split the strips by one
    rule (:mod:`cabench.models.ca_layout`). Under ``torch.compile`` the block
    takes the module path, whose plain operations Inductor fuses with the
    layers around it.

    Options (the defaults are the paper's block):

    * ``act``: the activation after ``bn1`` (``hswish``, as Eq. 6 and the
      authors' code; ``relu`` or ``silu`` for the fairness comparison).
    * ``softmax``: the gates of each direction are a softmax over that
      direction's positions instead of a sigmoid, scaled by the number of
      positions: ``g^h_c = H * softmax_i(a^h_c(i))`` over the ``H`` rows and
      ``g^w_c = W * softmax_j(a^w_c(j))`` over the ``W`` columns, where ``a`` are
      the gate convs' logits (Eq. 7-8 before the sigmoid). This is one reading
      of the open question in the authors' README ("not sure whether the results
      would be better if a softmax is applied between the horizontal and
      vertical features"): the positions of one direction compete for
      attention. The scale keeps each gate's mean at 1; without it the gate
      product would shrink the map by ``1 / (H W)`` (up to 1/12544 in
      MobileNetV2's first blocks), below BatchNorm's ``eps``. It adds no
      parameters or multiply-adds. Such a block always takes the module path.
    """

    kind = "ca"
    default_reduction = 32
    # Widths up to this apply the gates through the rank-one gate map (cheaper than two broadcast
    # products when rows are short); pooling is one matrix product for maps of at most this many pixels.
    _GATE_MAP_MAX_WIDTH = 28
    _POOL_GEMM_MAX_PIXELS = 64

    def __init__(self, channels: int, reduction: int = 32, act: str = "hswish", softmax: bool = False) -> None:
        super().__init__()
        if not isinstance(softmax, bool):
            raise ValueError(f"softmax must be true or false, not {softmax!r}")
        mip = reduced_channels(self.kind, channels, reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, bias=True)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = make_activation(act)
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        self.act_name = act
        self.softmax = softmax
        self._act_inplace = ACTIVATIONS[act][1]  # the inference path's form of `act`

    # The authors' mbv2_ca.py names of the gate convs -> ours.
    _AUTHORS_NAMES = (("conv2.", "conv_h."), ("conv3.", "conv_w."))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for old, new in self._AUTHORS_NAMES:
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fold_batchnorm(self) -> None:
        """Fold ``bn1`` into ``conv1`` for inference, once (torch's ``fuse_conv_bn_eval``): in eval mode the block
        computes the same outputs to float rounding with one operation fewer, and it can no longer train (the
        running statistics are gone). Nothing is cached: the folded conv replaces both modules, so later edits to
        its weights take effect. ``cabench bench`` folds its latency rows' copies; :func:`fold_for_inference`."""
        if isinstance(self.bn1, nn.BatchNorm2d):
            from torch.nn.utils.fusion import fuse_conv_bn_eval

            self.conv1, self.bn1 = fuse_conv_bn_eval(self.conv1.eval(), self.bn1.eval()), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folded = not isinstance(self.bn1, nn.BatchNorm2d)
        if folded and self.training:
            raise RuntimeError("this CA block's BatchNorm was folded for inference (fold_batchnorm); it cannot train")
        # Tracing (fvcore's operation counts) takes the module path so that counts are the convolutions' own;
        # under torch.compile the plain ops of the module path are what Inductor fuses with the layers around
        # the block (the hand-scheduled eager path below compiles to slower code: 1.46x the compiled baseline).
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self._forward_modules(x)
        if not self.training and not torch.is_grad_enabled() and x.shape[0] == 1 and x.is_contiguous():
            return self._forward_modules(x) if self.softmax else self._forward_inference(x)
        if self.softmax or self.act_name != "hswish" or folded:  # the hand-written backward: the paper's block only
            return self._forward_modules(x)
        # Training and anything with gradients: hand-written backward passes (cabench.models.ca_autograd).
        return coordinate_attention_train(x, self.conv1, self.bn1, self.conv_h, self.conv_w)

    def _forward_modules(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4-9 through the block's modules, on the concatenated strips (any mode, differentiable)."""
        h, w = x.shape[-2:]
        z_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1), Eq. 4
        z_w = x.mean(dim=2, keepdim=True)  # (N, C, 1, W), Eq. 5
        # BatchNorm statistics (training) are taken over both strips together (Eq. 6).
        f = self.act(self.bn1(self.conv1(join_strips(z_h, z_w.transpose(2, 3), dim=2))))  # (N, mip, H + W, 1)
        f_h, f_w = split_strips(f, h, dim=2)
        a_h = self.conv_h(f_h)  # (N, C, H, 1)
        a_w = self.conv_w(f_w.transpose(2, 3))  # (N, C, 1, W)
        if self.softmax:  # H * softmax over the rows, W * softmax over the columns (class docstring)
            return x * (torch.softmax(a_h, dim=2) * h) * (torch.softmax(a_w, dim=3) * w)
        return x * torch.sigmoid(a_h) * torch.sigmoid(a_w)  # Eq. 7-9

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
        # Column layout of the strips (cabench.models.ca_layout): compact [h | w | pad] or split [h | pad | w | pad].
        layout = StripLayout.of(h, w)
        hp, length, compact, w_offset = layout.hp, layout.length, layout.compact, layout.w_offset
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
        f = f.unsqueeze(0)
        if isinstance(bn, nn.BatchNorm2d):  # else folded into conv1 (fold_batchnorm)
            bn_params, bn_buffers = bn._parameters, bn._buffers
            mean, var = bn_buffers["running_mean"], bn_buffers["running_var"]
            f = F.batch_norm(f, mean, var, bn_params["weight"], bn_params["bias"], False, 0.0, bn.eps)
        f = self._act_inplace(f, inplace=True)  # (1, mip, length); h_swish by default
        weights = torch.stack([gate_h["weight"].view(c, mip), gate_w["weight"].view(c, mip)])  # (2, C, mip)
        biases = torch.stack([gate_h["bias"], gate_w["bias"]]).unsqueeze(2)  # (2, C, 1)
        if compact:  # both gate convs over every column: rows [0, C) are conv_h's, rows [C, 2C) conv_w's
            a = torch.addmm(biases.view(2 * c, 1), weights.view(2 * c, mip), f[0])  # (2C, length)
            row, g_w_offset = length, c * length + w_offset
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


class XAttention(DirectionalAttention):
    """Table 1's X Attention: the gate varies along the width (``DirectionalAttention(direction="x")``)."""

    default_reduction = 24

    def __init__(self, channels: int, reduction: int = 24) -> None:
        super().__init__(channels, reduction, "x")


class YAttention(DirectionalAttention):
    """Table 1's Y Attention: the gate varies along the height (``DirectionalAttention(direction="y")``)."""

    default_reduction = 24

    def __init__(self, channels: int, reduction: int = 24) -> None:
        super().__init__(channels, reduction, "y")
