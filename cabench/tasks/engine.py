"""The training engine shared by every task: resumable, DDP-aware, deterministic on CPU.

:func:`train` takes any ``nn.Module``, two map-style datasets and a :class:`Task`
(what a batch is, what the loss is, how to evaluate), and follows a recipe
(:class:`TrainSettings`). Classification, detection and segmentation are tasks
(:mod:`cabench.tasks.classification`, :mod:`~cabench.tasks.detection`,
:mod:`~cabench.tasks.segmentation`); the loop, the schedule, checkpoints,
resume, DDP, AMP and logging are written once, here.

Batch and learning rate. ``batch_size`` is the global batch. Each of the
``world_size`` processes takes ``batch_size // world_size`` images (an error
if it does not divide), DDP averages the gradients, and the learning rate is
the recipe's, so N processes make the same updates as one process with the
whole batch (up to float summation order; BatchNorm statistics are per
process unless ``sync_bn``, which needs CUDA).

Data order. Epoch ``e`` visits the permutation ``randperm(n, seed + e)``;
step ``k`` of the epoch is its slice ``[k*B, (k+1)*B)``, which rank ``r``
reads as every ``world_size``-th element from ``r`` (the split
``DistributedSampler`` makes, without padding; the tail shorter than a
global batch is dropped). Each sample's augmentation RNG (torch, numpy,
python ``random``) is seeded from ``(seed, epoch, index)``, so what a sample
looks like does not depend on the worker that loads it, on how many workers
there are, or on where a run was resumed.

Length. ``iterations`` global steps when a recipe counts iterations (the
detection and segmentation recipes), else ``epochs`` passes over the data.

Learning rate. Computed from the global step each iteration: linear warmup
over ``warmup_epochs`` or ``warmup_iterations`` (from ``lr/warmup_steps`` to
``lr``), then cosine to 0 over the remaining steps, ``lr * step_gamma **
floor(step / (step_epochs * steps_per_epoch))`` (``step``, TF staircase
exponential decay, on the global step), ``lr * step_gamma ** k`` after the
k-th of ``milestones`` (``multistep``, global step numbers) or ``lr * (1 - t)
** poly_power``. ``max_steps`` truncates a run without reshaping the schedule.

Checkpoints (``run_dir/checkpoint.pt``, see :mod:`cabench.checkpoint`):
written atomically at each epoch end, every ``ckpt_every_steps`` steps, when
``max_steps`` stops a run, and on Ctrl-C. If the file exists when
:func:`train` starts, the run resumes from it: model, optimizer,
grad scaler, EMA, counters, every rank's RNG states and the loss accumulator
are restored and the sampler skips the ``step_in_epoch`` global batches of
the current epoch already trained on (their indices are never loaded), so an
interrupted-and-resumed run is bitwise identical to an uninterrupted one
(tested with SIGKILL on CPU).

Ctrl-C. A training step (forward, backward, update) runs with SIGINT
deferred, so an interrupt always lands between steps; the state is then
saved and :class:`TrainingInterrupted` raised. SIGKILL loses at most the steps
since the last checkpoint.

Logging. Rank 0 appends one JSON line per ``log_every`` steps to
``run_dir/log.jsonl`` (step, epoch, loss averaged over ranks, lr, img/s,
time), flushed at once, and calls ``progress(event)`` with the same numbers
and an ETA. On resume, lines past the checkpoint's step are dropped first.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from cabench.checkpoint import load_checkpoint, remove_stale_temps, rng_state, save_checkpoint, set_rng_state
from cabench.store import atomic_write_text
from cabench.tasks.distributed import all_reduce_sum, get_rank, get_world_size, init_distributed, is_distributed

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "Task",
    "TrainSettings",
    "TrainingInterrupted",
    "autocast",
    "eval_loader",
    "eval_mode",
    "lr_at",
    "train",
    "unwrap",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"

ProgressFn = Callable[[dict[str, Any]], None]

_RECIPE_FIELDS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "weight_decay_norm",
    "nesterov",
    "rmsprop_decay",
    "optimizer_eps",
    "batch_size",
    "epochs",
    "iterations",
    "schedule",
    "warmup_epochs",
    "warmup_iterations",
    "step_gamma",
    "step_epochs",
    "milestones",
    "poly_power",
    "sync_bn",
    "label_smoothing",
    "dropout",
    "bn_momentum",
    "ema",
    "ema_decay",
)


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C after saving a checkpoint; running again resumes it."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        self.step = step
        self.checkpoint = checkpoint
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint written by this process"
        super().__init__(f"training interrupted at step {step}; {where}; run the same command again to resume")


@dataclass
class TrainSettings:
    """A recipe's training fields (see :class:`cabench.recipe.Recipe`) plus run knobs."""

    # --- from the recipe -----------------------------------------------------------------------
    optimizer: str = "sgd"  # sgd | rmsprop
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    weight_decay_norm: bool = True  # False: no weight decay on normalization-layer parameters
    nesterov: bool = False
    rmsprop_decay: float = 0.9
    optimizer_eps: float | None = None
    batch_size: int = 256  # GLOBAL batch, all processes together
    epochs: int | None = 1  # ignored when iterations is set
    iterations: int | None = None  # length in global steps (detection/segmentation recipes)
    schedule: str = "cosine"  # cosine | step | multistep | poly
    warmup_epochs: float = 0.0
    warmup_iterations: int = 0
    step_gamma: float | None = None
    step_epochs: float | None = None
    milestones: tuple[int, ...] = ()  # multistep: global steps where lr *= step_gamma
    poly_power: float = 0.9
    label_smoothing: float = 0.0
    dropout: float | None = None  # None: keep the model's nn.Dropout rates
    bn_momentum: float | None = None  # PyTorch convention; None: keep the model's
    ema: bool = False
    ema_decay: float = 0.9999
    # --- run knobs -----------------------------------------------------------------------------
    max_steps: int | None = None  # None: all epochs
    ckpt_every_steps: int = 0  # 0: only at epoch ends
    seed: int = 0
    workers: int = 0  # DataLoader workers per process
    pin_memory: bool = False
    persistent_workers: bool = False
    amp: str = "off"  # off | bf16 | fp16 (fp16 on CUDA only)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False  # needs CUDA with more than one process
    deterministic: bool | None = None  # None: True on CPU, False on CUDA
    log_every: int = 10
    tensorboard: bool = False  # also write TensorBoard event files to run_dir/tensorboard (needs tensorboard)
    eval_batch_size: int | None = None  # per process; None: batch_size // world_size
    eval_every_epochs: int = 0  # 0: evaluate only at the end
    device: str | None = None  # None: cuda:<local_rank> if available, else cpu
    config: dict[str, Any] = field(default_factory=dict)  # context to record (recipe id, model, overrides)

    @classmethod
    def from_recipe(cls, recipe: Any, **knobs: Any) -> TrainSettings:
        """Settings from a :class:`~cabench.recipe.Recipe` and run knobs (``None`` knobs keep defaults)."""
        if getattr(recipe, "mixup", False):
            raise ValueError(f"recipe {recipe.id}: mixup is not implemented by the engine")
        values = {name: getattr(recipe, name) for name in _RECIPE_FIELDS}
        values["milestones"] = tuple(values["milestones"] or ())
        values.update({k: v for k, v in knobs.items() if v is not None})
        config = dict(values.pop("config", {}) or {})
        config.setdefault("recipe", recipe.model_dump())
        return cls(**values, config=config)

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"optimizer must be sgd or rmsprop, not {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "multistep", "poly"):
            raise ValueError(f"schedule must be cosine, step, multistep or poly, not {self.schedule!r}")
        if self.schedule == "step" and (self.step_gamma is None or self.step_epochs is None):
            raise ValueError("schedule 'step' needs step_gamma and step_epochs")
        if self.schedule == "multistep" and (self.step_gamma is None or not self.milestones):
            raise ValueError("schedule 'multistep' needs step_gamma and milestones")
        if self.iterations is None and (self.epochs is None or self.epochs < 1):
            raise ValueError("a run needs epochs >= 1 or iterations >= 1")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be positive, not {self.iterations}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp must be off, bf16 or fp16, not {self.amp!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, not {self.max_steps}")
        if self.log_every < 1 or self.ckpt_every_steps < 0 or self.workers < 0:
            raise ValueError("log_every must be >= 1; ckpt_every_steps and workers >= 0")

    def eval_batch_per_process(self) -> int:
        """``eval_batch_size``, else this process's share of the global training batch."""
        return self.eval_batch_size or max(1, self.batch_size // get_world_size())

    def resolved(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- learning rate --------------------------------------------------------------------------------


def total_steps_of(s: TrainSettings, steps_per_epoch: int) -> int:
    """The schedule's length in global steps: ``iterations``, else ``epochs * steps_per_epoch``."""
    if s.iterations is not None:
        return s.iterations
    assert s.epochs is not None
    return s.epochs * steps_per_epoch


def lr_at(step: int, s: TrainSettings, steps_per_epoch: int) -> float:
    """The learning rate for global step ``step`` (0-based) under ``s``'s schedule."""
    total = total_steps_of(s, steps_per_epoch)
    warmup = s.warmup_iterations or round(s.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return s.lr * (step + 1) / warmup
    if s.schedule == "step":
        assert s.step_gamma is not None and s.step_epochs is not None
        return s.lr * s.step_gamma ** math.floor(step / (s.step_epochs * steps_per_epoch))
    if s.schedule == "multistep":
        assert s.step_gamma is not None
        return s.lr * s.step_gamma ** sum(1 for m in s.milestones if step >= m)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if s.schedule == "cosine":
        return 0.5 * s.lr * (1.0 + math.cos(math.pi * t))
    return s.lr * (1.0 - t) ** s.poly_power


# --- data -----------------------------------------------------------------------------------------


def _mix_seed(seed: int, epoch: int, index: int) -> int:
    x = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % (1 << 64)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) % (1 << 64)
    x ^= x >> 32
    return x % (1 << 63)


class _SeededDataset(Dataset):
    """Wraps a dataset; key ``(epoch, index)`` loads ``index`` with RNGs seeded from ``(seed, epoch, index)``."""

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s = _mix_seed(self.seed, epoch, index)
        if get_worker_info() is not None:  # a worker process: its RNGs are ours to set
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (1 << 32))
            return self.base[index]
        # Main process: do not disturb the training RNGs (dropout, ...).
        py, npy = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                random.seed(s)
                np.random.seed(s % (1 << 32))
                return self.base[index]
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class _EpochSampler(Sampler):
    """This rank's ``(epoch, index)`` keys for one epoch, optionally starting ``start_batch`` batches in.

    Train: a permutation seeded ``seed + epoch``, cut to ``steps * global_batch`` and split over ranks
    by stride. Eval: ``range(rank, n, world)``, no padding and no duplicates.
    """

    def __init__(
        self, n: int, *, rank: int, world: int, seed: int, shuffle: bool, per_rank_batch: int, drop_last: bool
    ) -> None:
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.shuffle, self.per_rank_batch, self.drop_last = shuffle, per_rank_batch, drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            glob = self.per_rank_batch * self.world
            order = order[: (self.n // glob) * glob]
        mine = order[self.rank :: self.world]
        return mine[self.start_batch * self.per_rank_batch :]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % (1 << 32)
    random.seed(s)
    np.random.seed(s)


def _loader(
    ds: Dataset,
    sampler: _EpochSampler,
    *,
    batch_size: int,
    workers: int,
    seed: int,
    pin_memory: bool,
    persistent: bool,
    drop_last: bool,
    collate: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        _SeededDataset(ds, seed),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        generator=g,
        persistent_workers=persistent and workers > 0,
        collate_fn=collate,
    )


# --- helpers --------------------------------------------------------------------------------------


class _DeferSigint:
    """Hold SIGINT for the duration of a block (main thread only); raise KeyboardInterrupt after it."""

    def __enter__(self) -> _DeferSigint:
        self.pending = False
        self.active = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if self.active:
            signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        self.pending = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.active:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.pending and exc_type is None:
            raise KeyboardInterrupt


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _build_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if not s.weight_decay_norm and isinstance(module, _NORM_TYPES) else decay).append(p)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": s.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov)
    kwargs: dict[str, Any] = {"eps": s.optimizer_eps} if s.optimizer_eps is not None else {}
    return torch.optim.RMSprop(groups, lr=s.lr, alpha=s.rmsprop_decay, momentum=s.momentum, **kwargs)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1.0 + step) / (10.0 + step))  # TF ExponentialMovingAverage(num_updates=step)
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _gather(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def _broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics)."""
    if is_distributed():
        for b in model.buffers():
            dist.broadcast(b, src=0)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, DistributedDataParallel) else model


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines a killed run wrote past the checkpoint it is resumed from."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill
        if rec.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(f"{x}\n" for x in keep))


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.benchmark = prev_bench


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --- tasks and evaluation -------------------------------------------------------------------------


class Task(Protocol):
    """What a task adds to the engine: its batches, its loss, its evaluation.

    ``name`` tags checkpoints (a detection checkpoint never resumes a classification run).
    ``headline`` names the metrics that :func:`train` also reports for the non-EMA weights
    (``<name>_raw``) when EMA is on.
    """

    name: str
    headline: tuple[str, ...]

    def collate(self, samples: list[Any]) -> Any:
        """Batch a list of dataset items (``None``-like default: ``torch.utils.data.default_collate``)."""
        ...

    def loss(self, net: nn.Module, batch: Any, device: torch.device, settings: TrainSettings) -> Tensor:
        """Move ``batch`` to ``device``, run ``net`` (under autocast, already entered) and return the scalar loss."""
        ...

    def evaluate(self, model: nn.Module, ds: Dataset, settings: TrainSettings, device: torch.device) -> dict[str, Any]:
        """Metrics of ``model`` on ``ds``; collective in a process group, every rank returns the same numbers."""
        ...


def eval_loader(
    ds: Dataset,
    batch_size: int,
    workers: int,
    *,
    collate: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
    seed: int = 0,
) -> DataLoader:
    """This rank's share of ``ds`` in order: ``range(rank, n, world)``, no padding, nothing counted twice.

    Items are loaded with the same per-sample seeding as training (a fixed pseudo-epoch), so an
    evaluation that draws random numbers is still a function of its inputs.
    """
    sampler = _EpochSampler(
        _dataset_len(ds),
        rank=get_rank(),
        world=get_world_size(),
        seed=seed,
        shuffle=False,
        per_rank_batch=batch_size,
        drop_last=False,
    )
    sampler.set_epoch(-1)
    return _loader(
        ds,
        sampler,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        pin_memory=pin_memory,
        persistent=False,
        drop_last=False,
        collate=collate,
    )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The plain module (outside compile/DDP wrappers) in eval mode; its previous mode is restored after."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one outside a process group)."""
    return _gather(obj)


# --- training -------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    settings: TrainSettings,
    run_dir: Path | str,
    task: Task,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``train_ds`` following ``settings``, evaluate on ``val_ds``; resume if possible.

    Returns the task's metrics (:meth:`Task.evaluate`) plus ``{"epochs", "steps", "train_loss",
    "img_per_s", "wall_s"}``, and ``<headline>_raw`` for the non-EMA weights when ``ema`` is on.
    Every rank returns the same metrics; only rank 0 writes files. Raises :class:`TrainingInterrupted`
    on Ctrl-C after saving a checkpoint.
    """
    s = settings
    s.validate()
    run_dir = Path(run_dir)
    rank, world, _local, default_device = init_distributed()
    device = torch.device(s.device) if s.device else default_device
    main = rank == 0
    if s.batch_size % world:
        raise ValueError(f"global batch {s.batch_size} does not divide over {world} processes")
    per_rank = s.batch_size // world
    n_train = _dataset_len(train_ds)
    steps_per_epoch = n_train // s.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"training set of {n_train} images is smaller than one global batch of {s.batch_size}")
    total_steps = total_steps_of(s, steps_per_epoch)
    if s.max_steps is not None:
        total_steps = min(total_steps, s.max_steps)
    if s.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp fp16 needs CUDA; use bf16 or off on CPU")
    if s.sync_bn and world > 1 and device.type != "cuda":
        raise ValueError("sync_bn needs CUDA (torch's SyncBatchNorm does not run on CPU)")
    deterministic = s.deterministic if s.deterministic is not None else device.type == "cpu"
    checkpoint_format = f"cabench-{task.name}-v1"
    ckpt_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / LOG_NAME
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(ckpt_path)

    with _deterministic(deterministic):
        # Model: recipe tweaks, then device/layout, then the optimizer on the raw module.
        raw = model
        if s.dropout is not None:
            for m in raw.modules():
                if isinstance(m, nn.Dropout):
                    m.p = s.dropout
        if s.bn_momentum is not None:
            for m in raw.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = s.bn_momentum
        if s.sync_bn and world > 1:
            raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)
        raw.to(device)
        if s.channels_last:
            raw.to(memory_format=torch.channels_last)
        raw.train()
        optimizer = _build_optimizer(raw, s)
        scaler = torch.amp.GradScaler(device.type, enabled=s.amp == "fp16")
        ema: nn.Module | None = None
        if s.ema:
            ema = copy.deepcopy(raw).eval()
            for p in ema.parameters():
                p.requires_grad_(False)

        # Counters and accumulators (overwritten by a checkpoint).
        step = 0
        loss_acc = torch.zeros((), dtype=torch.float64, device=device)  # this rank's loss sum, current epoch
        last_epoch_loss: float | None = None
        elapsed_before = 0.0
        resumed_from: int | None = None
        if ckpt_path.exists():
            ck = load_checkpoint(ckpt_path)
            if ck.get("format") != checkpoint_format:
                raise ValueError(f"{ckpt_path}: not a cabench {task.name} checkpoint (format {ck.get('format')!r})")
            sam = ck["sampler"]
            for key, now in (
                ("global_batch", s.batch_size),
                ("dataset_len", n_train),
                ("steps_per_epoch", steps_per_epoch),
                ("seed", s.seed),
            ):
                if sam[key] != now:
                    raise ValueError(f"{ckpt_path}: cannot resume: checkpoint {key} is {sam[key]}, this run's is {now}")
            raw.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            if ema is not None and ck.get("ema") is not None:
                ema.load_state_dict(ck["ema"])
            step = int(ck["step"])
            last_epoch_loss = ck.get("last_epoch_loss")
            elapsed_before = float(ck.get("elapsed_s", 0.0))
            ranks = ck["ranks"]
            if rank < len(ranks) and len(ranks) == world:
                set_rng_state(ranks[rank]["rng"])
                loss_acc.fill_(float(ranks[rank]["loss_sum"]))
            else:  # world size changed: data order is kept, per-rank RNG streams are re-derived
                _seed_all(_mix_seed(s.seed, -2, rank * 1_000_003 + step))
                loss_acc.fill_(float(sum(r["loss_sum"] for r in ranks)) / max(1, len(ranks)))
            resumed_from = step
            if main:
                _trim_log(log_path, step)
        else:
            _seed_all(s.seed + rank)
            if main:
                log_path.unlink(missing_ok=True)  # a log without a checkpoint belongs to no run

        net: nn.Module = raw
        if world > 1:
            net = DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
        if s.compile:
            net = torch.compile(net)  # type: ignore[assignment]

        sampler = _EpochSampler(
            n_train, rank=rank, world=world, seed=s.seed, shuffle=True, per_rank_batch=per_rank, drop_last=True
        )
        loader = _loader(
            train_ds,
            sampler,
            batch_size=per_rank,
            workers=s.workers,
            seed=s.seed,
            pin_memory=s.pin_memory,
            persistent=s.persistent_workers,
            drop_last=True,
            collate=task.collate,
        )
        eval_model = ema if ema is not None else raw

        def run_eval(m: nn.Module) -> dict[str, Any]:
            _broadcast_buffers(m)  # BN running stats drift per rank after DDP's last broadcast
            return task.evaluate(m, val_ds, s, device)

        def checkpoint_state() -> dict[str, Any] | None:
            """Collective in a process group (gathers every rank's RNG); the state on rank 0, None elsewhere."""
            mine = {"rng": rng_state(), "loss_sum": loss_acc.item()}
            ranks = _gather(mine)
            if not main:
                return None
            return _state(ranks)

        def _state(ranks: list[dict[str, Any]]) -> dict[str, Any]:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            return {
                "format": checkpoint_format,
                "model": raw.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {
                    "kind": s.schedule,
                    "step": step,
                    "lr": lr_at(step, s, steps_per_epoch),
                    "steps_per_epoch": steps_per_epoch,
                },
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "ema": ema.state_dict() if ema is not None else None,
                "epoch": epoch,
                "step": step,
                "step_in_epoch": in_epoch,
                "sampler": {
                    "seed": s.seed,
                    "epoch": epoch,
                    "step_in_epoch": in_epoch,
                    "shuffle": True,
                    "global_batch": s.batch_size,
                    "world_size": world,
                    "dataset_len": n_train,
                    "steps_per_epoch": steps_per_epoch,
                },
                "ranks": ranks,  # per rank: RNG states (python, numpy, torch, cuda) and loss accumulator
                "last_epoch_loss": last_epoch_loss,
                "elapsed_s": elapsed_before + (time.perf_counter() - t_start),
                "config": json.dumps(
                    {"settings": s.resolved(), "world_size": world, "device": str(device)},
                    sort_keys=True,
                    default=str,
                ),
            }

        def save() -> None:
            state = checkpoint_state()
            if state is not None:
                save_checkpoint(ckpt_path, state)

        log_fh = open(log_path, "a") if main else None  # noqa: SIM115 (closed in finally)
        board = _Board(run_dir / "tensorboard" if main and s.tensorboard else None)

        def log(record: dict[str, Any]) -> None:
            if log_fh is not None:
                log_fh.write(json.dumps(record, sort_keys=True) + "\n")
                log_fh.flush()

        t_start = time.perf_counter()
        images_seen = 0
        train_time = 0.0
        try:
            if resumed_from is not None:
                log({"event": "resume", "step": resumed_from, "time": time.time()})
            window_t = time.perf_counter()
            window_steps = 0
            try:
                while step < total_steps:
                    epoch, in_epoch = divmod(step, steps_per_epoch)
                    sampler.set_epoch(epoch, in_epoch)
                    epoch_t, epoch_start_step = time.perf_counter(), step
                    for batch in loader:
                        with _DeferSigint():
                            lr = lr_at(step, s, steps_per_epoch)
                            for group in optimizer.param_groups:
                                group["lr"] = lr
                            with autocast(device, s.amp):
                                loss = task.loss(net, batch, device, s).float()
                            optimizer.zero_grad(set_to_none=True)
                            scaler.scale(loss).backward()
                            scaler.step(optimizer)
                            scaler.update()
                            if ema is not None:
                                _ema_update(ema, raw, s.ema_decay, step)
                            loss_value = loss.detach().double()
                            loss_acc += loss_value
                            step += 1
                            window_steps += 1
                        epoch_done = step % steps_per_epoch == 0
                        stop = step >= total_steps
                        if step % s.log_every == 0 or epoch_done or stop:
                            mean_loss = all_reduce_sum(loss_value.clone()).item() / world
                            now = time.perf_counter()
                            rate = window_steps * s.batch_size / max(now - window_t, 1e-9)
                            record = {
                                "step": step,
                                "epoch": round(step / steps_per_epoch, 6),
                                "loss": mean_loss,
                                "lr": lr,
                                "img_per_s": rate,
                                "time": time.time(),
                            }
                            log(record)
                            board.scalars(step, {"train/loss": mean_loss, "train/lr": lr, "train/img_per_s": rate})
                            if progress is not None and main:
                                eta = (total_steps - step) * s.batch_size / max(rate, 1e-9)
                                progress({**record, "phase": "train", "total_steps": total_steps, "eta_s": eta})
                            window_t, window_steps = now, 0
                        if epoch_done or stop:
                            n_steps = steps_per_epoch if epoch_done else step - epoch * steps_per_epoch
                            last_epoch_loss = all_reduce_sum(loss_acc.clone()).item() / (world * n_steps)
                            if epoch_done:
                                loss_acc.zero_()
                        if epoch_done or stop or (s.ckpt_every_steps and step % s.ckpt_every_steps == 0):
                            save()
                        if stop:
                            break
                    train_time += time.perf_counter() - epoch_t
                    images_seen += (step - epoch_start_step) * s.batch_size
                    every = s.eval_every_epochs * steps_per_epoch
                    if every and step % every == 0 and step < total_steps:
                        ev = run_eval(eval_model)
                        log({"event": "eval", "step": step, "time": time.time(), **ev})
                        board.scalars(step, {f"val/{k}": v for k, v in ev.items()})
            except KeyboardInterrupt:
                # A step never stops half-way (SIGINT is deferred), so the live state is a step boundary.
                # Other ranks may be gone: rank 0 saves with its own RNG state only.
                if main:
                    save_checkpoint(ckpt_path, _state([{"rng": rng_state(), "loss_sum": loss_acc.item()}]))
                    log({"event": "interrupted", "step": step, "time": time.time()})
                raise TrainingInterrupted(step, ckpt_path if main else None) from None

            if progress is not None and main:
                progress({"phase": "eval", "step": step, "total_steps": total_steps})
            final = run_eval(eval_model)
            metrics: dict[str, Any] = {
                **final,
                "epochs": round(step / steps_per_epoch, 6),
                "steps": step,
                "train_loss": last_epoch_loss,
                "img_per_s": images_seen / train_time if train_time > 0 else 0.0,
                "wall_s": elapsed_before + (time.perf_counter() - t_start),
            }
            if ema is not None:
                plain = run_eval(raw)
                metrics.update({f"{k}_raw": plain[k] for k in task.headline if k in plain})
            log({"event": "final", "step": step, "time": time.time(), **metrics})
            board.scalars(step, {f"val/{k}": v for k, v in final.items()})
            return metrics
        finally:
            if log_fh is not None:
                log_fh.close()
            board.close()


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))


def _dataset_len(ds: Dataset) -> int:
    if not isinstance(ds, Sized):
        raise TypeError("datasets must be map-style (define __len__)")
    return len(ds)


class _Board:
    """TensorBoard scalars when asked for (rank 0 only); a no-op otherwise."""

    def __init__(self, logdir: Path | None) -> None:
        self.writer: Any = None
        if logdir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(logdir))

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
