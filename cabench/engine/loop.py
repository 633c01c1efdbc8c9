"""The training loop: :func:`train` and the steps it is made of (see :mod:`cabench.engine` for the rules)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import Dataset

from cabench import outcomes
from cabench.checkpoint import (
    check_state_dict,
    load_checkpoint,
    remove_stale_temps,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cabench.engine.distributed import all_reduce_sum, init_distributed
from cabench.engine.ema import build_ema, load_ema_state
from cabench.engine.runtime import (
    Board,
    DeferSigint,
    TermAsInterrupt,
    autocast,
    broadcast_buffers,
    build_optimizer,
    deterministic_mode,
    gather_objects,
    seed_all,
    trim_log,
)
from cabench.engine.sampling import EpochSampler, dataset_len, eval_progress, make_loader, mix_seed
from cabench.engine.schedule import build_scheduler, restore_scheduler, total_steps_of
from cabench.engine.settings import LeaseLost, TrainingDiverged, TrainingInterrupted, TrainSettings
from cabench.engine.task import ProgressFn, Task

__all__ = ["CHECKPOINT_NAME", "LOG_NAME", "check_held", "check_runnable", "train"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


@dataclass
class _Plan:
    """What a run is, fixed before any state exists: settings, task, processes, lengths, paths."""

    s: TrainSettings
    task: Task
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    per_rank: int
    n_train: int
    steps_per_epoch: int
    total_steps: int
    deterministic: bool
    still_held: Callable[[], bool] | None = None  # whether this process still holds the run (its lease)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME

    @property
    def checkpoint_format(self) -> str:
        return f"cabench-{self.task.name}-v1"


@dataclass
class _State:
    """What a checkpoint holds, live: the model, optimizer, lr scheduler, scaler, EMA, counters and loss
    accumulator."""

    raw: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    loss_acc: torch.Tensor  # this rank's loss sum over the current epoch
    step: int = 0
    last_epoch_loss: float | None = None
    elapsed_before: float = 0.0
    resumed_from: int | None = None
    t_start: float = 0.0


class _Log:
    """Rank 0's ``log.jsonl`` (one JSON line per record, flushed at once) and TensorBoard scalars."""

    def __init__(self, p: _Plan) -> None:
        self.fh = open(p.log_path, "a") if p.main else None  # noqa: SIM115 (closed in close())
        self.board = Board(p.run_dir / "tensorboard" if p.main and p.s.tensorboard else None)

    def __call__(self, record: dict[str, Any]) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(record, sort_keys=True) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        self.board.close()


def check_runnable(s: TrainSettings, train_ds: Dataset) -> tuple[torch.device, int]:
    """Refuse settings that cannot run on these processes, this device and this data (the device and the world
    size). The profiles call it before they make a run directory, so a refusal leaves nothing behind."""
    s.validate()
    _rank, world, _local, default_device = init_distributed()
    device = torch.device(s.device) if s.device else default_device
    if s.batch_size % world:
        raise ValueError(f"global batch {s.batch_size} does not divide over {world} processes")
    n_train = dataset_len(train_ds)
    if n_train < s.batch_size:
        raise ValueError(f"training set of {n_train} images is smaller than one global batch of {s.batch_size}")
    if s.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp fp16 needs CUDA; use bf16 or off on CPU")
    if s.sync_bn and world > 1 and device.type != "cuda":
        raise ValueError("sync_bn needs CUDA (torch's SyncBatchNorm does not run on CPU)")
    return device, world


def _plan(s: TrainSettings, train_ds: Dataset, run_dir: Path, task: Task) -> _Plan:
    """Check the settings against the processes and the data; refuse what cannot run."""
    device, world = check_runnable(s, train_ds)
    rank = init_distributed()[0]
    n_train = dataset_len(train_ds)
    steps_per_epoch = n_train // s.batch_size
    total_steps = total_steps_of(s, steps_per_epoch)
    if s.max_steps is not None:
        total_steps = min(total_steps, s.max_steps)
    det = s.deterministic if s.deterministic is not None else device.type == "cpu"
    return _Plan(
        s, task, run_dir, device, rank, world, s.batch_size // world, n_train, steps_per_epoch, total_steps, det
    )


def _build_state(model: nn.Module, p: _Plan) -> _State:
    """Device and layout, then the optimizer on the raw module, scaler, EMA. What a recipe decides about the model
    itself (dropout, BatchNorm momentum, a task's protocol) is set once, before training, by
    :func:`cabench.pipeline.apply_recipe`."""
    s, raw = p.s, model
    if s.sync_bn and p.world > 1:
        raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)
    raw.to(p.device)
    if s.channels_last:
        raw.to(memory_format=torch.channels_last)
    raw.train()
    optimizer = build_optimizer(raw, s)
    scheduler = build_scheduler(optimizer, s, p.steps_per_epoch)
    scaler = torch.amp.GradScaler(p.device.type, enabled=s.amp == "fp16")
    ema = build_ema(raw, s.ema_decay) if s.ema else None
    loss_acc = torch.zeros((), dtype=torch.float64, device=p.device)
    return _State(raw, optimizer, scheduler, scaler, ema, loss_acc)


