"""Image files: decoding with one-line errors, a pixel limit, a loop-free folder walk, and a full scan.

Bad-image policy (recorded in every training run's config as ``"bad_images": "fail"``):
a file that cannot be decoded (truncated, not an image, unreadable, beyond
:data:`MAX_IMAGE_PIXELS`) stops the run at once with one line naming the file
and the reason, exit code 2, never a traceback; the last checkpoint stays, so
the same command resumes once the file is fixed or removed. Nothing is ever
skipped silently. ``cabench data check NAME=PATH`` decodes every file first
(:func:`scan_images`) and lists all bad files in one go.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from cabench.data.errors import BadImageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BAD_IMAGE_POLICY",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "BadImageError",
    "ScanResult",
    "decode_rgb",
    "files_fingerprint",
    "image_problem",
    "is_image",
    "jpeg_size",
    "load_rgb",
    "one_line_dataset_error",
    "scan_images",
    "walk_files",
]

BAD_IMAGE_POLICY = "fail"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared case-insensitively: .JPEG counts
MAX_IMAGE_PIXELS = 100_000_000  # 10k x 10k; ImageNet's largest image has ~ 6 Mpx, Cityscapes 2 Mpx


def _refuse_special(path: Path) -> None:
    """A FIFO, socket or device named like an image is refused before it is opened (opening a FIFO waits forever)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file (a FIFO, socket or device named like an image)")


def _within_pixel_limit(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(f"{width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,}")


@contextlib.contextmanager
def _within_limit(source: Any) -> Iterator[Image.Image]:
    """PIL's image opened from ``source`` (a path or a file object): its header parsed, refused above the pixel
    limit before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
        with Image.open(source) as image:
            _within_pixel_limit(*image.size)
            yield image


def _open_checked(path: Path) -> Image.Image:
    """Open ``path`` under the bad-image policy, then decode it fully as RGB."""
    _refuse_special(path)
    with _within_limit(path) as image:
        return image.convert("RGB")


# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic): the frame header
# after them holds the image's height and width. C4 (DHT), C8 (JPG) and CC (DAC) share the range and are not frames.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes | bytearray) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header, walking the marker segments before it (what PIL's header
    parse finds, without decoding its tables); None when ``data`` is not a JPEG or its markers do not parse."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif marker in _JPEG_FRAMES:
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        elif marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _read_regular(path: Path) -> bytearray:
    """The bytes of ``path``, refusing a FIFO, socket or device without blocking on it (one open, no extra stat)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        _refuse_special(path)  # a socket cannot be opened at all: say what it is
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file (a FIFO, socket or device named like an image)")
        with open(fd, "rb", closefd=False) as file:
            return bytearray(file.read())
    finally:
        os.close(fd)


def _decode_checked(path: Path) -> torch.Tensor:
    """:func:`_open_checked`'s policy, then a ``(3, H, W)`` uint8 RGB tensor. A JPEG (by its content, not its
    name) whose frame header :func:`jpeg_size` reads is checked against the pixel limit and decoded by
    ``torchvision.io.decode_jpeg`` (a corrupt body raises there); anything else goes through PIL. The file is read
    once."""
    import numpy as np
    import torch

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # torchvision's image decoding is deprecated since 0.29 (TorchCodec replaces it)
        decode_jpeg = None
    data = _read_regular(path)
    size = jpeg_size(data)
    if size is None or decode_jpeg is None:
        with _within_limit(io.BytesIO(data)) as image:
            return torch.from_numpy(np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy())
    _within_pixel_limit(*size)
    return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)


def _bad_image(path: object, exc: BaseException) -> BadImageError:
    """The one line naming ``path`` and why it does not decode (PIL: OSError, SyntaxError, DecompressionBomb*;
    torchvision.io: RuntimeError, whose build path and line are dropped)."""
    reason = " ".join(str(exc).split())
    if ".cpp:" in reason:  # "decode_jpeg, /build/path/decode_jpeg.cpp:171, Image is incomplete"
        reason = reason.rsplit(".cpp:", 1)[-1].split(", ", 1)[-1]
    return BadImageError(f"{path}: unreadable image ({type(exc).__name__}: {reason[:200] or 'no detail'})")


def decode_rgb(path: str | os.PathLike[str]) -> torch.Tensor:
    """An image as a ``(3, H, W)`` uint8 RGB tensor (training's loader: decoding JPEGs with libjpeg-turbo into a
    tensor skips PIL's image object and its copy); the same policy and one-line :class:`BadImageError` as
    :func:`load_rgb`, and the same pixels (both decode with libjpeg-turbo's default IDCT)."""
    try:
        return _decode_checked(Path(path))
    except Exception as exc:
        raise _bad_image(path, exc) from None


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image (one line), or None when it decodes."""
    try:
        _open_checked(path)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb*, ...
        reason = " ".join(str(exc).split())[:200] or "no detail"
        return f"{type(exc).__name__}: {reason}"
    return None


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """An RGB image (a torchvision ``loader``); :class:`BadImageError` naming the file if it does not decode."""
    try:
        return _open_checked(Path(path))
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb*, ...
        raise _bad_image(path, exc) from None


def one_line_dataset_error(exc: BaseException) -> str:
    """The one line of a data error, also when a DataLoader worker re-raised it with a traceback attached."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    last = lines[-1]
    for name in ("BadImageError: ", "DatasetError: "):
        if name in last:
            return last.split(name, 1)[1]
    return last


def is_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an image by its extension (:data:`IMAGE_EXTENSIONS`, any case)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def walk_files(top: Path, keep: Callable[[str], bool]) -> list[Path]:
    """Files under ``top`` whose name passes ``keep``, sorted; symlinked folders are followed, each real
    folder at most once, so a link loop (``a/b -> ..``) adds nothing twice."""
    seen: set[str] = set()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in seen)
        found.extend(Path(dirpath, name) for name in filenames if keep(name))
    return sorted(found)


def files_fingerprint(root: Path, files: Iterable[Path]) -> str:
    """A cheap identity of a file set: sha256 over each file's path relative to ``root`` and its size."""
    digest = hashlib.sha256()
    for p in sorted(files):
        digest.update(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\n".encode())
    return digest.hexdigest()


@dataclass
class ScanResult:
    root: Path
    files: int = 0
    bad: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    fingerprint: str = ""

    @property
    def images_per_s(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0


def scan_images(
    root: Path,
    files: Sequence[Path],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Decode every file of ``files`` with ``workers`` threads (PIL decodes without the GIL); list the bad ones."""
    result = ScanResult(root=root, files=len(files))
    start = time.perf_counter()
    workers = workers or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (path, problem) in enumerate(zip(files, pool.map(image_problem, files), strict=True), 1):
            if problem is not None:
                result.bad.append((path, problem))
            if progress is not None:
                progress(i, len(files))
    result.seconds = time.perf_counter() - start
    result.fingerprint = files_fingerprint(root, files)
    return result
