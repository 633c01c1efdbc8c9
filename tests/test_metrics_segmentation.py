"""mIoU from a confusion matrix (cabench.metrics.segmentation)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from cabench.metrics.segmentation import ConfusionMatrix

# A hand-built case, 3 classes (rows = ground truth, columns = prediction):
#
#            pred 0  pred 1  pred 2 | GT total
#   GT 0        4       1       2   |   7
#   GT 1        0       3       0   |   3
#   GT 2        1       0       1   |   2
#   pred total  5       4       3   |  12
#
#   IoU_0 = 4 / (7 + 5 - 4) = 4/8 = 1/2
#   IoU_1 = 3 / (3 + 4 - 3) = 3/4
#   IoU_2 = 1 / (2 + 3 - 1) = 1/4
#   mIoU  = (1/2 + 3/4 + 1/4) / 3 = 1/2  ->  50 % (every step exact in binary floating point)
#   pixel accuracy = (4 + 3 + 1) / 12 = 2/3  ->  66.67 %
#
# A 4th class with no ground-truth and no predicted pixel has no IoU and must not change the mean.
MATRIX = [[4, 1, 2], [0, 3, 0], [1, 0, 1]]


def _pixels(matrix: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) 1-D tensors whose confusion matrix is ``matrix``."""
    pred, target = [], []
    for gt, row in enumerate(matrix):
        for p, count in enumerate(row):
            pred += [p] * count
            target += [gt] * count
    return torch.tensor(pred), torch.tensor(target)


def test_hand_built_matrix_gives_the_worked_out_miou() -> None:
    cm = ConfusionMatrix(3, class_names=["a", "b", "c"])
    cm.matrix += torch.tensor(MATRIX)
    result = cm.compute()
    assert result["miou"] == 50.0  # exact
    assert result["per_class_iou"] == {"a": 50.0, "b": 75.0, "c": 25.0}
    assert result["pixel_acc"] == pytest.approx(200.0 / 3.0)
    assert set(result) == {"miou", "pixel_acc", "per_class_iou"}


def test_update_builds_the_matrix_and_skips_ignore_pixels() -> None:
    pred, target = _pixels(MATRIX)
    # 5 ignored pixels, with predictions that would otherwise land in every row
    pred = torch.cat([pred, torch.tensor([0, 1, 2, 3, 0])])
    target = torch.cat([target, torch.full((5,), 255)])
    order = torch.randperm(pred.numel(), generator=torch.Generator().manual_seed(0))
    pred, target = pred[order].reshape(1, 1, 17), target[order].reshape(1, 1, 17)  # [N, H, W]

    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[:3, :3] = torch.tensor(MATRIX)
    assert cm.matrix.dtype == torch.int64
    assert torch.equal(cm.matrix, expected)
    result = cm.compute()
    assert result["miou"] == 50.0  # class 3: ignored-pixel predictions do not count, so it stays absent
    assert result["per_class_iou"]["3"] is None


def test_updates_accumulate_over_batches() -> None:
    pred, target = _pixels(MATRIX)
    cm = ConfusionMatrix(3)
    cm.update(pred[:5], target[:5])
    cm.update(pred[5:].to(torch.uint8), target[5:].to(torch.int32))  # any integer dtypes
    assert torch.equal(cm.matrix, torch.tensor(MATRIX))
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_perfect_prediction_gives_100() -> None:
    target = torch.randint(0, 21, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    target[0, :4] = 255
    cm = ConfusionMatrix(21)
    cm.update(target.clone().clamp(max=20), target)
    result = cm.compute()
    assert result["miou"] == 100.0
    assert result["pixel_acc"] == 100.0


def test_class_absent_from_gt_and_prediction_is_excluded() -> None:
    # classes 0 and 2 present, class 1 nowhere: IoU_0 = 3/(4+3-3) = 3/4, IoU_2 = 1/(1+2-1) = 1/2 -> mean 5/8
    target = torch.tensor([0, 0, 0, 0, 2])
    pred = torch.tensor([0, 0, 0, 2, 2])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    result = cm.compute()
    assert result["per_class_iou"] == {"0": 75.0, "1": None, "2": 50.0}
    assert result["miou"] == 62.5


def test_class_predicted_but_absent_from_gt_counts_as_zero() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))  # IoU_0 = 1/2, IoU_1 = 0/1 = 0
    result = cm.compute()
    assert result["per_class_iou"] == {"0": 50.0, "1": 0.0}
    assert result["miou"] == 25.0


def test_empty_matrix_gives_nan() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([1, 2]), torch.tensor([255, 255]))
    result = cm.compute()
    assert math.isnan(result["miou"]) and math.isnan(result["pixel_acc"])
    assert result["per_class_iou"] == {"0": None, "1": None, "2": None}


def test_update_rejects_bad_inputs() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="differ"):
        cm.update(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="target values"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="predicted values"):
        cm.update(torch.tensor([0, -1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        cm.update(torch.zeros(2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError):
        ConfusionMatrix(3, class_names=["a"])
    with pytest.raises(ValueError):
        ConfusionMatrix(3, ignore_index=1)
    assert int(cm.matrix.sum()) == 0


def test_all_reduce_is_a_no_op_without_a_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialized in this test process")
    cm = ConfusionMatrix(3)
    cm.matrix += torch.tensor(MATRIX)
    cm.all_reduce()
    assert torch.equal(cm.matrix, torch.tensor(MATRIX))


def test_all_reduce_sums_in_a_one_process_group(tmp_path: Path) -> None:
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm = ConfusionMatrix(3)
        cm.matrix += torch.tensor(MATRIX)
        cm.all_reduce()
        assert torch.equal(cm.matrix, torch.tensor(MATRIX))  # world size 1: the sum is the matrix itself
    finally:
        dist.destroy_process_group()
