"""Unexpected errors: the traceback goes to a log file, the user gets one line and exit code 3.

Exit codes mean one thing each: 0 success; 1 count drift (``cabench check`` only); 2 bad input
(one line naming what is wrong); 3 an unexpected error (a bug, a full disk, a dead GPU), whose one
line names the log file holding the traceback; 75 (``EX_TEMPFAIL``) nothing done because another process
is training every selected row now (run again later); 130 interrupted. CI can therefore tell drift from a crash.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["EXIT_BUSY", "EXIT_CRASH", "EXIT_DRIFT", "EXIT_USAGE", "crash_line", "log_dir"]

EXIT_DRIFT = 1
EXIT_USAGE = 2
EXIT_CRASH = 3
EXIT_BUSY = 75  # sysexits.h EX_TEMPFAIL: a temporary condition, try again later


def log_dir() -> Path:
    """Where crash logs go: ``$CABENCH_LOG_DIR``, else ``<tmp>/cabench-logs``."""
    return Path(os.environ.get("CABENCH_LOG_DIR") or Path(tempfile.gettempdir()) / "cabench-logs")


def crash_line(exc: BaseException) -> str:
    """Write ``exc``'s traceback to a new log file; return the one line to show (naming that file)."""
    detail = " ".join(str(exc).split())[:200]
    what = f"{type(exc).__name__}" + (f": {detail}" if detail else "")
    try:
        directory = log_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(exc)))
    except OSError as e:
        return f"unexpected error ({what}); the traceback could not be saved ({e.strerror})"
    return f"unexpected error ({what}); traceback in {path}"
