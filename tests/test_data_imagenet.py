"""The ImageNet data layer: validation, transforms, data-root resolution, and the generated fixture dataset."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from cabench.data.errors import DatasetError
from cabench.data.fixtures import write_imagenet_fixture
from cabench.data.imagenet import ImageFolderInfo, imagenet_datasets, validate_imagefolder
from cabench.data.roots import parse_data_option, resolve_data_root


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format="JPEG")


def _dataset(root: Path, train: list[str], val: list[str]) -> Path:
    for split, classes in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in classes:
            _jpeg(root / split / name / "img0.JPEG")
    return root


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_fixture(tmp_path_factory.mktemp("fx") / "imagenet")


# ---------------------------------------------------------------- fixture dataset


def test_fixture_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    kwargs = {"classes": 3, "train_per_class": 4, "val_per_class": 2, "size": 32}
    a = _tree_bytes(write_imagenet_fixture(tmp_path / "a", seed=7, **kwargs))
    b = _tree_bytes(write_imagenet_fixture(tmp_path / "b", seed=7, **kwargs))
    c = _tree_bytes(write_imagenet_fixture(tmp_path / "c", seed=8, **kwargs))
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert sorted(a) == [
        *(f"train/n{c:08d}/n{c:08d}_{i:04d}.JPEG" for c in range(3) for i in range(4)),
        *(f"val/n{c:08d}/ILSVRC2012_val_{2 * c + i + 1:08d}.JPEG" for c in range(3) for i in range(2)),
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_fixture_refuses_a_non_empty_root_but_fills_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="refusing") as err:
        write_imagenet_fixture(tmp_path / "full", classes=1, train_per_class=1, val_per_class=1, size=8)
    assert str(tmp_path / "full") in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    root = write_imagenet_fixture(tmp_path / "empty", classes=1, train_per_class=1, val_per_class=1, size=8)
    assert validate_imagefolder(root, check_images=1).n_train == 1


def test_fixture_validates_and_loads_with_shared_labels(fixture_root: Path) -> None:
    info = validate_imagefolder(fixture_root, check_images=8)
    assert info == ImageFolderInfo(fixture_root, tuple(f"n{c:08d}" for c in range(4)), n_train=96, n_val=32)
    with Image.open(next((fixture_root / "train" / "n00000000").iterdir())) as image:
        assert image.format == "JPEG" and image.size == (64, 64) and image.mode == "RGB"

    train, val = imagenet_datasets(fixture_root)
    assert train.class_to_idx == val.class_to_idx == {f"n{c:08d}": c for c in range(4)}
    assert len(train) == 96 and len(val) == 32
    assert all(Path(path).parent.name == val.classes[label] for path, label in val.samples)
    for dataset in (train, val):
        images, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=6, shuffle=True)))
        assert images.shape == (6, 3, 224, 224) and images.dtype == torch.float32
        assert labels.min() >= 0 and labels.max() < 4
    clone = pickle.loads(pickle.dumps(val))  # DataLoader workers need this
    assert clone.class_to_idx == val.class_to_idx and len(clone) == 32


def test_fixture_is_learnable_by_a_small_cnn(fixture_root: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only fight over the shared cores
    try:
        _train_and_check(fixture_root)
    finally:
        torch.set_num_threads(threads)


def _train_and_check(fixture_root: Path) -> None:
    torch.manual_seed(0)
    train, val = imagenet_datasets(fixture_root, size=32, resize=36)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 4),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    for _ in range(10):  # 30 steps
        for images, labels in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            opt.step()
    images, labels = next(iter(torch.utils.data.DataLoader(val, batch_size=len(val))))
    with torch.no_grad():
        accuracy = (net(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9


# ---------------------------------------------------------------- bad datasets


# Each builder makes a broken dataset under tmp and returns (root to validate, path the message must start with).


def _missing_root(tmp: Path) -> tuple[Path, Path]:
    return tmp / "nope", tmp / "nope"


def _root_is_a_file(tmp: Path) -> tuple[Path, Path]:
    (tmp / "f").write_text("x")
    return tmp / "f", tmp / "f"


def _no_val(tmp: Path) -> tuple[Path, Path]:
    root = _dataset(tmp / "ds", ["a"], [])
    (root / "val").rmdir()
    return root, root


def _no_class_folders(tmp: Path) -> tuple[Path, Path]:
    root = _dataset(tmp / "ds", [], [])
    return root, root / "train"


def _differing_classes(tmp: Path) -> tuple[Path, Path]:
    root = _dataset(tmp / "ds", ["a", "b", "c"], ["a", "d"])
    return root, root


def _empty_class_folder(tmp: Path) -> tuple[Path, Path]:
    root = _dataset(tmp / "ds", ["a", "b"], ["a", "b"])
    (root / "train" / "b" / "img0.JPEG").unlink()
    (root / "train" / "b" / "notes.txt").write_text("not an image")
    return root, root / "train" / "b"


def _unreadable_image(tmp: Path) -> tuple[Path, Path]:
    root = _dataset(tmp / "ds", ["a", "b"], ["a", "b"])
    bad = root / "val" / "a" / "img0.JPEG"
    bad.write_bytes(b"this is not a jpeg" * 10)
    return root, bad


CASES: dict[str, Callable[[Path], tuple[Path, Path]]] = {
    "missing root": _missing_root,
    "root is a file": _root_is_a_file,
    "no val": _no_val,
    "no class folders": _no_class_folders,
    "differing classes": _differing_classes,
    "empty class folder": _empty_class_folder,
    "unreadable image": _unreadable_image,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_is_one_line_naming_the_path(case: str, tmp_path: Path) -> None:
    root, where = CASES[case](tmp_path)
    with pytest.raises(DatasetError) as err:
        validate_imagefolder(root, check_images=4)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{where}: "), message
    assert isinstance(err.value, ValueError)
    if case == "differing classes":
        assert "1 missing from train (d)" in message and "2 missing from val (b, c)" in message
    if case == "no val":
        assert "no 'val' folder" in message
    if case in {"missing root", "no val"}:
        with pytest.raises(DatasetError):
            imagenet_datasets(root)


def test_unreadable_image_passes_without_check_images_and_long_class_lists_are_cut(tmp_path: Path) -> None:
    root, _ = _unreadable_image(tmp_path)
    assert validate_imagefolder(root).n_val == 2
    other = _dataset(tmp_path / "other", [f"c{i}" for i in range(8)], [])
    (other / "val" / "c0").mkdir()
    _jpeg(other / "val" / "c0" / "x.jpg")
    with pytest.raises(DatasetError, match=r"7 missing from val \(c1, c2, c3, c4, c5, \.\.\. and 2 more\)$"):
        validate_imagefolder(other)


# ---------------------------------------------------------------- --data and root resolution


def test_parse_data_option() -> None:
    assert parse_data_option([]) == {}
    assert parse_data_option(["imagenet=/datasets/imagenet", "COCO=/d/coco", "voc=/a=b", "cityscapes = /c"]) == {
        "imagenet": Path("/datasets/imagenet"),
        "coco": Path("/d/coco"),
        "voc": Path("/a=b"),
        "cityscapes": Path("/c"),
    }
    assert parse_data_option(["voc=~/voc"])["voc"] == Path.home() / "voc"


@pytest.mark.parametrize("item", ["imagenet", "=/data", "imagenet=", "1net=/data", "image net=/d", ""])
def test_parse_data_option_rejects_malformed_items(item: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=PATH") as err:
        parse_data_option(["coco=/c", item])
    assert "\n" not in str(err.value)


def test_parse_data_option_rejects_a_repeated_name() -> None:
    with pytest.raises(ValueError, match="given twice"):
        parse_data_option(["imagenet=/a", "ImageNet=/b"])


def test_resolution_precedence_cli_then_env_then_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CABENCH_CONFIG", raising=False)
    monkeypatch.delenv("CABENCH_DATA_IMAGENET", raising=False)
    monkeypatch.delenv("CABENCH_DATA_COCO", raising=False)
    assert resolve_data_root("imagenet", {}) is None  # nothing anywhere, and no config file

    default = tmp_path / "home" / ".config" / "cabench" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[data]\nimagenet = "/cfg/imagenet"\ncoco = "rel/coco"\n')
    assert resolve_data_root("imagenet", {}) == Path("/cfg/imagenet")
    assert resolve_data_root("coco", {}) == default.parent / "rel" / "coco"
    assert resolve_data_root("voc", {}) is None

    monkeypatch.setenv("CABENCH_DATA_IMAGENET", "/env/imagenet")
    assert resolve_data_root("imagenet", {}) == Path("/env/imagenet")
    assert resolve_data_root("ImageNet", parse_data_option(["imagenet=/cli/imagenet"])) == Path("/cli/imagenet")

    explicit = tmp_path / "other.toml"
    explicit.write_text('[data]\ncoco = "/explicit/coco"\n')
    monkeypatch.setenv("CABENCH_CONFIG", str(explicit))
    assert resolve_data_root("coco", {}) == Path("/explicit/coco")  # $CABENCH_CONFIG beats ~/.config
    assert resolve_data_root("imagenet", {}) == Path("/env/imagenet")


def test_bad_config_files_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CABENCH_DATA_IMAGENET", raising=False)
    config = tmp_path / "config.toml"
    monkeypatch.setenv("CABENCH_CONFIG", str(config))
    with pytest.raises(ValueError, match="does not exist"):
        resolve_data_root("imagenet", {})
    bad = (
        ("[data\n", "cannot read config file"),
        ("data = 3\n", "must be a table"),
        ("[data]\nimagenet = 1\n", "non-empty path string"),
    )
    for text, match in bad:
        config.write_text(text)
        with pytest.raises(ValueError, match=match) as err:
            resolve_data_root("imagenet", {})
        assert str(err.value).startswith(f"{config}: ") and "\n" not in str(err.value)
