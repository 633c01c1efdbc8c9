"""Per-image outcomes recompute each evaluator's metric exactly, on the full set and on a resample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cabench import outcomes
from cabench.data.voc_detection import VOC_CLASSES
from cabench.metrics.segmentation import ConfusionMatrix, miou_of_matrix, per_image_confusion
from cabench.metrics.voc_eval import VocEvaluator, VocGroundTruth, voc07_map_of_outcomes
from cabench.tasks.base import statistic_for

VOC_NAMES = ["__background__", *VOC_CLASSES]


def _random_voc(rng: np.random.Generator, n_images: int, copy_of: dict[int, int] | None = None) -> VocEvaluator:
    """Random ground truth and noisy detections; ``copy_of`` adds images that repeat another one exactly."""
    gt, dets = {}, {}
    for i in range(n_images):
        k = int(rng.integers(1, 6))
        xy = rng.uniform(1, 200, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (k, 2))], axis=1).round()
        labels = rng.integers(1, 6, k)
        gt[i] = VocGroundTruth(boxes, labels, rng.random(k) < 0.15)
        m = int(rng.integers(0, 8))
        pick = rng.integers(0, k, m)
        det = boxes[pick] - [1, 1, 0, 0] + rng.normal(0, 6, (m, 4))
        det_labels = np.where(rng.random(m) < 0.8, labels[pick], rng.integers(1, 6, m))
        dets[i] = {
            "boxes": torch.tensor(det),
            "scores": torch.tensor(rng.random(m)),
            "labels": torch.tensor(det_labels),
        }
    for new, old in (copy_of or {}).items():
        gt[new], dets[new] = gt[old], dets[old]
    ev = VocEvaluator(VOC_NAMES, gt)
    ids = sorted(gt)
    ev.update([{"image_id": i} for i in ids], [dets[i] for i in ids])
    return ev


def test_voc_outcomes_give_the_evaluators_map() -> None:
    ev = _random_voc(np.random.default_rng(0), 60)
    ids, arrays = ev.per_image_outcomes()
    assert list(ids) == list(range(60)) and arrays["npos"].shape == (60, 21)
    assert voc07_map_of_outcomes(arrays) == pytest.approx(ev.compute()["map"], abs=1e-9)


def test_voc_resample_weights_count_an_image_as_often_as_drawn() -> None:
    # Image 0 drawn three times, image 1 twice, image 4 never: the same as evaluating those copies.
    rng_seed = 3
    base = _random_voc(np.random.default_rng(rng_seed), 6)
    _, arrays = base.per_image_outcomes()
    weights = np.array([3, 2, 1, 1, 0, 1], dtype=float)
    copies = _random_voc(np.random.default_rng(rng_seed), 6, copy_of={6: 0, 7: 0, 8: 1})
    kept = {i: copies.ground_truth[i] for i in copies.ground_truth if i != 4}
    again = VocEvaluator(VOC_NAMES, kept)
    again.update([{"image_id": i} for i in sorted(kept)], [_as_output(copies, i) for i in sorted(kept)])
    assert voc07_map_of_outcomes(arrays, weights) == pytest.approx(again.compute()["map"], abs=1e-9)


def _as_output(ev: VocEvaluator, image_id: int) -> dict[str, torch.Tensor]:
    boxes, scores, labels = ev._detections[image_id]
    return {"boxes": torch.tensor(boxes - [1, 1, 0, 0]), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}


def test_segmentation_per_image_matrices_sum_to_the_evaluators() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (4, 9, 7), generator=g)
    target = torch.randint(0, 5, (4, 9, 7), generator=g)
    target[torch.rand(4, 9, 7, generator=g) < 0.2] = 255
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    per = per_image_confusion(pred, target, 5)
    assert per.shape == (4, 5, 5) and torch.equal(per.sum(0), cm.matrix)
    one = ConfusionMatrix(5)
    one.update(pred[2:3], target[2:3])
    assert torch.equal(per[2], one.matrix)
    assert miou_of_matrix(per.sum(0).numpy()) == pytest.approx(cm.compute()["miou"], abs=1e-12)
    weights = np.array([2.0, 0.0, 1.0, 1.0])
    twice = ConfusionMatrix(5)
    for i, k in enumerate(weights.astype(int)):
        for _ in range(k):
            twice.update(pred[i : i + 1], target[i : i + 1])
    o = outcomes.Outcomes("segment", np.arange(4), {"confusion": per.numpy().astype(np.int32)})
    stat = statistic_for("segment", "miou")
    assert stat is not None and stat(o, weights) == pytest.approx(twice.compute()["miou"], abs=1e-12)


def test_outcomes_round_trip_through_the_run_directory(tmp_path: Path) -> None:
    correct = np.random.default_rng(0).random(1001) < 0.7
    o = outcomes.Outcomes("classify", np.arange(1001), {"correct1": correct, "correct5": correct | True})
    path = o.save(tmp_path)
    assert path.name == "per_image.npz" and path.stat().st_size < 1000  # packed bits, compressed
    back = outcomes.load(tmp_path)
    assert back is not None and back.kind == "classify" and back.n == 1001
    assert np.array_equal(back.arrays["correct1"], correct) and back.arrays["correct5"].all()
    stat = statistic_for("classify", "top1")
    assert stat is not None and stat(back, np.ones(1001)) == pytest.approx(100 * correct.mean())
    assert outcomes.load(tmp_path / "nothing") is None
    assert statistic_for("coco", "ap") is None


def test_split_takes_the_outcomes_out_of_the_metrics() -> None:
    o = outcomes.Outcomes("classify", np.arange(2), {"correct1": np.array([True, False])})
    metrics, got = outcomes.split({"top1": 50.0, outcomes.KEY: o})
    assert metrics == {"top1": 50.0} and got is o
    assert outcomes.split({"top1": 1.0}) == ({"top1": 1.0}, None)


def test_coco_outcomes_evaluate_again_to_what_compute_gives_past_100_detections_an_image() -> None:
    # Issue 22: 150 confident detections of one category and one right detection of another in one image; the
    # outcomes kept each image's top 100 over all categories, dropping the right one: 0.0 where compute() gave 100.
    from cabench.metrics.coco_eval import CocoEvaluator

    gt = {
        "images": [{"id": 3, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 5, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}],
    }
    boxes = torch.cat([torch.tensor([[50.0, 50.0, 90.0, 90.0]]).repeat(150, 1), torch.tensor([[10.0, 10, 40, 40]])])
    scores = torch.cat([torch.linspace(0.5, 0.99, 150), torch.tensor([0.2])])
    labels = torch.cat([torch.ones(150, dtype=torch.int64), torch.tensor([2])])
    ev = CocoEvaluator(gt)
    ev.update([{"image_id": 3}], [{"boxes": boxes, "scores": scores, "labels": labels}])
    ids, arrays = ev.per_image_outcomes()
    again = CocoEvaluator(gt)
    for i, image_id in enumerate(ids):
        mine = arrays["det_image"] == i
        box, score = arrays["det_box"][mine].astype(np.float64), arrays["det_score"][mine].astype(np.float64)
        again._detections[int(image_id)] = (box, score, arrays["det_label"][mine].astype(np.int64))
    assert ev.compute()["ap"] == pytest.approx(100.0)
    assert again.compute() == pytest.approx(ev.compute())


def test_coco_outcomes_keep_each_images_top_100_detections() -> None:
    from cabench.metrics.coco_eval import CocoEvaluator

    gt = {
        "images": [{"id": 3, "width": 100, "height": 100}, {"id": 9, "width": 100, "height": 100}],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}],
    }
    ev = CocoEvaluator(gt)
    scores = torch.linspace(0.01, 0.99, 150)
    boxes = torch.tensor([[1.0, 2.0, 11.0, 22.0]]).repeat(150, 1)
    ev.update(
        [{"image_id": 9}, {"image_id": 3}],
        [
            {"boxes": boxes, "scores": scores, "labels": torch.full((150,), 2)},
            {"boxes": boxes[:2], "scores": scores[:2], "labels": torch.ones(2, dtype=torch.int64)},
        ],
    )
    ids, arrays = ev.per_image_outcomes()
    assert list(ids) == [3, 9] and ev.outcome_kind == "coco"
    assert list(np.bincount(arrays["det_image"])) == [2, 100]
    top = arrays["det_score"][arrays["det_image"] == 1]
    assert top.min() == pytest.approx(float(scores[50])) and set(arrays["det_label"][2:]) == {5}
    assert arrays["det_box"][0].tolist() == [1.0, 2.0, 10.0, 20.0]  # xywh
    assert len(ev._detections[9][1]) == 150  # the evaluator itself keeps everything
