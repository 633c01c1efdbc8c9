"""Where suites, recipes and the counts lock are found: a search path, first match wins.

1. ``--suites DIR`` on the command line (:func:`set_suites_dir`);
2. the environment variable ``CABENCH_SUITES``;
3. a ``suites/`` folder in the working directory (used when it holds a ``*.yaml`` file);
4. the suites shipped with the package (``cabench/suites/`` in an installed wheel, ``suites/`` in a checkout).

A suite id (``table2``) or recipe id resolves to the first folder of the path that holds ``<id>.yaml``
(recipes: ``<folder>/recipes/<id>.yaml``); ``all`` is every suite id of every folder, an earlier folder's file
shadowing a later one with the same id. A report names a suite file by its path relative to the folder it was
found in (``suites/table1.yaml``, ``cabench:suites/table1.yaml`` for a packaged one), never by an absolute path
that only exists on one machine.

Nothing here imports torch: listing suites stays fast.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGED_SUITES",
    "SuiteDir",
    "default_lock",
    "describe",
    "display_path",
    "recipe_files",
    "search_path",
    "set_suites_dir",
    "suite_files",
]

ENV_VAR = "CABENCH_SUITES"
LOCK_NAME = "counts.lock.json"


def _packaged_dir() -> Path:
    here = Path(__file__).resolve().parent
    inside = here / "suites"  # an installed wheel: package data of cabench.suites
    return inside if inside.is_dir() else here.parent / "suites"  # a source checkout or editable install


PACKAGED_SUITES = _packaged_dir()

_explicit: Path | None = None


@dataclass(frozen=True)
class SuiteDir:
    """One folder of the search path and how it was chosen (for messages and report paths)."""

    path: Path
    origin: str  # "--suites", "CABENCH_SUITES", "./suites", "packaged"
    label: str  # the prefix reports show before a file's relative path


def set_suites_dir(path: Path | None) -> None:
    """Put ``path`` (``--suites DIR``) first on the search path; ``None`` removes it. A missing folder is an error."""
    global _explicit
    if path is not None and not Path(path).expanduser().is_dir():
        raise ValueError(f"--suites {path}: no such folder")
    _explicit = None if path is None else Path(path).expanduser()


def _has_yaml(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.yaml"))


def search_path() -> list[SuiteDir]:
    """The folders searched for suites, in order (duplicates removed)."""
    found: list[SuiteDir] = []
    if _explicit is not None:
        found.append(SuiteDir(_explicit, "--suites", str(_explicit)))
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{ENV_VAR}={env}: no such folder")
        found.append(SuiteDir(folder, ENV_VAR, str(folder)))
    local = Path("suites")
    if _has_yaml(local):
        found.append(SuiteDir(local, "./suites", "suites"))
    found.append(SuiteDir(PACKAGED_SUITES, "packaged", "cabench:suites"))
    unique: list[SuiteDir] = []
    for d in found:
        if not any(_same(d.path, u.path) for u in unique):
            unique.append(d)
    return unique


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _natural(p: Path) -> tuple[Any, ...]:
    """The paper's tables first (table1 < table2 < table10), then cabench's own suites, by name."""
    return (not re.fullmatch(r"table\d+", p.stem), *(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)))


def _files(sub: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in search_path():
        folder = d.path / sub if sub else d.path
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml"), key=_natural):
                out.setdefault(p.stem, p)
    return out


def suite_files() -> dict[str, Path]:
    """Suite id -> file over the whole search path (an earlier folder shadows a later one)."""
    files = _files("")
    return dict(sorted(files.items(), key=lambda kv: _natural(kv[1])))


def recipe_files() -> dict[str, Path]:
    """Recipe id -> file over the search path (``<folder>/recipes/*.yaml``)."""
    return _files("recipes")


def subset_files() -> dict[str, Path]:
    """Class-selection id -> file over the search path (``<folder>/subsets/*.yaml``, :mod:`cabench.data.subsets`)."""
    return _files("subsets")


def default_lock() -> Path:
    """The counts lock of the first search folder that has one (else the packaged one's path)."""
    for d in search_path():
        if (d.path / LOCK_NAME).is_file():
            return d.path / LOCK_NAME
    return PACKAGED_SUITES / LOCK_NAME


def display_path(path: Path) -> str:
    """``path`` relative to the search folder holding it (``suites/table1.yaml``), else relative to the working
    directory when inside it, else as given."""
    for d in search_path():
        try:
            rel = path.resolve().relative_to(d.path.resolve())
        except (ValueError, OSError):
            continue
        return f"{d.label}/{rel.as_posix()}"
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def describe() -> str:
    """The search path in words, for "nothing found" messages."""
    return ", ".join(f"{d.path} ({d.origin})" for d in search_path())
