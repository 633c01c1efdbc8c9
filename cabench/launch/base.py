"""What a launcher is (:class:`Launcher`) and the registry of launchers (``local``, ``slurm``, a plugin's)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cabench.registry import Registry

if TYPE_CHECKING:
    from cabench.launch.job import JobSpec
    from cabench.launch.settings import LaunchSettings
    from cabench.profiles.base import RowSeed
    from cabench.store import Store

__all__ = ["ENDED", "INLINE", "LAUNCHERS", "QUEUED", "RUNNING", "Launcher", "Submission", "require_submitit"]

INLINE = "inline"  # no launcher: `cabench run` trains in its own process (the default)
QUEUED, RUNNING, ENDED = "queued", "running", "ended"  # what a scheduler says of a job


def require_submitit(launcher: str) -> None:
    """ValueError (one line naming the extra) when submitit is not installed."""
    if importlib.util.find_spec("submitit") is None:
        raise ValueError(f"--launcher {launcher} needs submitit: pip install 'cabench[slurm]'")


@dataclass(frozen=True)
class Submission:
    """What a launcher is handed: the job to run for each row-seed in ``units``, the launch settings, the store
    the jobs record themselves in, and where to say what happens."""

    spec: JobSpec
    units: Sequence[RowSeed]
    settings: LaunchSettings
    store: Store
    say: Callable[[str], None]


class Launcher:
    """Submits row-seed jobs and says what became of them; subclasses register an instance in LAUNCHERS."""

    name: str = ""
    description: str = ""
    takes: frozenset[str] = frozenset()  # the LaunchSettings fields it uses (others given on the command line: refused)

    def check(self, settings: LaunchSettings) -> None:
        """Refuse what cannot work before any planning (ValueError, one line): by default, no submitit."""
        require_submitit(self.name)

    def submit(self, job: Submission) -> int:
        """Submit one job per unit, recording each with :func:`cabench.launch.records.write_record` (called after
        :meth:`check`); the exit code of the command (0 once submitted; a launcher that waits: non-zero when a job
        failed)."""
        raise NotImplementedError

    def states(self, jobs: Sequence[dict[str, Any]]) -> list[str]:
        """QUEUED, RUNNING or ENDED for each recorded job (as written by :meth:`submit`)."""
        raise NotImplementedError


LAUNCHERS = Registry[Launcher]("launcher", builtin_modules=("cabench.launch.local", "cabench.launch.slurm"))