def _restore(st: _State, p: _Plan) -> None:
    """Resume from the run directory's checkpoint if there is one (refusing one of another run); else seed."""
    if not p.ckpt_path.exists():
        seed_all(p.s.seed + p.rank)
        if p.main:
            p.log_path.unlink(missing_ok=True)  # a log without a checkpoint belongs to no run
        return
    ck = load_checkpoint(p.ckpt_path)
    if ck.get("format") != p.checkpoint_format:
        raise ValueError(f"{p.ckpt_path}: not a cabench {p.task.name} checkpoint (format {ck.get('format')!r})")
    check_state_dict(ck.get("model"), p.ckpt_path)
    sam = ck["sampler"]
    for key, now in (
        ("global_batch", p.s.batch_size),
        ("dataset_len", p.n_train),
        ("steps_per_epoch", p.steps_per_epoch),
        ("seed", p.s.seed),
    ):
        if sam[key] != now:
            raise ValueError(f"{p.ckpt_path}: cannot resume: checkpoint {key} is {sam[key]}, this run's is {now}")
    st.raw.load_state_dict(ck["model"])
    st.optimizer.load_state_dict(ck["optimizer"])
    st.step = int(ck["step"])
    restore_scheduler(st.scheduler, ck.get("scheduler"), st.step)
    if ck.get("scaler"):
        st.scaler.load_state_dict(ck["scaler"])
    if st.ema is not None and ck.get("ema") is not None:
        load_ema_state(st.ema, ck["ema"], st.step)
    st.last_epoch_loss = ck.get("last_epoch_loss")
    st.elapsed_before = float(ck.get("elapsed_s", 0.0))
    ranks = ck["ranks"]
    if p.rank < len(ranks) and len(ranks) == p.world:
        set_rng_state(ranks[p.rank]["rng"])
        st.loss_acc.fill_(float(ranks[p.rank]["loss_sum"]))
    else:  # world size changed: data order is kept, per-rank RNG streams are re-derived
        seed_all(mix_seed(p.s.seed, -2, p.rank * 1_000_003 + st.step))
        st.loss_acc.fill_(float(sum(r["loss_sum"] for r in ranks)) / max(1, len(ranks)))
    st.resumed_from = st.step
    if p.main:
        trim_log(p.log_path, st.step)


