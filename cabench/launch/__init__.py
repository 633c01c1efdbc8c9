"""Launchers: every row × seed of a training run as its own job, through submitit (``--launcher local|slurm``).

``cabench run SUITE --profile paper --launcher slurm`` plans the row-seeds as ``cabench run`` would
(:meth:`cabench.profiles.base.Profile.units`, every check before any job), and submits one job per row-seed
still lacking a result, as one job array; ``--launcher local`` runs the same jobs as local processes (submitit's
local executor), at most ``--max-parallel`` at a time, and waits for them. Each job
(:class:`cabench.launch.job.RowSeedJob`) runs its row-seed in-process through the profile's own ``run``
(torchrun inside the job when it has several GPUs) and writes into the same runs directory.

What keeps a shared runs directory consistent: the store's lease per row, profile and seed
(:mod:`cabench.lease`), so no two jobs train the same row-seed; run directories that count only once
complete (:mod:`cabench.store`), so a report read while jobs run sees finished results only.

What each row-seed is: ``runs/_jobs/<suite>/<row>/<profile>/seed-<n>.json`` (:mod:`cabench.launch.records`)
holds its key and its latest job; :mod:`cabench.launch.status` tells done, running, queued, failed or missing
from it, the store and the scheduler. Submitting again submits only what is missing or failed.

Preemption and time limits: a job that gets submitit's signal stops its training at the next step boundary
with a checkpoint (as SIGTERM does) and is requeued; the requeued job resumes that run, bitwise as a resumed
run does on CPU.
"""

from cabench.launch.base import INLINE, LAUNCHERS, Launcher, require_submitit
from cabench.launch.settings import LaunchSettings, launch_settings
from cabench.launch.submit import LaunchOutcome, launch

__all__ = [
    "INLINE",
    "LAUNCHERS",
    "LaunchOutcome",
    "LaunchSettings",
    "Launcher",
    "launch",
    "launch_settings",
    "require_submitit",
]
