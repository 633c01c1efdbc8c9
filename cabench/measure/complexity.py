"""Parameters and multiply-adds, counted with fvcore under the mobile papers' convention.

Convention (MobileNetV2, MobileNeXt, EfficientNet, and this paper): the
"M-Adds" column counts the multiply-adds of convolutions and fully connected
layers only. fvcore counts one fused multiply-add as one flop, so its per-op
numbers are multiply-adds already; but its default total also includes
BatchNorm, pooling and upsampling, which these papers leave out. Summing the
``conv`` and ``linear`` (and matrix-product) entries of
``FlopCountAnalysis.by_operator()`` reproduces MobileNetV2's published 300M.
(``set_op_handle(name, None)`` does not remove an op that already has a handle
in fvcore 0.1.5, so the breakdown is filtered instead.)

fvcore has no handle for element-wise ops; it skips them and reports them as
unsupported. Among them are CA's and SE's ``sigmoid`` and the gating products
``mul``; :attr:`Complexity.skipped_ops` lists what was skipped for a model.
Parameters count every trainable and non-trainable ``nn.Parameter``
(BatchNorm's affine weights included, running statistics excluded), as
``sum(p.numel() for p in model.parameters())`` and torchvision's model
metadata do.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from unittest import mock

import torch
from torch import nn

from cabench.measure.bench import pinned_threads
from cabench.measure.counted import Complexity
from cabench.models.registry import ModelSpec, arch_info, build_model, counting_input_size

__all__ = ["PAPER_MADD_OPS", "Complexity", "count_madds", "count_model", "count_models", "count_params"]

# fvcore operator keys whose flops are multiply-adds of conv / FC layers.
PAPER_MADD_OPS: frozenset[str] = frozenset({"conv", "linear", "addmm", "matmul", "bmm", "einsum"})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_madds(model: nn.Module, input_size: tuple[int, int]) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """Return (paper-convention multiply-adds, fvcore total, per-op breakdown, skipped ops)."""
    with warnings.catch_warnings():  # fvcore's import uses the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    # fvcore logs every skipped op at WARNING through the root logger; the
    # skipped ops are returned instead.
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, *input_size)
    analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        by_op = {k: int(v) for k, v in analysis.by_operator().items()}
        skipped = {k: int(v) for k, v in analysis.unsupported_ops().items()}
    model.train(was_training)
    madds = sum(v for k, v in by_op.items() if k in PAPER_MADD_OPS)
    return madds, sum(by_op.values()), by_op, skipped


MIN_INPUT_SIDE, MAX_INPUT_SIDE = 32, 4096  # 32: the networks downsample 32x


def count_model(spec: ModelSpec, madds: bool = True, input_size: tuple[int, int] | None = None) -> Complexity:
    """Count a model spec: parameters always, multiply-adds if asked at ``input_size``, by default the paper's
    input size of the arch (:data:`~cabench.models.registry.SMALL_INPUT_SIZE`, 32x32, for a ``small_input``
    model: :func:`~cabench.models.registry.counting_input_size`)."""
    info = arch_info(spec.arch)
    if input_size is not None and not all(MIN_INPUT_SIDE <= int(s) <= MAX_INPUT_SIDE for s in input_size):
        raise ValueError(f"input size must be {MIN_INPUT_SIDE}-{MAX_INPUT_SIDE} pixels a side, not {input_size}")
    with values_not_drawn():
        model = build_model(spec)
    params = count_params(model)
    if not madds:
        return Complexity(params=params)
    size = input_size or counting_input_size(spec)
    total, fv_total, by_op, skipped = count_madds(info.view_for_counting(model), size)
    return Complexity(
        params=params,
        madds=total,
        fvcore_total=fv_total,
        input_size=size,
        by_operator=by_op,
        skipped_ops=skipped,
    )


MIN_MODELS_PER_WORKER = 8  # below this a forked worker's start costs more than it saves


def count_models(
    wanted: Sequence[tuple[ModelSpec, bool]], done: Callable[[ModelSpec], None] | None = None
) -> list[Complexity]:
    """:func:`count_model` for each (spec, multiply-adds wanted), one thread per count (threads that spin on a busy
    machine bought nothing). On Linux, with several models and cores, the counts run in forked workers, one per
    core up to four: each count is independent, and a fork inherits the imported libraries and every block a
    plugin registered. ``done`` is called as each count finishes."""
    workers = min(len(os.sched_getaffinity(0)), 4, len(wanted) // MIN_MODELS_PER_WORKER)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_count_one(spec, madds, done) for spec, madds in wanted]
    global _FORKED_WANTED
    _FORKED_WANTED = wanted  # the workers read the specs from their copy of memory (a spec may not pickle)
    out: list[Complexity | None] = [None] * len(wanted)
    try:
        with ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), torch.set_num_threads, (1,)) as pool:
            futures = {pool.submit(_count_forked, i): i for i in range(len(wanted))}
            for future in as_completed(futures):
                i = futures[future]
                out[i] = future.result()
                if done:
                    done(wanted[i][0])
    finally:
        _FORKED_WANTED = ()
    return out  # type: ignore[return-value]


_FORKED_WANTED: Sequence[tuple[ModelSpec, bool]] = ()


def _count_forked(i: int) -> Complexity:
    spec, madds = _FORKED_WANTED[i]
    return count_model(spec, madds=madds)


def _count_one(spec: ModelSpec, madds: bool, done: Callable[[ModelSpec], None] | None) -> Complexity:
    with pinned_threads(1):
        found = count_model(spec, madds=madds)
    if done:
        done(spec)
    return found


@contextlib.contextmanager
def values_not_drawn() -> Iterator[None]:
    """Build models without drawing their initial weights: a count reads shapes, never values, and drawing them
    was a tenth of ``cabench check --no-cache``. Every in-place initialiser of ``torch.nn.init`` (what torch's layers
    and torchvision's models call; cabench's own :func:`~cabench.models.layers.init_weights` still draws) zeroes its
    tensor instead for the block (zeros, not uninitialised memory: the traced forward meets no NaN or denormal)."""
    zeroing = {name: _zeroed for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")}
    with mock.patch.multiple(torch.nn.init, **zeroing):
        yield


def _zeroed(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return tensor.zero_()
