"""torchvision's ``ImageFolder`` with a class -> index mapping that is given rather than discovered.

A module-level class, so that datasets built on it pickle into DataLoader workers, spawned ones included. Images
decode through ``loader`` (:func:`~cabench.data.images.load_rgb` to PIL, or the training loader's tensor decode;
both one-line errors) and the folder walk is loop-free (:func:`~cabench.data.images.walk_files`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from cabench.data.images import is_image, load_rgb, walk_files

__all__ = ["FixedClassesImageFolder"]


class FixedClassesImageFolder(ImageFolder):
    """``ImageFolder(root, class_to_idx=...)``: the classes and their indices as given (None: discovered)."""

    def __init__(
        self, root: str, class_to_idx: Mapping[str, int] | None = None, loader: Any = load_rgb, **kwargs: Any
    ) -> None:
        self._given_class_to_idx = dict(class_to_idx) if class_to_idx is not None else None
        super().__init__(root, loader=loader, **kwargs)

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        mapping = self._given_class_to_idx
        if mapping is None:
            return super().find_classes(directory)
        return sorted(mapping, key=mapping.__getitem__), dict(mapping)

    @staticmethod
    def make_dataset(
        directory: str | os.PathLike[str],
        class_to_idx: dict[str, int],
        extensions: tuple[str, ...] | None = None,
        is_valid_file: Any = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        keep = is_valid_file or is_image
        return [
            (str(path), index)
            for name, index in sorted(class_to_idx.items())
            for path in walk_files(Path(directory, name), keep)
        ]
