"""Input pipeline throughput: training images per second per data-loader worker, on the user's own JPEGs.

A DataLoader worker is one process doing decode + augmentation one image at a time with one intra-op thread, so
the per-worker rate is measured the same way: in this process, ``torch.set_num_threads(1)``, each pipeline applied
to the same image files (``<root>/train/**`` or ``<root>/**`` when there is no ``train`` folder, sorted, the first
``images``), in interleaved chunks of ``chunk`` images (pipeline A, B, A, B, ...: load drift hits both alike), after
one untimed warm-up chunk each. Reported: img/s of each pipeline (total images / total time) and the ratio to
torchvision's reference preset measured in the same run.

Pipelines (see :mod:`cabench.data.pipeline`): ``reference``: PIL open + torchvision's reference training preset
(v1 transforms on PIL); ``pil_v2``: the PIL path cabench's training took before (:func:`cabench.data.images.load_rgb`,
then the recipe's steps in plain ``transforms.v2``, :func:`~cabench.data.pipeline.plain_v2_train_transform`);
``cabench``: what cabench's ImageNet training datasets run per
image, their loader
(:data:`cabench.data.imagenet.TRAIN_LOADER`: ``torchvision.io`` JPEG decode after the bad-image header checks)
and :func:`~cabench.data.imagenet.train_transform` (``transforms.v2`` on uint8 tensors). With
``gpu_decode`` and a CUDA device: batched nvjpeg decode + the same v2 transforms on the GPU, reported as img/s of
the whole process (one CPU thread reading files), not per worker.

Workers per GPU: ``ceil(gpu_img_s / per_worker_img_s)`` for the training rates given (what one GPU consumes).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from cabench.data.imagenet import IMAGE_EXTENSIONS, TRAIN_LOADER, train_transform
from cabench.data.images import load_rgb
from cabench.data.pipeline import gpu_train_batch, plain_v2_train_transform, reference_train_transform

__all__ = ["DATA_KEY", "PipelineError", "find_images", "format_pipeline", "run_pipeline_bench", "workers_per_gpu"]

# Per-GPU training rates to size workers for when no GPU rate was measured: MobileNet-class models with AMP on
# one modern data-centre GPU train at roughly these rates (issue 14's figures).
DEFAULT_GPU_RATES = (1000.0, 2500.0)
DATA_KEY = "imagenet"  # the --data KEY=PATH this benchmark reads: the ImageNet training pipeline is what it measures


class PipelineError(ValueError):
    """No usable images under the given root (one line, naming the path)."""


def find_images(root: Path, limit: int) -> list[Path]:
    """Up to ``limit`` image files under ``root/train`` (or ``root``), sorted, recursively."""
    base = root / "train" if (root / "train").is_dir() else root
    if not base.is_dir():
        raise PipelineError(f"{root}: not a folder (expected <root>/train/<class>/*.JPEG)")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        found.extend(Path(dirpath, n) for n in sorted(filenames) if n.lower().endswith(IMAGE_EXTENSIONS))
        if len(found) >= limit:
            break
    if not found:
        raise PipelineError(f"{base}: no image files ({', '.join(IMAGE_EXTENSIONS)}, any case)")
    return found[:limit]


def _reference(size: int, autoaugment: bool) -> Callable[[Path], torch.Tensor]:
    from PIL import Image

    transform = reference_train_transform(size, autoaugment)

    def load(path: Path) -> torch.Tensor:
        with open(path, "rb") as f:
            image = Image.open(f).convert("RGB")  # torchvision's default_loader
        return transform(image)

    return load


def _cabench(size: int, autoaugment: bool) -> Callable[[Path], torch.Tensor]:
    transform = train_transform(size, autoaugment=autoaugment)  # the training datasets' own loader and transform
    return lambda path: transform(TRAIN_LOADER(path))


def _pil_v2(size: int, autoaugment: bool) -> Callable[[Path], torch.Tensor]:
    transform = plain_v2_train_transform(size, autoaugment)
    return lambda path: transform(load_rgb(path))


def _time_chunks(
    pipelines: dict[str, Callable[[Path], torch.Tensor]], files: Sequence[Path], chunk: int, progress
) -> dict[str, float]:
    seconds = dict.fromkeys(pipelines, 0.0)
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    for fn in pipelines.values():  # warm-up: first-touch, lazy imports, file cache
        for path in chunks[0]:
            fn(path)
    total = len(chunks) * len(pipelines)
    for k, part in enumerate(chunks):
        names = list(pipelines)
        for i in range(len(names)):
            name = names[(k + i) % len(names)]
            start = time.perf_counter()
            for path in part:
                pipelines[name](path)
            seconds[name] += time.perf_counter() - start
            if progress:
                progress(f"pipeline {name}", k * len(names) + i + 1, total)
    return {name: len(files) / s for name, s in seconds.items()}


def _gpu_rate(files: Sequence[Path], size: int, autoaugment: bool, batch: int) -> float:
    gpu_train_batch(files[:batch], "cuda", size, autoaugment)  # warm-up (nvjpeg handles, kernels)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        gpu_train_batch(files[i : i + batch], "cuda", size, autoaugment)
    torch.cuda.synchronize()
    return len(files) / (time.perf_counter() - start)


def workers_per_gpu(per_worker: float, gpu_rates: Sequence[float] = DEFAULT_GPU_RATES) -> dict[str, int]:
    """Workers needed to feed one GPU training at each rate (img/s)."""
    return {f"{rate:g}": math.ceil(rate / per_worker) for rate in gpu_rates}


def run_pipeline_bench(
    root: Path,
    images: int = 200,
    size: int = 224,
    autoaugment: bool = False,
    gpu_decode: bool = False,
    chunk: int = 10,
    gpu_rates: Sequence[float] = DEFAULT_GPU_RATES,
    progress=None,
) -> dict[str, object]:
    """Measure the pipelines (see the module docstring); a JSON-serialisable dict."""
    if images < 1:
        raise PipelineError(f"--pipeline-images must be >= 1, got {images}")
    files = find_images(Path(root), images)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = _time_chunks(
            {
                "reference": _reference(size, autoaugment),
                "pil_v2": _pil_v2(size, autoaugment),
                "cabench": _cabench(size, autoaugment),
            },
            files,
            chunk,
            progress,
        )
    finally:
        torch.set_num_threads(previous)
    result: dict[str, object] = {
        "root": str(root),
        "images": len(files),
        "size": size,
        "autoaugment": autoaugment,
        "per_worker_img_s": rates,
        "ratio_cabench_to_reference": rates["cabench"] / rates["reference"],
        "ratio_cabench_to_pil_v2": rates["cabench"] / rates["pil_v2"],
        "workers_per_gpu": {name: workers_per_gpu(rate, gpu_rates) for name, rate in rates.items()},
        "gpu_decode_img_s": None,
    }
    if gpu_decode:
        if not torch.cuda.is_available():
            result["gpu_decode_img_s"] = "unavailable: no CUDA device"
        else:
            result["gpu_decode_img_s"] = _gpu_rate(files, size, autoaugment, batch=64)
    return result


def format_pipeline(result: dict[str, object]) -> str:
    """The result of :func:`run_pipeline_bench` as text."""
    rates = result["per_worker_img_s"]
    workers = result["workers_per_gpu"]
    assert isinstance(rates, dict) and isinstance(workers, dict)
    lines = [
        "",
        f"input pipeline, per worker (1 thread), {result['images']} images under {result['root']}, "
        f"{result['size']}px{', AutoAugment' if result['autoaugment'] else ''}:",
    ]
    for name, rate in rates.items():
        need = ", ".join(f"{n} workers for {r} img/s" for r, n in workers[name].items())
        lines.append(f"  {name:11s} {rate:8.1f} img/s per worker  ({need} per GPU)")
    lines.append(
        f"  ratio cabench / reference: {result['ratio_cabench_to_reference']:.3f}x; "
        f"cabench / pil_v2 (PIL's decode, the steps in plain transforms.v2): {result['ratio_cabench_to_pil_v2']:.3f}x"
    )
    gpu = result.get("gpu_decode_img_s")
    if isinstance(gpu, float):
        lines.append(f"  GPU decode (nvjpeg, batch 64) + v2 transforms on the GPU: {gpu:.1f} img/s (one process)")
    elif gpu is not None:
        lines.append(f"  GPU decode: {gpu}")
    return "\n".join(lines)
