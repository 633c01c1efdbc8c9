"""Detection metrics: COCO AP (pycocotools) and VOC2007 11-point mAP, on hand-computed cases."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cabench.data.coco import coco_datasets
from cabench.data.fixtures.coco import write_coco_fixture
from cabench.data.fixtures.voc import write_voc_fixture
from cabench.data.voc_detection import VOC_CLASSES, voc_detection_datasets
from cabench.metrics.coco_eval import STAT_NAMES, CocoEvaluator, DetectionEvaluator
from cabench.metrics.voc_eval import VocEvaluator, VocGroundTruth, devkit_iou, voc07_ap

VOC_NAMES = ["__background__", *VOC_CLASSES]


def _output(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _merged(make, targets: list[dict], outputs: list[dict], split: int, duplicate: int | None = None):
    """Two "ranks": the first ``split`` images on one, the rest (plus an optional duplicate) on the other."""
    rank0, rank1 = make(), make()
    rank0.update(targets[:split], outputs[:split])
    rest_t, rest_o = targets[split:], outputs[split:]
    if duplicate is not None:  # a padded DistributedSampler repeats an image on another rank
        rest_t, rest_o = [*rest_t, targets[duplicate]], [*rest_o, outputs[duplicate]]
    rank1.update(rest_t, rest_o)
    states = [pickle.loads(pickle.dumps(ev.state())) for ev in (rank0, rank1)]
    rank0.merge(states)
    return rank0


# ---------------------------------------------------------------- VOC


def test_devkit_iou_uses_the_plus_one_convention() -> None:
    # 1-based inclusive pixels: [1, 10] is 10 pixels wide; a 5-pixel shift overlaps 5x10 = 50 of 100 + 100 - 50.
    iou = devkit_iou(np.array([[1, 1, 10, 10]]), np.array([[1, 1, 10, 10], [6, 1, 15, 10], [11, 1, 20, 10]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_voc07_ap_eleven_points() -> None:
    # recall 0.5 at precision 1, then recall 1.0 at precision 0.5: t = 0..0.5 -> 1 (6 points), t = 0.6..1 -> 0.5.
    assert voc07_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert voc07_ap(np.array([]), np.array([])) == 0.0


def _voc_case() -> tuple[dict[int, VocGroundTruth], list[dict], list[dict]]:
    """Ground truth in the XML convention (1-based inclusive); predictions in the continuous frame
    ([xmin - 1, ymin - 1, xmax, ymax] of the devkit box they are meant to hit)."""
    gt = {
        0: VocGroundTruth(
            [[1, 1, 10, 10], [21, 21, 30, 30], [50, 10, 69, 29]],
            [1, 1, 2],  # A1, A2 (aeroplane), B1 (bicycle)
            [False, False, False],
        ),
        1: VocGroundTruth(
            [[1, 1, 10, 10], [41, 41, 50, 50], [60, 60, 79, 79]],
            [1, 1, 3],  # A3, A4 (aeroplane, difficult), C1 (bird, difficult)
            [False, True, True],
        ),
    }
    outputs = [
        _output(
            [
                [0, 0, 10, 10],  # A1 exactly, 0.9: TP
                [0, 0, 10, 10],  # A1 again, 0.5: duplicate -> FP
                [59, 9, 79, 29],  # devkit [60,10,79,29] vs B1: 10x20 / (400 + 400 - 200) = 1/3 -> FP, score 0.95
                [53, 9, 73, 29],  # devkit [54,10,73,29] vs B1: 16x20 / (400 + 400 - 320) = 2/3 -> TP, score 0.4
            ],
            [0.9, 0.5, 0.95, 0.4],
            [1, 1, 2, 2],
        ),
        _output(
            [
                [100, 100, 120, 120],  # nothing there, 0.8: FP ranked above a TP
                [0, 0, 10, 10],  # A3, 0.7: TP
                [40, 40, 50, 50],  # A4 (difficult), 0.6: neither TP nor FP
                [59, 59, 79, 79],  # C1 (difficult), bird has no non-difficult box: no AP for bird
                [0, 0, 5, 5],  # boat: no ground truth at all, no AP for boat
            ],
            [0.8, 0.7, 0.6, 0.9, 0.3],
            [1, 1, 1, 3, 4],
        ),
    ]
    targets = [{"image_id": 0}, {"image_id": 1}]
    return gt, targets, outputs


def test_voc_hand_computed_case() -> None:
    # aeroplane, 3 positives (A4 is difficult). By score: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 ignored, 0.5 FP (duplicate)
    #   cumulative TP 1,1,2,2  FP 0,1,1,2  -> recall 1/3,1/3,2/3,2/3  precision 1,1/2,2/3,1/2
    #   11-point: t = 0, .1, .2, .3 -> 1 (4 points); t = .4, .5, .6 -> 2/3 (3 points); t >= .7 -> 0
    #   AP = (4 + 3 * 2/3) / 11 = 6/11
    # bicycle, 1 positive: 0.95 FP (IoU 1/3), 0.4 TP (IoU 2/3) -> recall 0, 1; precision 0, 1/2 -> AP = 1/2
    # bird (only a difficult box) and boat (no box) have no AP.  mAP = (6/11 + 1/2) / 2 = 23/44
    gt, targets, outputs = _voc_case()
    evaluator = VocEvaluator(VOC_NAMES, gt)
    evaluator.update(targets, outputs)
    result = evaluator.compute()
    assert set(result["per_class_ap"]) == {"aeroplane", "bicycle"}
    assert result["per_class_ap"]["aeroplane"] == pytest.approx(100 * 6 / 11, abs=1e-9)
    assert result["per_class_ap"]["bicycle"] == pytest.approx(50.0, abs=1e-9)
    assert result["map"] == pytest.approx(100 * 23 / 44, abs=1e-9)


def test_voc_ground_truth_as_predictions_is_100_and_merge_matches(tmp_path: Path) -> None:
    _, test = voc_detection_datasets(write_voc_fixture(tmp_path / "voc"))
    targets = [test.target(i) for i in range(len(test))]
    assert any(bool(t["difficult"].any()) for t in targets)
    outputs = [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in targets]
    evaluator = test.make_evaluator()
    assert isinstance(evaluator, DetectionEvaluator)
    evaluator.update(targets, outputs)
    result = evaluator.compute()
    assert result["map"] == 100.0
    assert result["per_class_ap"] and all(v == 100.0 for v in result["per_class_ap"].values())

    merged = _merged(test.make_evaluator, targets, outputs, split=3, duplicate=0)
    assert merged.compute() == result


def test_voc_merge_equals_single_on_perturbed_case() -> None:
    gt, targets, outputs = _voc_case()
    single = VocEvaluator(VOC_NAMES, gt)
    single.update(targets, outputs)
    merged = _merged(lambda: VocEvaluator(VOC_NAMES, gt), targets, outputs, split=1, duplicate=0)
    assert merged.compute() == single.compute()


def test_voc_zero_detections_give_zeros() -> None:
    gt, targets, _ = _voc_case()
    evaluator = VocEvaluator(VOC_NAMES, gt)
    evaluator.update(targets, [_output([], [], []) for _ in targets])
    assert evaluator.compute() == {"map": 0.0, "per_class_ap": {"aeroplane": 0.0, "bicycle": 0.0}}
    assert VocEvaluator(VOC_NAMES, gt).compute() == {"map": 0.0, "per_class_ap": {}}  # nothing evaluated


def test_voc_rejects_unknown_image_and_bad_labels() -> None:
    gt, _, _ = _voc_case()
    evaluator = VocEvaluator(VOC_NAMES, gt)
    with pytest.raises(ValueError, match="image_id 7"):
        evaluator.update([{"image_id": 7}], [_output([], [], [])])
    with pytest.raises(ValueError, match="labels"):
        evaluator.update([{"image_id": 0}], [_output([[0, 0, 1, 1]], [0.5], [21])])


# ---------------------------------------------------------------- COCO

_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
]


def _ann(ann_id: int, image_id: int, category_id: int, bbox: list[float], iscrowd: int = 0) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": iscrowd,
    }


def _xyxy(bbox: list[float]) -> list[float]:
    return [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]


def _all_sizes_case() -> tuple[dict, list[dict], list[dict]]:
    """Small (< 32^2), medium and large (> 96^2) boxes in two categories over two images, plus a crowd region."""
    gt = {
        "images": [{"id": 42, "width": 640, "height": 480}, {"id": 7, "width": 500, "height": 375}],
        "annotations": [
            _ann(1, 42, 1, [10, 10, 20, 20]),  # small (400)
            _ann(2, 42, 3, [100, 50, 50, 50]),  # medium (2500)
            _ann(3, 42, 1, [300, 200, 150, 150]),  # large (22500)
            _ann(4, 7, 3, [20, 300, 40, 40]),  # medium (1600)
            _ann(5, 7, 1, [400, 10, 10, 12]),  # small (120)
            _ann(6, 7, 18, [100, 100, 200, 150]),  # large (30000)
            _ann(7, 7, 1, [0, 0, 60, 60], iscrowd=1),  # crowd: ignored by COCOeval
        ],
        "categories": _CATEGORIES,
    }
    label_of = {1: 1, 3: 2, 18: 3}  # sorted category ids, index + 1
    targets, outputs = [], []
    for image_id in (42, 7):
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        targets.append({"image_id": image_id})
        outputs.append(
            _output([_xyxy(a["bbox"]) for a in anns], [1.0] * len(anns), [label_of[a["category_id"]] for a in anns])
        )
    return gt, targets, outputs


def test_coco_ground_truth_as_predictions_gives_100_on_all_six_stats() -> None:
    gt, targets, outputs = _all_sizes_case()
    evaluator = CocoEvaluator(gt)
    evaluator.update(targets, outputs)
    result = evaluator.compute()
    assert set(result) == set(STAT_NAMES)
    assert result == pytest.approx(dict.fromkeys(STAT_NAMES, 100.0))

    merged = _merged(lambda: CocoEvaluator(gt), targets, outputs, split=1, duplicate=1)
    assert merged.compute() == result


def test_coco_hand_computed_case() -> None:
    # One class, three large GTs (100x100) in one image. Detections by score:
    #   0.90 = g1 exactly (IoU 1)          -> TP at every IoU threshold
    #   0.85 far from everything           -> FP
    #   0.80 g2 shifted by 23 px (IoU 77/123 = 0.626) -> TP at t = .50, .55, .60; FP at t >= .65
    #   g3 is missed.
    # t in {.50, .55, .60}: recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3 -> envelope 1, 2/3, 2/3.
    #   101-point interpolation: r = 0..0.33 (34 points) -> 1; r = 0.34..0.66 (33 points) -> 2/3; rest 0
    #   AP = (34 + 33 * 2/3) / 101 = 56/101
    # t >= .65 (7 thresholds): recall 1/3 throughout, envelope 1 up to r = 0.33 -> AP = 34/101
    # AP50 = 56/101, AP75 = 34/101, AP = (3 * 56 + 7 * 34) / 1010 = 406/1010; all objects large -> AP_l = AP,
    # AP_s = AP_m = -1 (no ground truth of those sizes: undefined in COCOeval).
    gt = {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "annotations": [_ann(i + 1, 1, 1, [10 + 200 * i, 10, 100, 100]) for i in range(3)],
        "categories": _CATEGORIES[:1],
    }
    evaluator = CocoEvaluator(gt)
    boxes = [[10, 10, 110, 110], [10, 300, 110, 400], [233, 10, 333, 110]]
    evaluator.update([{"image_id": torch.tensor(1)}], [_output(boxes, [0.9, 0.85, 0.8], [1, 1, 1])])
    result = evaluator.compute()
    assert result["ap50"] == pytest.approx(100 * 56 / 101, abs=1e-6)
    assert result["ap75"] == pytest.approx(100 * 34 / 101, abs=1e-6)
    assert result["ap"] == pytest.approx(100 * 406 / 1010, abs=1e-6)
    assert result["ap_l"] == pytest.approx(result["ap"], abs=1e-9)
    assert result["ap_s"] == -1.0 and result["ap_m"] == -1.0


def test_coco_zero_detections_give_zeros() -> None:
    gt, targets, _ = _all_sizes_case()
    evaluator = CocoEvaluator(gt)
    evaluator.update(targets, [_output([], [], []) for _ in targets])
    assert evaluator.compute() == dict.fromkeys(STAT_NAMES, 0.0)
    assert CocoEvaluator(gt).compute() == dict.fromkeys(STAT_NAMES, 0.0)


def test_coco_evaluator_silences_pycocotools(capsys: pytest.CaptureFixture[str]) -> None:
    gt, targets, outputs = _all_sizes_case()
    evaluator = CocoEvaluator(gt)
    evaluator.update(targets, outputs)
    evaluator.compute()
    assert capsys.readouterr().out == ""


def test_coco_rejects_unknown_image_and_bad_labels() -> None:
    gt, _, _ = _all_sizes_case()
    evaluator = CocoEvaluator(gt)
    with pytest.raises(ValueError, match="image_id 5"):
        evaluator.update([{"image_id": 5}], [_output([], [], [])])
    with pytest.raises(ValueError, match="labels"):
        evaluator.update([{"image_id": 42}], [_output([[0, 0, 1, 1]], [0.5], [4])])


def test_coco_fixture_targets_as_predictions_give_100(tmp_path: Path) -> None:
    _, val = coco_datasets(write_coco_fixture(tmp_path / "coco"))
    targets = [val.target(i) for i in range(len(val))]
    assert any(len(t["labels"]) == 0 for t in targets)  # an image without objects is evaluated too
    outputs = [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in targets]
    evaluator = val.make_evaluator()
    assert isinstance(evaluator, DetectionEvaluator)
    evaluator.update(targets, outputs)
    result = evaluator.compute()
    assert result["ap"] == 100.0 and result["ap50"] == 100.0 and result["ap75"] == 100.0
    merged = _merged(val.make_evaluator, targets, outputs, split=len(targets) // 2, duplicate=0)
    assert merged.compute() == result


def test_voc07_thresholds_are_the_authors_float_sequence() -> None:
    # 10 positives ranked TP TP TP FP TP: recall 0.1, 0.2, 0.3, 0.3, 0.4; precision 1, 1, 1, 0.75, 0.8.
    # With thresholds k * 0.1 (np.arange(0, 1.1, 0.1), the authors' and py-faster-rcnn's), the 4th threshold is
    # 0.30000000000000004 > 3/10: only recall 0.4 reaches it (precision 0.8) -> (3 + 0.8 + 0.8) / 11 = 41.82.
    # Exact k / 10 would count recall 0.3 there (precision 1) -> 4.8 / 11 = 43.64.
    from cabench.metrics.voc_eval import VOC07_RECALL_THRESHOLDS

    assert tuple(float(t) for t in np.arange(0.0, 1.1, 0.1)) == VOC07_RECALL_THRESHOLDS
    assert VOC07_RECALL_THRESHOLDS[3] == 0.30000000000000004
    tp = np.cumsum([1, 1, 1, 0, 1])
    fp = np.cumsum([0, 0, 0, 1, 0])
    recall, precision = tp / 10, tp / (tp + fp)
    assert recall[2] == 0.3
    assert round(100 * voc07_ap(recall, precision), 2) == 41.82


def test_voc07_exact_recall_through_the_evaluator() -> None:
    # The same ranking through VocEvaluator: 10 objects in 10 images, detections scored in rank order.
    gt = {i: VocGroundTruth([[1, 1, 10, 10]], [1]) for i in range(10)}
    hit, miss = [0, 0, 10, 10], [50, 50, 60, 60]
    ranking = [(0, hit), (1, hit), (2, hit), (3, miss), (4, hit)]
    evaluator = VocEvaluator(VOC_NAMES, gt)
    targets = [{"image_id": i} for i in range(10)]
    outputs = [_output([], [], []) for _ in range(10)]
    for rank, (image, box) in enumerate(ranking):
        outputs[image] = _output([box], [1.0 - rank / 10], [1])
    evaluator.update(targets, outputs)
    assert round(evaluator.compute()["map"], 2) == 41.82


def test_coco_no_detections_keeps_cocoevals_minus_one() -> None:
    # Only large ground truth, no detections: COCOeval gives 0 where there is something to find (ap, ap50, ap75,
    # ap_l) and -1 where there is not (ap_s, ap_m).
    gt = {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "annotations": [_ann(1, 1, 1, [10, 10, 200, 200])],
        "categories": _CATEGORIES[:1],
    }
    evaluator = CocoEvaluator(gt)
    evaluator.update([{"image_id": 1}], [_output([], [], [])])
    result = evaluator.compute()
    assert result == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "ap_s": -1.0, "ap_m": -1.0, "ap_l": 0.0}
