"""``cabench data check NAME=PATH``: decode every image of a dataset, list the bad ones, fingerprint the set.

The dataset's own validator runs first (layout, annotations: one line on the first problem). Then every
image file under the root (the extensions the loaders read, symlinked folders followed once) is decoded
in parallel (:func:`cabench.data.images.scan_images`), and a record is written to
``<runs>/_data/<name>.json``: root, file count, bad files with their reasons, the files' fingerprint
(:func:`cabench.data.images.files_fingerprint`), time and images per second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cabench.data.base import DATASETS
from cabench.data.errors import BadImageError, DatasetError
from cabench.data.images import ScanResult, scan_images, walk_files
from cabench.store import atomic_write_text

__all__ = ["IMAGE_SUFFIXES", "check_dataset", "write_record"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _validate(key: str, root: Path) -> None:
    """Run the validator of a dataset read from ``--data key=...``; DatasetError (one line) if none accepts it."""
    infos = [info for _, info in DATASETS.items() if info.data_key == key]
    if not infos:
        keys = sorted({info.data_key for _, info in DATASETS.items()})
        raise DatasetError(f"{key}={root}: unknown dataset name; expected one of {', '.join(keys)}")
    first: DatasetError | None = None
    for info in infos:
        try:
            info.validate(root)
            return
        except BadImageError:
            return  # the layout holds; the scan lists this image with every other bad one
        except DatasetError as e:
            first = first or e
    assert first is not None
    raise first


def check_dataset(
    key: str, root: Path, workers: int | None = None, progress: Callable[[int, int], None] | None = None
) -> ScanResult:
    """Validate ``root`` as dataset ``key``, then decode every image file under it."""
    root = Path(root).expanduser()
    _validate(key, root)
    files = walk_files(root, lambda name: name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise DatasetError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return scan_images(root, files, workers, progress)


def write_record(key: str, result: ScanResult, out_dir: Path) -> Path:
    """Write the scan's record (fingerprint, bad files, throughput) to ``out_dir/<key>.json``."""
    record: dict[str, Any] = {
        "dataset": key,
        "root": str(result.root),
        "files": result.files,
        "fingerprint": result.fingerprint,
        "fingerprint_of": "sha256 over each image file's path relative to the root and its size",
        "bad": [{"path": str(p), "reason": r} for p, r in result.bad],
        "seconds": round(result.seconds, 3),
        "images_per_s": round(result.images_per_s, 1),
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = out_dir / f"{key}.json"
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path
