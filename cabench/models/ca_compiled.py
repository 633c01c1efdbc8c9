"""Opt-in compiled inference path of :class:`~cabench.models.attention.CoordinateAttention` (TorchInductor).

:func:`compile_ca_blocks` marks CA blocks; a marked block, under the conditions of its eager inference path (eval
mode, gradients off, one contiguous image, not tracing), runs Eq. 4-9 through a callable that TorchInductor compiled
from :func:`_ca_inference` for that input: the two strip means, ``conv1`` + BatchNorm (eval) + h_swish, both gate
convs, the sigmoids and the gating of ``x``, fused into a few C++ kernels and matrix products. Nothing else in the
network is compiled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["compile_ca_blocks", "compiled_forward"]

# (x shape, mip, dtype, device, BN eps, threads, autotune) -> compiled callable, or None where compiling failed.
_CACHE: dict[tuple[object, ...], Callable[..., torch.Tensor] | None] = {}
_MISSING = object()
_warned = False


def _round_up(value: int, multiple: int = 16) -> int:
    return (value + multiple - 1) // multiple * multiple


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

    Same column layout as the eager inference path: strips zero-padded to a multiple of 16 columns, either compact
    ``[h | w | pad]`` or split ``[h | pad | w | pad]``, whichever needs fewer multiply-adds.
    """
    _, c, h, w = x.shape
    mip = w1.shape[0]
    hp = _round_up(max(h, w))
    length = _round_up(h + w)
    compact = 3 * length < 4 * hp
    z_h = x.mean(dim=3)[0]  # (C, H), Eq. 4
    z_w = x.mean(dim=2)[0]  # (C, W), Eq. 5
    if compact:
        z = F.pad(torch.cat([z_h, z_w], dim=1), (0, length - h - w))
    else:
        z = torch.cat([F.pad(z_h, (0, hp - h)), F.pad(z_w, (0, hp - w))], dim=1)
    f = _mm(w1.view(mip, c), z) + b1[:, None]
    f = (f - running_mean[:, None]) * (bn_weight * torch.rsqrt(running_var + eps))[:, None] + bn_bias[:, None]
    f = F.hardswish(f)  # Eq. 6
    if compact:
        a_h = (_mm(wh.view(c, mip), f) + bh[:, None])[:, :h]
        a_w = (_mm(ww.view(c, mip), f) + bw[:, None])[:, h : h + w]
    else:
        a_h = (_mm(wh.view(c, mip), f[:, :hp]) + bh[:, None])[:, :h]
        a_w = (_mm(ww.view(c, mip), f[:, hp:]) + bw[:, None])[:, :w]
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


def compiled_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The block's output through its compiled callable, or None where the eager inference path should run.

    None when ``x`` and the weights differ in dtype, under autocast, when a weight is not contiguous, or when
    compiling for this input failed (warned once). The caller has checked the inference-path conditions.
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
    key = (x.shape, w1.shape[0], x.dtype, x.device, bn.eps, torch.get_num_threads(), block._ca_autotune)
    fn = _CACHE.get(key, _MISSING)
    if fn is _MISSING:
        try:
            fn = _compile(args, bn.eps, block._ca_autotune)
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


def compile_ca_blocks(model: nn.Module, *, autotune: bool = True) -> int:
    """Mark every :class:`CoordinateAttention` in ``model`` to run its inference path compiled; return how many.

    **What is compiled.** Only the CA block's batch-1 inference computation (Eq. 4-9: strip means, ``conv1``,
    BatchNorm in eval mode, h_swish, both gate convs, sigmoids, gating), traced with ``make_fx`` and compiled by
    ``torch._inductor.standalone_compile`` into one callable per input shape, dtype, device, BatchNorm ``eps`` and
    thread count (cached for the process, shared by blocks of equal shapes). ``autotune=True`` compiles with
    inductor's ``max_autotune`` and C++/ATen GEMM backends (fastest code; slowest to compile).
    The rest of the network stays eager, so comparing a marked model with the eager one measures the CA block only.

    **When.** Compilation happens lazily on a marked block's first call with a new shape, and only on the path the
    eager block would take for :meth:`CoordinateAttention._forward_inference` (eval mode, gradients off, batch 1,
    contiguous input, not tracing); training, batches and everything else run exactly as before. Unmarked blocks
    never compile. If compiling raises, the block warns once and keeps using the eager inference path.

    **Nothing stale.** The weights, biases and BatchNorm running statistics are arguments of every call, read from
    the block at that moment, so changing or loading them takes effect at once; nothing is frozen into the code.

    **Cost.** On a 2-core CPU a cold compile of MobileNetV2+CA's 10 distinct CA shapes takes about 100 s with
    autotuning (a few seconds each without), and about 2.5 s with a warm inductor cache (``TORCHINDUCTOR_CACHE_DIR``).
    Needs a C++ compiler on CPU.
    """
    count = 0
    for m in model.modules():  # blocks opt in with a class flag, so this module needs no import of attention.py
        if getattr(type(m), "compiled_inference", False):
            m._ca_compiled = True
            m._ca_autotune = autotune
            count += 1
    return count
