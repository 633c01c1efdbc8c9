"""How many DataLoader workers a process gets by default: what the host lets it use, at most 8."""

from __future__ import annotations

import os

__all__ = ["MAX_DEFAULT_WORKERS", "default_workers"]

MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, else the CPU count), capped at 8.

    A fixed default of 4 made torch warn on every evaluation of a 2-CPU host; more than 8 rarely helps one
    process and multiplies under ``--nproc``.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, available))
