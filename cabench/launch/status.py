"""What became of each planned row-seed: done, running, queued, failed or missing.

* done: the store holds a complete run with the row-seed's key (:meth:`cabench.store.Store.complete`);
* running: a live process holds its lease (the job id written in the lease), or its job is running;
* queued: its job waits for the scheduler (or for a slot of a local launcher);
* failed: its job ended without a complete run (the last line of its log and the log's path say why);
* missing: planned, never submitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cabench.launch.base import LAUNCHERS, QUEUED, RUNNING
from cabench.profiles.base import RowSeed
from cabench.store import Store

__all__ = ["STATES", "UnitStatus", "last_log_line", "statuses"]

STATES = ("done", "running", "queued", "failed", "missing")
_TAIL = 16_384


@dataclass(frozen=True)
class UnitStatus:
    unit: RowSeed
    state: str  # one of STATES
    job: str | None = None  # job id
    run: str | None = None  # the complete run directory (done)
    log: str | None = None  # the log file the last line comes from (failed)
    last_line: str | None = None

    def as_dict(self) -> dict[str, Any]:
        u = self.unit
        return {"suite": u.suite, "row": u.row, "profile": u.profile, "seed": u.seed, "state": self.state,
                "job": self.job, "run": self.run, "log": self.log, "last_line": self.last_line}  # fmt: skip


def _tail_lines(path: Path) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - _TAIL))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def last_log_line(job: dict[str, Any]) -> tuple[str | None, str | None]:
    """(log path, its last line): the error log's last line unless it is only submitit's own logging, else the
    output log's (a job killed outright leaves no error; its last progress line says where it was)."""
    err, out = job.get("stderr"), job.get("stdout")
    if err and (lines := _tail_lines(Path(err))) and not lines[-1].startswith("submitit "):
        return err, lines[-1]
    if out and (lines := _tail_lines(Path(out))):
        return out, lines[-1]
    path = err or out
    return path, None if path is None else "(the log is empty)"


def statuses(store: Store, planned: Sequence[tuple[RowSeed, dict[str, Any] | None]]) -> list[UnitStatus]:
    """The status of each planned row-seed and its latest job (None: never submitted)."""
    by_launcher: dict[str, list[int]] = {}
    for i, (_, job) in enumerate(planned):
        if job is not None:
            by_launcher.setdefault(str(job.get("launcher")), []).append(i)
    scheduler: dict[int, str] = {}
    for name, indices in by_launcher.items():
        if name in LAUNCHERS:
            states = LAUNCHERS.get(name).states([planned[i][1] for i in indices])  # type: ignore[misc]
            scheduler.update(zip(indices, states, strict=True))
    return [_status(store, unit, job, scheduler.get(i)) for i, (unit, job) in enumerate(planned)]


def _status(store: Store, unit: RowSeed, job: dict[str, Any] | None, scheduled: str | None) -> UnitStatus:
    done = store.complete(unit.suite, unit.row, unit.profile, unit.resume_key)
    if done is not None:
        return UnitStatus(unit, "done", run=str(done.path))
    job_id = None if job is None else str(job.get("id") or "") or None
    holder = store.live_holder(unit.suite, unit.row, unit.profile, unit.seed)
    if holder is not None:
        return UnitStatus(unit, "running", job=holder.get("job") or f"pid {holder.get('pid')} on {holder.get('host')}")
    if job is None or job_id is None:  # never submitted, or a submission that got no job id (sbatch refused it)
        return UnitStatus(unit, "missing")
    if scheduled in (QUEUED, RUNNING):
        return UnitStatus(unit, scheduled, job=job_id)
    log, line = last_log_line(job)
    return UnitStatus(unit, "failed", job=job_id, log=log, last_line=line)
