"""Data order and per-sample seeding: which sample each rank loads at each step, and with which RNG state.

Epoch ``e`` visits the permutation ``randperm(n, seed + e)``; rank ``r`` reads every ``world``-th
element of each global batch; each sample's augmentation RNGs are seeded from ``(seed, epoch, index)``.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from cabench.engine.distributed import get_rank, get_world_size
from cabench.engine.settings import EvalSetup

__all__ = [
    "EpochSampler",
    "EvalProgressFn",
    "SeededDataset",
    "dataset_len",
    "eval_loader",
    "eval_progress",
    "make_loader",
    "mix_seed",
]

#: ``(images_done, images_total)`` of this process's share of an evaluation, after every batch.
EvalProgressFn = Callable[[int, int], None]
_EVAL_PROGRESS: ContextVar[EvalProgressFn | None] = ContextVar("cabench_eval_progress", default=None)


@contextmanager
def eval_progress(report: EvalProgressFn | None) -> Iterator[None]:
    """Every :func:`eval_loader` made inside reports its images done / total to ``report`` after each batch
    (a progress display of the evaluation itself, whichever task evaluates)."""
    token = _EVAL_PROGRESS.set(report)
    try:
        yield
    finally:
        _EVAL_PROGRESS.reset(token)


class _Counted:
    """A loader that reports images done after each batch has been consumed (the batches are in order)."""

    def __init__(self, loader: DataLoader, total: int, batch_size: int, report: EvalProgressFn) -> None:
        self.loader, self.total, self.batch_size, self.report = loader, total, batch_size, report

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        done = 0
        self.report(0, self.total)
        for batch in self.loader:
            yield batch
            done = min(self.total, done + self.batch_size)
            self.report(done, self.total)


def mix_seed(seed: int, epoch: int, index: int) -> int:
    x = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % (1 << 64)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) % (1 << 64)
    x ^= x >> 32
    return x % (1 << 63)


class SeededDataset(Dataset):
    """Wraps a dataset; key ``(epoch, index)`` loads ``index`` with RNGs seeded from ``(seed, epoch, index)``."""

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s = mix_seed(self.seed, epoch, index)
        if get_worker_info() is not None:  # a worker process: its RNGs are ours to set
            _seed_host_rngs(s)
            return self.base[index]
        # Main process: do not disturb the training RNGs (dropout, ...).
        cpu, py, npy = torch.default_generator.get_state(), random.getstate(), np.random.get_state()
        try:
            _seed_host_rngs(s)
            return self.base[index]
        finally:
            torch.default_generator.set_state(cpu)
            random.setstate(py)
            np.random.set_state(npy)


def _seed_host_rngs(s: int) -> None:
    """Seed the RNGs a data transform draws from: torch's CPU generator, ``random`` and NumPy.

    Not ``torch.manual_seed``: that also queues a seed for every lazily initialised accelerator (CUDA, XPU, MTIA),
    each with a formatted stack trace, which cost ~0.5 ms per sample, about half the probe's data time; a transform
    never draws from an accelerator's generator, so the CPU generator's state, and every sample, is the same.
    """
    torch.default_generator.manual_seed(s)
    random.seed(s)
    np.random.seed(s % (1 << 32))


class EpochSampler(Sampler):
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


def seed_worker(worker_id: int) -> None:
    """Seed a DataLoader worker's python and numpy RNGs from torch's, and leave SIGTERM to the main process: sent
    to the process group (``kill -TERM -PGID``, a scheduler), it would kill the worker and turn a clean stop with a
    checkpoint into a "worker killed" crash; the main process stops at its step boundary and ends the workers."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    s = torch.initial_seed() % (1 << 32)
    random.seed(s)
    np.random.seed(s)


def make_loader(
    ds: Dataset,
    sampler: EpochSampler,
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
        SeededDataset(ds, seed),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=g,
        persistent_workers=persistent and workers > 0,
        collate_fn=collate,
    )


def eval_loader(ds: Dataset, setup: EvalSetup, collate: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """This rank's share of ``ds`` in order: ``range(rank, n, world)``, no padding, nothing counted twice.

    Items are loaded with the same per-sample seeding as training (a fixed pseudo-epoch), so an
    evaluation that draws random numbers is still a function of its inputs.
    """
    batch_size, seed = setup.batch_size, setup.seed
    rank, world = get_rank(), get_world_size()
    sampler = EpochSampler(
        dataset_len(ds), rank=rank, world=world, seed=seed, shuffle=False, per_rank_batch=batch_size, drop_last=False
    )
    sampler.set_epoch(-1)
    loader = make_loader(
        ds,
        sampler,
        batch_size=batch_size,
        workers=setup.workers,
        seed=seed,
        pin_memory=setup.pin_memory,
        persistent=False,
        drop_last=False,
        collate=collate,
    )
    report = _EVAL_PROGRESS.get()
    if report is None:
        return loader
    return _Counted(loader, len(range(rank, len(ds), world)), batch_size, report)  # type: ignore[return-value]


def dataset_len(ds: Dataset) -> int:
    if not isinstance(ds, Sized):
        raise TypeError("datasets must be map-style (define __len__)")
    return len(ds)
