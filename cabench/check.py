"""The CI gate: recount every count cell and compare with the paper and with the lock.

Two checks, because they catch different things:

* **against the paper**, at the table's printed precision: a count cell beyond
  its tolerance fails unless the suite carries a note for it (with evidence);
* **against the lock** (``suites/counts.lock.json``), exactly: the paper's
  rounding hides small changes (3.95M is anything in [3.945M, 3.955M)), so the
  exact integers of every counted model are committed and any difference
  fails. ``cabench check --update-lock`` rewrites the lock after an intended
  change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from cabench.columns import count_columns
from cabench.locate import default_lock
from cabench.measure.counted import Complexity
from cabench.profiles.count import MADDS, PARAMS, ProgressFn, count_specs
from cabench.store import atomic_write_text
from cabench.suite import SUITES_DIR, UNIT_SCALE, Suite
from cabench.yamlio import read_json_file, shown

__all__ = ["DEFAULT_LOCK", "CheckResult", "check_suites", "read_lock"]

DEFAULT_LOCK = SUITES_DIR / "counts.lock.json"
MAX_LOCK_BYTES = 16 << 20


@dataclass
class CheckResult:
    cells: int = 0
    matched: int = 0
    noted: int = 0
    failures: list[str] = field(default_factory=list)
    lock_checked: int = 0
    unlocked: list[str] = field(default_factory=list)
    counts: dict[str, Complexity] = field(default_factory=dict)
    lock_path: Path | None = None  # the lock file read (and, with update_lock, written)

    @property
    def ok(self) -> bool:
        return not self.failures


def read_lock(path: Path, missing_ok: bool = False) -> dict[str, dict[str, int | None]]:
    """The lock's counts; ``ValueError`` (one line naming the file) when it is missing or malformed.

    A missing lock is only acceptable when it is about to be written (``--update-lock``).
    """
    if missing_ok and not path.exists():
        return {}
    data = read_json_file(path, "counts lock", ValueError, MAX_LOCK_BYTES)
    counts = data.get("counts") if isinstance(data, dict) else None
    if not isinstance(counts, dict):
        raise ValueError(f"{path}: not a counts lock file (expected an object with a 'counts' object)")
    for key, entry in counts.items():
        if not isinstance(entry, dict) or not entry:
            raise ValueError(f"{path}: counts.{shown(key)}: expected an object with params/madds, not {shown(entry)}")
        for column, value in entry.items():
            if column not in (PARAMS.key, MADDS.key):
                raise ValueError(
                    f"{path}: counts.{shown(key)}.{shown(column)}: unknown field ({PARAMS.key} or {MADDS.key})"
                )
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{path}: counts.{shown(key)}.{column}: expected a count, not {shown(value)}")
    return dict(counts)


def write_lock(path: Path, counts: dict[str, Complexity], keep: dict[str, dict[str, int | None]]) -> None:
    merged = dict(keep)
    for key, c in counts.items():
        entry: dict[str, int | None] = {PARAMS.key: c.params}
        if c.madds is not None:
            entry[MADDS.key] = c.madds
        elif key in keep and keep[key].get(MADDS.key) is not None:
            entry[MADDS.key] = keep[key][MADDS.key]
        merged[key] = entry
    body = {
        "about": "Exact parameter and multiply-add counts of every model the suites count. "
        "Written by `cabench check --update-lock`; `cabench check` fails when a recount differs.",
        "counts": dict(sorted(merged.items())),
    }
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")


def check_suites(
    suites: Sequence[Suite],
    lock_path: Path | None = None,
    update_lock: bool = False,
    progress: ProgressFn | None = None,
    cache: bool = True,
) -> CheckResult:
    """Recount the count cells of ``suites``; collect every failure as one line.

    ``lock_path`` defaults to the lock of the first suite folder that has one (:func:`cabench.locate.default_lock`).
    Raises ``ValueError`` when there is nothing to count: a gate that checked nothing must not pass.
    """
    wanted = [
        (row.model.spec(), MADDS.key in suite.columns)
        for suite in suites
        for row in suite.rows
        if row.model is not None and not row.cited
    ]
    if not wanted:
        names = ", ".join(s.id for s in suites) or "no suite"
        raise ValueError(f"nothing to check: {names} has no counted model")
    lock_path = lock_path or default_lock()
    lock = read_lock(lock_path, missing_ok=update_lock)
    counts = count_specs(wanted, progress, cache=cache and not update_lock)  # a new lock is recounted
    result = CheckResult(counts=counts, lock_path=lock_path)
    for suite in suites:
        for i, row in enumerate(suite.rows):
            if row.model is None or row.cited:
                continue
            c = counts[row.model.spec().key()]
            for column in count_columns():
                if column not in suite.columns or column not in row.published:
                    continue
                exact = {PARAMS.key: c.params, MADDS.key: c.madds}[column]
                published = row.published[column]
                if exact is None or isinstance(published, tuple):
                    continue
                result.cells += 1
                value = Decimal(exact) / Decimal(int(UNIT_SCALE[suite.columns[column].unit]))
                tol = suite.tolerance(column, published)
                if abs(value - published) <= tol:
                    result.matched += 1
                elif column in row.notes:
                    result.noted += 1
                else:
                    unit = suite.columns[column].unit
                    result.failures.append(
                        f"{suite.path or suite.id}: row {i + 1} ({row.name}): {column}: counted "
                        f"{float(value):.4f}{unit}, published {published}{unit} (tolerance {tol}) and no note"
                    )
    for key, c in counts.items():
        locked = lock.get(key)
        if locked is None:
            result.unlocked.append(key)
            continue
        result.lock_checked += 1
        for column, exact in ((PARAMS.key, c.params), (MADDS.key, c.madds)):
            if exact is not None and locked.get(column) is not None and locked[column] != exact:
                result.failures.append(
                    f"{lock_path}: {key}: {column} counted {exact:,}, locked {locked[column]:,} "
                    f"({exact - locked[column]:+,}); rerun with --update-lock if the change is intended"
                )
    if update_lock:
        write_lock(lock_path, counts, lock)
        result.failures = [f for f in result.failures if not f.startswith(str(lock_path))]
        result.unlocked = []
    return result
