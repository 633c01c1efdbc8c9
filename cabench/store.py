"""Run directories: ``runs/<suite>/<row>/<profile>/<run-id>/{config,env,metrics}.json``.

A run directory is written under a hidden temporary name and renamed into
place once every file is on disk, so a crash never leaves a directory that
looks complete. "Complete" means ``metrics.json`` exists with
``"status": "complete"``. Run ids sort by time (``YYYYmmdd-HHMMSS-xxxxxx``), so
the latest complete run of a cell is the greatest complete id.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["RunRecord", "Store", "atomic_write_bytes", "atomic_write_text", "environment", "new_run_id"]

DEFAULT_RUNS_DIR = Path(os.environ.get("CABENCH_RUNS", "runs"))


def new_run_id() -> str:
    now = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file, fsync and rename: all or nothing."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


@cache
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@cache
def environment() -> dict[str, Any]:
    """Versions, host and device a result was produced with."""
    import torch

    import cabench

    env: dict[str, Any] = {
        "cabench": cabench.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    for pkg in ("torchvision", "fvcore"):
        try:
            env[pkg] = __import__(pkg).__version__
        except (ImportError, AttributeError):
            env[pkg] = None
    if env["cuda"]:
        env["device"] = torch.cuda.get_device_name(0)
    else:
        env["device"] = "cpu"
    return env


@dataclass(frozen=True)
class RunRecord:
    suite: str
    row: str
    profile: str
    run_id: str
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]


class Store:
    """The runs directory of one project."""

    def __init__(self, root: Path | str = DEFAULT_RUNS_DIR) -> None:
        self.root = Path(root)

    def cell_dir(self, suite: str, row: str, profile: str) -> Path:
        return self.root / suite / row / profile

    def write_run(
        self,
        suite: str,
        row: str,
        profile: str,
        config: dict[str, Any],
        metrics: dict[str, Any],
        run_id: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> RunRecord:
        """Write a complete run directory atomically (with ``files``, e.g. per-image outcomes) and return its record."""
        run_id = run_id or new_run_id()
        parent = self.cell_dir(suite, row, profile)
        parent.mkdir(parents=True, exist_ok=True)
        final = parent / run_id
        tmp = parent / f".{run_id}.tmp"
        tmp.mkdir()
        try:
            metrics = {**metrics, "status": "complete"}
            payload = {
                name: _json(obj).encode() for name, obj in (("config.json", config), ("env.json", environment()))
            }
            payload.update(files or {})
            payload["metrics.json"] = _json(metrics).encode()
            for name, data in payload.items():
                with open(tmp / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return RunRecord(suite, row, profile, run_id, final, metrics, config)

    def begin_run(self, suite: str, row: str, profile: str, config: dict[str, Any]) -> Path:
        """Create the directory of a long run (training): config and env now, metrics when it completes.

        Until :meth:`finish_run` writes ``metrics.json`` the run is unfinished:
        reports ignore it and :meth:`unfinished` finds it again to resume.
        """
        parent = self.cell_dir(suite, row, profile)
        parent.mkdir(parents=True, exist_ok=True)
        run_dir = parent / new_run_id()
        tmp = parent / f".{run_dir.name}.tmp"
        tmp.mkdir()
        (tmp / "config.json").write_text(_json(config))
        (tmp / "env.json").write_text(_json(environment()))
        os.replace(tmp, run_dir)
        return run_dir

    def finish_run(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """Mark a run complete by writing its metrics atomically."""
        atomic_write_text(run_dir / "metrics.json", _json({**metrics, "status": "complete"}))

    def unfinished(self, suite: str, row: str, profile: str, resume_key: str) -> Path | None:
        """The latest run of this cell that started with the same ``resume_key`` and never completed."""
        parent = self.cell_dir(suite, row, profile)
        if not parent.is_dir():
            return None
        for run_dir in sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
            if (run_dir / "metrics.json").exists():
                continue
            try:
                config = json.loads((run_dir / "config.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if config.get("resume_key") == resume_key:
                return run_dir
        return None

    def complete(self, suite: str, row: str, profile: str, resume_key: str) -> RunRecord | None:
        """The latest complete run of this cell whose config has ``resume_key`` (a row-seed already done)."""
        for record in self.runs(suite, row, profile):
            if record.config.get("resume_key") == resume_key:
                return record
        return None

    def runs(self, suite: str, row: str, profile: str) -> list[RunRecord]:
        """Every complete run of one cell group, newest first."""
        parent = self.cell_dir(suite, row, profile)
        if not parent.is_dir():
            return []
        records = []
        for run_dir in sorted((p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
            try:
                metrics = json.loads((run_dir / "metrics.json").read_text())
                config = json.loads((run_dir / "config.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if metrics.get("status") == "complete":
                records.append(RunRecord(suite, row, profile, run_dir.name, run_dir, metrics, config))
        return records

    def environment_of(self, suite: str, row: str, profile: str, run_id: str) -> dict[str, Any]:
        """The env.json of one run ({} if it cannot be read)."""
        try:
            return json.loads((self.cell_dir(suite, row, profile) / run_id / "env.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def finished_runs(self, suite: str, row: str, profile: str) -> list[RunRecord]:
        """Every complete run of one cell group, oldest first (one per seed once seeds are run separately)."""
        parent = self.cell_dir(suite, row, profile)
        if not parent.is_dir():
            return []
        out = []
        for run_dir in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                metrics = json.loads((run_dir / "metrics.json").read_text())
                config = json.loads((run_dir / "config.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if metrics.get("status") == "complete":
                out.append(RunRecord(suite, row, profile, run_dir.name, run_dir, metrics, config))
        return out

    def latest(self, suite: str, row: str, profile: str) -> RunRecord | None:
        """The latest complete run of one cell group, or None."""
        runs = self.runs(suite, row, profile)
        return runs[0] if runs else None
