"""``--launcher slurm``: the row-seed jobs as one SLURM job array (submitit's SlurmExecutor); the command
returns once they are submitted. ``cabench status`` asks ``sacct`` what became of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cabench.launch.base import ENDED, LAUNCHERS, QUEUED, RUNNING, Launcher, require_submitit
from cabench.launch.records import submitit_folder, write_record
from cabench.lease import host_name

if TYPE_CHECKING:
    from cabench.launch.job import JobSpec
    from cabench.launch.settings import LaunchSettings
    from cabench.profiles.base import RowSeed
    from cabench.store import Store

__all__ = ["SlurmLauncher", "slurm_parameters"]

MAX_REQUEUES_ON_TIMEOUT = 3  # a job that reaches its time limit more often than this stops (preemptions: no limit)
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED", "UNKNOWN"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


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


class SlurmLauncher(Launcher):
    name = "slurm"
    description = "one SLURM job array through submitit; returns once submitted"
    takes = frozenset(
        {"partition", "gpus_per_job", "cpus_per_gpu", "time_limit", "mem", "account", "sbatch", "max_parallel"}
    )

    def submit(
        self,
        spec: JobSpec,
        units: Sequence[RowSeed],
        settings: LaunchSettings,
        store: Store,
        say: Callable[[str], None],
    ) -> int:
        require_submitit(self.name)
        import submitit

        from cabench.launch.job import RowSeedJob

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
            import submitit
        except ImportError:  # cannot ask: treat as waiting (resubmitting could train a row-seed twice)
            return [QUEUED] * len(jobs)
        handles = [submitit.SlurmJob(folder=j.get("folder") or ".", job_id=str(j.get("id"))) for j in jobs]
        out = []
        for handle in handles:  # the first query asks sacct about every registered job at once
            state = (handle.state or "UNKNOWN").split()[0].upper()
            out.append(QUEUED if state in _QUEUED else RUNNING if state in _RUNNING else ENDED)
        return out


LAUNCHERS.register("slurm", SlurmLauncher())
