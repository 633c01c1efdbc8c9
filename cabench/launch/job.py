"""The job a launcher submits for one row-seed: :class:`RowSeedJob`, a picklable submitit ``Checkpointable``.

A job runs its row-seed in its own process through the profile's ``run`` (what ``cabench run --rows ROW
--seed SEED`` does; with several GPUs, torchrun inside the job), skipping it when it is done already or another
job holds its lease. On submitit's preemption/time-limit signal it asks the training to stop as SIGTERM does
(a checkpoint at the next step boundary), then lets submitit requeue it (:meth:`RowSeedJob.checkpoint` resubmits
the same row-seed, which resumes that checkpoint).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from cabench.lease import JOB_ID_ENV
from cabench.locate import set_suites_dir
from cabench.profiles.base import PROFILES, Hooks, Request, RowSeed
from cabench.registry import load_plugins
from cabench.store import Store
from cabench.suite import find_suite, load_suite

__all__ = ["JobSpec", "RowSeedJob", "option_args", "run_row_seed"]

PREEMPT_WAIT_S = 5.0  # after a SIGTERM stopped the training: how long to wait for submitit's requeue signal


@dataclass(frozen=True)
class JobSpec:
    """What every job of one submission shares: the profile, its options, where runs go, what to import."""

    profile: str
    options: dict[str, Any]  # the profile's option values (seeds are set per job)
    runs_dir: str  # as given on the command line (relative to cwd)
    cwd: str  # the submitting directory: relative paths in options mean the same in the job
    suites_dir: str | None = None
    plugins: tuple[str, ...] = ()


def option_args(profile: Any, options: dict[str, Any]) -> list[str]:
    """The command-line options giving ``options`` (only those that differ from their default)."""
    args: list[str] = []
    for option in profile.options:
        value = options.get(option.name, option.default)
        if value == option.default:
            continue
        flag = "--" + option.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def run_row_seed(spec: JobSpec, unit: RowSeed) -> dict[str, Any]:
    """Run ``unit`` in this process as ``cabench run`` does; what became of it (run directory, or why skipped)."""
    os.chdir(spec.cwd)
    load_plugins(spec.plugins)
    set_suites_dir(Path(spec.suites_dir) if spec.suites_dir else None)
    profile = PROFILES.get(spec.profile)
    options = {**spec.options, "seeds": None, "seed": unit.seed}
    argv = ["--suites", spec.suites_dir] if spec.suites_dir else []
    argv += ["run", unit.suite_path, "--profile", spec.profile, "--rows", unit.row, "--runs-dir", spec.runs_dir]
    argv += option_args(profile, options)
    store = Store(spec.runs_dir)
    hooks = Hooks(row=lambda s, r, what: _say(f"{s}/{r}: {what}"), step=lambda e: _say(json.dumps(e, default=str)))
    suite = load_suite(find_suite(unit.suite_path))
    request = Request([suite], store, {unit.row}, options, hooks=hooks, argv=tuple(argv), skip_done=True)
    _say(f"job {os.environ.get(JOB_ID_ENV, '?')} on pid {os.getpid()}: {unit.label} ({spec.profile})")
    outcome = profile.run(request)
    if outcome.exit_code:
        raise RuntimeError(f"{unit.label}: the training exited with code {outcome.exit_code}")
    done = store.complete(unit.suite, unit.row, unit.profile, unit.resume_key)
    if done is not None:
        _say(f"{unit.label}: done -> {done.path}")
        return {"run": str(done.path)}
    holder = store.live_holder(unit.suite, unit.row, unit.profile, unit.seed)
    if holder is not None:
        _say(f"{unit.label}: another job holds it ({holder.get('job') or holder.get('pid')}); nothing to do here")
        return {"skipped": "held by another job"}
    raise RuntimeError(f"{unit.label}: the training finished without a complete run (its key {unit.resume_key})")


class RowSeedJob(submitit.helpers.Checkpointable):
    """One row-seed as a submitit job; picklable (a top-level class holding plain data)."""

    def __init__(self, spec: JobSpec, unit: RowSeed) -> None:
        self.spec, self.unit = spec, unit

    def __call__(self) -> dict[str, Any]:
        from cabench.engine import TrainingInterrupted
        from cabench.engine.runtime import sigterm_stops_training

        env = submitit.JobEnvironment()
        os.environ[JOB_ID_ENV] = str(env.job_id)
        usr = env._usr_sig()
        submitit_handler = signal.getsignal(usr)  # checkpoint() + requeue + exit
        caught: list[int] = []

        def requeue(signum: int, frame: Any) -> None:
            if callable(submitit_handler) and len(caught) == 1:
                caught.append(-1)  # once only: the handler exits, and its SystemExit passes through here again
                submitit_handler(signum, frame)

        def on_signal(signum: int, frame: Any) -> None:
            if caught:
                return
            caught.append(signum)
            _say(f"{self.unit.label}: preempted or out of time (signal {signal.Signals(signum).name})")
            if sigterm_stops_training():
                os.kill(os.getpid(), signal.SIGTERM)  # the training checkpoints at the next step boundary
            else:
                requeue(signum, frame)  # not training now: requeue at once (resumes the last checkpoint)

        signal.signal(usr, on_signal)
        try:
            return run_row_seed(self.spec, self.unit)
        except BaseException as e:
            if isinstance(e, (TrainingInterrupted, KeyboardInterrupt)):
                deadline = time.monotonic() + PREEMPT_WAIT_S  # a preemption may send SIGTERM before the signal
                while not caught and time.monotonic() < deadline:
                    time.sleep(0.05)
            if caught:  # stopped by the preemption (torchrun's workers too): requeue
                requeue(caught[0], None)  # exits this process; the requeued job resumes the checkpoint
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The same row-seed again: the requeued job finds the unfinished run and resumes its checkpoint."""
        _say(f"{self.unit.label}: requeued")
        return submitit.helpers.DelayedSubmission(RowSeedJob(self.spec, self.unit))
