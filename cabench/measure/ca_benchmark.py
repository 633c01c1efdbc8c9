"""The CA block benchmark: what Coordinate Attention costs MobileNetV2 on this CPU, from one run.

Three models (four with ``compiled_ca``), timed interleaved by :func:`cabench.measure.latency.measure_latency` (eval
mode, batch 1, 224x224):

* ``baseline``: torchvision's ``mobilenet_v2()``;
* ``authors_style_ca``: cabench's ``MobileNetV2(attention="ca")`` with every CA block replaced by
  :class:`cabench.measure.ca_reference.AuthorsStyleCoordinateAttention` (Eq. 4-9 computed the straightforward way),
  holding the same weights as the next model;
* ``cabench_ca``: cabench's ``MobileNetV2(attention="ca")`` as it is;
* ``compiled_ca`` (only with ``compiled_ca=True``): the same network and weights with its CA blocks' batch-1 inference
  path compiled by TorchInductor (:func:`cabench.models.attention.compile_ca_blocks`; the rest of the network stays
  eager). It is compiled (and checked against ``cabench_ca``, same tolerance) before any timing; the one-time compile
  seconds are reported and never timed.

Before timing, both CA models are run on a fresh random input and their logits compared (absolute tolerance
1e-4; the largest difference is reported), with BatchNorm statistics and CA biases perturbed first so that the check
is not trivially satisfied by identity BatchNorms. Ratios are medians over the baseline's median.

Then training throughput (images/s of SGD steps at batch 64, :func:`cabench.measure.latency.training_throughput`) of
cabench's ``MobileNetV2()`` and ``MobileNetV2(attention="ca")``, measured twice each in A-B-B-A order and averaged.

Page faults: with glibc's default allocator, memory freed at the end of one call can be returned to the OS and
faulted back in during the next; on a 224x224 MobileNetV2 that is thousands of minor page faults per call, a large
share of the time that depends on each model's allocation pattern rather than on its arithmetic. So the latency is
measured twice in one run (``allocator="both"``, the default): first with the process's allocator as it is, then
after :func:`disable_malloc_trim` (glibc only; process-wide and one-way), where calls reuse memory and the timings
compare computation. Each run reports the median minor page faults per call of every model, counted after the
timing, outside it. ``result["latency"]`` is the last run's table.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import statistics
import sys
import time
from collections.abc import Mapping

import torch
from torch import nn

from cabench.measure.ca_reference import swap_in_authors_style
from cabench.measure.latency import LatencyResult, measure_latency, training_throughput

__all__ = ["disable_malloc_trim", "format_ca_benchmark", "run_ca_benchmark"]

MODEL_LABELS = {
    "baseline": "MobileNetV2 (torchvision)",
    "authors_style_ca": "MobileNetV2+CA, authors'-style block",
    "cabench_ca": "MobileNetV2+CA, cabench block",
    "compiled_ca": "MobileNetV2+CA, cabench block, compiled (inductor)",
}
LOGITS_ATOL = 1e-4

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def disable_malloc_trim() -> bool:
    """Stop glibc's malloc from giving freed memory back to the OS (process-wide, not undoable).

    Sets ``M_TRIM_THRESHOLD`` to 1 GiB and ``M_MMAP_THRESHOLD`` to 32 MiB (glibc's maximum), which also turns off
    glibc's dynamic threshold adjustment. Returns False (and changes nothing) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    return bool(ok_trim and ok_mmap)


def _perturb(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics/affines and CA biases, so equal logits mean equal functions."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _page_faults_per_call(models: Mapping[str, nn.Module], x: torch.Tensor, calls: int) -> dict[str, float] | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    faults: dict[str, list[int]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(calls):
            for name, model in models.items():
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                model(x)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {name: float(statistics.median(v)) for name, v in faults.items()}


def run_ca_benchmark(
    threads: int = 1,
    rounds: int = 40,
    warmup: int = 10,
    train_steps: int = 3,
    train_batch_size: int = 64,
    train_threads: int | None = None,
    allocator: str = "both",
    seed: int = 0,
    compiled_ca: bool = False,
) -> dict[str, object]:
    """Run the CA benchmark (see the module docstring) and return a JSON-serializable dict.

    ``threads``/``rounds``/``warmup``: of the batch-1 latency measurement. ``allocator``: ``"default"`` (leave the
    process allocator alone), ``"no-trim"`` (:func:`disable_malloc_trim` first) or ``"both"`` (one latency run of
    each, in that order). ``train_steps`` timed SGD steps at ``train_batch_size``, twice per model in A-B-B-A order
    (averaged), with ``train_threads`` threads (None: the current ``torch.get_num_threads()``); ``train_steps=0``
    skips training. ``compiled_ca``: add the ``compiled_ca`` model (see the module docstring; minutes to compile
    with a cold inductor cache). Raises AssertionError when the CA variants disagree on the logits.
    """
    import torchvision

    from cabench.models.mobilenetv2 import MobileNetV2

    if allocator not in ("default", "no-trim", "both"):
        raise ValueError(f"allocator must be 'default', 'no-trim' or 'both', got {allocator!r}")

    torch.manual_seed(seed)
    baseline = torchvision.models.mobilenet_v2().eval()
    cabench_ca = MobileNetV2(attention="ca").eval()
    _perturb(cabench_ca, seed + 1)
    authors = MobileNetV2(attention="ca")
    authors.load_state_dict(cabench_ca.state_dict())
    swapped = swap_in_authors_style(authors)
    authors.eval()

    x = torch.randn(1, 3, 224, 224)  # fresh each run
    with torch.inference_mode():
        ours, theirs = cabench_ca(x), authors(x)
    max_diff = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    if not max_diff <= LOGITS_ATOL:
        raise AssertionError(f"cabench CA and authors'-style CA logits differ by {max_diff:.3g} (> {LOGITS_ATOL})")

    models = {"baseline": baseline, "authors_style_ca": authors, "cabench_ca": cabench_ca}
    compiled: dict[str, object] | None = None
    if compiled_ca:
        from cabench.models.attention import compile_ca_blocks

        fast = MobileNetV2(attention="ca")
        fast.load_state_dict(cabench_ca.state_dict())
        blocks = compile_ca_blocks(fast.eval())
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)  # compiled C++ kernels are specialised to the thread count
        try:
            start = time.perf_counter()
            with torch.inference_mode():
                fast_logits = fast(x)  # compiles every CA shape of the network
            compile_s = time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)
        compiled_diff = (fast_logits - ours).abs().max().item()
        if not compiled_diff <= LOGITS_ATOL:
            raise AssertionError(f"compiled CA and cabench CA logits differ by {compiled_diff:.3g} (> {LOGITS_ATOL})")
        compiled = {
            "blocks": blocks,
            "autotune": True,
            "compile_s": compile_s,
            "max_abs_diff_logits": compiled_diff,
            "atol": LOGITS_ATOL,
            "passed": True,
        }
        models["compiled_ca"] = fast
    runs: list[dict[str, object]] = []
    regimes = ["default", "no-trim"] if allocator == "both" else [allocator]
    for regime in regimes:
        if regime == "no-trim" and not disable_malloc_trim():
            runs.append({"allocator": "no-trim (unavailable: not glibc)", "latency": None})
            continue
        results: dict[str, LatencyResult] = measure_latency(models, threads=threads, warmup=warmup, rounds=rounds)
        base_ms = results["baseline"].median_ms
        latency = {
            name: {"model": MODEL_LABELS[name], **r.as_dict(), "ratio": r.median_ms / base_ms}
            for name, r in results.items()
        }
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            faults = _page_faults_per_call(models, x, calls=5)
        finally:
            torch.set_num_threads(previous)
        runs.append({"allocator": regime, "latency": latency, "page_faults_per_call": faults})

    training: dict[str, object] | None = None
    if train_steps > 0:
        t_threads = train_threads if train_threads is not None else torch.get_num_threads()
        torch.manual_seed(seed)
        nets = {"mobilenetv2": MobileNetV2(), "mobilenetv2_ca": MobileNetV2(attention="ca")}
        ips: dict[str, list[float]] = {name: [] for name in nets}
        for net in nets.values():  # untimed first steps: first-touch memory, lazy initialisation
            training_throughput(net, batch_size=train_batch_size, steps=1, warmup=0, threads=t_threads)
        # A-B-B-A: whatever drifts during the run (allocator state, other jobs) hits both models alike.
        for name in ("mobilenetv2", "mobilenetv2_ca", "mobilenetv2_ca", "mobilenetv2"):
            ips[name].append(
                training_throughput(
                    nets[name], batch_size=train_batch_size, steps=train_steps, warmup=1, threads=t_threads
                )
            )
        plain, with_ca = statistics.mean(ips["mobilenetv2"]), statistics.mean(ips["mobilenetv2_ca"])
        training = {
            "batch_size": train_batch_size,
            "steps": train_steps,
            "repeats": 2,
            "threads": t_threads,
            "mobilenetv2_img_per_s": plain,
            "mobilenetv2_ca_img_per_s": with_ca,
            "ca_over_plain": with_ca / plain,
            "img_per_s_each_repeat": ips,
        }

    measured = [r for r in runs if r["latency"] is not None]
    return {
        "threads": threads,
        "rounds": rounds,
        "warmup": warmup,
        "batch_size": 1,
        "input_size": [224, 224],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "ca_blocks": swapped,
        "check": {"max_abs_diff_logits": max_diff, "atol": LOGITS_ATOL, "max_abs_logit": scale, "passed": True},
        "compiled_ca": compiled,
        "runs": runs,
        "latency": measured[-1]["latency"] if measured else None,
        "training": training,
    }


