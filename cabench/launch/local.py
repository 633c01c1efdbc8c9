"""``--launcher local``: the row-seed jobs as local processes (submitit's LocalExecutor), at most
``--max-parallel`` at a time; the command waits for them and says which failed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cabench.launch.base import ENDED, LAUNCHERS, QUEUED, RUNNING, Launcher, Submission
from cabench.launch.records import submitit_folder, write_record
from cabench.launch.status import last_log_line
from cabench.lease import host_name, pid_alive

if TYPE_CHECKING:
    from cabench.profiles.base import RowSeed
    from cabench.store import Store

__all__ = ["LocalLauncher"]

POLL_S = 0.2


class LocalLauncher(Launcher):
    name = "local"
    description = "local processes through submitit's local executor, --max-parallel at a time"
    takes = frozenset({"gpus_per_job", "time_limit", "max_parallel"})

    def submit(self, job: Submission) -> int:
        spec, units, settings, store, say = job.spec, job.units, job.settings, job.store, job.say
        import submitit

        from cabench.launch.job import RowSeedJob

        executor = submitit.LocalExecutor(folder=submitit_folder(store))
        executor.update_parameters(timeout_min=settings.time_limit_min, gpus_per_node=settings.gpus_per_job)
        waiting = {"launcher": self.name, "id": None, "state": "queued", "host": host_name(), "pid": os.getpid()}
        for unit in units:
            write_record(store, unit, waiting)
        pending, running, failed = list(units), {}, []
        limit = settings.max_parallel or machine_slots(settings.gpus_per_job)
        eta = _Eta(len(units), limit)
        try:
            while pending or running:
                while pending and len(running) < limit:
                    unit = pending.pop(0)
                    job = _submit_deaf_to_ctrl_c(executor, RowSeedJob(spec, unit))
                    write_record(store, unit, self._record(job))
                    say(f"{unit.label}: job {job.job_id} started")
                    running[unit] = job
                    eta.started(unit)
                for unit, job in list(running.items()):
                    if job.done():
                        del running[unit]
                        if not _finished(store, unit, self._record(job), say):
                            failed.append(unit)
                        say(eta.finished(unit, failed=len(failed)))
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            for job in running.values():
                _stop(job)
            for unit in pending:
                write_record(store, unit, None)
            say(
                f"cabench: interrupted: {len(running)} running job(s) told to checkpoint and stop, {len(pending)} "
                "not started; the same command resumes them"
            )
            raise
        return 1 if failed else 0

    def _record(self, job: Any) -> dict[str, Any]:
        return {
            "launcher": self.name,
            "id": str(job.job_id),
            "state": "submitted",
            "host": host_name(),
            "pid": int(job.job_id),  # the job's controller process
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
            "submitted": time.time(),
        }

    def states(self, jobs: Sequence[dict[str, Any]]) -> list[str]:
        out = []
        for job in jobs:
            pid, here = job.get("pid"), job.get("host") == host_name()
            alive = not here or (isinstance(pid, int) and pid_alive(pid))  # another host's: cannot tell
            out.append((QUEUED if job.get("state") == "queued" else RUNNING) if alive else ENDED)
        return out


def _submit_deaf_to_ctrl_c(executor: Any, job: Any) -> Any:
    """Submit with SIGINT ignored while submitit starts the job's controller, which inherits that: Ctrl-C at the
    terminal reaches this process only (one line), not the controllers (whose tracebacks went to the terminal).
    The training inside still takes SIGINT (it installs its own handler); :func:`_stop` ends a job."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return executor.submit(job)
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(job: Any) -> None:
    """SIGTERM to a job's controller, which forwards it to the training: it checkpoints and stops."""
    with contextlib.suppress(ProcessLookupError, ValueError):  # ended already
        os.kill(int(job.job_id), signal.SIGTERM)


def machine_slots(gpus_per_job: int) -> int:
    """How many jobs this machine runs at once when --max-parallel is not given: one per GPU group when the jobs
    ask for GPUs and the machine has them, else one per CPU core this process may use (never fewer than one)."""
    if gpus_per_job:
        import torch

        if torch.cuda.is_available():
            return max(1, torch.cuda.device_count() // gpus_per_job)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))


class _Eta:
    """How many jobs are done and, from the mean wall time of those that ended, when the rest should be."""

    def __init__(self, total: int, parallel: int) -> None:
        self.total, self.parallel = total, max(1, parallel)
        self.start: dict[Any, float] = {}
        self.durations: list[float] = []

    def started(self, unit: Any) -> None:
        self.start[unit] = time.monotonic()

    def finished(self, unit: Any, failed: int) -> str:
        self.durations.append(time.monotonic() - self.start.pop(unit))
        done = len(self.durations)
        left = self.total - done
        mean = sum(self.durations) / done
        line = f"{done}/{self.total} jobs ended ({failed} failed), mean {_clock(mean)} per job"
        return line + (f", about {_clock(mean * left / min(self.parallel, left))} left" if left else "")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _finished(store: Store, unit: RowSeed, record: dict[str, Any], say: Callable[[str], None]) -> bool:
    """Whether ``unit``'s job left it done or to a live holder; says which, or why it failed."""
    done = store.complete(unit.suite, unit.row, unit.profile, unit.resume_key)
    if done is not None:
        say(f"{unit.label}: done -> {done.path}")
        return True
    if store.live_holder(unit.suite, unit.row, unit.profile, unit.seed) is not None:
        say(f"{unit.label}: another process is training it")
        return True
    log, line = last_log_line(record)
    say(f"{unit.label}: FAILED: {line} ({log})")
    return False


LAUNCHERS.register("local", LocalLauncher())
