"""Experiment (issue 24 item 1), not part of the package: how far a fused C++ kernel for the CA block alone gets.

One C++ function per block call (compiled with torch.utils.cpp_extension.load_inline, -O3 -march=native): the strip
sums of both directions in one pass over x, conv1 (BLAS) with BatchNorm folded and h_swish in one loop, both gate
convs (BLAS) with their sigmoids in one loop, and the gating in one pass (x * g_h * g_w). Batch 1, contiguous
float32, 1 thread, 224x224, 40 interleaved rounds; ratios are per-round paired ratios to torchvision's MobileNetV2.

    python notes/evidence/ca-fused-kernel/fused_ca_block.py    # output.txt beside it: what it printed
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torchvision
from torch.utils.cpp_extension import load_inline

from cabench.models.attention import CoordinateAttention
from cabench.models.registry import ModelSpec, build_model

SOURCE = r"""
#include <torch/extension.h>
#include <algorithm>
#include <cmath>

// x: (1, C, H, W) contiguous float32; w1 (mip, C); wh, ww (C, mip); scale/shift: conv1's bias and BatchNorm folded.
at::Tensor ca_forward(at::Tensor x, at::Tensor w1, at::Tensor shift, at::Tensor scale,
                      at::Tensor wh, at::Tensor bh, at::Tensor ww, at::Tensor bw) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3), L = H + W;
  const float* xp = x.data_ptr<float>();
  auto z = at::empty({C, L}, x.options());
  float* zp = z.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {  // both strip means in one pass
    const float* xc = xp + c * H * W;
    float* zr = zp + c * L;
    float* zc = zr + H;
    for (int64_t j = 0; j < W; ++j) zc[j] = 0.f;
    for (int64_t i = 0; i < H; ++i) {
      const float* row = xc + i * W;
      float s = 0.f;
      #pragma omp simd reduction(+:s)
      for (int64_t j = 0; j < W; ++j) { s += row[j]; zc[j] += row[j]; }
      zr[i] = s / W;
    }
    for (int64_t j = 0; j < W; ++j) zc[j] /= H;
  }
  auto f = at::mm(w1, z);  // (mip, L)
  float* fp = f.data_ptr<float>();
  const float* a = scale.data_ptr<float>();
  const float* b = shift.data_ptr<float>();
  for (int64_t k = 0; k < f.size(0); ++k) {  // BatchNorm (folded with conv1's bias), then h_swish
    float* fk = fp + k * L;
    #pragma omp simd
    for (int64_t j = 0; j < L; ++j) {
      const float v = fk[j] * a[k] + b[k];
      fk[j] = v * std::min(std::max(v + 3.f, 0.f), 6.f) / 6.f;
    }
  }
  auto gh = at::mm(wh, f.narrow(1, 0, H));  // (C, H)
  auto gw = at::mm(ww, f.narrow(1, H, W));  // (C, W)
  float* ghp = gh.data_ptr<float>();
  float* gwp = gw.data_ptr<float>();
  const float* bhp = bh.data_ptr<float>();
  const float* bwp = bw.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < H; ++i) ghp[c * H + i] = 1.f / (1.f + std::exp(-(ghp[c * H + i] + bhp[c])));
    for (int64_t j = 0; j < W; ++j) gwp[c * W + j] = 1.f / (1.f + std::exp(-(gwp[c * W + j] + bwp[c])));
  }
  auto out = at::empty_like(x);
  float* op = out.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {  // the gating in one pass
    const float* gwc = gwp + c * W;
    for (int64_t i = 0; i < H; ++i) {
      const float g = ghp[c * H + i];
      const float* row = xp + (c * H + i) * W;
      float* orow = op + (c * H + i) * W;
      #pragma omp simd
      for (int64_t j = 0; j < W; ++j) orow[j] = row[j] * g * gwc[j];
    }
  }
  return out;
}
"""


def fuse(model: torch.nn.Module, kernel: Any) -> None:
    """Every CA block of ``model`` (eval mode) calls ``kernel`` with its weights, BatchNorm folded once."""
    for m in model.modules():
        if isinstance(m, CoordinateAttention):
            c, mip = m.conv1.in_channels, m.conv1.out_channels
            bn = m.bn1
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                shift = bn.bias - bn.running_mean * scale + m.conv1.bias * scale
                parts = (m.conv1.weight.view(mip, c), shift, scale, m.conv_h.weight.view(c, mip), m.conv_h.bias)
                args = [t.detach().contiguous() for t in (*parts, m.conv_w.weight.view(c, mip), m.conv_w.bias)]
            m.forward = lambda x, args=args: kernel.ca_forward(x, *args)


def main() -> None:
    torch.set_num_threads(1)
    start = time.time()
    flags = ["-O3", "-march=native", "-fopenmp-simd"]
    kernel = load_inline("ca_fused_block", cpp_sources=SOURCE, functions=["ca_forward"], extra_cflags=flags)
    print(f"compile {time.time() - start:.1f} s")
    torch.manual_seed(0)
    ca = build_model(ModelSpec("mobilenetv2", attention="ca", reduction=32)).eval()
    fused = build_model(ModelSpec("mobilenetv2", attention="ca", reduction=32)).eval()
    fused.load_state_dict(ca.state_dict())
    fuse(fused, kernel)
    rows = {
        "torchvision": torchvision.models.mobilenet_v2().eval(),
        "backbone": build_model(ModelSpec("mobilenetv2", attention="none")).eval(),
        "ca": ca,
        "fused": fused,
    }
    x = torch.randn(1, 3, 224, 224)
    times: dict[str, list[float]] = {k: [] for k in rows}
    with torch.inference_mode():
        print(f"max |fused - ca| {(ca(x) - fused(x)).abs().max().item():.2e}")
        for _ in range(3):
            for m in rows.values():
                m(x)
        for _ in range(40):
            for name, m in rows.items():
                t = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t)
    for name in rows:
        ratios = sorted(a / b for a, b in zip(times[name], times["torchvision"], strict=True))
        median, ratio = statistics.median(times[name]) * 1e3, statistics.median(ratios)
        print(f"{name}: {median:.2f} ms, ratio {ratio:.3f} (p10-p90 {ratios[4]:.3f}-{ratios[-5]:.3f})")


if __name__ == "__main__":
    main()
