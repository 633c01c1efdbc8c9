"""Detection data layer: COCO and VOC fixtures, loaders, validation errors, and the SSD transforms."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cabench.data.coco import COCO_CATEGORIES, CocoDetection, coco_datasets, validate_coco
from cabench.data.detection_transforms import (
    SSDTrainTransform,
    detection_eval_transform,
    pil_to_float_tensor,
    ssdlite_train_transform,
)
from cabench.data.errors import DatasetError
from cabench.data.fixtures.coco import FIXTURE_CATEGORY_IDS, write_coco_fixture
from cabench.data.fixtures.voc import FIXTURE_CLASSES, voc_colormap, write_voc_fixture
from cabench.data.voc_detection import VOC_CLASSES, VocDetection, validate_voc_detection, voc_detection_datasets


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco_fixture(tmp_path_factory.mktemp("fx") / "coco")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc_fixture(tmp_path_factory.mktemp("fx") / "voc")


def _check_item(image: torch.Tensor, target: dict, num_classes: int) -> None:
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    _, height, width = image.shape
    boxes, labels = target["boxes"], target["labels"]
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert labels.dtype == torch.int64 and labels.shape == (boxes.shape[0],)
    assert isinstance(target["image_id"], int)
    if len(labels):
        assert int(labels.min()) >= 1 and int(labels.max()) < num_classes
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        assert float(boxes[:, 0::2].min()) >= 0 and float(boxes[:, 0::2].max()) <= width
        assert float(boxes[:, 1::2].min()) >= 0 and float(boxes[:, 1::2].max()) <= height


# ---------------------------------------------------------------- fixtures


@pytest.mark.parametrize("writer", [write_coco_fixture, write_voc_fixture])
def test_fixture_is_deterministic_and_refuses_a_non_empty_folder(tmp_path: Path, writer: Callable) -> None:
    a = _tree_bytes(writer(tmp_path / "a", seed=3))
    b = _tree_bytes(writer(tmp_path / "b", seed=3))
    c = _tree_bytes(writer(tmp_path / "c", seed=4))
    assert a == b
    assert a != c
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind
    with pytest.raises(DatasetError, match="refusing"):
        writer(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    writer(tmp_path / "empty")  # an empty folder is fine


def test_coco_fixture_layout_and_categories(coco_root: Path) -> None:
    validate_coco(coco_root)
    val = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    cats = [(c["id"], c["name"]) for c in val["categories"]]
    assert cats == [(i, n) for i, n, _ in COCO_CATEGORIES] and len(cats) == 80 and cats[-1] == (90, "toothbrush")
    assert {a["category_id"] for a in val["annotations"]} <= set(FIXTURE_CATEGORY_IDS)
    for image in val["images"]:
        assert (coco_root / "val2017" / image["file_name"]).is_file()
        assert image["file_name"] == f"{image['id']:012d}.jpg"
        assert 128 <= image["width"] <= 160 and 96 <= image["height"] <= 120
    for ann in val["annotations"]:
        assert set(ann) >= {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
        assert 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3]


def test_voc_fixture_layout_and_masks(voc_root: Path) -> None:
    validate_voc_detection(voc_root)
    base = voc_root / "VOCdevkit" / "VOC2012"

    def ids(name: str) -> list[str]:
        return (base / "ImageSets" / name).read_text().split()

    trainval, val, train_aug, train = (
        ids("Main/trainval.txt"),
        ids("Segmentation/val.txt"),
        ids("Segmentation/train_aug.txt"),
        ids("Segmentation/train.txt"),
    )
    assert set(val) <= set(trainval) and sorted(train_aug) == sorted(set(trainval) - set(val))
    assert set(train) <= set(train_aug) and sorted(ids("Segmentation/trainval.txt")) == sorted(train + val)
    assert len(ids("../../VOC2007/ImageSets/Main/trainval.txt")) == 12
    assert len(ids("../../VOC2007/ImageSets/Main/test.txt")) == 8
    allowed = {0, 255} | {VOC_CLASSES.index(c) + 1 for c in FIXTURE_CLASSES}
    for image_id in train + val:
        with Image.open(base / "SegmentationClass" / f"{image_id}.png") as png:
            assert png.mode == "P" and png.getpalette()[: 3 * 256] == voc_colormap()
            seg = np.asarray(png)
        with Image.open(base / "JPEGImages" / f"{image_id}.jpg") as jpg:
            assert seg.shape == (jpg.height, jpg.width)
        assert set(np.unique(seg)) <= allowed and 255 in seg
    for image_id in train_aug + val:
        with Image.open(base / "SegmentationClassAug" / f"{image_id}.png") as png:
            assert png.mode == "L"
            aug = np.asarray(png)
        assert set(np.unique(aug)) <= allowed
        if image_id in train + val:
            assert np.array_equal(aug, np.asarray(Image.open(base / "SegmentationClass" / f"{image_id}.png")))
        else:
            assert 255 not in aug  # SBD-style masks: no border band

    # The mask agrees with the XML: every object box holds its class inside, and the mask's classes are the XML's.
    train_ds = VocDetection(voc_root, [("2012", "trainval")], keep_difficult=True)
    for i, name in enumerate(train_ds.ids):
        image_id = name.split("/")[1]
        path = base / "SegmentationClassAug" / f"{image_id}.png"
        mask = np.asarray(Image.open(path))
        target = train_ds.target(i)
        assert {int(v) for v in np.unique(mask)} - {0, 255} == {int(v) for v in target["labels"]}
        for box, label in zip(target["boxes"].long().tolist(), target["labels"].tolist(), strict=True):
            x0, y0, x1, y1 = box
            inside = mask[y0:y1, x0:x1]
            assert (inside == label).sum() > 0.3 * inside.size


# ---------------------------------------------------------------- COCO loader


def test_coco_items_and_label_mapping(coco_root: Path) -> None:
    train, val = coco_datasets(coco_root)
    assert isinstance(train, CocoDetection) and len(train) == 24 and len(val) == 8
    assert train.num_classes == val.num_classes == 81
    assert val.class_names[0] == "__background__" and val.class_names[1:] == [n for _, n, _ in COCO_CATEGORIES]
    data = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert val.image_ids == sorted(img["id"] for img in data["images"])
    for i in range(len(val)):
        image, target = val[i]
        _check_item(image, target, 81)
        anns = by_image.get(target["image_id"], [])
        assert val.labels_to_category_ids(target["labels"].numpy()).tolist() == [a["category_id"] for a in anns]
        expected = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns
        ]
        assert target["boxes"].tolist() == expected
    assert any(len(val.target(i)["labels"]) == 0 for i in range(len(val)))  # the empty val image is kept
    # The contiguous mapping: sorted category ids, index + 1 (ids 1..90 with gaps -> 1..80).
    ids = [c for c, _, _ in COCO_CATEGORIES]
    assert val.category_ids_to_labels(ids).tolist() == list(range(1, 81))
    assert val.labels_to_category_ids(np.arange(1, 81)).tolist() == ids
    assert val.category_ids_to_labels([18, 59]).tolist() == [17, 54]
    with pytest.raises(ValueError):
        val.category_ids_to_labels([12])
    pickle.loads(pickle.dumps(train))  # DataLoader workers get a copy


def test_coco_train_drops_crowd_zero_size_and_empty_images(tmp_path: Path, coco_root: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    path = root / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    first, second = data["images"][0]["id"], data["images"][1]["id"]
    for ann in data["annotations"]:
        if ann["image_id"] == first:
            ann["iscrowd"] = 1  # image 0: crowd only -> no usable box
        elif ann["image_id"] == second:
            ann["bbox"][3] = 0.0  # image 1: zero-height boxes (real train2017 has two) -> tolerated, not trained on
    path.write_text(json.dumps(data))
    train, _ = coco_datasets(root)
    assert first not in train.image_ids and second not in train.image_ids and len(train) == 22
    everything = CocoDetection(path, root / "train2017")
    assert len(everything) == 24 and len(everything.target(0)["labels"]) == 0
    gt = train.ground_truth()
    assert sum(a["iscrowd"] for a in gt["annotations"]) > 0  # the evaluator still sees crowd regions


# ---------------------------------------------------------------- VOC loader


def test_voc_items_train_drops_difficult_test_keeps_it(voc_root: Path) -> None:
    train, test = voc_detection_datasets(voc_root)
    assert train.num_classes == test.num_classes == 21
    assert train.class_names == ["__background__", *VOC_CLASSES]
    assert len(train) == 12 + 14 and len(test) == 8
    for dataset in (train, test):
        for i in range(len(dataset)):
            image, target = dataset[i]
            _check_item(image, target, 21)
            assert target["image_id"] == i
            assert target["difficult"].dtype == torch.bool and target["difficult"].shape == target["labels"].shape
    assert not any(bool(train.target(i)["difficult"].any()) for i in range(len(train)))
    assert bool(test.target(0)["difficult"][0]) and not bool(test.target(0)["difficult"][1:].any())
    # The first 2007 trainval image has a difficult object: train drops exactly that one.
    keep_all = VocDetection(voc_root, [("2007", "trainval")], keep_difficult=True)
    assert len(keep_all.target(0)["labels"]) == len(train.target(0)["labels"]) + 1
    # Boxes: XML 1-based inclusive [xmin, ymin, xmax, ymax] -> continuous [xmin - 1, ymin - 1, xmax, ymax].
    xml = (voc_root / "VOCdevkit/VOC2007/Annotations/000002.xml").read_text()
    xmin = int(xml.split("<xmin>")[1].split("<")[0])
    xmax = int(xml.split("<xmax>")[1].split("<")[0])
    assert test.target(0)["boxes"][0, 0] == xmin - 1 and test.target(0)["boxes"][0, 2] == xmax
    assert test.ids[0] == "VOC2007/000002"
    pickle.loads(pickle.dumps(train))


def test_voc_root_may_be_the_devkit_folder(voc_root: Path) -> None:
    validate_voc_detection(voc_root / "VOCdevkit")
    train, test = voc_detection_datasets(voc_root / "VOCdevkit")
    assert len(train) == 26 and len(test) == 8


# ---------------------------------------------------------------- transforms


def test_eval_transform_is_to_tensor_only(coco_root: Path) -> None:
    path = next((coco_root / "val2017").iterdir())
    image = Image.open(path)
    target = {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([1]), "image_id": 5}
    tensor, out = detection_eval_transform()(image, target)
    assert out is target
    expected = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(tensor, expected)


@pytest.mark.slow
def test_train_transform_keeps_boxes_inside_and_consistent(voc_root: Path) -> None:
    torch.manual_seed(0)
    transform = ssdlite_train_transform()
    train = VocDetection(voc_root, [("2007", "test")], keep_difficult=True, transform=transform)
    sizes = set()
    for step in range(60):
        image, target = train[step % len(train)]
        _check_item(image, target, 21)
        assert target["difficult"].shape == target["labels"].shape
        sizes.add(tuple(image.shape[1:]))
    assert len(sizes) > 10  # zoom-out and crops change the size
    pickle.loads(pickle.dumps(transform))

    resized = VocDetection(
        voc_root, [("2007", "test")], keep_difficult=True, transform=SSDTrainTransform(size=(64, 80))
    )
    for step in range(10):
        image, target = resized[step % len(resized)]
        assert image.shape == (3, 64, 80)
        _check_item(image, target, 21)


def test_train_transform_geometry_is_exact() -> None:
    """A red rectangle on green; with photometric distortion off, the red pixels' box is the target box."""
    pixels = np.zeros((60, 90, 3), dtype=np.uint8)
    pixels[..., 1] = 255
    pixels[20:40, 30:70] = (255, 0, 0)  # continuous box [30, 20, 70, 40]
    image = Image.fromarray(pixels)
    transform = SSDTrainTransform(fill=(0, 0, 255), photometric=False)
    torch.manual_seed(1)
    seen_flip = seen_zoom = seen_crop = seen_clip = False
    for _ in range(80):
        target = {
            "boxes": torch.tensor([[30.0, 20.0, 70.0, 40.0]]),
            "labels": torch.tensor([3]),
            "difficult": torch.tensor([False]),
            "image_id": 0,
        }
        out, t = transform(image, target)
        red = (out[0] > 0.5) & (out[1] < 0.5) & (out[2] < 0.5)
        rows, cols = torch.nonzero(red, as_tuple=True)
        assert len(t["labels"]) == 1  # the only box's centre always stays in an accepted crop
        box = [float(cols.min()), float(rows.min()), float(cols.max()) + 1, float(rows.max()) + 1]
        assert t["boxes"][0].tolist() == box
        blue = (out[2] > 0.5) & (out[0] < 0.5)
        seen_zoom |= bool(blue.any())
        seen_crop |= out.shape[1:] != (60, 90) and not bool(blue.any())
        seen_flip |= box[0] != 30.0 and out.shape[1:] == (60, 90)
        seen_clip |= box[2] - box[0] < 40 or box[3] - box[1] < 20  # a crop cut the object
    assert seen_zoom and seen_crop and seen_flip and seen_clip


