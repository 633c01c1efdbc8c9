"""Wall-clock latency and training throughput of models (CPU first), measured so that models can be compared.

What :func:`measure_latency` measures: the time of one ``model(x)`` call (a forward pass in eval mode under
``torch.inference_mode()``, on one fixed random input of ``(batch_size, 3, *input_size)``), with
``torch.set_num_threads(threads)``, after ``warmup`` untimed calls per model. It then runs ``rounds`` rounds; each
round calls every model once, in an order that rotates by one model per round, and times each call alone with
``time.perf_counter_ns``. Interleaving spreads any slow phase of the machine (other jobs, frequency changes) over
all models alike, so the *ratios* of the medians are steadier than the absolute numbers. Input creation, data
transfer and Python set-up are outside the timed region; the model call (including its Python dispatch) is inside
(on a GPU, the timed region ends after ``torch.cuda.synchronize``). Whatever the process's memory allocator does
during a call (with glibc, returning freed memory to the OS and page-faulting it back) is part of the time; see
:mod:`cabench.measure.ca_benchmark` for a run that measures with and without it.

What :func:`training_throughput` measures: images per second of full SGD training steps (zero_grad, forward in
train mode, cross-entropy loss on random labels, backward, ``optimizer.step()``) on one fixed random batch, timed
over ``steps`` steps after ``warmup`` untimed ones. Data loading and augmentation are not included.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

__all__ = ["LatencyResult", "measure_latency", "training_throughput"]


@dataclass(frozen=True)
class LatencyResult:
    """Per-call latency of one model over the timed rounds, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    rounds: int
    threads: int
    # Per-call times in round order (round k of every model is the same round): for per-round ratios.
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def as_dict(self) -> dict[str, float | int]:
        return {k: v for k, v in asdict(self).items() if k != "samples_ms"}


@contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)`` (None: leave it), restoring the previous value."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (numpy's default method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued GPU work (so that a timed region covers it); a no-op on the CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def measure_latency(
    models: Mapping[str, nn.Module],
    input_size: tuple[int, int] = (224, 224),
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    rounds: int = 40,
    in_channels: int = 3,
) -> dict[str, LatencyResult]:
    """Median / 10th / 90th percentile latency of ``model(x)`` for each model, measured interleaved.

    Every model is put in eval mode and called under ``torch.inference_mode()`` with ``threads`` intra-op threads
    (the previous thread count is restored afterwards) on a fixed random input of shape
    ``(batch_size, in_channels, *input_size)``. Each model first gets ``warmup`` untimed calls. Then, for each of
    ``rounds`` rounds, every model is called once, starting with a different model each round (round ``k`` starts
    at model ``k mod len(models)``), and each call is timed alone with ``time.perf_counter_ns``. The models' train /
    eval modes are restored at the end.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(models)
    if not names:
        return {}
    was_training = {name: models[name].training for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        with _num_threads(threads), torch.inference_mode():
            inputs = {
                name: torch.randn(batch_size, in_channels, *input_size, device=_model_device(models[name]))
                for name in names
            }
            for name in names:
                model = models[name].eval()
                for _ in range(warmup):
                    model(inputs[name])
            sync = {name: _synchronizer(inputs[name].device) for name in names}
            for k in range(rounds):
                for i in range(len(names)):
                    name = names[(k + i) % len(names)]
                    model, x, wait = models[name], inputs[name], sync[name]
                    wait()
                    start = time.perf_counter_ns()
                    model(x)
                    wait()
                    times[name].append((time.perf_counter_ns() - start) / 1e6)
    finally:
        for name in names:
            models[name].train(was_training[name])
    results = {}
    for name in names:
        values = sorted(times[name])
        results[name] = LatencyResult(
            median_ms=statistics.median(values),
            p10_ms=_quantile(values, 0.1),
            p90_ms=_quantile(values, 0.9),
            rounds=rounds,
            threads=threads,
            samples_ms=tuple(times[name]),
        )
    return results


def training_throughput(
    model: nn.Module,
    batch_size: int = 64,
    input_size: tuple[int, int] = (224, 224),
    steps: int = 5,
    warmup: int = 2,
    threads: int | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
) -> float:
    """Images per second of SGD training steps on random data.

    One step is ``optimizer.zero_grad()``, a forward pass in train mode on a fixed random batch of shape
    ``(batch_size, in_channels, *input_size)``, cross-entropy against fixed random labels, ``loss.backward()`` and
    ``optimizer.step()`` (plain SGD, lr 1e-3, momentum 0.9). ``warmup`` untimed steps come first; the result is
    ``batch_size * steps`` divided by the wall-clock time of the ``steps`` timed steps (``time.perf_counter_ns``).
    ``threads`` sets ``torch.set_num_threads`` for the measurement (None: leave it); the previous value is
    restored. The number of classes is read from the model's output unless given. The model's parameters are
    updated by the steps (work on a copy to keep them) and its train/eval mode is restored afterwards.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = _model_device(model)
    was_training = model.training
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    try:
        with _num_threads(threads):
            x = torch.randn(batch_size, in_channels, *input_size, device=device)
            if num_classes is None:  # probed in eval mode, so BatchNorm statistics are left alone
                model.eval()
                with torch.no_grad():
                    num_classes = model(x[:2]).shape[1]
            model.train()
            target = torch.randint(0, num_classes, (batch_size,), device=device)

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), target)
                loss.backward()
                optimizer.step()

            wait = _synchronizer(device)
            for _ in range(warmup):
                step()
            wait()
            start = time.perf_counter_ns()
            for _ in range(steps):
                step()
            wait()
            elapsed_s = (time.perf_counter_ns() - start) / 1e9
    finally:
        model.train(was_training)
    return batch_size * steps / elapsed_s
