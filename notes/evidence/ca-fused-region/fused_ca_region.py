"""Experiment (issue 24 item 1), not part of the package: the CA block fused with the projection conv after it.

The block-only kernel (../ca-fused-kernel) still writes the gated map and the projection conv reads it back. Here one
C++ call replaces the block *and* the 1x1 projection conv of every inverted residual with CA: the strip sums of both
directions in one pass over the depthwise output, conv1 (BLAS) with BatchNorm folded and h_swish, both gate convs
(BLAS) with their sigmoids, then, tile by tile of rows small enough to stay in cache, the gated rows
``x * g_h * g_w`` written to a scratch tile and multiplied by the projection weights straight into the output (the
projection's BatchNorm still runs after it, as in the baseline). What remains beyond the baseline is one read of the
depthwise output (the strip sums), the gating of a cache-resident tile, the three small products, and the projection
GEMM called once per tile instead of once per map. Batch 1, contiguous float32, 1 thread, 224x224, 40 interleaved
rounds; ratios are per-round paired ratios to torchvision's MobileNetV2.

    python notes/evidence/ca-fused-region/fused_ca_region.py    # output.txt beside it: what it printed
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.cpp_extension import load_inline

from cabench.models.attention import CoordinateAttention
from cabench.models.mobilenetv2 import InvertedResidual
from cabench.models.registry import ModelSpec, build_model

SOURCE = r"""
#include <torch/extension.h>
#include <algorithm>
#include <cmath>

