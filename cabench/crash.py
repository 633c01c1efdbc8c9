"""Unexpected errors: the traceback goes to a log file, the user gets one line and exit code 3.

Exit codes mean one thing each: 0 success; 1 count drift (``cabench check`` only); 2 bad input
(one line naming what is wrong); 3 an unexpected error (a bug, a full disk, a dead GPU), whose one
line names the log file holding the traceback; 75 (``EX_TEMPFAIL``) nothing done because another process
is training every selected row now (run again later); 130 interrupted. CI can therefore tell drift from a crash.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from cabench.registry import imported_by_path, plugin_modules

__all__ = ["EXIT_BUSY", "EXIT_CRASH", "EXIT_DRIFT", "EXIT_USAGE", "crash_line", "log_dir", "user_code_line"]

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


def _extension_files() -> set[str]:
    """The files of the user's extensions loaded in this process: plugin modules, every module outside cabench
    that registered a block, arch, dataset, task or profile (installed ones too), and modules named by import
    path (``attention: mymodule:MyBlock``)."""
    modules = [*plugin_modules(), *imported_by_path()]
    files = (getattr(sys.modules.get(m), "__file__", None) for m in modules)
    return {str(Path(f).resolve()) for f in files if f}


def user_code_line(exc: BaseException) -> str | None:
    """When ``exc`` was raised inside the user's own code (a plugin or a block named by import path, met only on
    real batches, say): one line naming the exception and the innermost frame of that code, the traceback
    saved to a log; else None (a cabench bug or the environment: :func:`crash_line`)."""
    extensions = _extension_files()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith("<") or str(Path(frame.filename).resolve()) not in extensions:
            continue
        detail = " ".join(str(exc).split())[:200]
        where = f"{frame.filename}:{frame.lineno} (in {frame.name})"
        saved = crash_line(exc).rpartition("; ")[2]  # "traceback in PATH", or why it could not be saved
        return f"your code raised {type(exc).__name__}" + (f": {detail}" if detail else "") + f" at {where}; {saved}"
    return None
