"""``cabench bench``: inference latency and training throughput of the attention variants, as ratios.

Every figure is a ratio to the ``baseline`` row measured in the same run, with the rows interleaved: for each
measurement (inference at one batch size, or training at one batch size) every row first gets ``warmup`` untimed
calls, then ``rounds`` rounds follow; in round ``k`` every row runs once, starting from row ``k mod rows``, each call
timed alone (``time.perf_counter_ns``; on a GPU, between two ``torch.cuda.synchronize``). Whatever slows the
machine during a round (other jobs, clock changes) hits every row alike, so ratios of medians are steadier than the
times. Reported per row: the median, the 10th and 90th percentiles (the spread), and the median's ratio to the
baseline's median (latency: ``row / baseline``, lower is better; training img/s: ``row / baseline``, higher is
better).

* inference: ``model(x)`` in eval mode under ``torch.inference_mode()`` on a fixed random batch, each attention
  block's own BatchNorm folded into its convolution where the block can (:func:`cabench.models.attention.
  fold_for_inference`: cabench's CA block; the backbones' BatchNorm and other implementations' blocks as they are);
* training: one SGD step (zero_grad, forward in train mode, cross-entropy on fixed random labels, backward,
  ``optimizer.step()``; SGD momentum 0.9), reported as images per second.

Options: ``device`` (``cpu``/``cuda``), ``amp`` (``bf16``/``fp16`` autocast; fp16 training uses a GradScaler),
``channels_last`` (model and inputs in NHWC), ``compile`` (``torch.compile`` per row and mode; compile time is in
the warmup, not timed). CPU thread counts are set for the run and restored afterwards. Data loading is not part of
these figures (see :mod:`cabench.measure.pipeline`).
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from cabench.measure import DEFAULT_BENCH_ROWS
from cabench.measure.bench_rows import RowUnavailable, build_row, row_label
from cabench.models.attention import fold_for_inference

__all__ = [
    "DEFAULT_ROWS",
    "BenchOptions",
    "format_bench",
    "pinned_threads",
    "quantile",
    "run_bench",
    "time_interleaved",
]

DEFAULT_ROWS = DEFAULT_BENCH_ROWS
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class BenchOptions:
    """What ``run_bench`` measures; see the module docstring."""

    rows: tuple[str, ...] = DEFAULT_ROWS
    latency_batches: tuple[int, ...] = (1, 32)
    train_batches: tuple[int, ...] = (32, 64)
    rounds: int = 5
    warmup: int = 1
    threads: int | None = 1  # inference, CPU
    train_threads: int | None = None  # training, CPU (None: torch's current count)
    device: str = "cpu"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    input_size: int = 224
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {self.rounds}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got {self.amp!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available to torch here")
        if self.amp == "fp16" and self.device == "cpu":
            raise ValueError("--amp fp16 needs --device cuda (use --amp bf16 on the CPU)")
        for b in (*self.latency_batches, *self.train_batches):
            if b < 1:
                raise ValueError(f"batch sizes must be >= 1, got {b}")
        if "baseline" not in self.rows:
            raise ValueError("--rows must include 'baseline' (every figure is a ratio to it)")


@contextmanager
def pinned_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` (None: leave it), restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _autocast(opts: BenchOptions):  # type: ignore[no-untyped-def]
    if opts.amp is None:
        return nullcontext()
    return torch.autocast(device_type=opts.device, dtype=AMP_DTYPES[opts.amp])


def _prepare(model: nn.Module, opts: BenchOptions) -> nn.Module:
    model = model.to(opts.device)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _input(batch: int, opts: BenchOptions) -> torch.Tensor:
    x = torch.randn(batch, 3, opts.input_size, opts.input_size, device=opts.device)
    return x.contiguous(memory_format=torch.channels_last) if opts.channels_last else x


def _inference_step(model: nn.Module, batch: int, opts: BenchOptions) -> Callable[[], None]:
    model = fold_for_inference(model.eval())  # the blocks' own BatchNorm, as deployed (this copy only)
    runner = torch.compile(model) if opts.compile else model
    x = _input(batch, opts)

    def step() -> None:
        with torch.inference_mode(), _autocast(opts):
            runner(x)

    return step


def _train_step(model: nn.Module, batch: int, opts: BenchOptions) -> Callable[[], None]:
    model = model.train()
    runner = torch.compile(model) if opts.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(opts.device) if opts.amp == "fp16" else None
    loss_fn = nn.CrossEntropyLoss()
    x = _input(batch, opts)
    target = torch.randint(0, 1000, (batch,), device=opts.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(opts):
            loss = loss_fn(runner(x), target)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def time_interleaved(
    steps: dict[str, Callable[[], object]],
    *,
    rounds: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    what: str = "",
    progress: Progress | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each step, in round order: ``warmup`` untimed calls per step, then ``rounds`` rounds in
    which every step runs once, round ``k`` starting at step ``k mod len(steps)``, each call timed alone between two
    ``sync()`` calls. The one timer of cabench: ``cabench bench`` and the latency profile's suite cells use it."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(steps)
    total = len(names) * (warmup + rounds)
    done = 0
    round_s = 0.0  # one call of every step: the last warmup's, then the first timed round's
    for name in names:
        for _ in range(warmup):
            start = time.perf_counter()
            steps[name]()
            sync()
            last = time.perf_counter() - start
            done += 1
            if progress:
                progress(f"{what}: warmup {name}", done, total)
        round_s += last if warmup else 0.0
    times: dict[str, list[float]] = {name: [] for name in names}
    for k in range(rounds):
        for i in range(len(names)):
            name = names[(k + i) % len(names)]
            sync()
            start = time.perf_counter_ns()
            steps[name]()
            sync()
            times[name].append((time.perf_counter_ns() - start) / 1e9)
            done += 1
            if progress:
                left = _estimate(round_s or sum(t[0] for t in times.values() if t), rounds - k)
                progress(f"{what}: round {k + 1}/{rounds}, {left}", done, total)
    return times


def _interleaved(
    steps: dict[str, Callable[[], None]], opts: BenchOptions, what: str, progress: Progress | None
) -> dict[str, list[float]]:
    """:func:`time_interleaved` with the options' rounds, warmup and device."""
    sync = torch.cuda.synchronize if opts.device == "cuda" else (lambda: None)
    return time_interleaved(steps, rounds=opts.rounds, warmup=opts.warmup, sync=sync, what=what, progress=progress)


