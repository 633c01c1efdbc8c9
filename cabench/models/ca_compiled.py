"""Opt-in compiled inference path of :class:`~cabench.models.attention.CoordinateAttention` (TorchInductor).

:func:`cabench.models.attention.compile_ca_blocks` gives CA blocks :func:`compiled_forward` as their inference
function; such a block, under the conditions of its eager inference path (eval mode, gradients off, one contiguous
image, not tracing), runs Eq. 4-9 through a callable that TorchInductor compiled from :func:`_ca_inference` for
that input: the two strip means, ``conv1`` + BatchNorm (eval) + h_swish, both gate
convs, the sigmoids and the gating of ``x``, fused into a few C++ kernels and matrix products. Nothing else in the
network is compiled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cabench.models.ca_layout import StripLayout

__all__ = ["compiled_forward"]

# (x shape, mip, dtype, device, BN eps, threads, autotune) -> compiled callable, or None where compiling failed.
_CACHE: dict[tuple[object, ...], Callable[..., torch.Tensor] | None] = {}
_MISSING = object()
_warned = False


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # A batch of one: inductor's C++ GEMM template (max-autotune) handles bmm, and it beats mm's ATen call here.
    return torch.bmm(a[None], b[None])[0]


def _ca_inference(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    wh: torch.Tensor,
    bh: torch.Tensor,
    ww: torch.Tensor,
    bw: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Eq. 4-9 for one image in eval mode, from the block's tensors (the function that gets compiled).

    The strips are joined and split in the eager inference path's padded layout
    (:class:`cabench.models.ca_layout.StripLayout`).
    """
    _, c, h, w = x.shape
    mip = w1.shape[0]
    layout = StripLayout.of(h, w)
    z = layout.join(x.mean(dim=3)[0], x.mean(dim=2)[0])  # (C, length): z^h (Eq. 4), z^w (Eq. 5), padding
    f = _mm(w1.view(mip, c), z) + b1[:, None]
    f = (f - running_mean[:, None]) * (bn_weight * torch.rsqrt(running_var + eps))[:, None] + bn_bias[:, None]
    f = F.hardswish(f)  # Eq. 6
    f_h, f_w = layout.halves(f)
    a_h, a_w = layout.gate_columns(_mm(wh.view(c, mip), f_h) + bh[:, None], _mm(ww.view(c, mip), f_w) + bw[:, None])
    # Eq. 7-9
    return x * torch.sigmoid(a_h)[None, :, :, None] * torch.sigmoid(a_w)[None, :, None, :]


def _compile(args: tuple[torch.Tensor, ...], eps: float, autotune: bool) -> Callable[..., torch.Tensor]:
    from torch.fx.experimental.proxy_tensor import make_fx

    patches: dict[str, object] = {"size_asserts": False, "alignment_asserts": False}
    if autotune:
        patches.update(max_autotune=True, max_autotune_gemm_backends="CPP,ATEN")
    with torch.inference_mode(False), torch.no_grad():
        example = [a.detach().clone() for a in args]  # ordinary tensors even when called under inference mode
        gm = make_fx(lambda *a: (_ca_inference(*a, eps),))(*example)
        artifact = torch._inductor.standalone_compile(
            gm, example, dynamic_shapes="from_example_inputs", options={"config_patches": patches}
        )
    return lambda *a: artifact(*a)[0]


def compiled_forward(block: nn.Module, x: torch.Tensor, autotune: bool = True) -> torch.Tensor | None:
    """A CA block's batch-1 inference output through a compiled callable, or None where its eager inference path
    should run: the inference function :func:`cabench.models.attention.compile_ca_blocks` gives h_swish CA blocks.

    ``block`` has the CA block's ``conv1``, ``bn1``, ``conv_h`` and ``conv_w``, read at each call. None when ``x``
    and the weights differ in dtype, under autocast, when a weight is not contiguous, or when compiling for this
    input failed (warned once). The caller has checked the inference-path conditions.
    """
    global _warned
    mods = block._modules
    conv1, bn = mods["conv1"]._parameters, mods["bn1"]
    gate_h, gate_w = mods["conv_h"]._parameters, mods["conv_w"]._parameters
    bn_params, bn_buffers = bn._parameters, bn._buffers
    w1 = conv1["weight"]
    if w1.dtype != x.dtype or torch.is_autocast_enabled(x.device.type):
        return None
    args = (
        x,
        w1,
        conv1["bias"],
        bn_buffers["running_mean"],
        bn_buffers["running_var"],
        bn_params["weight"],
        bn_params["bias"],
        gate_h["weight"],
        gate_h["bias"],
        gate_w["weight"],
        gate_w["bias"],
    )
    for t in args:  # the compiled code assumes contiguous inputs (size asserts are off)
        if not t.is_contiguous():
            return None
    key = (x.shape, w1.shape[0], x.dtype, x.device, bn.eps, torch.get_num_threads(), autotune)
    fn = _CACHE.get(key, _MISSING)
    if fn is _MISSING:
        try:
            fn = _compile(args, bn.eps, autotune)
        except Exception as e:
            fn = None
            if not _warned:
                _warned = True
                warnings.warn(
                    f"compiling the CA block failed ({type(e).__name__}: {e}); using the eager inference path",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _CACHE[key] = fn
    if fn is None:
        return None
    return fn(*args)  # type: ignore[operator]
