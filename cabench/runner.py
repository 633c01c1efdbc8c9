"""Expand suite rows x a profile into jobs, run them, record each in the store.

Profiles say what they fill, and nothing else:

* ``count``: the Param. and M-Adds columns, exactly, on CPU in seconds. Each
  distinct model is built and counted once per invocation, however many
  tables list it. Counting is cheap and exactness is the point, so this
  profile always recounts (a code change shows up at once).

* ``latency``: the Latency column, as a ratio to the suite's baseline row
  (see :mod:`cabench.jobs`).
* ``smoke``: trains and evaluates each row a few steps on generated data,
  through the same code as ``paper``; it fills no cell.
* ``paper``: the suite's recipe on real data; fills the accuracy columns.
* ``eval`` (``cabench eval``): accuracy of a given checkpoint.

Every suite trains through :mod:`cabench.jobs` and the shared engine
(:mod:`cabench.tasks.engine`): classification (Tables 1-5), SSDLite320
detection (Tables 6-7) and DeepLabV3 segmentation (Tables 8-9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cabench.measure.complexity import Complexity, count_model
from cabench.models.registry import ModelSpec, arch_info
from cabench.store import RunRecord, Store
from cabench.suite import Suite

__all__ = ["PROFILES", "Profile", "count_specs", "run_suites"]


@dataclass(frozen=True)
class Profile:
    name: str
    fills: tuple[str, ...]
    description: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("count", ("params", "madds"), "parameters and multiply-adds (fvcore), CPU, seconds"),
        Profile("latency", ("latency",), "batch-1 CPU latency of every row, interleaved; ratio to the baseline row"),
        Profile("smoke", (), "train a few steps and evaluate on generated data, real loaders and evaluators"),
        Profile("paper", ("top1", "ap", "map", "miou"), "the suite's recipe on real data (--data); resumable"),
        Profile("eval", ("top1",), "`cabench eval`: accuracy of a given checkpoint, footnoted with its sha256"),
    )
}

ProgressFn = Callable[[int, int, str], None]


def count_specs(wanted: Iterable[tuple[ModelSpec, bool]], progress: ProgressFn | None = None) -> dict[str, Complexity]:
    """Count each distinct spec once. ``wanted`` yields (spec, needs multiply-adds)."""
    need: dict[str, tuple[ModelSpec, bool]] = {}
    for spec, madds in wanted:
        key = spec.key()
        prev = need.get(key)
        need[key] = (spec, madds or (prev[1] if prev else False))
    out: dict[str, Complexity] = {}
    for i, (key, (spec, madds)) in enumerate(need.items()):
        if progress:
            progress(i, len(need), key)
        out[key] = count_model(spec, madds=madds)
    if progress:
        progress(len(need), len(need), "")
    return out


def _count_jobs(suites: Sequence[Suite], rows: set[str] | None) -> list[tuple[Suite, str, ModelSpec]]:
    jobs = []
    for suite in suites:
        for row in suite.rows:
            if row.model is None or (rows and row.key not in rows and row.name not in rows):
                continue
            jobs.append((suite, row.key, row.model.spec()))
    return jobs


def run_suites(
    suites: Sequence[Suite],
    store: Store,
    profile: str = "count",
    rows: set[str] | None = None,
    progress: ProgressFn | None = None,
) -> list[RunRecord]:
    """Run ``profile`` for every selected row of ``suites``; return the records written."""
    if profile != "count":
        raise ValueError(f"run_suites counts; profile {profile!r} runs through cabench.jobs")
    jobs = _count_jobs(suites, rows)
    counts = count_specs(((spec, "madds" in suite.columns) for suite, _, spec in jobs), progress)
    records = []
    for suite, row_key, spec in jobs:
        c = counts[spec.key()]
        info = arch_info(spec.arch)
        metrics: dict[str, object] = {"params": c.params}
        if "madds" in suite.columns:
            metrics.update(madds=c.madds, fvcore_total=c.fvcore_total, skipped_ops=c.skipped_ops)
        config = {
            "suite": suite.id,
            "suite_path": str(suite.path) if suite.path else None,
            "row": row_key,
            "profile": profile,
            "model": spec.as_dict(),
            "model_key": spec.key(),
            "input_size": list(c.input_size or info.input_size),
            "madds_convention": "conv + linear multiply-adds (fvcore by_operator), BN/pooling/element-wise excluded",
            "seed": 0,
        }
        records.append(store.write_run(suite.id, row_key, profile, config, metrics))
    return records
