"""Why the classification probe does not learn in a CPU minute: MobileNetV2 (width 0.5, 32x32) on easier and
harder variants of the digit scenes, to separate what makes them hard (position, colour, texture, clutter)
from what the backbone's stride can do. A diagnostic for notes/probe.md, not a test and not a suite.

    python benchmarks/probe_learnability.py VARIANT [--lr 0.05] [--epochs 4] [--output-stride 32|16|8]
        [--param NAME=VALUE ...] [--floor]

Variants (seed 0 glyph pools, the generator's classification renders unless said otherwise):
  plain       the 8x8 glyph upscaled to 20 px, centred on black, grey (3 renders of each train glyph are copies)
  plainshift  plain, rolled by up to +-6 px in x and y
  flat        the generator's glyph renders (size, aspect, rotation, random ink colour) on flat grey, no clutter
  noclut      the generator's scenes without clutter (texture background kept)
  base        the generator's scenes as `cabench fixtures digits` writes them

Prints one line per epoch: variant, epoch, mean training loss, val top-1 (%), seconds so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from cabench.data.fixtures import digits as generator
from cabench.data.fixtures.digit_scenes import digit_pools, draw_scene, load_glyphs
from cabench.models.registry import ModelSpec, build_model
from cabench.models.segmentation import dilate_mobilenetv2

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


def _flat_canvas(rng: np.random.Generator, size: int, params: object) -> np.ndarray:
    return np.full((size, size, 3), 0.5) + rng.normal(0.0, 0.03, (size, size, 3))


def _params(variant: str, overrides: list[str]) -> generator.DigitsParams:
    """The generator's defaults, clutter off for ``flat`` and ``noclut``, then ``--param NAME=VALUE`` overrides
    (a pair as ``LOW,HIGH``)."""
    params = generator.DigitsParams(clutter=(0, 0) if variant in ("flat", "noclut") else (2, 8))
    for entry in overrides:
        name, value = entry.split("=", 1)
        default = getattr(params, name)
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        parsed = tuple(kind(v) for v in value.split(",")) if isinstance(default, tuple) else kind(value)
        params = dataclasses.replace(params, **{name: parsed})
    return params


def _scenes(
    variant: str, params: generator.DigitsParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    canvas = _flat_canvas if variant == "flat" else generator._canvas
    images, labels = load_glyphs()
    pools = dict(zip(("train", "val"), digit_pools(labels, params.val_fraction, 0), strict=True))
    out: list[torch.Tensor] = []
    for split, renders in (("train", params.classify_train_per_glyph), ("val", params.classify_val_per_glyph)):
        xs, ys, n = [], [], 0
        for glyph in pools[split]:
            for _ in range(renders):
                rng = generator._rng(0, "classify", split, n)
                n += 1
                scene = canvas(rng, params.classify_size, params)
                glyphs = [(images[glyph], int(labels[glyph]))]
                pixels, _ = draw_scene(rng, scene, glyphs, params.classify_heights, 200, params.ink_contrast)
                xs.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
                ys.append(int(labels[glyph]))
        out += [(torch.stack(xs) - MEAN) / STD, torch.tensor(ys)]
    return out[0], out[1], out[2], out[3]


def _plain(shift: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels = load_glyphs()
    x = F.interpolate(torch.tensor(images, dtype=torch.float32)[:, None], size=20, mode="bicubic")
    x = (F.pad(x, (6, 6, 6, 6)).repeat(1, 3, 1, 1) - 0.2) / 0.3
    y = torch.tensor(labels)
    train, val = (torch.from_numpy(p) for p in digit_pools(labels, 0.3, 0))
    if shift:
        g = torch.Generator().manual_seed(0)
        x = torch.stack([torch.roll(im, torch.randint(-6, 7, (2,), generator=g).tolist(), (1, 2)) for im in x])
    return x[train].repeat(3, 1, 1, 1), y[train].repeat(3), x[val], y[val]


def _print_floor(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    floor = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300))
    floor.fit(x.flatten(1).numpy(), y.numpy())
    print(f"floor logistic-pixels {floor.score(xv.flatten(1).numpy(), yv.numpy()) * 100:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=("plain", "plainshift", "flat", "noclut", "base"))
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--output-stride", type=int, default=32, choices=(8, 16, 32))
    parser.add_argument("--param", action="append", default=[], help="a DigitsParams field as NAME=VALUE")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--opt", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--standardize", action="store_true", help="per-image, per-channel standardisation")
    parser.add_argument("--floor", action="store_true", help="also print logistic regression on the raw pixels")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.variant.startswith("plain"):
        x, y, xv, yv = _plain(args.variant == "plainshift")
    else:
        x, y, xv, yv = _scenes(args.variant, _params(args.variant, args.param))
    if args.floor:
        _print_floor(x, y, xv, yv)
    if args.standardize:  # each image to zero mean and unit deviation per channel
        x, xv = ((t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True).clamp_min(1e-3) for t in (x, xv))
    model = build_model(ModelSpec(arch="mobilenetv2", width=args.width, attention="none", num_classes=10))
    if args.output_stride != 32:
        dilate_mobilenetv2(model.features, args.output_stride)
    if args.opt == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
    per_epoch = len(x) // args.batch
    total, warm = args.epochs * per_epoch, per_epoch

    def factor(s: int) -> float:
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order, running = torch.randperm(len(x)), 0.0
        for i in range(per_epoch):
            idx = order[i * args.batch : (i + 1) * args.batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        model.eval()
        with torch.no_grad():
            top1 = (model(xv).argmax(1) == yv).float().mean().item() * 100
        print(f"{args.variant} {epoch} {running / per_epoch:.3f} {top1:.2f} {time.time() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