def _estimate(round_s: float, rounds_left: int) -> str:
    """``about 3 min left`` from the time of one round (every row once) and the rounds to go, this one included."""
    seconds = round_s * rounds_left
    return f"about {seconds / 60:.0f} min left" if seconds >= 90 else f"about {seconds:.0f} s left"


def _summarise(times: dict[str, list[float]], batch: int, kind: str) -> dict[str, dict[str, float]]:
    """Per row: median / p10 / p90 of ms per call (latency) or img/s (training), and the ratio to the baseline."""
    table: dict[str, dict[str, float]] = {}
    for name, secs in times.items():
        values = [s * 1e3 for s in secs] if kind == "latency" else [batch / s for s in secs]
        table[name] = {
            "median": statistics.median(values),
            "p10": quantile(values, 0.1),
            "p90": quantile(values, 0.9),
        }
    base = table["baseline"]["median"]
    for name, row in table.items():
        row["ratio"] = row["median"] / base
        # The ratio's own spread: round k's value of this row over round k's baseline (measured side by side).
        # Latency: seconds over seconds; throughput: img/s over img/s, i.e. the baseline's seconds over the row's.
        pairs = zip(times[name], times["baseline"], strict=True)
        paired = [s / b if kind == "latency" else b / s for s, b in pairs]
        row["ratio_p10"], row["ratio_p90"] = quantile(paired, 0.1), quantile(paired, 0.9)
    return table


def _build_rows(opts: BenchOptions) -> tuple[dict[str, nn.Module], dict[str, str]]:
    models: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for name in opts.rows:
        torch.manual_seed(opts.seed)
        try:
            models[name] = build_row(name)
        except RowUnavailable as e:
            skipped[name] = str(e)
    return models, skipped


def run_bench(opts: BenchOptions, progress: Progress | None = None) -> dict[str, object]:
    """Measure every row (see the module docstring); a JSON-serialisable dict."""
    opts.check()
    models, skipped = _build_rows(opts)
    sections: list[dict[str, object]] = []
    for batch in opts.latency_batches:
        with pinned_threads(opts.threads if opts.device == "cpu" else None):
            steps = {n: _inference_step(_prepare(copy.deepcopy(m), opts), batch, opts) for n, m in models.items()}
            times = _interleaved(steps, opts, f"inference batch {batch}", progress)
        sections.append({"kind": "latency", "unit": "ms", "batch": batch, "rows": _summarise(times, batch, "latency")})
    for batch in opts.train_batches:
        with pinned_threads(opts.train_threads if opts.device == "cpu" else None):
            steps = {n: _train_step(_prepare(copy.deepcopy(m), opts), batch, opts) for n, m in models.items()}
            times = _interleaved(steps, opts, f"training batch {batch}", progress)
        sections.append({"kind": "train", "unit": "img/s", "batch": batch, "rows": _summarise(times, batch, "train")})
    return {
        "options": {k: v for k, v in asdict(opts).items() if k != "extra"},
        "labels": {n: row_label(n) for n in models},
        "skipped": skipped,
        "sections": sections,
        "environment": _environment(opts),
        **opts.extra,
    }


def _environment(opts: BenchOptions) -> dict[str, object]:
    env: dict[str, object] = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import os

        env["load_average"] = list(os.getloadavg())
    except (AttributeError, OSError):
        pass
    if opts.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def format_bench(result: dict[str, object]) -> str:
    """The result of :func:`run_bench` as plain-text tables."""
    opts = result["options"]
    assert isinstance(opts, dict)
    labels = result["labels"]
    assert isinstance(labels, dict)
    env = result["environment"]
    assert isinstance(env, dict)
    flags = [opts["device"]] + [f"amp {opts['amp']}"] * bool(opts["amp"])
    flags += ["channels_last"] * bool(opts["channels_last"]) + ["compiled"] * bool(opts["compile"])
    lines = [
        f"cabench bench: {', '.join(flags)}; {opts['rounds']} interleaved rounds, medians; torch {env['torch']}"
        + (f"; GPU {env['gpu']}" if "gpu" in env else "")
        + (f"; load {env['load_average'][0]:.2f}" if "load_average" in env else "")
    ]
    width = max(len(v) for v in labels.values())
    for section in result["sections"]:  # type: ignore[union-attr]
        unit = section["unit"]
        head = "inference latency" if section["kind"] == "latency" else "training throughput"
        better = "lower is better" if section["kind"] == "latency" else "higher is better"
        lines += ["", f"{head}, batch {section['batch']} ({unit}; ratio to baseline, {better})"]
        lines.append(f"  {'row':{width}s} {'median':>9s} {'p10':>9s} {'p90':>9s} {'ratio':>7s}  paired p10-p90")
        for name, row in section["rows"].items():
            lines.append(
                f"  {labels[name]:{width}s} {row['median']:9.2f} {row['p10']:9.2f} {row['p90']:9.2f} "
                f"{row['ratio']:6.3f}x  {row['ratio_p10']:.3f}-{row['ratio_p90']:.3f}"
            )
    for name, why in result["skipped"].items():  # type: ignore[union-attr]
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)