// Strip means z = [z_h | z_w] (C, H + W) of x (C, H, W), both in one pass.
static void strip_means(const float* xp, int64_t C, int64_t H, int64_t W, float* zp) {
  const int64_t L = H + W;
  for (int64_t c = 0; c < C; ++c) {
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
}

// x: (1, C, H, W) contiguous float32 (the depthwise output); w1 (mip, C); scale/shift: conv1's bias and BatchNorm
// folded; wh, ww (C, mip); wp (O, C): the projection conv. Returns the projection conv's output (1, O, H, W).
at::Tensor ca_region(at::Tensor x, at::Tensor w1, at::Tensor shift, at::Tensor scale, at::Tensor wh,
                     at::Tensor bh, at::Tensor ww, at::Tensor bw, at::Tensor wp, int64_t tile_floats,
                     int64_t mode) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3), L = H + W, O = wp.size(0);
  const float* xp = x.data_ptr<float>();
  if (mode == 4) return at::mm(wp, x.view({C, H * W})).view({1, O, H, W});  // ablation: projection by one GEMM
  at::Tensor gh, gw;
  if (mode == 3) {  // ablation: no block at all, only the tiled projection
    gh = at::ones({C, H}, x.options());
    gw = at::ones({C, W}, x.options());
  } else {
    auto z = at::empty({C, L}, x.options());
    if (mode == 1) z.fill_(0.5f); else strip_means(xp, C, H, W, z.data_ptr<float>());
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
    // Both gate convs, their biases and sigmoids (ATen's vectorised sigmoid: a scalar std::exp loop cost ~0.01).
    gh = at::addmm(bh.view({C, 1}), wh, f.narrow(1, 0, H)).sigmoid_();  // (C, H)
    gw = at::addmm(bw.view({C, 1}), ww, f.narrow(1, H, W)).sigmoid_();  // (C, W)
  }
  float* ghp = gh.data_ptr<float>();
  float* gwp = gw.data_ptr<float>();
  auto out = at::empty({1, O, H, W}, x.options());
  auto out2d = out.view({O, H * W});
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(H, tile_floats / (C * W)));
  auto tile = at::empty({C, rows * W}, x.options());
  float* tp = tile.data_ptr<float>();
  for (int64_t i0 = 0; i0 < H; i0 += rows) {  // gate a tile of rows in cache, then project it
    const int64_t r = std::min(rows, H - i0);
    for (int64_t c = 0; c < C; ++c) {
      const float* gwc = gwp + c * W;
      for (int64_t i = 0; i < r; ++i) {
        const float g = ghp[c * H + i0 + i];
        const float* row = xp + (c * H + i0 + i) * W;
        float* trow = tp + c * r * W + i * W;
        if (mode >= 2) {  // ablation: the tile without the gates
          std::copy(row, row + W, trow);
          continue;
        }
        #pragma omp simd
        for (int64_t j = 0; j < W; ++j) trow[j] = row[j] * g * gwc[j];
      }
    }
    auto dst = out2d.narrow(1, i0 * W, r * W);
    at::mm_out(dst, wp, tile.narrow(1, 0, r * W).view({C, r * W}));
  }
  return out;
}
"""


# (name, tile size, mode): mode 0 the whole region; the ablations take one part away (their outputs differ):
# 1 no strip sums (constant strips), 2 no gating (the tile is a copy), 3 no block (only the tiled projection),
# 4 no block, the projection as one GEMM over the whole map (what BLAS costs against the baseline's oneDNN conv).
VARIANTS = (
    ("region, 256 KiB tiles", 256, 0),
    ("region, 1024 KiB tiles", 1024, 0),
    ("ablation: no strip sums", 1024, 1),
    ("ablation: no gating", 1024, 2),
    ("ablation: tiled projection only", 1024, 3),
    ("ablation: projection by one GEMM only", 1024, 4),
)


class FusedRegion(nn.Module):
    """The CA block and the projection conv after it as one call of the compiled kernel (eval mode)."""

    def __init__(self, kernel: Any, ca: CoordinateAttention, proj: nn.Conv2d, tile_floats: int, mode: int) -> None:
        super().__init__()
        c, mip = ca.conv1.in_channels, ca.conv1.out_channels
        bn = ca.bn1
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale + ca.conv1.bias * scale
            parts = (ca.conv1.weight.view(mip, c), shift, scale, ca.conv_h.weight.view(c, mip), ca.conv_h.bias)
            more = (ca.conv_w.weight.view(c, mip), ca.conv_w.bias, proj.weight.view(proj.out_channels, c))
            self.args = [t.detach().contiguous() for t in (*parts, *more)]
        self.kernel, self.tile_floats, self.mode = kernel, tile_floats, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel.ca_region(x, *self.args, self.tile_floats, self.mode)


def fuse(model: nn.Module, kernel: Any, tile_floats: int, mode: int = 0) -> None:
    """Every inverted residual with CA: [..., CA, projection conv, BN] -> [..., FusedRegion, Identity, BN]."""
    for m in model.modules():
        if isinstance(m, InvertedResidual) and len(m.conv) > 6 and isinstance(m.conv[6], CoordinateAttention):
            assert isinstance(m.conv[7], nn.Conv2d) and m.conv[7].bias is None
            m.conv[6] = FusedRegion(kernel, m.conv[6], m.conv[7], tile_floats, mode)
            m.conv[7] = nn.Identity()


def main() -> None:
    torch.set_num_threads(1)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    start = time.time()
    flags = ["-O3", "-march=native", "-fopenmp-simd"]
    kernel = load_inline("ca_fused_region", cpp_sources=SOURCE, functions=["ca_region"], extra_cflags=flags)
    print(f"compile {time.time() - start:.1f} s")
    torch.manual_seed(0)
    ca = build_model(ModelSpec("mobilenetv2", attention="ca", reduction=32)).eval()
    rows: dict[str, nn.Module] = {
        "torchvision": torchvision.models.mobilenet_v2().eval(),
        "backbone": build_model(ModelSpec("mobilenetv2", attention="none")).eval(),
        "ca": ca,
    }
    x = torch.randn(1, 3, 224, 224)
    for name, tile_kib, mode in VARIANTS:
        fused = build_model(ModelSpec("mobilenetv2", attention="ca", reduction=32)).eval()
        fused.load_state_dict(ca.state_dict())
        fuse(fused, kernel, tile_kib * 256, mode)
        rows[name] = fused
    times: dict[str, list[float]] = {k: [] for k in rows}
    with torch.inference_mode():
        for name, m in rows.items():
            if name.startswith("region,"):
                print(f"{name}: max |logits - ca| {(ca(x) - m(x)).abs().max().item():.2e}")
        for _ in range(3):
            for m in rows.values():
                m(x)
        for _ in range(rounds):
            for name, m in rows.items():
                t = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t)
    for name in rows:
        ratios = sorted(a / b for a, b in zip(times[name], times["torchvision"], strict=True))
        median, ratio = statistics.median(times[name]) * 1e3, statistics.median(ratios)
        p10, p90 = ratios[len(ratios) // 10], ratios[-(len(ratios) // 10) - 1]
        print(f"{name}: {median:.2f} ms, ratio {ratio:.3f} (p10-p90 {p10:.3f}-{p90:.3f})")


if __name__ == "__main__":
    main()