def format_ca_benchmark(result: Mapping[str, object]) -> str:
    """The result of :func:`run_ca_benchmark` as plain-text tables."""
    check = result["check"]
    runs = result["runs"]
    assert isinstance(check, Mapping) and isinstance(runs, list)
    lines = [
        f"CA latency: batch 1, 224x224, eval, {result['threads']} thread(s), {result['rounds']} interleaved rounds "
        f"(medians), torch {result['torch']}",
        f"check: cabench CA vs authors'-style CA logits, max |diff| = {check['max_abs_diff_logits']:.2e} "
        f"(atol {check['atol']:g}, max |logit| {check['max_abs_logit']:.3g}): ok",
    ]
    compiled = result.get("compiled_ca")
    if isinstance(compiled, Mapping):
        lines.append(
            f"check: compiled CA vs cabench CA logits, max |diff| = {compiled['max_abs_diff_logits']:.2e} "
            f"(atol {compiled['atol']:g}): ok; one-time compile of {compiled['blocks']} CA blocks "
            f"{compiled['compile_s']:.1f} s (not timed)"
        )
    for run in runs:
        lines += ["", f"allocator: {run['allocator']}"]
        latency = run["latency"]
        if latency is None:
            continue
        faults = run.get("page_faults_per_call") or {}
        width = max(40, *(len(row["model"]) for row in latency.values()))
        lines.append(
            f"{'model':{width}s} {'median ms':>10s} {'p10 ms':>8s} {'p90 ms':>8s} {'ratio':>7s} {'faults/call':>12s}"
        )
        for name, row in latency.items():
            n_faults = faults.get(name)
            lines.append(
                f"{row['model']:{width}s} {row['median_ms']:10.2f} {row['p10_ms']:8.2f} {row['p90_ms']:8.2f} "
                f"{row['ratio']:6.3f}x {'' if n_faults is None else f'{n_faults:12.0f}'}"
            )
    training = result.get("training")
    if isinstance(training, Mapping):
        lines += [
            "",
            f"training (SGD steps, batch {training['batch_size']}, 224x224, {training['threads']} thread(s), "
            f"{training['steps']} timed steps x {training.get('repeats', 1)}, A-B-B-A):",
            f"  MobileNetV2     {training['mobilenetv2_img_per_s']:8.1f} img/s",
            f"  MobileNetV2+CA  {training['mobilenetv2_ca_img_per_s']:8.1f} img/s  "
            f"({training['ca_over_plain']:.3f}x of MobileNetV2)",
        ]
    return "\n".join(lines)
