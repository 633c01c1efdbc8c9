"""Where a dataset's root comes from: given, configured, or the generated fixture (validated either way), and the
config file that configures it (its ``[data]`` table here, ``[launcher]`` in :mod:`cabench.launch.settings`).

Where the data lives (``resolve_data_root``), highest precedence first:

1. the command line: ``--data imagenet=/path`` (repeatable; any ``name=path``, e.g. ``coco=...``,
   ``voc=...``, ``cityscapes=...``), parsed by ``parse_data_option``;
2. the environment variable ``CABENCH_DATA_<NAME>``, e.g. ``CABENCH_DATA_IMAGENET=/datasets/imagenet``;
3. the ``[data]`` table of a TOML config file: ``$CABENCH_CONFIG`` if that variable is set (the file must then
   exist), else ``~/.config/cabench/config.toml`` if it exists::

       [data]
       imagenet = "/datasets/imagenet"

   A relative path in the config file is taken relative to the file's folder.

``~`` is expanded in every source. Nothing found anywhere gives ``None``.

Kept apart from :mod:`cabench.data.base` (the registry) so that the registry imports no dataset module.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from cabench.data.base import DATASETS, DatasetInfo, write_fixture
from cabench.registry import did_you_mean
from cabench.yamlio import read_text_file, shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

__all__ = [
    "check_data_key",
    "config_path",
    "data_keys",
    "data_root",
    "parse_data_option",
    "read_config",
    "resolve_data_root",
]


def data_root(
    info: DatasetInfo, given: dict[str, Path], fixtures_dir: Path | None, needed_by: str, validate: bool = True
) -> Path:
    """The validated root of ``info``: given, configured, or (when ``fixtures_dir`` is set) the generated fixture.

    Without ``fixtures_dir`` a missing root is an error naming ``needed_by`` and how to give the root.
    ``validate=False`` leaves the check to the caller (an evaluation checks its split alone).
    """
    root = resolve_data_root(info.data_key, given)
    if root is None:
        if fixtures_dir is None or info.fixture is None:
            key = info.data_key
            raise ValueError(
                f"{needed_by} needs {info.title}: pass --data {key}=PATH "
                f"(or set CABENCH_DATA_{key.upper()}, or [data] {key} in the config file)"
            )
        root = fixtures_dir / info.fixture
        if not root.exists():
            try:
                write_fixture(info.fixture, root)
            except (OSError, ValueError):
                if not root.is_dir():
                    raise
                # another process sharing the runs directory published the same fixture first (same seed,
                # same bytes; the folder appears whole, by rename): use it
    if validate:
        info.validate(root)
    return root


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def parse_data_option(values: list[str]) -> dict[str, Path]:
    """Parse repeated ``--data NAME=PATH`` options into ``{name: Path}`` (names lower-cased, ``~`` expanded).

    Raises ``ValueError`` (one line) on an item without ``=``, an empty or non-identifier name, an empty path,
    or a name given twice.
    """
    parsed: dict[str, Path] = {}
    for item in values:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not _NAME.fullmatch(name) or not path:
            raise ValueError(f"--data {item!r}: expected NAME=PATH, e.g. --data imagenet=/datasets/imagenet")
        key = name.lower()
        check_data_key(key, f"--data {item!r}")
        if key in parsed:
            raise ValueError(f"--data {item!r}: '{key}' given twice (already {parsed[key]})")
        parsed[key] = Path(path).expanduser()
    return parsed


def config_path() -> Path | None:
    """The config file to read: ``$CABENCH_CONFIG`` if set, else ``~/.config/cabench/config.toml`` if it exists."""
    explicit = os.environ.get("CABENCH_CONFIG", "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            kind = "is a directory" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
            raise ValueError(f"{path}: the config file named by CABENCH_CONFIG {kind}")
        return path
    default = Path.home() / ".config" / "cabench" / "config.toml"
    return default if default.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The whole config file as a dict (its ``[data]`` table is read here, ``[launcher]`` by
    :mod:`cabench.launch.settings`); ValueError (one line naming the file) when it cannot be read."""
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise ValueError(f"{path}: reading the config file needs Python >= 3.11 or the 'tomli' package")
    text = read_text_file(path, "config", ValueError)
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"{path}: cannot read config file ({reason})") from None
    except RecursionError:
        raise ValueError(f"{path}: cannot read config file (nested too deeply)") from None
    for key in config:
        if key not in ("data", "launcher"):
            raise ValueError(
                f"{path}: unknown config key {key!r}; the config file has two tables: [data] and [launcher]"
            )
    return config


def _config_data_table(path: Path) -> dict[str, Any]:
    data = read_config(path).get("data", {})
    if not isinstance(data, dict):
        raise ValueError(f"{path}: 'data' must be a table, e.g. [data] imagenet = \"/datasets/imagenet\"")
    for key in data:
        check_data_key(key, f"{path}: [data] {key}")
    return data


def data_keys() -> list[str]:
    """The dataset keys ``--data``, ``CABENCH_DATA_<KEY>`` and ``[data]`` accept (every registered dataset's)."""
    return sorted({info.data_key for _, info in DATASETS.items()})


def check_data_key(key: str, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` when ``key`` is no dataset's key (a typo must not fall back silently)."""
    keys = data_keys()
    if key.lower() not in keys:
        hint = did_you_mean(key, keys)
        raise ValueError(f"{where}: unknown dataset key {key!r}{hint}; expected one of {', '.join(keys)}")


def resolve_data_root(name: str, given: dict[str, Path]) -> Path | None:
    """Where dataset ``name`` lives: ``given`` (the CLI) > ``CABENCH_DATA_<NAME>`` > config ``[data]`` > ``None``."""
    key = name.lower()
    cli = {k.lower(): v for k, v in given.items()}
    if key in cli:
        return Path(cli[key]).expanduser()
    env = os.environ.get(f"CABENCH_DATA_{key.upper()}", "").strip()
    if env:
        return Path(env).expanduser()
    path = config_path()
    if path is None:
        return None
    data = _config_data_table(path)
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: [data] {key} must be a non-empty path string, got {shown(value)}")
    found = Path(value.strip()).expanduser()
    return found if found.is_absolute() else path.parent / found