def test_train_transform_handles_empty_targets() -> None:
    image = Image.new("RGB", (50, 40), (10, 20, 30))
    target = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 3}
    torch.manual_seed(0)
    for _ in range(10):
        out, t = ssdlite_train_transform()(image, target)
        assert out.shape[0] == 3 and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_pil_to_float_tensor_converts_modes() -> None:
    gray = Image.new("L", (4, 3), 255)
    tensor = pil_to_float_tensor(gray)
    assert tensor.shape == (3, 3, 4) and float(tensor.min()) == 1.0


# ---------------------------------------------------------------- validation errors


def _assert_one_line(exc: pytest.ExceptionInfo[DatasetError], *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _ann3(data: dict) -> dict:
    return data["annotations"][3]


COCO_CASES: dict[str, tuple[Callable[[dict], None], list[str]]] = {
    "missing bbox": (lambda d: _ann3(d).pop("bbox"), ["annotation id 4 (entry 3)", "missing key 'bbox'"]),
    "missing category_id": (lambda d: _ann3(d).pop("category_id"), ["annotation id 4 (entry 3)", "category_id"]),
    "missing image_id": (lambda d: _ann3(d).pop("image_id"), ["annotation id 4 (entry 3)", "image_id"]),
    "box outside": (
        lambda d: _ann3(d)["bbox"].__setitem__(0, 500.0),
        ["annotation id 4 (entry 3)", "bbox [500,", "lies outside image"],
    ),
    "negative width": (lambda d: _ann3(d)["bbox"].__setitem__(2, -3.0), ["annotation id 4 (entry 3)", "negative"]),
    "bbox not numbers": (lambda d: _ann3(d).__setitem__("bbox", [1, 2, "x", 4]), ["(entry 3)", "4 finite numbers"]),
    "unknown category": (
        lambda d: _ann3(d).__setitem__("category_id", 12),
        ["annotation id 4 (entry 3)", "unknown category_id 12"],
    ),
    "unknown image": (lambda d: _ann3(d).__setitem__("image_id", 4242), ["(entry 3)", "image_id 4242"]),
    "missing top-level key": (lambda d: d.pop("categories"), ["missing top-level key(s) categories"]),
    "image without size": (lambda d: d["images"][2].pop("width"), ["image id", "(entry 2)", "'width'"]),
}


@pytest.mark.parametrize("case", sorted(COCO_CASES))
def test_coco_bad_annotations(tmp_path: Path, coco_root: Path, case: str) -> None:
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    path = root / "annotations" / "instances_val2017.json"
    edit, parts = COCO_CASES[case]
    _edit_json(path, edit)
    with pytest.raises(DatasetError) as exc:
        validate_coco(root)
    _assert_one_line(exc, str(path), *parts)
    with pytest.raises(DatasetError):
        coco_datasets(root)


def test_coco_unparseable_json_missing_files_and_folders(tmp_path: Path, coco_root: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    path = root / "annotations" / "instances_val2017.json"
    good = path.read_text()
    path.write_text(good[:200])
    with pytest.raises(DatasetError) as exc:
        validate_coco(root)
    _assert_one_line(exc, str(path), "not valid JSON", "line 1")

    path.write_text(good)
    victim = sorted((root / "val2017").iterdir())[1]
    victim.unlink()
    with pytest.raises(DatasetError) as exc:
        validate_coco(root)
    _assert_one_line(exc, str(path), "(entry 1)", str(victim), "does not exist")

    shutil.rmtree(root / "val2017")
    with pytest.raises(DatasetError) as exc:
        validate_coco(root)
    _assert_one_line(exc, str(root / "val2017"), "image folder")
    (root / "annotations" / "instances_train2017.json").unlink()
    with pytest.raises(DatasetError) as exc:
        validate_coco(root)
    _assert_one_line(exc, "instances_train2017.json", "does not exist")
    with pytest.raises(DatasetError) as exc:
        validate_coco(tmp_path / "nowhere")
    _assert_one_line(exc, str(tmp_path / "nowhere"), "does not exist")


def test_coco_category_lists_must_agree(tmp_path: Path, coco_root: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root)
    path = root / "annotations" / "instances_val2017.json"
    _edit_json(path, lambda d: d["categories"].append({"id": 91, "name": "extra", "supercategory": "x"}))
    with pytest.raises(DatasetError) as exc:
        validate_coco(root)
    _assert_one_line(exc, str(path), "categories differ", "91")


def _second_object(xml: str, tag: str, value: str) -> str:
    """Replace the value of ``tag`` in the second <object> of an XML text."""
    head, first, second = xml.split("<object>", 2)
    before, rest = second.split(f"<{tag}>", 1)
    rest = rest.split(f"</{tag}>", 1)[1]
    return f"{head}<object>{first}<object>{before}<{tag}>{value}</{tag}>{rest}"


VOC_CASES: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "unknown class": (lambda x: _second_object(x, "name", "dgo"), ["object 2", "unknown class name 'dgo'"]),
    "box outside": (lambda x: _second_object(x, "xmax", "400"), ["object 2", "xmax=400", "lies outside the image"]),
    "xmin >= xmax": (lambda x: _second_object(x, "xmin", "150"), ["object 2", "xmin=150", "xmin < xmax"]),
    "bad difficult": (lambda x: _second_object(x, "difficult", "maybe"), ["object 2", "<difficult>"]),
    "missing size": (
        lambda x: x.split("<size>")[0] + x.split("</size>")[1],
        ["no <size> element"],
    ),
    "unparseable": (lambda x: x[:120], ["not well-formed XML", "line"]),
}


@pytest.mark.parametrize("case", sorted(VOC_CASES))
def test_voc_bad_annotations(tmp_path: Path, voc_root: Path, case: str) -> None:
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    path = root / "VOCdevkit" / "VOC2007" / "Annotations" / "000002.xml"  # first test image: 2-3 objects
    edit, parts = VOC_CASES[case]
    path.write_text(edit(path.read_text()))
    with pytest.raises(DatasetError) as exc:
        validate_voc_detection(root)
    _assert_one_line(exc, str(path), *parts)
    with pytest.raises(DatasetError):
        voc_detection_datasets(root)


def test_voc_missing_pieces(tmp_path: Path, voc_root: Path) -> None:
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    devkit = root / "VOCdevkit"
    (devkit / "VOC2007" / "Annotations" / "000005.xml").unlink()
    with pytest.raises(DatasetError) as exc:
        validate_voc_detection(root)
    _assert_one_line(exc, "000005.xml", "id 000005", "test.txt", "does not exist")
    (devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").unlink()
    with pytest.raises(DatasetError) as exc:
        validate_voc_detection(root)
    _assert_one_line(exc, str(devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt"), "image list")
    shutil.rmtree(devkit / "VOC2012")
    with pytest.raises(DatasetError) as exc:
        validate_voc_detection(root)
    _assert_one_line(exc, str(devkit / "VOC2012"), "does not exist")
    with pytest.raises(DatasetError) as exc:
        validate_voc_detection(tmp_path)
    _assert_one_line(exc, str(tmp_path), "no VOCdevkit")
