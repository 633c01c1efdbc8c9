"""What the loop needs around a step: SIGINT deferral, determinism, AMP, optimizer, collectives, logs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cabench.engine.distributed import is_distributed
from cabench.engine.settings import TrainSettings
from cabench.store import atomic_write_text

__all__ = [
    "Board",
    "DeferSigint",
    "TermAsInterrupt",
    "autocast",
    "broadcast_buffers",
    "build_optimizer",
    "deterministic_mode",
    "eval_mode",
    "gather_objects",
    "interleave_ranks",
    "seed_all",
    "sigterm_stops_training",
    "trim_log",
    "unwrap",
]


def _term_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class TermAsInterrupt:
    """During training, SIGTERM (docker stop, SLURM preemption) stops like Ctrl-C: checkpoint, then exit."""

    def __enter__(self) -> TermAsInterrupt:
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.previous = signal.signal(signal.SIGTERM, _term_as_interrupt)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            signal.signal(signal.SIGTERM, self.previous)


def sigterm_stops_training() -> bool:
    """Whether SIGTERM, sent now, stops a training like Ctrl-C (checkpoint at the step boundary, then
    :class:`~cabench.engine.settings.TrainingInterrupted`): true inside :func:`cabench.engine.train`'s steps."""
    handler = signal.getsignal(signal.SIGTERM)
    return handler is _term_as_interrupt or getattr(handler, "__func__", None) is DeferSigint._hold


class DeferSigint:
    """Hold SIGINT (and SIGTERM under :class:`TermAsInterrupt`) for a block (main thread only); raise
    KeyboardInterrupt after it."""

    def __enter__(self) -> DeferSigint:
        self.pending = False
        main = threading.current_thread() is threading.main_thread()
        self.active = main and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        self.term = main and signal.getsignal(signal.SIGTERM) is _term_as_interrupt
        if self.active:
            signal.signal(signal.SIGINT, self._hold)
        if self.term:
            signal.signal(signal.SIGTERM, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        if self.pending:  # a second Ctrl-C: the user means it. Leave at once; the last checkpoint on disk stays.
            sys.stderr.write("\ncabench: second interrupt: exiting now; the last saved checkpoint is kept\n")
            sys.stderr.flush()
            os._exit(130)
        self.pending = True
        sys.stderr.write("\ncabench: interrupt: finishing this step and saving a checkpoint (Ctrl-C again: exit now)\n")
        sys.stderr.flush()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.active:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.term:
            signal.signal(signal.SIGTERM, _term_as_interrupt)
        if self.pending and exc_type is None:
            raise KeyboardInterrupt


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
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


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one outside a process group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def interleave_ranks(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Per-rank arrays of ``eval_loader``'s shares (``range(rank, n, world)``) back in dataset order."""
    out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        out[rank :: len(parts)] = part
    return out


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics)."""
    if is_distributed():
        for b in model.buffers():
            dist.broadcast(b, src=0)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, DistributedDataParallel) else model


def trim_log(path: Path, step: int) -> None:
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
def deterministic_mode(enabled: bool) -> Iterator[None]:
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


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))


class Board:
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
