"""Where a dataset's root comes from: given, configured, or the generated fixture (validated either way).

Kept apart from :mod:`cabench.data.base` (the registry) so that the registry imports no dataset module.
"""

from __future__ import annotations

from pathlib import Path

from cabench.data.base import DatasetInfo, write_fixture
from cabench.data.imagenet import resolve_data_root

__all__ = ["data_root"]


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
