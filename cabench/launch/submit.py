"""Plan the row-seeds, submit the jobs of those missing or failed, record them: :func:`launch`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cabench.launch.base import LAUNCHERS, Submission
from cabench.launch.records import read_records, write_record
from cabench.launch.status import UnitStatus, statuses
from cabench.locate import search_path
from cabench.registry import plugin_modules

if TYPE_CHECKING:
    from cabench.launch.settings import LaunchSettings
    from cabench.profiles.base import Profile, Request

__all__ = ["RESUBMITTED", "LaunchOutcome", "launch"]

RESUBMITTED = ("missing", "failed")  # what a new submission submits; done, running and queued are left alone


@dataclass
class LaunchOutcome:
    before: list[UnitStatus]  # every planned row-seed as it stood before this submission
    submitted: int
    exit_code: int
    without_a_job: int = 0  # runs done by the launching process itself (a suite's floors)


def launch(
    profile: Profile,
    request: Request,
    settings: LaunchSettings,
    say: Callable[[str], None],
) -> LaunchOutcome:
    """Submit one job per row-seed of ``request`` that is missing or failed, through ``settings.launcher``.

    Everything ``cabench run`` checks is checked first (:meth:`Profile.units`), so a bad option or dataset is
    one line before any job. The local launcher waits for its jobs; the SLURM launcher returns once submitted.
    """
    from cabench.launch.job import JobSpec

    launcher = LAUNCHERS.get(settings.launcher)
    launcher.check(settings)
    ids = {s.id for s in request.suites}
    later = [s for s in request.suites if s.backbone_from in ids] if profile.follows_backbones else []
    if later:
        return _in_order(profile, request, settings, say, later)
    options = dict(request.options)
    if settings.gpus_per_job > 1:
        if options.get("nproc", 1) not in (1, settings.gpus_per_job):
            raise ValueError(f"--nproc {options['nproc']} differs from --gpus-per-job {settings.gpus_per_job}")
        options["nproc"] = settings.gpus_per_job  # torchrun inside each job, one process per GPU
    units = profile.units(request)
    store = request.store
    recorded = {u: job for u, job in read_records(store, sorted({u.suite for u in units}))}
    before = statuses(store, [(u, recorded.get(u)) for u in units])
    todo = [s.unit for s in before if s.state in RESUBMITTED]
    for s in before:
        if s.unit not in recorded:
            write_record(store, s.unit, None)  # planned: `cabench status` lists it from now on
        if s.state not in RESUBMITTED:
            say(f"{s.unit.label}: {s.state}" + (f" (job {s.job})" if s.job else ""))
    here = profile.runs_without_a_job(request)
    for run in here:
        say(f"{run.suite}/{run.row}: {run.config.get('floor', 'run')} done here -> {run.path}")
    if not todo:
        return LaunchOutcome(before, 0, 0, len(here))
    spec = JobSpec(
        profile=profile.name,
        options=options,
        runs_dir=str(store.root),  # as given: the job works in cwd, so run keys match `cabench run`'s
        cwd=os.getcwd(),
        suites_dir=next((str(d.path.resolve()) for d in search_path() if d.origin == "--suites"), None),
        plugins=tuple(plugin_modules()),
    )
    code = launcher.submit(Submission(spec, todo, settings, store, say))
    return LaunchOutcome(before, len(todo), code, len(here))


def _in_order(
    profile: Profile, request: Request, settings: LaunchSettings, say: Callable[[str], None], later: list
) -> LaunchOutcome:
    """Suites whose rows start from another selected suite's checkpoints (``backbone_from``) go after it: the
    local launcher waits for the first wave's jobs, then plans the second from their runs."""
    if settings.launcher != "local":
        first = ", ".join(s.backbone_from for s in later)
        raise ValueError(
            f"{', '.join(s.id for s in later)} start from {first}'s checkpoints: with --launcher "
            f"{settings.launcher}, submit {first} first and the others once its jobs are done"
        )
    wave = launch(profile, replace(request, suites=[s for s in request.suites if s not in later]), settings, say)
    if wave.exit_code:
        return wave
    rest = launch(profile, replace(request, suites=later), settings, say)
    submitted, here = wave.submitted + rest.submitted, wave.without_a_job + rest.without_a_job
    return LaunchOutcome(wave.before + rest.before, submitted, rest.exit_code, here)
