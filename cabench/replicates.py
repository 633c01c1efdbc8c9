"""The runs behind an accuracy cell: one per seed, all of one configuration.

A cell may be filled by several runs of its row: one per seed (``cabench run --seeds``), or one per
checkpoint (``cabench eval``). They count together only when they ran the same configuration (model,
recipe and overrides, data, input size, backbone): the newest run names the configuration, and runs of an
older configuration are left out, so a changed recipe never averages with the old one. Per seed the newest
run wins. Only the profiles that fill accuracy cells count; a ``smoke`` run never does.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence

from cabench.claims import RowRuns
from cabench.profiles.base import PROFILES
from cabench.store import RunRecord, Store

__all__ = ["counting_profiles", "replicate_key", "replicates", "row_runs"]

# What makes two runs the same experiment up to their seed (config.json keys; missing keys compare as None).
CONFIGURATION_KEYS = (
    "profile",
    "model_key",
    "recipe",
    "overrides",
    "data",
    "data_fingerprint",
    "dataset",
    "image_size",
    "backbone_checkpoint",
)


def replicate_key(run: RunRecord) -> Hashable:
    """What tells replicates apart: the seed of a trained run, the checkpoint of an evaluated one."""
    return PROFILES[run.profile].replicate(run) if run.profile in PROFILES else run.run_id


def _configuration(run: RunRecord) -> str:
    config = {k: run.config.get(k) for k in CONFIGURATION_KEYS}
    origin = (config["backbone_checkpoint"] or {}).get("from")
    if origin:  # backbone_from: each seed starts from its own seed's checkpoint; the source suite and row are shared
        config["backbone_checkpoint"] = {k: v for k, v in origin.items() if k not in ("seed", "run")}
    return json.dumps(config, sort_keys=True, default=str)


def counting_profiles() -> list[str]:
    """The profiles whose runs fill accuracy cells (``paper``, ``eval``; never ``smoke``)."""
    return [name for name, profile in PROFILES.items() if "accuracy" in profile.fills]


def replicates(
    store: Store, suite: str, row: str, column: str, profiles: Sequence[str] | None = None
) -> list[RunRecord]:
    """The runs that fill ``column`` of ``row``: one per replicate key, of the newest run's configuration."""
    names = counting_profiles() if profiles is None else profiles
    runs = [r for p in names for r in store.finished_runs(suite, row, p) if r.metrics.get(column) is not None]
    if not runs:
        return []
    newest = max(runs, key=lambda r: r.run_id)
    same = sorted((r for r in runs if _configuration(r) == _configuration(newest)), key=lambda r: r.run_id)
    by_key = {replicate_key(r): r for r in same}  # newest per key wins
    return sorted(by_key.values(), key=lambda r: str(replicate_key(r)))


def row_runs(runs: Sequence[RunRecord], column: str) -> RowRuns:
    """Replicates as :class:`cabench.claims.RowRuns` (values and run directories by replicate key)."""
    return RowRuns(
        {replicate_key(r): float(r.metrics[column]) for r in runs},
        {replicate_key(r): r.path for r in runs},
    )
