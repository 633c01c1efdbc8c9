"""Run directories: ``runs/<suite>/<row>/<profile>/<run-id>/{config,env,metrics}.json``.

A run directory is written under a hidden temporary name and renamed into
place once every file is on disk, so a crash never leaves a directory that
looks complete. "Complete" means ``metrics.json`` exists with
``"status": "complete"``. Run ids sort by time (``YYYYmmdd-HHMMSS-xxxxxx``), so
the latest complete run of a cell is the greatest complete id.

Suite, row and profile are names, never paths: every directory the store
makes is checked to lie inside its root. Temporary files and folders carry
their writer's host and pid (``.<name>.<host>-<pid>.<random>.tmp``) and are
removed by the next writer once that process is gone (or after a day).
Readers skip hidden names. A folder that is not a well-formed run (a
hand-made name, a ``metrics.json`` that is not an object, a config naming
another cell) is never read as a result: :attr:`Store.problems` collects one
line per such folder. Two processes sharing a runs directory (on one host or
over NFS) coordinate through :meth:`Store.lease`, one per row, profile and seed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from cabench.lease import DEFAULT_STALE_S, Lease, acquire, holder, host_name, live_holder, pid_alive

__all__ = [
    "LayeredStore",
    "RunRecord",
    "Store",
    "StoreError",
    "atomic_write_bytes",
    "atomic_write_text",
    "environment",
    "new_run_id",
    "remove_stale_temps",
]

DEFAULT_RUNS_DIR = Path(os.environ.get("CABENCH_RUNS", "runs"))
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
#: What a twin record (:meth:`Store.record_twin`) copies from the run it repeats; never weights.
TWIN_FILES = ("env.json", "log.jsonl", "per_image.npz")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[0-9a-f]+\.tmp")
TEMP_MAX_AGE_S = 86_400  # a temp whose writer we cannot see (another host) is removed after a day


class StoreError(ValueError):
    """A name that would leave the runs directory, or a store file that cannot be used; one line."""


def _temp_name(name: str) -> str:
    return f".{name}.{host_name()}-{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _stale_temp(path: Path) -> bool:
    m = _TEMP.fullmatch(path.name)
    if m is None:
        return False
    if m["host"] == host_name():
        return not pid_alive(int(m["pid"]))
    try:
        return time.time() - path.stat().st_mtime > TEMP_MAX_AGE_S
    except OSError:
        return False


def remove_stale_temps(directory: Path, name: str | None = None) -> list[Path]:
    """Remove temp files/folders in ``directory`` (for ``name`` only, if given) whose writer is gone."""
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.fullmatch(p.name)
        if m is None or (name is not None and m["name"] != name) or not _stale_temp(p):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def new_run_id() -> str:
    now = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file, fsync and rename: all or nothing."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp = path.with_name(_temp_name(path.name))
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


def environment() -> dict[str, Any]:
    """Versions, host and device a result was produced with. Without torch loaded (counts read from the cache,
    a floor): the versions as installed, and nothing about a device nothing ran on."""
    return _full_environment() if "torch" in sys.modules else _versions_environment()


def _host_environment() -> dict[str, Any]:
    """What every env.json records: cabench, the commit, Python and the host."""
    import cabench

    return {
        "cabench": cabench.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


@cache
def _versions_environment() -> dict[str, Any]:
    env: dict[str, Any] = {**_host_environment(), "cpu_model": _cpu_model(), "device": None}  # nothing ran here
    for pkg in ("torch", "torchvision", "fvcore"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    return env


@cache
def _full_environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        **_host_environment(),
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
    env.update(_cpu_and_build(torch))
    return env


def _cpu_model() -> str | None:
    """The CPU's name: /proc/cpuinfo's first "model name" on Linux, else ``platform.processor()`` (None if empty)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_and_build(torch: Any) -> dict[str, Any]:
    """What decides CPU numbers beside the versions: the CPU, the instruction set torch dispatches to, torch's
    build (CUDA version, oneDNN, BLAS) and OMP_NUM_THREADS (None when unset)."""
    out: dict[str, Any] = {"cpu_model": _cpu_model()}
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        out["cpu_capability"] = None
    out["torch_cuda"] = getattr(torch.version, "cuda", None)
    try:
        out["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        out["torch_mkldnn"] = None
    try:
        build = torch.__config__.show()
    except (AttributeError, RuntimeError):
        build = ""
    m = re.search(r"\bBLAS_INFO=([^,\s]+)", build)
    out["torch_blas"] = m.group(1) if m else None
    out["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    return out


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
        self.problems: list[str] = []  # one line per damaged or foreign folder met while reading

    def note_problem(self, line: str) -> None:
        if line not in self.problems:
            self.problems.append(line)

    def cell_dir(self, suite: str, row: str, profile: str) -> Path:
        for what, name in (("suite", suite), ("row", row), ("profile", profile)):
            if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
                raise StoreError(f"{what} {name!r} is not a name (letters, digits, _ . + -; no '..' or '/')")
        path = self.root / suite / row / profile
        self._inside(path)
        return path

    def _inside(self, path: Path) -> Path:
        """``path`` if it resolves inside the runs directory (symlinks included); StoreError otherwise."""
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise StoreError(f"{path}: outside the runs directory {self.root}")
        return path

    def lease(
        self, suite: str, row: str, profile: str, seed: int, stale_after: float = DEFAULT_STALE_S
    ) -> Lease | None:
        """Hold (suite, row, profile, seed) for this process; None when another live process holds it."""
        parent = self.cell_dir(suite, row, profile)
        return acquire(parent / f".seed-{int(seed)}.lease", stale_after)

    def lease_holder(self, suite: str, row: str, profile: str, seed: int) -> str:
        """Who holds (suite, row, profile, seed) now, as the lease file records it (for messages)."""
        info = holder(self.cell_dir(suite, row, profile) / f".seed-{int(seed)}.lease") or {}
        pid, host, started = info.get("pid"), info.get("host"), info.get("started")
        if not isinstance(pid, int) or not isinstance(host, str):
            return "a process that has not recorded itself yet"
        since = ""
        if isinstance(started, (int, float)) and math.isfinite(started) and 0 <= started < 1e11:  # before year 5138
            since = time.strftime(", since %Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
        return f"pid {pid} on host {host[:64]}{since}"

    def live_holder(
        self, suite: str, row: str, profile: str, seed: int, stale_after: float = DEFAULT_STALE_S
    ) -> dict[str, Any] | None:
        """Who holds (suite, row, profile, seed) now (host, pid, job id), or None when no live process does."""
        return live_holder(self.cell_dir(suite, row, profile) / f".seed-{int(seed)}.lease", stale_after)

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
        remove_stale_temps(parent)
        final = parent / run_id
        tmp = parent / _temp_name(run_id)
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
        remove_stale_temps(parent)
        run_dir = parent / new_run_id()
        tmp = parent / _temp_name(run_dir.name)
        tmp.mkdir()
        (tmp / "config.json").write_text(_json(config))
        (tmp / "env.json").write_text(_json(environment()))
        os.replace(tmp, run_dir)
        return run_dir

    def finish_run(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """Mark a run complete by writing its metrics atomically."""
        atomic_write_text(self._inside(run_dir) / "metrics.json", _json({**metrics, "status": "complete"}))

    def _run_dirs(self, suite: str, row: str, profile: str) -> list[Path]:
        """Run folders of a cell, newest first; foreign folders are reported in :attr:`problems`, never read."""
        parent = self.cell_dir(suite, row, profile)
        try:
            entries = sorted(parent.iterdir(), reverse=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        runs = []
        for p in entries:
            if p.name.startswith("."):
                continue
            if not p.is_dir() or p.is_symlink() or not RUN_ID.fullmatch(p.name):
                self.note_problem(f"{p}: not a run directory (a run id is YYYYmmdd-HHMMSS-xxxxxx); ignored")
                continue
            runs.append(p)
        return runs

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        """A run file's object; None (and one line in :attr:`problems`) when it is damaged."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self.note_problem(f"{path}: unreadable ({type(e).__name__}); its run is ignored")
            return None
        if not isinstance(data, dict):
            self.note_problem(f"{path}: holds a {type(data).__name__}, not an object; its run is ignored")
            return None
        return data

    def read_config(self, run_dir: Path) -> dict[str, Any] | None:
        """A run's config.json as an object (None, and a line in :attr:`problems`, when damaged)."""
        return self._read_json(self._inside(run_dir) / "config.json")

    def unfinished(self, suite: str, row: str, profile: str, resume_key: str) -> Path | None:
        """The latest run of this cell that started with the same ``resume_key`` and never completed."""
        for run_dir in self._run_dirs(suite, row, profile):
            if (run_dir / "metrics.json").exists():
                continue
            config = self._read_json(run_dir / "config.json")
            if config is not None and config.get("resume_key") == resume_key:
                return run_dir
        return None

    def complete(self, suite: str, row: str, profile: str, resume_key: str) -> RunRecord | None:
        """The latest complete run of this cell whose config has ``resume_key`` (a row-seed already done)."""
        for record in self.runs(suite, row, profile):
            if record.config.get("resume_key") == resume_key:
                return record
        return None

    def same_run(self, profile: str, resume_key: str, besides: tuple[str, str]) -> RunRecord | None:
        """A complete run of another suite's row (not ``besides``, a ``(suite, row)``) with the same ``resume_key``:
        the same model, recipe, data and seed, trained already. Twins recorded from another run are not sources."""
        for cell in sorted(self.root.glob(f"*/*/{profile}")):
            suite, row = cell.parent.parent.name, cell.parent.name
            if (suite, row) == besides or suite.startswith("_") or not cell.is_dir():
                continue
            record = self.complete(suite, row, profile, resume_key)
            if record is not None and "same_run_as" not in record.config:
                return record
        return None

    def record_twin(self, config: dict[str, Any], source: RunRecord) -> RunRecord:
        """Record ``source`` as this config's run without training again: its metrics, env.json and per-image
        outcomes under this config's suite and row, with ``same_run_as`` naming the run they come from."""
        origin = f"{source.suite}/{source.row}/{source.profile}/{source.run_id}"
        files = {n: (source.path / n).read_bytes() for n in TWIN_FILES if (source.path / n).is_file()}
        config = {**config, "same_run_as": origin}
        metrics = {**source.metrics, "same_run_as": origin}
        return self.write_run(config["suite"], config["row"], config["profile"], config, metrics, files=files)

    def environment_of(self, suite: str, row: str, profile: str, run_id: str) -> dict[str, Any]:
        """The env.json of one run ({} if it cannot be read)."""
        if not RUN_ID.fullmatch(run_id):
            return {}
        return self._read_json(self.cell_dir(suite, row, profile) / run_id / "env.json") or {}

    def _record(self, suite: str, row: str, profile: str, run_dir: Path) -> RunRecord | None:
        """A complete, well-formed run, or None (damage goes to :attr:`problems`)."""
        if not (run_dir / "metrics.json").exists():
            return None  # unfinished: running, or killed and waiting to resume
        metrics = self._read_json(run_dir / "metrics.json")
        config = self._read_json(run_dir / "config.json")
        if metrics is None or config is None:
            if metrics is not None and config is None and not (run_dir / "config.json").exists():
                self.note_problem(f"{run_dir / 'config.json'}: missing; its run is ignored")
            return None
        if metrics.get("status") != "complete":
            return None
        for k, expected in (("suite", suite), ("row", row), ("profile", profile)):
            if k in config and config[k] != expected:
                self.note_problem(f"{run_dir / 'config.json'}: {k} is {config[k]!r}, not {expected!r}; run ignored")
                return None
        return RunRecord(suite, row, profile, run_dir.name, run_dir, metrics, config)

    def runs(self, suite: str, row: str, profile: str) -> list[RunRecord]:
        """Every complete, well-formed run of one cell group, newest first."""
        records = (self._record(suite, row, profile, d) for d in self._run_dirs(suite, row, profile))
        return [r for r in records if r is not None]

    def finished_runs(self, suite: str, row: str, profile: str) -> list[RunRecord]:
        """Every complete run of one cell group, oldest first (one per seed once seeds are run separately)."""
        return self.runs(suite, row, profile)[::-1]

    def latest(self, suite: str, row: str, profile: str) -> RunRecord | None:
        """The latest complete run of one cell group, or None."""
        for run_dir in self._run_dirs(suite, row, profile):
            record = self._record(suite, row, profile, run_dir)
            if record is not None:
                return record
        return None


class LayeredStore(Store):
    """Read-only: the runs of ``primary`` and of further stores as one store (``cabench report`` reads
    ``runs/`` and the copies committed under ``reports/records/`` this way).

    A run id held by two stores is read from the first that holds it (``runs/`` wins over a committed copy);
    every other run of every layer is read as if it were in ``primary``, so which runs a report selects
    (newest complete per cell, per seed: :mod:`cabench.replicates`) is decided in one place. Damage met in any
    layer goes to the one :attr:`problems` list. Writing, resuming and leases belong to a real store.
    """

    def __init__(self, primary: Store, *more: Store) -> None:
        super().__init__(primary.root)
        self.layers: tuple[Store, ...] = (primary, *more)
        self.problems = primary.problems
        for layer in more:
            layer.problems = self.problems

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(layer.root for layer in self.layers)

    def _run_dirs(self, suite: str, row: str, profile: str) -> list[Path]:
        found: dict[str, Path] = {}
        for layer in self.layers:
            for run_dir in layer._run_dirs(suite, row, profile):
                found.setdefault(run_dir.name, run_dir)
        return [found[name] for name in sorted(found, reverse=True)]

    def _layer_of(self, run_dir: Path) -> Store:
        for layer in self.layers:
            if run_dir.resolve().is_relative_to(layer.root.resolve()):
                return layer
        raise StoreError(f"{run_dir}: outside the runs directories {', '.join(map(str, self.roots))}")

    def read_config(self, run_dir: Path) -> dict[str, Any] | None:
        return self._layer_of(run_dir).read_config(run_dir)

    def environment_of(self, suite: str, row: str, profile: str, run_id: str) -> dict[str, Any]:
        if not RUN_ID.fullmatch(run_id):
            return {}
        for run_dir in self._run_dirs(suite, row, profile):
            if run_dir.name == run_id:
                return self._read_json(run_dir / "env.json") or {}
        return {}

    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise StoreError(f"{self.root}: a layered store is read-only; write through Store({str(self.root)!r})")

    write_run = begin_run = finish_run = lease = _read_only  # type: ignore[assignment]
