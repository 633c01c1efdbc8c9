"""Where MobileNetV2+CA's batch-1 inference time goes beyond the baseline's (issue 14's "profile of what remains").

    python benchmarks/ca_batch1_profile.py [--rounds 60]

One thread, eval mode, inference_mode, 224x224, rows interleaved per round, medians:
baseline (cabench MobileNetV2, no attention), CA (the eager block, its BatchNorm folded into conv1 as `cabench bench`
runs it), CA with the BatchNorm kept, CA with every block replaced by identity
(the same backbone without the block's work: its expansion-layer shapes are the baseline's), and the CA blocks'
own ops from torch.profiler (self CPU time per op name, summed over the 17 blocks of one forward).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from cabench.models.attention import CoordinateAttention, fold_for_inference
from cabench.models.registry import ModelSpec, build_model


def _timed(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def _without_blocks(model: nn.Module) -> nn.Module:
    for block in model.modules():
        if isinstance(block, CoordinateAttention):
            block.forward = lambda x: x  # type: ignore[method-assign]
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = {
        "baseline": build_model(ModelSpec(arch="mobilenetv2", attention="none")).eval(),
        "ca": fold_for_inference(build_model(ModelSpec(arch="mobilenetv2", attention="ca", reduction=32)).eval()),
        "ca_batchnorm_kept": build_model(ModelSpec(arch="mobilenetv2", attention="ca", reduction=32)).eval(),
        "ca_blocks_as_identity": _without_blocks(
            build_model(ModelSpec(arch="mobilenetv2", attention="ca", reduction=32)).eval()
        ),
    }
    x = torch.randn(1, 3, 224, 224)
    times: dict[str, list[float]] = {name: [] for name in rows}
    with torch.inference_mode():
        for model in rows.values():
            for _ in range(3):
                model(x)
        for _ in range(args.rounds):
            for name, model in rows.items():
                times[name].append(_timed(model, x))
        base = statistics.median(times["baseline"])
        for name, samples in times.items():
            med = statistics.median(samples)
            print(f"{name:24s} median {med * 1e3:7.2f} ms  ratio {med / base:.3f}")
        blocks = statistics.median(times["ca"]) - statistics.median(times["ca_blocks_as_identity"])
        print(f"{'CA blocks (difference)':24s} median {blocks * 1e3:7.2f} ms  = {blocks / base:.3f} of the baseline")
        with torch.profiler.profile() as prof:
            for _ in range(10):
                rows["ca"](x)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
    print("torch.profiler, 10 forwards of the CA row (self CPU time per op):")
    print(table)


if __name__ == "__main__":
    main()
