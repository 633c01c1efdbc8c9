"""Bad image files: one line naming the file (fail-fast policy), a loop-free folder walk, a full decode scan."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cabench.data.errors import DatasetError
from cabench.data.fixtures import write_imagenet_fixture
from cabench.data.imagenet import imagenet_datasets, validate_imagefolder
from cabench.data.images import (
    BadImageError,
    decode_rgb,
    image_problem,
    load_rgb,
    one_line_dataset_error,
    scan_images,
)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_fixture(tmp_path_factory.mktemp("data") / "imagenet", train_per_class=4, val_per_class=2)


@pytest.fixture
def imagenet(tmp_path: Path, clean: Path) -> Path:
    return Path(shutil.copytree(clean, tmp_path / "imagenet"))


def _first_image(root: Path, split: str = "train") -> Path:
    return sorted((root / split).rglob("*.JPEG"))[0]


def _damage(path: Path, how: str) -> str:
    """Damage ``path`` in one of the ways seen in the wild; return words the error must contain."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
        return "unreadable image"
    if how == "empty":
        path.write_bytes(b"")
        return "unreadable image"
    if how == "text":
        path.write_text("not a picture")
        return "UnidentifiedImageError"
    if how == "bomb":
        Image.new("1", (12_000, 12_000)).save(path, format="PNG")  # 144 Mpx, a few kB on disk
        return "above the limit"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "empty", "text", "bomb"])
def test_a_bad_image_is_one_line_naming_the_file(imagenet: Path, how: str) -> None:
    path = _first_image(imagenet)
    expected = _damage(path, how)
    assert image_problem(path) is not None
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message, message
    train, _ = imagenet_datasets(imagenet)
    index = [p for p, _ in train.samples].index(str(path))
    with pytest.raises(DatasetError, match="unreadable image"):
        train[index]


def test_training_decodes_to_tensors_under_the_same_policy(imagenet: Path) -> None:
    path = _first_image(imagenet)
    train, val = imagenet_datasets(imagenet)
    assert train.loader is decode_rgb and val.loader is load_rgb  # evaluation keeps PIL, as torchvision's
    pil = np.asarray(load_rgb(path)).transpose(2, 0, 1)
    assert np.array_equal(decode_rgb(path).numpy(), pil)  # the same pixels
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 5])  # the header intact, the scan lines cut
    with pytest.raises(BadImageError) as info:
        decode_rgb(path)
    assert str(info.value) == f"{path}: unreadable image (RuntimeError: Image is incomplete or truncated)"
    with pytest.raises(DatasetError, match="unreadable image"):
        train[[p for p, _ in train.samples].index(str(path))]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_image_is_one_line(imagenet: Path) -> None:
    path = _first_image(imagenet)
    path.chmod(0)
    assert "PermissionError" in (image_problem(path) or "")


def test_a_worker_traceback_is_reduced_to_its_one_line() -> None:
    wrapped = BadImageError(
        "Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ncabench.data.images.BadImageError: /d/a.JPEG: unreadable image (OSError: x)'
    )
    assert one_line_dataset_error(wrapped) == "/d/a.JPEG: unreadable image (OSError: x)"
    assert one_line_dataset_error(DatasetError("/d: one line")) == "/d: one line"


def test_a_symlink_loop_in_a_class_folder_adds_nothing(imagenet: Path) -> None:
    before = validate_imagefolder(imagenet)
    class_dir = next(p for p in sorted((imagenet / "train").iterdir()) if p.is_dir())
    (class_dir / "loop").symlink_to(class_dir, target_is_directory=True)
    assert validate_imagefolder(imagenet).n_train == before.n_train
    train, _ = imagenet_datasets(imagenet)
    assert len(train.samples) == before.n_train
    (class_dir / "up").symlink_to(imagenet / "train", target_is_directory=True)  # a loop through the parent
    after = validate_imagefolder(imagenet)
    others = before.n_train - len(list(class_dir.glob("*.JPEG")))
    assert after.n_train == before.n_train + others  # the other classes' folders, each followed once
    assert len(imagenet_datasets(imagenet)[0].samples) == after.n_train


def test_scan_lists_every_bad_file_and_fingerprints_the_set(imagenet: Path) -> None:
    files = sorted(imagenet.rglob("*.JPEG"))
    clean = scan_images(imagenet, files, workers=2)
    assert clean.files == len(files) and clean.bad == [] and len(clean.fingerprint) == 64
    _damage(files[0], "truncated")
    _damage(files[-1], "text")
    result = scan_images(imagenet, files, workers=2)
    assert [p for p, _ in result.bad] == [files[0], files[-1]]
    assert result.fingerprint != clean.fingerprint  # the truncated file changed size
    assert result.images_per_s > 0


def test_a_fifo_named_like_an_image_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    # Issue 22: opening a FIFO waits for a writer forever, so `data check` and training hung on one.
    fifo = tmp_path / "x.JPEG"
    os.mkfifo(fifo)
    assert image_problem(fifo) == "ValueError: not a regular file (a FIFO, socket or device named like an image)"
    for loader in (load_rgb, decode_rgb):  # evaluation's PIL loader and training's tensor loader
        with pytest.raises(BadImageError, match=r"x\.JPEG: unreadable image .*not a regular file"):
            loader(fifo)


def test_a_socket_or_a_folder_named_like_an_image_is_refused_in_the_same_words(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "socket.jpg"))
        for name in ("folder.jpg", "socket.jpg"):
            for loader in (load_rgb, decode_rgb):
                with pytest.raises(BadImageError, match=rf"{name}: unreadable image \(ValueError: not a regular file"):
                    loader(tmp_path / name)


@pytest.mark.parametrize("how", ["truncated", "text", "bomb"])
def test_detection_images_follow_the_same_policy(tmp_path: Path, how: str) -> None:
    # Issue 22: a decompression bomb in a COCO or VOC detection set exited 3; their images now open through
    # load_rgb like every other dataset's.
    from cabench.data.detection_dataset import open_annotated_image

    path = tmp_path / "000001.jpg"
    Image.new("RGB", (64, 48)).save(path, format="JPEG")
    words = _damage(path, how)
    with pytest.raises(BadImageError, match=words) as info:
        open_annotated_image(path, (64, 48), "the annotation")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