def _checkpoint(st: _State, p: _Plan, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint of the live state; ``ranks`` holds every rank's RNG states and loss accumulator."""
    s = p.s
    epoch, in_epoch = divmod(st.step, p.steps_per_epoch)
    return {
        "format": p.checkpoint_format,
        "model": st.raw.state_dict(),
        "optimizer": st.optimizer.state_dict(),
        "scheduler": st.scheduler.state_dict(),
        "scaler": st.scaler.state_dict() if st.scaler.is_enabled() else {},
        "ema": st.ema.state_dict() if st.ema is not None else None,
        "epoch": epoch,
        "step": st.step,
        "step_in_epoch": in_epoch,
        "sampler": {
            "seed": s.seed,
            "epoch": epoch,
            "step_in_epoch": in_epoch,
            "shuffle": True,
            "global_batch": s.batch_size,
            "world_size": p.world,
            "dataset_len": p.n_train,
            "steps_per_epoch": p.steps_per_epoch,
        },
        "ranks": ranks,
        "last_epoch_loss": st.last_epoch_loss,
        "elapsed_s": st.elapsed_before + (time.perf_counter() - st.t_start),
        "config": json.dumps(
            {"settings": s.resolved(), "world_size": p.world, "device": str(p.device)}, sort_keys=True, default=str
        ),
    }


def _save(st: _State, p: _Plan) -> None:
    """Collective in a process group (gathers every rank's RNG); rank 0 writes the checkpoint. Ctrl-C or SIGTERM
    arriving meanwhile is held until the file is complete, then stops the run at this step boundary."""
    with DeferSigint():
        ranks = gather_objects({"rng": rng_state(), "loss_sum": st.loss_acc.item()})
        if p.main:
            check_held(p.still_held, p.run_dir, st.step)
            save_checkpoint(p.ckpt_path, _checkpoint(st, p, ranks))


def check_held(still_held: Callable[[], bool] | None, run_dir: Path, step: int) -> None:
    """Before a write: stop at once, writing nothing, when another process has taken the run over."""
    if still_held is not None and not still_held():
        raise LeaseLost(run_dir, step)


def _step(st: _State, p: _Plan, net: nn.Module, batch: Any) -> tuple[torch.Tensor, float]:
    """One optimizer step with SIGINT deferred (an interrupt lands between steps); returns (loss, lr)."""
    s = p.s
    with DeferSigint():
        lr = st.optimizer.param_groups[0]["lr"]  # set by the scheduler for this step
        with autocast(p.device, s.amp):
            loss = p.task.loss(net, batch, p.device, s).float()
        st.optimizer.zero_grad(set_to_none=True)
        st.scaler.scale(loss).backward()
        st.scaler.step(st.optimizer)
        st.scaler.update()
        st.scheduler.step()
        if st.ema is not None:
            st.ema.update_parameters(st.raw)
        loss_value = loss.detach().double()
        st.loss_acc += loss_value
        st.step += 1
    return loss_value, lr


@dataclass
class _Window:
    """The steps since the last log line, for img/s."""

    t: float
    steps: int = 0


def _after_step(
    st: _State, p: _Plan, loss_value: torch.Tensor, lr: float, window: _Window, log: _Log, progress: ProgressFn | None
) -> bool:
    """Log, close the epoch's loss, checkpoint when due; return whether the run is over."""
    s, step = p.s, st.step
    epoch_done = step % p.steps_per_epoch == 0
    stop = step >= p.total_steps
    if step % s.log_every == 0 or epoch_done or stop:
        mean_loss = all_reduce_sum(loss_value.clone()).item() / p.world
        _finite_loss(mean_loss, step, p)
        now = time.perf_counter()
        rate = window.steps * s.batch_size / max(now - window.t, 1e-9)
        epoch = round(step / p.steps_per_epoch, 6)
        record = {"step": step, "epoch": epoch, "loss": mean_loss, "lr": lr, "img_per_s": rate, "time": time.time()}
        log(record)
        log.board.scalars(step, {"train/loss": mean_loss, "train/lr": lr, "train/img_per_s": rate})
        if progress is not None and p.main:
            eta = (p.total_steps - step) * s.batch_size / max(rate, 1e-9)
            progress({**record, "phase": "train", "total_steps": p.total_steps, "eta_s": eta})
        window.t, window.steps = now, 0
    if epoch_done or stop:
        n_steps = p.steps_per_epoch if epoch_done else step % p.steps_per_epoch
        st.last_epoch_loss = all_reduce_sum(st.loss_acc.clone()).item() / (p.world * n_steps)
        _finite_loss(st.last_epoch_loss, step, p)
        if epoch_done:
            st.loss_acc.zero_()
    if epoch_done or stop or (s.ckpt_every_steps and step % s.ckpt_every_steps == 0):
        if not (epoch_done or stop):  # the loss since the epoch began, checked before this mid-epoch checkpoint:
            # with --ckpt-every 1 the logged loss (every log_every steps) came too late to keep a diverged model out
            _finite_loss(all_reduce_sum(st.loss_acc.clone()).item(), step, p)
        _save(st, p)
    return stop


def _finite_loss(loss: float, step: int, p: _Plan) -> None:
    """Stop at once (no checkpoint of a diverged model) when the loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(step, loss, p.run_dir)


def _epochs(
    st: _State, p: _Plan, net: nn.Module, sampler: EpochSampler, loader: Any, log: _Log, evaluate: Any, progress: Any
) -> tuple[int, float]:
    """Train until ``total_steps``; return the images seen and the training time of this process."""
    images_seen, train_time = 0, 0.0
    window = _Window(time.perf_counter())
    while st.step < p.total_steps:
        epoch, in_epoch = divmod(st.step, p.steps_per_epoch)
        sampler.set_epoch(epoch, in_epoch)
        epoch_t, epoch_start_step = time.perf_counter(), st.step
        for batch in loader:
            loss_value, lr = _step(st, p, net, batch)
            window.steps += 1
            if _after_step(st, p, loss_value, lr, window, log, progress):
                break
        train_time += time.perf_counter() - epoch_t
        images_seen += (st.step - epoch_start_step) * p.s.batch_size
        every = p.s.eval_every_epochs * p.steps_per_epoch
        if every and st.step % every == 0 and st.step < p.total_steps:
            ev = evaluate()
            log({"event": "eval", "step": st.step, "time": time.time(), **ev})
            log.board.scalars(st.step, {f"val/{k}": v for k, v in ev.items()})
    return images_seen, train_time


def train(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    settings: TrainSettings,
    run_dir: Path | str,
    task: Task,
    progress: ProgressFn | None = None,
    still_held: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``train_ds`` following ``settings``, evaluate on ``val_ds``; resume if possible.

    ``still_held``, asked before every checkpoint, says whether this process still holds the run (its lease):
    when it does not, :class:`LeaseLost` is raised and nothing more is written.

    Returns the task's metrics (:meth:`Task.evaluate`) plus ``{"epochs", "steps", "train_loss",
    "img_per_s", "wall_s"}``, and ``<headline>_raw`` for the non-EMA weights when ``ema`` is on.
    Every rank returns the same metrics; only rank 0 writes files. Raises :class:`TrainingInterrupted`
    on Ctrl-C after saving a checkpoint.
    """
    p = dataclasses.replace(_plan(settings, train_ds, Path(run_dir), task), still_held=still_held)
    s = p.s
    if p.main:
        p.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(p.ckpt_path)
    with deterministic_mode(p.deterministic):
        st = _build_state(model, p)
        _restore(st, p)
        net: nn.Module = st.raw
        if p.world > 1:
            net = DistributedDataParallel(st.raw, device_ids=[p.device.index] if p.device.type == "cuda" else None)
        if s.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        sampler = EpochSampler(
            p.n_train, rank=p.rank, world=p.world, seed=s.seed, shuffle=True, per_rank_batch=p.per_rank, drop_last=True
        )
        loader = make_loader(
            train_ds,
            sampler,
            batch_size=p.per_rank,
            workers=s.workers,
            seed=s.seed,
            pin_memory=s.pin_memory,
            persistent=s.persistent_workers,
            drop_last=True,
            collate=task.collate,
        )

        def evaluate(m: nn.Module | None = None, keep_outcomes: bool = False) -> dict[str, Any]:
            m = m if m is not None else (st.ema.module if st.ema is not None else st.raw)
            broadcast_buffers(m)  # BN running stats drift per rank after DDP's last broadcast
            metrics, per_image = outcomes.split(task.evaluate(m, val_ds, s, p.device))
            if keep_outcomes and p.main and per_image is not None:
                per_image.save(p.run_dir)  # the final evaluation's, beside metrics.json
            return metrics

        log = _Log(p)
        st.t_start = time.perf_counter()
        try:
            if st.resumed_from is not None:
                log({"event": "resume", "step": st.resumed_from, "time": time.time()})
            try:
                with TermAsInterrupt():
                    images_seen, train_time = _epochs(st, p, net, sampler, loader, log, evaluate, progress)
            except KeyboardInterrupt:
                # A step never stops half-way (SIGINT is deferred), so the live state is a step boundary.
                # Other ranks may be gone: rank 0 saves with its own RNG state only.
                if p.main:
                    check_held(p.still_held, p.run_dir, st.step)
                    with suppress(KeyboardInterrupt), DeferSigint():  # a second signal waits for this write too
                        save_checkpoint(
                            p.ckpt_path, _checkpoint(st, p, [{"rng": rng_state(), "loss_sum": st.loss_acc.item()}])
                        )
                    log({"event": "interrupted", "step": st.step, "time": time.time()})
                raise TrainingInterrupted(st.step, p.ckpt_path if p.main else None) from None
            return _finish(st, p, evaluate, images_seen, train_time, log, progress)
        finally:
            log.close()


def _finish(
    st: _State, p: _Plan, evaluate: Any, images_seen: int, train_time: float, log: _Log, progress: ProgressFn | None
) -> dict[str, Any]:
    """The final evaluation (EMA weights when on, and the raw weights' headline metrics beside them)."""
    report = None
    if progress is not None and p.main:
        progress({"phase": "eval", "step": st.step, "total_steps": p.total_steps})

        def report(done: int, total: int) -> None:  # the evaluation's own progress: images, not loss and lr
            progress({"phase": "eval", "step": st.step, "images_done": done, "images_total": total})

    with eval_progress(report):
        final = evaluate(keep_outcomes=True)
    metrics: dict[str, Any] = {
        **final,
        "epochs": round(st.step / p.steps_per_epoch, 6),
        "steps": st.step,
        "train_loss": st.last_epoch_loss,
        "img_per_s": images_seen / train_time if train_time > 0 else 0.0,
        "wall_s": st.elapsed_before + (time.perf_counter() - st.t_start),
    }
    if st.ema is not None:
        with eval_progress(report):
            plain = evaluate(st.raw)
        metrics.update({f"{k}_raw": plain[k] for k in p.task.headline if k in plain})
    log({"event": "final", "step": st.step, "time": time.time(), **metrics})
    log.board.scalars(st.step, {f"val/{k}": v for k, v in final.items()})
    return metrics
