"""Leases: one holder at a time for a piece of work (a row and seed), safe across processes and hosts.

A lease is a small file created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and on NFSv3+), holding its owner's host, pid and a random token.
While held, a daemon thread touches it every ``stale_after / 6`` seconds (the
heartbeat). Another process may break a lease only when it is stale:

* its owner ran on this host and that pid no longer exists (SIGKILL, OOM), or
* its heartbeat is older than ``stale_after`` seconds (another host died; or the
  file is empty because its creator died before writing it).

Breakers serialize through a second ``O_EXCL`` file (``<lease>.break``) and
re-check staleness while holding it, so two breakers never remove a fresh
lease that a third process just took. Releasing removes the file only if it
still holds this lease's token.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_STALE_S", "JOB_ID_ENV", "Lease", "acquire", "holder", "host_name", "live_holder", "pid_alive"]

DEFAULT_STALE_S = float(os.environ.get("CABENCH_LEASE_STALE_S", "300"))  # NFS attribute caches hold ~60 s
JOB_ID_ENV = "CABENCH_JOB_ID"  # set by a launcher's job (cabench.launch): its id is written into the leases it takes


def host_name() -> str:
    """This host's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


# Linux's pid_max is at most 2^22; anything beyond cannot be a process (a lease file written by hand, or damaged).
MAX_PID = 1 << 22


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (False for a pid no process can have)."""
    if not 0 < pid <= MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Lease:
    """A held lease; release it (or use it as a context manager) when the work is recorded."""

    path: Path
    token: str
    stale_after: float
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: bool = False  # set when the heartbeat finds the file gone or taken over

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_after / 6):
            if (holder(self.path) or {}).get("token") != self.token:
                self.lost = True
                return
            with suppress(OSError):
                os.utime(self.path)

    def start(self) -> Lease:
        self._thread = threading.Thread(target=self._beat, name=f"lease:{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def held(self) -> bool:
        """Whether the lease file still holds this lease's token (False once another process broke and took it)."""
        if (holder(self.path) or {}).get("token") != self.token:
            self.lost = True
        return not self.lost

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if (holder(self.path) or {}).get("token") == self.token:
            with suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> dict[str, Any] | None:
    """The lease file's content (host, pid, token, started), or None when it is absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_holder(path: Path, stale_after: float = DEFAULT_STALE_S) -> dict[str, Any] | None:
    """The holder of the lease at ``path`` when a live process holds it (not stale), else None."""
    info = holder(path)
    if info is None or _is_stale(path, stale_after)[0]:
        return None
    return info


def _is_stale(path: Path, stale_after: float) -> tuple[bool, str | None]:
    """(stale?, token seen) for the lease at ``path``; a missing file is not stale (nothing to break)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, None
    info = holder(path)
    if info is None:
        return age > stale_after, None
    token = info.get("token")
    pid = info.get("pid")
    if info.get("host") == host_name() and isinstance(pid, int):
        # On this host the pid decides: a holder that is suspended (Ctrl-Z, a paused VM, SLURM suspend) misses
        # heartbeats but is alive, and breaking its lease would let two processes train one run directory.
        return not pid_alive(pid), token
    return age > stale_after, token


def _break_if_stale(path: Path, stale_after: float) -> bool:
    """Remove a stale lease under the breaker lock; True if one was removed."""
    guard = path.with_name(path.name + ".break")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with suppress(FileNotFoundError):  # a breaker that died holding the guard
            if time.time() - guard.stat().st_mtime > 30:
                guard.unlink()
        return False
    os.close(fd)
    try:
        stale, _ = _is_stale(path, stale_after)
        if stale:
            with suppress(FileNotFoundError):
                path.unlink()
            return True
        return False
    finally:
        with suppress(FileNotFoundError):
            guard.unlink()


def _create(path: Path, stale_after: float) -> Lease | None:
    token = secrets.token_hex(8)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    body: dict[str, Any] = {"host": host_name(), "pid": os.getpid(), "token": token, "started": time.time()}
    if os.environ.get(JOB_ID_ENV):
        body["job"] = os.environ[JOB_ID_ENV]
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(body))
        fh.flush()
        os.fsync(fh.fileno())
    return Lease(path, token, stale_after).start()


def acquire(path: Path, stale_after: float = DEFAULT_STALE_S) -> Lease | None:
    """Take the lease at ``path`` (breaking a stale one); None when a live holder has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(50):
        lease = _create(path, stale_after)
        if lease is not None:
            return lease
        stale, _ = _is_stale(path, stale_after)
        if not stale and path.exists():
            return None  # a live holder
        if not _break_if_stale(path, stale_after):
            time.sleep(0.02)  # another breaker is at work, or the holder just left
    return None
