"""Where a probe row's time goes: data loading, forward, backward + update, evaluation (CPU seconds and wall).

Usage: ``python benchmarks/probe_profile.py DIGITS_ROOT [--steps N] [--workers W] [--suite probe-classify ...]``

For each suite, the baseline row's model and the suite recipe's datasets are built exactly as ``cabench run``
builds them; ``N`` training steps are timed piecewise (loader ``next``, the task's loss = forward, backward +
optimizer step) and one evaluation pass over the val split is timed as a whole. Prints one JSON line per suite
with per-step milliseconds and the projected seconds of a full row at the recipe's length.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> tuple[float, float]:
    w, c = _clock()
    return w - t[0], c - t[1]


def profile_suite(suite_id: str, root: Path, steps: int, workers: int) -> dict:
    from cabench.data.base import DATASETS
    from cabench.engine import TrainSettings
    from cabench.engine.runtime import build_optimizer
    from cabench.engine.sampling import EpochSampler, make_loader
    from cabench.models.registry import build_model
    from cabench.pipeline import apply_recipe
    from cabench.recipe import load_recipe
    from cabench.suite import find_suite, load_suite
    from cabench.tasks.base import TASKS

    suite = load_suite(find_suite(suite_id))
    recipe = load_recipe(suite.recipe)
    train_ds, val_ds = DATASETS.get(recipe.dataset).build(root, recipe)
    task = TASKS.get(suite.task).make(tuple(suite.columns))
    row = suite.row(suite.baseline)
    torch.manual_seed(0)
    model = apply_recipe(build_model(row.model.spec()), recipe)
    settings = TrainSettings.from_recipe(recipe, workers=workers)
    sampler = EpochSampler(
        len(train_ds), rank=0, world=1, seed=0, shuffle=True, per_rank_batch=recipe.batch_size, drop_last=True
    )
    loader = make_loader(
        train_ds,
        sampler,
        batch_size=recipe.batch_size,
        workers=workers,
        seed=0,
        pin_memory=False,
        persistent=False,
        drop_last=True,
        collate=task.collate,
    )
    optimizer = build_optimizer(model, settings)
    model.train()
    parts = {"data": [0.0, 0.0], "forward": [0.0, 0.0], "backward": [0.0, 0.0]}
    it = iter(loader)
    next(it)  # first batch: worker start-up, not a steady-state step
    for _ in range(steps):
        t = _clock()
        batch = next(it)
        for k, v in zip(("data",), (_since(t),), strict=True):
            parts[k] = [a + b for a, b in zip(parts[k], v, strict=True)]
        t = _clock()
        loss = task.loss(model, batch, torch.device("cpu"), settings)
        parts["forward"] = [a + b for a, b in zip(parts["forward"], _since(t), strict=True)]
        t = _clock()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        parts["backward"] = [a + b for a, b in zip(parts["backward"], _since(t), strict=True)]
    t = _clock()
    task.evaluate(model, val_ds, settings, torch.device("cpu"))
    eval_wall, eval_cpu = _since(t)
    steps_per_epoch = len(train_ds) // recipe.batch_size
    total = recipe.iterations or (recipe.epochs or 1) * steps_per_epoch
    per_step = {k: {"wall_ms": 1000 * v[0] / steps, "cpu_ms": 1000 * v[1] / steps} for k, v in parts.items()}
    step_wall = sum(v["wall_ms"] for v in per_step.values()) / 1000
    return {
        "suite": suite_id,
        "recipe": recipe.id,
        "threads": torch.get_num_threads(),
        "workers": workers,
        "batch": recipe.batch_size,
        "steps_timed": steps,
        "per_step": per_step,
        "eval_wall_s": eval_wall,
        "eval_cpu_s": eval_cpu,
        "val_n": len(val_ds),
        "total_steps": total,
        "projected_row_wall_s": step_wall * total + eval_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--suite", action="append", default=None)
    args = parser.parse_args()
    for suite_id in args.suite or ["probe-classify", "probe-detect", "probe-segment"]:
        print(json.dumps(profile_suite(suite_id, args.root, args.steps, args.workers)), flush=True)


if __name__ == "__main__":
    main()
