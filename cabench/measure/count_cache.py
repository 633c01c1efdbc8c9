"""A cache of traced counts, keyed by everything that can change a count.

Counting a model means importing fvcore, building the model and tracing it; the result is a pure function of

* the model spec (architecture, width, attention, reduction, classes, output stride) and whether multiply-adds
  are wanted (and at which input size),
* the code that builds and counts models: every ``.py`` file of ``cabench/models/`` and ``cabench/measure/`` and
  ``cabench/registry.py`` (hashed, content only),
* the versions of torch, torchvision and fvcore (and Python),
* no plugins: with a plugin module loaded (it can register or change models from outside the package), the cache
  is neither read nor written.

The cache key is the sha256 of all of that; an entry is one JSON file named by its key under ``cache_dir()``
(``$CABENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/cabench/counts``, else ``~/.cache/cabench/counts``), written
atomically. A changed source file, a new library version or a different spec is a different key, never a stale
hit. An unreadable or malformed entry is ignored (recounted and rewritten). ``cabench check --no-cache`` and
``cabench run --no-cache`` recount from scratch (and do not touch the cache).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

from cabench import registry
from cabench.measure.counted import Complexity

__all__ = ["CACHE_FORMAT", "cache_dir", "cache_key", "code_fingerprint", "load_counts", "store_counts"]

CACHE_FORMAT = 1
_PACKAGE = Path(__file__).resolve().parent.parent  # cabench/
_HASHED = ("models", "measure")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the counting code (see the module docstring) and the library versions."""
    h = hashlib.sha256(f"cabench-count-cache-v{CACHE_FORMAT}\n".encode())
    files = [*sorted(p for sub in _HASHED for p in (_PACKAGE / sub).rglob("*.py")), _PACKAGE / "registry.py"]
    for path in files:
        h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for dist in ("torch", "torchvision", "fvcore"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{dist}={version}\n".encode())
    h.update(f"python={platform.python_version()}\n".encode())
    return h.hexdigest()


def cache_key(spec_key: str, madds: bool) -> str:
    """The entry name for one counted spec."""
    text = json.dumps({"code": code_fingerprint(), "spec": spec_key, "madds": madds}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir() -> Path:
    explicit = os.environ.get("CABENCH_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(base).expanduser() / "cabench" / "counts"


def _usable() -> bool:
    return not registry.loaded_plugins()


def _from_dict(d: dict[str, object]) -> Complexity:
    size = d.get("input_size")
    return Complexity(
        params=int(d["params"]),  # type: ignore[arg-type]
        madds=None if d.get("madds") is None else int(d["madds"]),  # type: ignore[arg-type]
        fvcore_total=None if d.get("fvcore_total") is None else int(d["fvcore_total"]),  # type: ignore[arg-type]
        input_size=tuple(size) if size else None,  # type: ignore[arg-type]
        by_operator={str(k): int(v) for k, v in dict(d.get("by_operator") or {}).items()},  # type: ignore[call-overload]
        skipped_ops={str(k): int(v) for k, v in dict(d.get("skipped_ops") or {}).items()},  # type: ignore[call-overload]
    )


def load_counts(spec_key: str, madds: bool) -> Complexity | None:
    """The cached count, or None (absent, unreadable, plugins loaded)."""
    if not _usable():
        return None
    path = cache_dir() / f"{cache_key(spec_key, madds)}.json"
    try:
        entry = json.loads(path.read_text())
        if entry.get("spec") != spec_key or entry.get("madds") != madds:
            return None
        return _from_dict(entry["counts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_counts(spec_key: str, madds: bool, counts: Complexity) -> None:
    """Write one entry atomically; a cache that cannot be written is skipped silently (it is only a cache)."""
    if not _usable():
        return
    folder = cache_dir()
    entry = {"spec": spec_key, "madds": madds, "code": code_fingerprint(), "counts": counts.as_dict()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, folder / f"{cache_key(spec_key, madds)}.json")
    except OSError:
        return
