"""A tiny, generated, learnable ImageNet-style dataset of real JPEG files, for tests and the smoke profile.

Layout written by ``write_imagenet_fixture(root, classes=C, train_per_class=T, val_per_class=V)``::

    root/train/n00000000/n00000000_0000.JPEG ... n00000000_{T-1:04d}.JPEG
    root/train/n00000001/...
    root/val/n00000000/ILSVRC2012_val_00000001.JPEG ...   (val numbering runs on across classes, from 1)
    ...

Class ``c`` has a dominant hue ``c / C`` and stripes at angle ``90° * c / (C - 1)`` (angles within [0°, 90°] so
that a horizontal flip never turns one class's orientation into another's), each image with its own stripe
phase and frequency, a little hue jitter and pixel noise. A small CNN separates the classes in a few dozen steps.

The bytes are a function of the arguments only: each image draws from its own numpy Generator seeded with
``(seed, split, class, index)``, and JPEGs are saved with fixed settings and no metadata.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cabench.data.errors import DatasetError

__all__ = ["JPEG_QUALITY", "fixture_class_names", "write_imagenet_fixture"]

JPEG_QUALITY = 90
_SPLIT_IDS = {"train": 0, "val": 1}


def fixture_class_names(classes: int) -> list[str]:
    """WordNet-id-style class folder names: ``n00000000``, ``n00000001``, ..."""
    return [f"n{c:08d}" for c in range(classes)]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all channels in [0, 1]; returns (..., 3)."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def _image(rng: np.random.Generator, c: int, classes: int, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``c``."""
    angle = (np.pi / 2) * c / max(classes - 1, 1)
    hue = c / classes + rng.uniform(-0.15, 0.15) / classes
    cycles = rng.uniform(3.0, 5.0)  # stripes per image width
    phase = rng.uniform(0.0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    stripes = np.sin(2 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    value = 0.55 + 0.3 * stripes
    saturation = np.full_like(value, rng.uniform(0.6, 0.9))
    rgb = _hsv_to_rgb(np.full_like(value, hue), saturation, value)
    rgb = rgb + rng.normal(0.0, 0.04, size=rgb.shape)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def write_imagenet_fixture(
    root: Path,
    classes: int = 4,
    train_per_class: int = 24,
    val_per_class: int = 8,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the fixture ImageFolder at ``root`` atomically (temp sibling folder, then rename); return ``root``.

    Refuses with ``DatasetError`` if ``root`` exists and is not an empty folder.
    """
    from PIL import Image

    for arg, value, least in (
        ("classes", classes, 1),
        ("train_per_class", train_per_class, 1),
        ("val_per_class", val_per_class, 1),
        ("size", size, 8),
    ):
        if value < least:
            raise ValueError(f"write_imagenet_fixture: {arg} must be >= {least}, got {value}")
    if seed < 0:
        raise ValueError(f"write_imagenet_fixture: seed must be >= 0, got {seed}")

    root = Path(root).expanduser().absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root}: refusing to write the fixture dataset: path exists and is not an empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0o700
        names = fixture_class_names(classes)
        val_number = 0
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            for c, wnid in enumerate(names):
                folder = tmp / split / wnid
                folder.mkdir(parents=True)
                for i in range(per_class):
                    rng = np.random.default_rng([seed, _SPLIT_IDS[split], c, i])
                    if split == "train":
                        filename = f"{wnid}_{i:04d}.JPEG"
                    else:
                        val_number += 1
                        filename = f"ILSVRC2012_val_{val_number:08d}.JPEG"
                    Image.fromarray(_image(rng, c, classes, size)).save(
                        folder / filename, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False
                    )
        if root.exists():
            root.rmdir()  # empty (checked above); rename cannot replace a folder portably
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
