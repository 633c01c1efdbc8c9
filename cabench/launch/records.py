"""One small file per row-seed a launcher planned: ``runs/_jobs/<suite>/<row>/<profile>/seed-<n>.json``.

It holds the row-seed (:class:`cabench.profiles.base.RowSeed`, its run's key included) and its latest job
(launcher, id, host, log files, when submitted), or ``null`` when none was submitted. Written atomically
(:func:`cabench.store.atomic_write_text`): a reader sees the previous record or the new one. The submitit
folders (pickles and logs of each job) are under ``runs/_jobs/submitit/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cabench.profiles.base import RowSeed
from cabench.store import Store, atomic_write_text

__all__ = ["JOBS_DIR", "read_records", "submitit_folder", "write_record"]

JOBS_DIR = "_jobs"
_SEED_FILE = re.compile(r"seed-(\d+)\.json")


def _jobs(store: Store) -> Store:
    return Store(store.root / JOBS_DIR)


def submitit_folder(store: Store) -> Path:
    """Where submitit keeps each job's pickles and logs (``%j`` is the job id)."""
    return (store.root / JOBS_DIR / "submitit").resolve()


def write_record(store: Store, unit: RowSeed, job: dict[str, Any] | None) -> None:
    """Record ``unit`` and its latest job (None: planned, not submitted)."""
    path = _jobs(store).cell_dir(unit.suite, unit.row, unit.profile) / f"seed-{int(unit.seed)}.json"
    atomic_write_text(path, json.dumps({"unit": asdict(unit), "job": job}, indent=2, sort_keys=True) + "\n")


def read_records(store: Store, suites: list[str] | None = None) -> list[tuple[RowSeed, dict[str, Any] | None]]:
    """Every recorded row-seed of ``suites`` (None: of every suite), sorted by suite, row, profile and seed.

    A damaged record is skipped with a line in ``store.problems``."""
    root = store.root / JOBS_DIR
    found = []
    for path in sorted(root.glob("*/*/*/seed-*.json")):
        if path.parts[-4] == "submitit" or not _SEED_FILE.fullmatch(path.name):
            continue
        if suites is not None and path.parts[-4] not in suites:
            continue
        try:
            data = json.loads(path.read_text())
            unit = RowSeed(**data["unit"])
            job = data["job"]
        except (OSError, ValueError, KeyError, TypeError):
            store.note_problem(f"{path}: not a job record; ignored")
            continue
        found.append((unit, job if isinstance(job, dict) else None))
    return sorted(found, key=lambda r: (r[0].suite, r[0].row, r[0].profile, r[0].seed))
