"""Errors raised by the data layer, and the first check every dataset makes: :func:`dataset_root`."""

from __future__ import annotations

import os
from pathlib import Path


class DatasetError(ValueError):
    """A dataset on disk is missing or malformed.

    The message is ONE line that names the offending path first, then what is wrong, e.g.
    ``/data/imagenet: no 'val' folder (expected train/<class>/*.JPEG and val/<class>/*.JPEG)``.
    """


class BadImageError(DatasetError):
    """An image file that cannot be decoded; the message is one line naming the file and the reason."""


def dataset_root(root: str | os.PathLike[str], layout: str) -> Path:
    """``root`` (``~`` expanded) if it is an existing folder, else a :class:`DatasetError` naming it and the
    expected ``layout``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist ({layout})")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder ({layout})")
    return root
