"""One-shot GPU check of cabench's speed paths; run by ``benchmarks/gpu_check.sh`` one stage per process.

    python benchmarks/gpu_check.py STAGE [STAGE ...] --out DIR [--device cuda] [--rounds 10] [--quick]

Stages (each writes ``DIR/<stage>.json`` and prints a table):

* ``bench``: ``run_bench`` with AMP bf16 and channels_last: inference latency (batch 1, 32) and training img/s
  (batch 64, 256) of baseline / SE / CBAM / CA / authors'-style CA / timm CoordAttn / timm mobilenetv2_100 (the
  timm rows only when timm is importable), ratios to the baseline measured in the same run.
* ``bench-compile``: the same with ``torch.compile`` for baseline and CA, training at batch 256 only (compile time
  is in the warm-up, untimed).
* ``pipeline``: writes photo-like ~500x375 JPEGs, then per-worker img/s of cabench's pipeline vs torchvision's
  reference preset (CPU, one thread each) and the batched nvjpeg decode + GPU transforms img/s.
* ``epoch``: a slice of an epoch of the paper recipe (``imagenet-mbv2-paper``: SGD 0.05, momentum 0.9, weight decay
  4e-5, cosine, global batch 256) through cabench's training engine, bf16 + channels_last, on synthetic
  ImageNet-shaped data (224x224 float images, 1000 classes, from a fixed pool in memory so that the loader is not
  the bottleneck), for MobileNetV2 and MobileNetV2+CA; and the same models trained by timm's own step (timm's
  optimizer factory with the same hyper-parameters, autocast bf16, channels_last) when timm is importable, as the
  ratio cabench / timm on the same model.

Imports beyond torch and torchvision are optional on every path: a missing package skips what needs it, with the
reason in the output. ``--quick`` shrinks every stage (for a CPU test run); on the CPU autocast is off (bf16
convolutions there are slow reference kernels without AMX).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _emit(out: Path, stage: str, result: dict, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stage}.json").write_text(json.dumps(result, indent=2, default=str))
    print(text, flush=True)


def _progress(what: str, done: int, total: int) -> None:
    if done == 1 or done == total:
        print(f"  [{time.strftime('%H:%M:%S')}] {what} ({done}/{total})", file=sys.stderr, flush=True)


def stage_bench(args: argparse.Namespace, compile_: bool) -> None:
    from cabench.measure.bench import BenchOptions, format_bench, run_bench

    on_gpu = args.device == "cuda"
    rows = ("baseline", "se", "cbam", "ca", "authors_ca", "timm_ca", "timm_mobilenetv2")
    if compile_:
        rows = ("baseline", "ca")
    if args.quick:  # the CPU test: a baseline, the CA row and the optional rows (skipped without timm)
        rows = ("baseline", "ca", "timm_ca", "timm_mobilenetv2")
    opts = BenchOptions(
        rows=rows,
        latency_batches=() if compile_ else ((1, 32) if not args.quick else (1,)),
        train_batches=((256,) if compile_ else (64, 256)) if not args.quick else (4,),
        rounds=args.rounds,
        warmup=3 if on_gpu else 1,
        threads=None if on_gpu else 1,
        train_threads=None,
        device=args.device,
        amp="bf16" if on_gpu else None,  # CPU bf16 convolutions are slow reference kernels without AMX
        channels_last=True,
        compile=compile_,
        input_size=224 if not args.quick else 32,
    )
    result = run_bench(opts, progress=_progress)
    _emit(args.out, "bench-compile" if compile_ else "bench", result, format_bench(result))


def stage_pipeline(args: argparse.Namespace) -> None:
    from cabench.data.fixtures.photos import write_photo_jpegs
    from cabench.measure.pipeline import format_pipeline, run_pipeline_bench

    n = 8 if args.quick else 512
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        shape = {"width": 160, "height": 120} if args.quick else {}
        root = write_photo_jpegs(Path(tmp) / "photos", count=n, **shape)
        print(f"  wrote {n} JPEGs in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        result = run_pipeline_bench(
            root, images=n, size=224 if not args.quick else 32, gpu_decode=args.device == "cuda", progress=_progress
        )
    _emit(args.out, "pipeline", result, format_pipeline(result))


class _SyntheticImageNet(torch.utils.data.Dataset):
    """``length`` ImageNet-shaped samples cycling over a fixed in-memory pool (normalised-looking floats)."""

    def __init__(self, length: int, size: int, pool: int = 64, classes: int = 1000) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(pool, 3, size, size, generator=g)
        self.labels = torch.randint(0, classes, (pool,), generator=g)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k = i % len(self.images)
        return self.images[k], int(self.labels[k])


def _timm_rate(model: torch.nn.Module, settings, data: _SyntheticImageNet, steps: int, device: str) -> float | str:
    """img/s of timm's own training step (timm's SGD factory, same hyper-parameters) on ``model``."""
    try:
        from timm.optim import create_optimizer_v2
    except ImportError as e:
        return f"skipped: timm not importable ({e})"
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = create_optimizer_v2(
        model,
        "sgd",
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        filter_bias_and_bn=False,
    )
    batch = settings.batch_size
    x = data.images.repeat(batch // len(data.images) + 1, 1, 1, 1)[:batch].to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = data.labels.repeat(batch // len(data.labels) + 1)[:batch].to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - start)


def stage_epoch(args: argparse.Namespace) -> None:
    try:
        from cabench.engine import TrainSettings, train
        from cabench.recipe import load_recipe
        from cabench.tasks._impl.classification import ClassificationTask
    except ImportError as e:
        _emit(args.out, "epoch", {"skipped": str(e)}, f"epoch slice skipped: {e}")
        return
    from cabench.measure.bench_rows import build_row

    recipe = load_recipe("imagenet-mbv2-paper")
    steps = 2 if args.quick else 60
    size = 32 if args.quick else recipe.train_size
    knobs = {
        "amp": "bf16" if args.device == "cuda" else "off",
        "channels_last": True,
        "device": args.device,
        "workers": 0 if args.quick else int(os.environ.get("GPU_CHECK_WORKERS", "0")),
    }
    if args.quick:
        knobs["batch_size"] = 4
    results: dict[str, dict[str, object]] = {}
    lines = [f"paper recipe slice: {steps} steps, amp {knobs['amp']}, channels_last, {args.device}"]
    for row in ("baseline", "ca"):
        settings = TrainSettings.from_recipe(recipe, max_steps=steps, log_every=max(1, steps // 4), **knobs)
        data = _SyntheticImageNet(settings.batch_size * steps, size)
        val = _SyntheticImageNet(settings.batch_size, size)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as run_dir:
            metrics = train(build_row(row), data, val, settings, run_dir, ClassificationTask())
        torch.manual_seed(0)
        timm_rate = _timm_rate(build_row(row), settings, data, max(3, steps // 3), args.device)
        ratio = metrics["img_per_s"] / timm_rate if isinstance(timm_rate, float) else None
        results[row] = {"cabench_img_s": metrics["img_per_s"], "timm_step_img_s": timm_rate, "ratio": ratio}
        timm_text = f"{timm_rate:.1f} img/s, ratio {ratio:.3f}x" if ratio is not None else str(timm_rate)
        lines.append(f"  {row:10s} cabench engine {metrics['img_per_s']:.1f} img/s; timm step: {timm_text}")
    _emit(args.out, "epoch", {"steps": steps, "rows": results}, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", choices=("bench", "bench-compile", "pipeline", "epoch"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for stage in args.stages:
        gpu = f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""
        print(f"== {stage} on {args.device}{gpu}", flush=True)
        if stage in ("bench", "bench-compile"):
            stage_bench(args, compile_=stage == "bench-compile")
        elif stage == "pipeline":
            stage_pipeline(args)
        else:
            stage_epoch(args)


if __name__ == "__main__":
    main()
