"""What a recipe builds, applied and written down.

:func:`apply_recipe` sets the parts of a built model a recipe decides: the detection protocol of an SSD
(:func:`cabench.models.ssd_protocol.configure_ssd`) and the upsampling of a segmenter. :func:`describe_pipeline`
reads back, from the built objects themselves, the effective pipeline of a run (transforms and their parameters,
sampler, optimizer parameter groups, learning-rate schedule, loss, model settings, default boxes and
post-processing, evaluation protocol) as plain JSON data; :mod:`cabench.profiles.train` writes it into each run's
``config.json`` under ``pipeline``. Because it is read from what was built, a recipe field that changes nothing
leaves it unchanged, which is what ``tests/test_recipe_fields.py`` checks for every field of the schema.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cabench.data.base import DATASETS
from cabench.engine.ema import build_ema
from cabench.engine.runtime import build_optimizer
from cabench.engine.schedule import lr_at, total_steps_of
from cabench.tasks._impl.segmentation import predict
from cabench.tasks.base import TASKS

__all__ = ["apply_recipe", "configure_task", "describe_pipeline", "task_protocol", "transforms_for"]

SAMPLER = (
    "epoch e visits randperm(n, seed + e), cut to whole global batches; rank r takes every world-th index "
    "from r; per-sample augmentation RNG seeded from (seed, epoch, index) (cabench.engine)"
)


def _task(recipe: Any) -> Any:
    return TASKS.get(recipe.task)


def apply_recipe(model: nn.Module, recipe: Any, image_size: int | None = None) -> nn.Module:
    """Apply what the recipe decides about a freshly built model (before weights are loaded or trained): what its
    task declares (the detection protocol of an SSD, the upsampling of a segmenter), the dropout rate of every
    ``nn.Dropout`` and the momentum of every BatchNorm. The one place a recipe's values reach the model."""
    task = _task(recipe)
    if (hook := task.hook("apply_recipe")) is not None:
        hook(model, recipe, image_size)
    for module in model.modules():
        if recipe.dropout is not None and isinstance(module, nn.Dropout):
            module.p = recipe.dropout
        if recipe.bn_momentum is not None and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = recipe.bn_momentum
    return model


def task_protocol(recipe: Any) -> Any:
    """The protocol the recipe's task evaluates with, as the task declares it (segmentation: the recipe's
    segmentation block or its defaults), or None."""
    task = _task(recipe)
    hook = task.hook("protocol")
    return hook(recipe) if hook is not None else None


def configure_task(engine_task: Any, recipe: Any) -> Any:
    """Give an engine task the recipe's evaluation protocol (segmentation); other tasks are returned as they are."""
    if hasattr(engine_task, "protocol"):
        engine_task.protocol = task_protocol(recipe)
    return engine_task


def transforms_for(recipe: Any) -> tuple[Any, Any]:
    """``(train, evaluation)`` transforms a recipe asks for, from the same functions the datasets' builders call,
    as the recipe's task declares them."""
    task = _task(recipe)
    hook = task.hook("transforms")
    if hook is None:
        raise ValueError(f"task {task.name!r} declares no transforms")
    return hook(recipe)


def _optimizer(model: nn.Module, settings: Any) -> dict[str, Any]:
    optimizer = build_optimizer(model, settings)
    groups = []
    for group in optimizer.param_groups:
        values = {k: v for k, v in group.items() if k != "params" and isinstance(v, (int, float, bool, str, tuple))}
        values["n_tensors"] = len(group["params"])
        values["n_params"] = sum(p.numel() for p in group["params"])
        groups.append(values)
    return {"class": type(optimizer).__name__, "param_groups": groups}


def _schedule(settings: Any, steps_per_epoch: int) -> dict[str, Any]:
    """The learning rate the engine computes at 33 steps spread over the run (both ends and warmup included)."""
    total = total_steps_of(settings, steps_per_epoch)
    warmup = settings.warmup_iterations or round(settings.warmup_epochs * steps_per_epoch)
    marks = {round(k * (total - 1) / 32) for k in range(33)} | {warmup - 1, warmup, steps_per_epoch}
    return {
        "kind": settings.schedule,
        "scheduler": "torch.optim.lr_scheduler.LambdaLR (lr * factor(step), stepped after each optimizer step)",
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "lr_at_step": {str(m): lr_at(m, settings, steps_per_epoch) for m in sorted(marks) if 0 <= m < total},
    }


