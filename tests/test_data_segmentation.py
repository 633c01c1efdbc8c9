"""The segmentation data layer: transforms, pad_collate, VOC 2012 aug and Cityscapes loaders, the Cityscapes fixture."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cabench.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABELS,
    LABELID_TO_TRAINID,
    CityscapesSegmentation,
    cityscapes_datasets,
    labelids_to_trainids,
    validate_cityscapes,
)
from cabench.data.errors import DatasetError
from cabench.data.fixtures.cityscapes import write_cityscapes_fixture
from cabench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cabench.data.segmentation_transforms import SegmentationEvalTransform, SegmentationTrainTransform, pad_collate
from cabench.data.voc_segmentation import (
    VOC_SEGMENTATION_CLASSES,
    VocSegmentation,
    validate_voc_segmentation,
    voc_segmentation_datasets,
)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(fn: Callable[[], object], *needles: object) -> str:
    """Run ``fn``; it must raise DatasetError whose message is one line containing every needle (paths first)."""
    with pytest.raises(DatasetError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, message
    return message


def _sample(h: int, w: int, seed: int = 0, values: tuple[int, ...] = (0, 3, 7, 255)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    mask = torch.tensor(values)[torch.randint(0, len(values), (h, w), generator=g)]
    return image, mask


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize(("h", "w"), [(20, 30), (50, 70), (97, 41)])
def test_train_crop_has_exactly_crop_size_and_keeps_mask_values(h: int, w: int) -> None:
    transform = SegmentationTrainTransform(crop_size=48, scale_range=(0.5, 2.0))
    image, mask = _sample(h, w)
    torch.manual_seed(3)
    for _ in range(8):
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, 48, 48) and out_image.dtype == torch.float32
        assert out_mask.shape == (48, 48) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 3, 7, 255}  # nearest: no new labels


def test_train_padding_is_bottom_right_with_0_and_255() -> None:
    transform = SegmentationTrainTransform(crop_size=40, scale_range=(1.0, 1.0), flip_p=0.0)
    image, mask = _sample(20, 30, values=(1, 2))
    out_image, out_mask = transform(image, mask)
    assert torch.equal(out_mask[:20, :30], mask)
    assert (out_mask[20:] == 255).all() and (out_mask[:, 30:] == 255).all()
    assert (out_image[:, 20:] == 0).all() and (out_image[:, :, 30:] == 0).all()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(out_image[:, :20, :30], (image.float() / 255 - mean) / std)


def test_train_flip_mirrors_image_and_mask() -> None:
    image, mask = _sample(32, 32)
    plain = SegmentationTrainTransform(crop_size=32, scale_range=(1.0, 1.0), flip_p=0.0)(image, mask)
    flipped = SegmentationTrainTransform(crop_size=32, scale_range=(1.0, 1.0), flip_p=1.0)(image, mask)
    assert torch.equal(flipped[0], plain[0].flip(-1)) and torch.equal(flipped[1], plain[1].flip(-1))


def test_train_transform_is_reproducible_from_the_torch_seed() -> None:
    transform = SegmentationTrainTransform(crop_size=40)
    image, mask = _sample(60, 80)
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(transform(image, mask))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][0], outputs[2][0])


def test_scale_draws_continuous_or_in_steps() -> None:
    torch.manual_seed(0)
    continuous = {SegmentationTrainTransform(scale_range=(0.5, 2.0)).draw_scale() for _ in range(200)}
    assert len(continuous) == 200 and min(continuous) >= 0.5 and max(continuous) <= 2.0
    stepped = SegmentationTrainTransform(scale_range=(0.5, 2.0), scale_step=0.25)
    assert {stepped.draw_scale() for _ in range(400)} == {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}


def test_scaling_changes_the_content_size() -> None:
    image, mask = _sample(16, 16, values=(4,))
    torch.manual_seed(0)
    _, out_mask = SegmentationTrainTransform(crop_size=64, scale_range=(2.0, 2.0), flip_p=0.0)(image, mask)
    assert (out_mask[:32, :32] == 4).all() and (out_mask[32:] == 255).all() and (out_mask[:, 32:] == 255).all()


def test_eval_transform_pads_to_eval_size_or_keeps_the_size() -> None:
    image, mask = _sample(20, 60)
    same_image, same_mask = SegmentationEvalTransform(None)(image, mask)
    assert same_image.shape == (3, 20, 60) and torch.equal(same_mask, mask)
    padded_image, padded_mask = SegmentationEvalTransform(40)(image, mask)
    assert padded_image.shape == (3, 40, 60)  # the longer side is left as it is
    assert torch.equal(padded_image[:, :20], same_image) and (padded_image[:, 20:] == 0).all()
    assert torch.equal(padded_mask[:20], mask) and (padded_mask[20:] == 255).all()


def test_pad_collate_pads_bottom_right() -> None:
    a = (torch.ones(3, 4, 6), torch.zeros(4, 6, dtype=torch.int64))
    b = (torch.full((3, 7, 3), 2.0), torch.ones(7, 3, dtype=torch.int64))
    images, masks = pad_collate([a, b])
    assert images.shape == (2, 3, 7, 6) and masks.shape == (2, 7, 6) and masks.dtype == torch.int64
    assert torch.equal(images[0, :, :4, :6], a[0]) and (images[0, :, 4:] == 0).all()
    assert (masks[0, :4] == 0).all() and (masks[0, 4:] == 255).all()
    assert torch.equal(images[1, :, :, :3], b[0]) and (images[1, :, :, 3:] == 0).all()
    assert (masks[1, :, :3] == 1).all() and (masks[1, :, 3:] == 255).all()


# ---------------------------------------------------------------- Cityscapes label mapping

# The official table (cityscapesScripts labels.py), labelId -> trainId; 255 = ignored.
OFFICIAL_TRAIN_IDS = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4,
    14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def test_labelids_map_to_trainids_for_every_official_id() -> None:
    ids = np.arange(256, dtype=np.uint8)
    mapped = labelids_to_trainids(ids)
    assert mapped.dtype == np.uint8 and LABELID_TO_TRAINID.shape == (256,)
    for label_id, train_id in OFFICIAL_TRAIN_IDS.items():
        assert mapped[label_id] == train_id, label_id
    assert (mapped[34:] == 255).all()
    assert {(lb.id, lb.train_id) for lb in CITYSCAPES_LABELS} == {*OFFICIAL_TRAIN_IDS.items(), (-1, 255)}
    assert CITYSCAPES_CLASSES == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
        "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
    )  # fmt: skip


# ---------------------------------------------------------------- Cityscapes fixture and loader


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cityscapes_fixture(tmp_path_factory.mktemp("cs") / "cityscapes")


def test_cityscapes_fixture_is_deterministic_fast_and_in_the_official_layout(tmp_path: Path) -> None:
    start = time.perf_counter()
    a = _tree_bytes(write_cityscapes_fixture(tmp_path / "a", seed=3))
    assert time.perf_counter() - start < 3.0  # ~0.1 s; generous for a loaded machine
    b = _tree_bytes(write_cityscapes_fixture(tmp_path / "b", seed=3))
    c = _tree_bytes(write_cityscapes_fixture(tmp_path / "c", seed=4))
    assert a == b
    assert a.keys() == c.keys() and a != c
    expected = []
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for city in cities:
            for i in range(4):
                stem = f"{city}_{i:06d}_000019"
                expected += [
                    f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png",
                    f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                ]
    assert sorted(a) == sorted(expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind
    with Image.open(tmp_path / "a" / expected[0]) as label, Image.open(tmp_path / "a" / expected[1]) as image:
        assert (label.format, label.mode, label.size) == ("PNG", "L", (128, 64))
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (128, 64))


def test_cityscapes_fixture_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    _one_line_error(lambda: write_cityscapes_fixture(tmp_path / "taken"), tmp_path / "taken", "refusing")
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["file.txt"]  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temp folder left behind


def test_cityscapes_loader_shapes_dtypes_and_ignore_pixels(cityscapes_root: Path) -> None:
    validate_cityscapes(cityscapes_root, check_samples=2)
    train, val = cityscapes_datasets(cityscapes_root, crop_size=48)
    assert isinstance(train, Dataset) and isinstance(train, CityscapesSegmentation)
    assert (len(train), len(val)) == (8, 4)
    assert train.num_classes == 19 and train.class_names == list(CITYSCAPES_CLASSES) and train.ignore_index == 255

    torch.manual_seed(0)
    image, mask = train[0]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert mask.shape == (48, 48) and mask.dtype == torch.int64

    seen: set[int] = set()
    for i in range(len(val)):
        image, mask = val[i]
        assert image.shape == (3, 64, 128) and image.dtype == torch.float32  # full resolution
        assert mask.shape == (64, 128) and mask.dtype == torch.int64
        raw = np.asarray(Image.open(val.samples[i][1]))
        assert torch.equal(mask, torch.from_numpy(LABELID_TO_TRAINID[raw].astype(np.int64)))
        seen |= set(mask.unique().tolist())
    assert seen <= {*range(19), 255}
    assert {0, 1, 2, 8, 10, 13, 255} <= seen  # road, sidewalk, building, vegetation, sky, car, ignored (ego...)

    images, masks = next(iter(DataLoader(val, batch_size=2, collate_fn=pad_collate)))
    assert images.shape == (2, 3, 64, 128) and masks.shape == (2, 64, 128)
    clone = pickle.loads(pickle.dumps(train))  # DataLoader workers get a pickled copy
    torch.manual_seed(1)
    first = clone[1]
    torch.manual_seed(1)
    assert torch.equal(first[0], train[1][0])


# ---------------------------------------------------------------- VOC 2012 aug loader


def _voc_palette() -> list[int]:
    """The VOC colour map: colour of index i from the bits of i, spread over the high bits of R, G, B."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def _voc_mask(h: int, w: int, cls: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = cls
    mask[h // 4, w // 4 : 3 * w // 4] = 255  # a border line, as VOC masks have
    return mask


VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000002"]
VOC_VAL = ["2007_000033", "2007_000042"]


def _write_voc(root: Path, *, class_folder: bool = True, deeplab_style: bool = False) -> Path:
    """A small VOCdevkit/VOC2012 segmentation layout: JPEGs, mode-L SegmentationClassAug and palette
    SegmentationClass masks (val ids only, with a class different from the Aug copy so the source is visible)."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "ImageSets/Segmentation", "SegmentationClassAug"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    if class_folder:
        (voc / "SegmentationClass").mkdir()
    for k, name in enumerate(VOC_TRAIN + VOC_VAL):
        h, w = 24 + 4 * k, 32 + 2 * k
        pixels = np.zeros((h, w, 3), dtype=np.uint8)
        pixels[..., k % 3] = 40 * k + 30
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{name}.jpg", format="JPEG")
        Image.fromarray(_voc_mask(h, w, 1 + k)).save(voc / "SegmentationClassAug" / f"{name}.png")
        if class_folder and name in VOC_VAL:
            indexed = Image.frombytes("P", (w, h), _voc_mask(h, w, 15).tobytes())  # 15 = person
            indexed.putpalette(_voc_palette())
            indexed.save(voc / "SegmentationClass" / f"{name}.png")
    lists = voc / "ImageSets" / "Segmentation"
    if deeplab_style:
        lines = [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in VOC_TRAIN[:2]] + ["", VOC_TRAIN[2]]
    else:
        lines = VOC_TRAIN
    (lists / "train_aug.txt").write_text("\n".join(lines) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (lists / "train.txt").write_text(VOC_TRAIN[0] + "\n")
    (lists / "trainval.txt").write_text("\n".join([VOC_TRAIN[0], *VOC_VAL]) + "\n")
    return root


def test_voc_loader_reads_palette_indices_not_colours(tmp_path: Path) -> None:
    root = _write_voc(tmp_path / "voc")
    validate_voc_segmentation(root, check_samples=3)
    train, val = voc_segmentation_datasets(root, crop_size=32, eval_size=None)
    assert isinstance(val, Dataset) and isinstance(val, VocSegmentation)
    assert (len(train), len(val)) == (3, 2)
    assert val.num_classes == 21 and val.class_names == list(VOC_SEGMENTATION_CLASSES) and val.ignore_index == 255
    assert val.samples[0][1] == root / "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png"
    with Image.open(val.samples[0][1]) as png:
        assert png.mode == "P"
    image, mask = val[0]
    assert image.shape == (3, 36, 38) and image.dtype == torch.float32
    assert mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(_voc_mask(36, 38, 15).astype(np.int64)))  # indices 0, 15, 255

    torch.manual_seed(0)
    image, mask = train[2]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    assert set(mask.unique().tolist()) <= {0, 3, 255}


def test_voc_root_may_be_the_vocdevkit_folder_and_val_pads_to_eval_size(tmp_path: Path) -> None:
    root = _write_voc(tmp_path / "voc")
    _, val = voc_segmentation_datasets(root / "VOCdevkit", eval_size=40)
    image, mask = val[0]  # a 36 x 38 (H x W) picture padded to 40 x 40: 0 (mean colour) and 255 outside it
    assert image.shape == (3, 40, 40) and mask.shape == (40, 40)
    assert (image[:, 36:] == 0).all() and (image[:, :, 38:] == 0).all() and (image[:, :36, :38] != 0).all()
    assert (mask[36:] == 255).all() and (mask[:, 38:] == 255).all()
    assert torch.equal(mask[:36, :38], torch.from_numpy(_voc_mask(36, 38, 15).astype(np.int64)))


def test_voc_train_aug_accepts_both_line_formats(tmp_path: Path) -> None:
    plain = _write_voc(tmp_path / "plain")
    deeplab = _write_voc(tmp_path / "deeplab", deeplab_style=True)
    train_plain, _ = voc_segmentation_datasets(plain)
    train_deeplab, _ = voc_segmentation_datasets(deeplab)
    expected = [
        (Path("VOCdevkit/VOC2012/JPEGImages", f"{n}.jpg"), Path("VOCdevkit/VOC2012/SegmentationClassAug", f"{n}.png"))
        for n in VOC_TRAIN
    ]
    for root, train in ((plain, train_plain), (deeplab, train_deeplab)):
        assert [(i.relative_to(root), m.relative_to(root)) for i, m in train.samples] == expected


def test_voc_val_falls_back_to_segmentation_class_aug(tmp_path: Path) -> None:
    root = _write_voc(tmp_path / "voc", class_folder=False)
    _, val = voc_segmentation_datasets(root, eval_size=None)
    assert [m.parent.name for _, m in val.samples] == ["SegmentationClassAug"] * 2
    _, mask = val[0]
    assert set(mask.unique().tolist()) == {0, 4, 255}  # the Aug copy's class (1 + index 3)


def test_voc_loader_reads_the_voc_fixture(tmp_path: Path) -> None:
    from cabench.data.fixtures.voc import write_voc_fixture
    from cabench.data.voc_detection import VOC_CLASSES as VOC_DETECTION_CLASSES

    assert ("background", *VOC_DETECTION_CLASSES) == VOC_SEGMENTATION_CLASSES  # mask index = detection label
    root = write_voc_fixture(tmp_path / "voc")
    validate_voc_segmentation(root, check_samples=100)  # opens every sample of the fixture
    train, val = voc_segmentation_datasets(root, crop_size=48, eval_size=None)
    assert (len(train), len(val)) == (8, 6)
    voc = root / "VOCdevkit" / "VOC2012"
    assert {m.parent for _, m in val.samples} == {voc / "SegmentationClass"}
    assert {m.parent for _, m in train.samples} == {voc / "SegmentationClassAug"}
    fixture_ids = {VOC_SEGMENTATION_CLASSES.index(name) for name in ("car", "dog", "person", "bottle")}
    for i, (image_path, mask_path) in enumerate(val.samples):
        image, mask = val[i]
        with Image.open(image_path) as jpeg:
            assert image.shape == (3, jpeg.height, jpeg.width)
        aug = np.asarray(Image.open(voc / "SegmentationClassAug" / mask_path.name)).astype(np.int64)
        assert torch.equal(mask, torch.from_numpy(aug))  # palette indices == the mode-L copy's values
        assert set(mask.unique().tolist()) <= {0, 255, *fixture_ids}
    torch.manual_seed(0)
    images, masks = pad_collate([train[i] for i in range(3)])
    assert images.shape == (3, 3, 48, 48) and masks.shape == (3, 48, 48)


# ---------------------------------------------------------------- bad data


def test_voc_structure_errors_name_the_path(tmp_path: Path) -> None:
    _one_line_error(lambda: validate_voc_segmentation(tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(lambda: validate_voc_segmentation(tmp_path / "empty"), tmp_path / "empty", "VOC2012")

    root = _write_voc(tmp_path / "voc")
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets/Segmentation/train_aug.txt").rename(voc / "ImageSets/Segmentation/train_aug.bak")
    _one_line_error(lambda: validate_voc_segmentation(root), voc / "ImageSets/Segmentation", "train_aug.txt")
    (voc / "ImageSets/Segmentation/train_aug.bak").rename(voc / "ImageSets/Segmentation/train_aug.txt")
    (voc / "SegmentationClassAug").rename(voc / "Aug.bak")
    _one_line_error(lambda: validate_voc_segmentation(root), voc, "SegmentationClassAug")


def test_voc_list_entry_errors_name_the_list_and_line(tmp_path: Path) -> None:
    root = _write_voc(tmp_path / "voc")
    voc = root / "VOCdevkit" / "VOC2012"
    train_aug = voc / "ImageSets/Segmentation/train_aug.txt"

    (voc / "JPEGImages" / f"{VOC_TRAIN[1]}.jpg").unlink()
    message = _one_line_error(lambda: validate_voc_segmentation(root), voc / "JPEGImages" / f"{VOC_TRAIN[1]}.jpg")
    assert message.startswith(f"{train_aug}:2: image ")

    (voc / "SegmentationClass" / f"{VOC_VAL[1]}.png").unlink()
    train_aug.write_text(VOC_TRAIN[0] + "\n")
    message = _one_line_error(lambda: validate_voc_segmentation(root), voc / "SegmentationClass" / f"{VOC_VAL[1]}.png")
    assert message.startswith(f"{voc / 'ImageSets/Segmentation/val.txt'}:2: mask ")

    train_aug.write_text(f"{VOC_TRAIN[0]}\n/JPEGImages/a.jpg /SegmentationClassAug/a.png extra\n")
    message = _one_line_error(lambda: voc_segmentation_datasets(root), "extra")
    assert message.startswith(f"{train_aug}:2: expected ")

    train_aug.write_text("\n\n")
    _one_line_error(lambda: validate_voc_segmentation(root), train_aug, "no entries")


def test_voc_mask_content_errors_name_the_file(tmp_path: Path) -> None:
    root = _write_voc(tmp_path / "voc")
    aug = root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    train, _ = voc_segmentation_datasets(root, crop_size=16)
    masks = [aug / f"{n}.png" for n in VOC_TRAIN]

    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(masks[0])  # wrong size
    message = _one_line_error(lambda: train[0], masks[0], "5x5", "24")
    assert message.startswith(str(masks[0]))
    _one_line_error(lambda: validate_voc_segmentation(root, check_samples=1), masks[0])  # eager on request

    Image.fromarray(_voc_mask(28, 34, 38)).save(masks[1])  # 38 is no VOC class
    message = _one_line_error(lambda: train[1], masks[1], "38")
    assert message.startswith(str(masks[1]))

    Image.fromarray(np.zeros((32, 36, 3), dtype=np.uint8)).save(masks[2])  # an RGB colour mask
    _one_line_error(lambda: train[2], masks[2], "mode RGB")
    Image.fromarray(np.zeros((32, 36), dtype=np.uint8)).save(masks[2], format="JPEG")  # not a PNG
    _one_line_error(lambda: train[2], masks[2], "not a PNG")
    masks[2].write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _one_line_error(lambda: train[2], masks[2], "unreadable")


def test_cityscapes_errors_name_the_file(tmp_path: Path) -> None:
    _one_line_error(lambda: validate_cityscapes(tmp_path / "nowhere"), tmp_path / "nowhere", "does not exist")
    root = write_cityscapes_fixture(tmp_path / "cs")

    (root / "gtFine" / "val").rename(root / "gtFine" / "val.bak")
    _one_line_error(lambda: validate_cityscapes(root), root, "gtFine/val")
    (root / "gtFine" / "val.bak").rename(root / "gtFine" / "val")

    label = root / "gtFine/train/bochum/bochum_000002_000019_gtFine_labelIds.png"
    image = root / "leftImg8bit/train/bochum/bochum_000002_000019_leftImg8bit.png"
    label.rename(label.with_suffix(".bak"))
    message = _one_line_error(lambda: cityscapes_datasets(root), image, label)
    assert message.startswith(str(image))
    label.with_suffix(".bak").rename(label)

    (root / "gtFine/val/frankfurt").rename(root / "gtFine/val/elsewhere")
    _one_line_error(lambda: validate_cityscapes(root), root / "gtFine/val/frankfurt", "no such folder")
    (root / "gtFine/val/elsewhere").rename(root / "gtFine/val/frankfurt")

    train, _ = cityscapes_datasets(root, crop_size=32)
    ids = np.asarray(Image.open(label)).copy()
    ids[0, :3] = (34, 200, 7)
    Image.fromarray(ids).save(label)
    index = next(i for i, (_, m) in enumerate(train.samples) if m == label)
    message = _one_line_error(lambda: train[index], label, "unknown labelIds", "34, 200")
    assert message.startswith(str(label))

    Image.fromarray(ids[:32]).save(label)
    _one_line_error(lambda: train[index], label, "128x32", image)
