"""The ``count`` profile: the Param. and M-Adds columns, exactly, on CPU in seconds.

Each distinct model is built and counted once per invocation, however many tables list it. Traced counts
are cached under a key made of the counting code's sources, the torch / torchvision / fvcore versions and the
model spec (:mod:`cabench.measure.count_cache`), so a code change still shows up at once; ``--no-cache``
recounts from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cabench.columns import ColumnInfo, register_column
from cabench.measure.count_cache import load_counts, store_counts
from cabench.models.blocks import attention_provenance
from cabench.models.registry import ModelSpec, counting_input_size
from cabench.profiles.base import Option, Outcome, Profile, Request, register_profile

if TYPE_CHECKING:
    from cabench.measure.counted import Complexity
    from cabench.store import RunRecord
    from cabench.suite import Suite

__all__ = ["CountProfile", "ProgressFn", "count_specs"]

ProgressFn = Callable[[int, int, str], None]

PARAMS = register_column(ColumnInfo("params", "Param.", "count", "count", "parameters"))
MADDS = register_column(
    ColumnInfo("madds", "M-Adds", "count", "count", "multiply-adds of conv and linear layers (fvcore)")
)
MADDS_CONVENTION = "conv + linear multiply-adds (fvcore by_operator), BN/pooling/element-wise excluded"


def count_specs(
    wanted: Iterable[tuple[ModelSpec, bool]], progress: ProgressFn | None = None, cache: bool = False
) -> dict[str, Complexity]:
    """Count each distinct spec once. ``wanted`` yields (spec, needs multiply-adds). ``cache``: reuse and fill
    the cache of traced counts (:mod:`cabench.measure.count_cache`, keyed by the counting code, the library
    versions and the spec)."""
    need: dict[str, tuple[ModelSpec, bool]] = {}
    for spec, madds in wanted:
        key = spec.key()
        prev = need.get(key)
        need[key] = (spec, madds or (prev[1] if prev else False))
    out: dict[str, Complexity] = {}
    to_count: list[tuple[ModelSpec, bool]] = []
    for key, (spec, madds) in need.items():
        # A block defined outside cabench is recounted every time: the cache key does not cover its source.
        found = load_counts(key, madds) if cache and attention_provenance(spec.attention) is None else None
        if found is None:
            to_count.append((spec, madds))
        else:
            out[key] = found
    if to_count:
        out.update(_count(to_count, len(need), progress, cache))
    if progress:
        progress(len(need), len(need), "")
    return {key: out[key] for key in need}


def _count(
    to_count: list[tuple[ModelSpec, bool]], total: int, progress: ProgressFn | None, cache: bool
) -> dict[str, Complexity]:
    from cabench.measure.complexity import count_models  # torch and fvcore: only for a count not cached

    finished = total - len(to_count)

    def done(spec: ModelSpec) -> None:
        nonlocal finished
        finished += 1
        if progress:
            progress(finished, total, spec.key())

    counted = count_models(to_count, done)
    for (spec, madds), found in zip(to_count, counted, strict=True):
        if cache and attention_provenance(spec.attention) is None:
            store_counts(spec.key(), madds, found)
    return {spec.key(): found for (spec, _), found in zip(to_count, counted, strict=True)}


def _metrics(suite: Suite, c: Complexity) -> dict[str, Any]:
    metrics: dict[str, Any] = {PARAMS.key: c.params}
    if MADDS.key in suite.columns:
        metrics.update({MADDS.key: c.madds, "fvcore_total": c.fvcore_total, "skipped_ops": c.skipped_ops})
    return metrics


class CountProfile(Profile):
    name = "count"
    description = "parameters and multiply-adds (fvcore), CPU, seconds"
    fills = frozenset({"count"})
    options = (
        Option(
            "cache", bool, True, "count: reuse traced counts (keyed by code, versions, model); --no-cache recounts."
        ),
    )

    def run(self, request: Request) -> Outcome:
        jobs: list[tuple[Suite, str, ModelSpec]] = [
            (suite, row.key, row.model.spec())  # type: ignore[union-attr]
            for suite in request.suites
            for row in _rows(suite, request)
        ]
        wanted = ((s, MADDS.key in suite.columns) for suite, _, s in jobs)
        counts = count_specs(wanted, request.hooks.progress, cache=request.options.get("cache", True))
        records: list[RunRecord] = []
        for suite, row_key, spec in jobs:
            c = counts[spec.key()]
            config = {
                "suite": suite.id,
                "suite_path": str(suite.path) if suite.path else None,
                "row": row_key,
                "profile": self.name,
                "model": spec.as_dict(),
                "model_key": spec.key(),
                "input_size": list(c.input_size or counting_input_size(spec)),
                "madds_convention": MADDS_CONVENTION,
                "attention_block": attention_provenance(spec.attention),
                "seed": 0,
            }
            records.append(request.store.write_run(suite.id, row_key, self.name, config, _metrics(suite, c)))
        models = len({r.config["model_key"] for r in records})
        summary = f"{len(records)} rows of {len(request.suites)} suite(s), {models} distinct models"
        return Outcome(records, summary=summary, notes=("Next: cabench report",))


def _rows(suite: Suite, request: Request) -> Sequence[Any]:
    rows = request.rows
    return [r for r in suite.rows if r.model is not None and (not rows or r.key in rows or r.name in rows)]


register_profile(CountProfile())
