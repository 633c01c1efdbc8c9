"""``--launcher slurm``: the row-seed jobs as one SLURM job array (submitit's SlurmExecutor); the command
returns once they are submitted. ``cabench status`` asks ``sacct`` what became of them."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from cabench.launch.base import ENDED, LAUNCHERS, QUEUED, RUNNING, Launcher, Submission
from cabench.launch.records import submitit_folder, write_record
from cabench.lease import host_name

if TYPE_CHECKING:
    from cabench.launch.settings import LaunchSettings

__all__ = ["SlurmLauncher", "slurm_parameters"]

MAX_REQUEUES_ON_TIMEOUT = 3  # a job that reaches its time limit more often than this stops (preemptions: no limit)
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
_UNRECORDED = "unrecorded"


def _scheduler_state(sacct_state: str) -> str:
    state = sacct_state.split()[0].upper()  # "CANCELLED by 0": the word; submitit's UNKNOWN: sacct has no record
    return (
        _UNRECORDED if state == "UNKNOWN" else QUEUED if state in _QUEUED else RUNNING if state in _RUNNING else ENDED
    )


def slurm_parameters(settings: LaunchSettings, job_name: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters: one task per job (torchrun inside starts a process per GPU)."""
    gpus = settings.gpus_per_job
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": settings.time_limit_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_gpu * max(gpus, 1),
    }
    optional = {
        "gpus_per_node": gpus or None,
        "partition": settings.partition,
        "mem": settings.mem,
        "account": settings.account,
        "array_parallelism": settings.max_parallel,
        "additional_parameters": dict(settings.sbatch) or None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def _partition_cpus(partition: str | None) -> int | None:
    """The most CPUs one node of ``partition`` (default: the default partition) has, from ``sinfo``; None when
    sinfo cannot say (then SLURM judges the request alone)."""
    import subprocess

    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %c"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    cpus = []
    for line in out.stdout.splitlines():
        name, _, count = line.strip().partition(" ")
        wanted = name.rstrip("*") == partition if partition else name.endswith("*")
        digits = count.strip().rstrip("+")
        if wanted and digits.isdigit():
            cpus.append(int(digits))
    return max(cpus) if cpus else None


def _check_fits(settings: LaunchSettings) -> None:
    """Refuse, in one line, a job no node of the partition can run: SLURM accepts it and leaves it pending for
    ever (reason PartitionConfig), which a user reading `cabench status` sees only as "queued"."""
    asked = settings.cpus_per_gpu * max(settings.gpus_per_job, 1)
    most = _partition_cpus(settings.partition)
    if most is not None and asked > most:
        where = f"partition {settings.partition}" if settings.partition else "the default partition"
        raise ValueError(
            f"each job asks for {asked} CPUs (--cpus-per-gpu {settings.cpus_per_gpu}) and no node of {where} has "
            f"more than {most}: pass --cpus-per-gpu {most // max(settings.gpus_per_job, 1) or 1} or set "
            "[launcher] cpus_per_gpu in the config file"
        )


class SlurmLauncher(Launcher):
    name = "slurm"
    description = "one SLURM job array through submitit; returns once submitted"
    takes = frozenset(
        {"partition", "gpus_per_job", "cpus_per_gpu", "time_limit", "mem", "account", "sbatch", "max_parallel"}
    )

    def submit(self, job: Submission) -> int:
        spec, units, settings, store, say = job.spec, job.units, job.settings, job.store, job.say
        import submitit

        from cabench.launch.job import RowSeedJob

        _check_fits(settings)
        folder = submitit_folder(store)
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES_ON_TIMEOUT)
        suites = sorted({u.suite for u in units})
        executor.update_parameters(**slurm_parameters(settings, "cabench-" + "-".join(suites)[:40]))
        jobs = executor.submit_array([RowSeedJob(spec, u) for u in units])
        for unit, job in zip(units, jobs, strict=True):
            record = {
                "launcher": self.name,
                "id": str(job.job_id),
                "host": host_name(),
                "folder": str(folder),
                "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr),
                "submitted": time.time(),
            }
            write_record(store, unit, record)
            say(f"{unit.label}: job {job.job_id}")
        return 0

    def states(self, jobs: Sequence[dict[str, Any]]) -> list[str]:
        try:
            from submitit.slurm.slurm import SlurmInfoWatcher
        except ImportError:  # cannot ask: treat as waiting (resubmitting could train a row-seed twice)
            return [QUEUED] * len(jobs)
        ids = [str(j.get("id")) for j in jobs]
        watcher = SlurmInfoWatcher()  # its own: submitit's shared watcher answers from a cache for minutes
        for job_id in ids:
            watcher.register_job(job_id)
        quiet, logger = _SacctFailures(), logging.getLogger("submitit")
        logger.addFilter(quiet)  # its warning would interleave with the table: one line instead
        with tempfile.TemporaryFile() as said, _stderr_to(said):  # and what sacct itself prints when it fails
            try:
                watcher.update()  # one sacct call for every job
            finally:
                logger.removeFilter(quiet)
            said.seek(0)
            sacct_lines = said.read().decode(errors="replace").splitlines()
        if quiet.seen:
            why = (sacct_lines[-1] if sacct_lines else quiet.seen[0]).strip()[:160]
            print(f"cabench: note: sacct failed ({why}); jobs it could not report are shown as queued", file=sys.stderr)
            return [QUEUED] * len(ids)
        return _unrecorded_jobs_that_are_gone([_scheduler_state(watcher.get_state(i, mode="cache")) for i in ids], ids)


def _unrecorded_jobs_that_are_gone(states: list[str], ids: list[str]) -> list[str]:
    """A job sacct has no record of is either too new for the accounting database or gone without one (an array
    element cancelled while still pending leaves no record anywhere): the controller, which knows every job it
    holds, tells the two apart. If the controller cannot be asked, such jobs stay queued."""
    unrecorded = [i for i, s in enumerate(states) if s == _UNRECORDED]
    if not unrecorded:
        return states
    held = _held_by_controller([ids[i] for i in unrecorded])
    for i in unrecorded:
        states[i] = QUEUED if held is None or ids[i] in held else ENDED
    return states


def _held_by_controller(ids: list[str]) -> set[str] | None:
    """The ids among ``ids`` that slurmctld still holds (array elements one per line), or None if squeue failed."""
    try:
        asked = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True)
    except OSError:
        return None
    if asked.returncode != 0:  # squeue fails outright when it holds none of the ids
        return set() if "Invalid job id" in asked.stderr else None
    return set(asked.stdout.split())


@contextlib.contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    """File descriptor 2 (what child processes such as sacct write) into ``file`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _SacctFailures(logging.Filter):
    """Collects submitit's "Bypassing sacct error" warnings instead of letting them print."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def filter(self, record: Any) -> bool:
        text = record.getMessage()
        if "sacct" in text:
            self.seen.append(" ".join(text.split())[:160])
            return False
        return True


LAUNCHERS.register("slurm", SlurmLauncher())
