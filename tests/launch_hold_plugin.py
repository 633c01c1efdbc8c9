"""A test plugin (CABENCH_PLUGINS=launch_hold_plugin): holds trainings right after a periodic checkpoint.

With ``CABENCH_TEST_HOLD=DIR`` and ``CABENCH_TEST_HOLDS=N``, each of the first N periodic checkpoints written
under that folder's test (any process) is followed by a wait: its writer creates ``DIR/held-<k>`` (holding its
pid) and waits there until ``DIR/release-<k>`` exists or a signal interrupts it. The launcher tests preempt or
kill a job while it waits, at a known point: k steps trained and checkpointed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cabench.engine.loop as _loop

_save = _loop._save


def _save_then_hold(*args: Any) -> None:
    _save(*args)
    hold = os.environ.get("CABENCH_TEST_HOLD")
    if not hold:
        return
    for k in range(1, int(os.environ.get("CABENCH_TEST_HOLDS", "1")) + 1):
        try:
            fd = os.open(Path(hold) / f"held-{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        while not (Path(hold) / f"release-{k}").exists():
            time.sleep(0.02)
        return


_loop._save = _save_then_hold