def _ema(settings: Any) -> dict[str, Any] | None:
    """The engine's EMA (``AveragedModel``) on a one-weight probe: the decay it applies at steps 0 and 10**6."""
    if not settings.ema:
        return None
    import torch

    decays = {}
    for step in (0, 10**6):
        raw = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            raw.weight.fill_(0.0)
            ema = build_ema(raw, settings.ema_decay)
            ema.n_averaged.fill_(step + 1)
            raw.weight.fill_(1.0)
        ema.update_parameters(raw)
        decays[str(step)] = 1.0 - float(ema.module.weight.detach())
    return {
        "class": "torch.optim.swa_utils.AveragedModel (buffers copied, not averaged)",
        "decay_at_step": decays,
        "evaluated_with": "EMA weights (plain weights reported as *_raw)",
    }


def _model_settings(model: nn.Module, settings: Any) -> dict[str, Any]:
    bn = sorted({m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}, key=str)
    return {
        "dropout": [m.p for m in model.modules() if isinstance(m, nn.Dropout)],
        "bn_momentum": bn,
        "align_corners": getattr(model, "align_corners", None),
        "sync_bn": "SyncBatchNorm over the processes (CUDA, more than one process)" if settings.sync_bn else "off",
        "ema": _ema(settings),
    }


def _loss(recipe: Any, model: nn.Module, settings: Any) -> dict[str, Any]:
    task = _task(recipe)
    hook = task.hook("describe_loss")
    return hook(model, settings) if hook is not None else {}


def _evaluation(recipe: Any, val_ds: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": recipe.dataset, "transform": repr(getattr(val_ds, "transform", None))}
    protocol = task_protocol(recipe)
    if protocol is not None:
        out["protocol"] = protocol.model_dump()
        out["protocol_probe"] = _segmentation_probe(protocol)
    metric = DATASETS.get(recipe.dataset).evaluation
    if metric is not None:
        out["metric"] = metric
    return out


class _ProbeNet(nn.Module):
    """Fixed weights; a 3x3 conv plus the image mean, so padding, window placement and flips all show."""

    def __init__(self) -> None:
        super().__init__()
        import torch

        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(-1.0, 1.0, self.conv.weight.numel()).reshape(self.conv.weight.shape))

    def forward(self, x: Any) -> Any:
        return self.conv(x) + x.mean(dim=(2, 3), keepdim=True)


def _segmentation_probe(protocol: Any) -> float:
    """What :func:`cabench.tasks._impl.segmentation.predict` computes under ``protocol`` on a fixed 800x1100 probe
    image with a fixed network, summed with fixed weights: any change of flip, mode, window or stride shows."""
    import torch

    h, w = 800, 1100
    ys = torch.linspace(-1.0, 1.0, h)[:, None]
    xs = torch.linspace(-1.0, 2.0, w)[None, :]
    image = torch.stack([ys * xs, ys + xs**2, torch.sin(3 * xs) * ys])[None]
    with torch.no_grad():
        scores = predict(_ProbeNet().eval(), image, protocol)
    weights = torch.linspace(0.0, 1.0, scores.numel()).reshape(scores.shape)
    return round(float((scores * weights).sum()), 4)


def describe_pipeline(recipe: Any, model: nn.Module, train_ds: Any, val_ds: Any, settings: Any) -> dict[str, Any]:
    """The effective pipeline of a run, read from the built model, datasets and settings (JSON-able)."""
    steps_per_epoch = max(1, len(train_ds) // settings.batch_size)
    return {
        "train_transform": repr(getattr(train_ds, "transform", None)),
        "sampler": {"kind": SAMPLER, "global_batch": settings.batch_size, "seed": settings.seed},
        "optimizer": _optimizer(model, settings),
        "schedule": _schedule(settings, steps_per_epoch),
        "model": _model_settings(model, settings),
        "loss": _loss(recipe, model, settings),
        "evaluation": _evaluation(recipe, val_ds),
    }
