"""How fast MobileNetV2-0.5 (small-input strides, channels_last) learns the flat digit scenes, outside the CLI.

The scenes are drawn in memory the way `cabench fixtures digits` draws the flat preset (grey canvas, 22-26 px
glyphs, ``--per`` renders of every training glyph, 2 of every val glyph); SGD (Nesterov) or AdamW with a linear
warmup over ``--warm`` epochs, then cosine; val top-1 printed six times per run. The measurements behind the probe
recipe's batch and learning rate (notes/probe.md). A diagnostic, not a test.

    python benchmarks/probe_flat_learnability.py [--per 8] [--epochs 2] [--bs 32] [--lr 0.05] [--opt sgd|adamw]
        [--threads 1] [--os 8|16|32]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from cabench.data.fixtures.digit_scenes import digit_pools, draw_scene, flat_background, load_glyphs
from cabench.models.mobilenetv2 import MobileNetV2

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def scenes(images, labels, pool, per: int, split: int, heights) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, targets = [], []
    for n, glyph in enumerate(g for g in pool for _ in range(per)):
        rng = np.random.default_rng([0, 1, split, n])
        canvas = flat_background(rng, 32, 32, (0.4, 0.6), 0.03)
        drawn, _ = draw_scene(rng, canvas, [(images[glyph], int(labels[glyph]))], heights, 200, 0.35)
        pixels.append(drawn)
        targets.append(labels[glyph])
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255
    return ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last), torch.tensor(np.array(targets))


def model(output_stride: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = MobileNetV2(num_classes=10, width=0.5, small_input=output_stride == 8)
    if output_stride == 16:
        net.features[0][0].stride = (1, 1)
    return net.to(memory_format=torch.channels_last)


def top1(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        right = sum((net(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum().item() for i in range(0, len(x), 256))
    net.train()
    return 100 * right / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per", type=int, default=8)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--opt", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--os", type=int, choices=(8, 16, 32), default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warm", type=float, default=0.2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    images, labels = load_glyphs()
    train, val = digit_pools(labels, 0.3, 0)
    xt, yt = scenes(images, labels, train, a.per, 0, (22, 26))
    xv, yv = scenes(images, labels, val, 2, 1, (22, 26))
    net = model(a.os)
    if a.opt == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=0.05)
    steps, warm = int(a.epochs * len(xt) / a.bs), max(1, int(a.warm * len(xt) / a.bs))

    def factor(s: int) -> float:
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    order, start, losses = torch.Generator().manual_seed(0), time.time(), []
    for s in range(steps):
        if s % (len(xt) // a.bs) == 0:
            perm = torch.randperm(len(xt), generator=order)
        idx = perm[(s % (len(xt) // a.bs)) * a.bs :][: a.bs]
        loss = F.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (s + 1) % max(1, steps // 6) == 0 or s + 1 == steps:
            seen, val_top1 = (s + 1) * a.bs, top1(net, xv, yv)
            print(f"step {s + 1}/{steps} images {seen} loss {np.mean(losses[-50:]):.3f} val {val_top1:.1f}", flush=True)
    print(f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
