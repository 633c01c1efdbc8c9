"""The evaluation shows its own progress (images done / total), never "loss nan lr nan" (issue 12's trap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cabench.cli import step_view
from cabench.engine import EvalSetup, TrainSettings
from cabench.engine.sampling import eval_progress
from cabench.tasks._impl.classification import evaluate_classifier, train_classifier


def _data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))


def test_an_evaluation_reports_images_done_over_total_batch_by_batch() -> None:
    seen: list[tuple[int, int]] = []
    with eval_progress(lambda done, total: seen.append((done, total))):
        metrics = evaluate_classifier(_net(), _data(21), EvalSetup(8))
    assert seen == [(0, 21), (8, 21), (16, 21), (21, 21)] and metrics["n"] == 21
    seen.clear()
    evaluate_classifier(_net(), _data(21), EvalSetup(8))  # outside the context: nothing reported
    assert seen == []


def test_the_final_evaluation_of_a_training_run_shows_images_not_loss_and_lr(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    settings = TrainSettings(lr=0.1, batch_size=8, epochs=1, seed=0, log_every=1)
    train_classifier(_net(), _data(16), _data(13, 1), settings, tmp_path, progress=events.append)
    evals = [e for e in events if e.get("phase") == "eval" and "images_total" in e]
    assert evals and evals[-1]["images_done"] == evals[-1]["images_total"] == 13
    views = [step_view(e) for e in events if e.get("phase") == "eval"]
    assert all("nan" not in text and "loss" not in text for _, _, text in views)
    assert views[-1] == (13, 13, "evaluating: 13/13 images")
    train = step_view(next(e for e in events if e.get("phase") == "train"))
    assert "loss" in train[2] and "nan" not in train[2]


@pytest.mark.slow
def test_cabench_eval_drives_its_progress_with_images(tmp_path: Path) -> None:
    from cabench.data.fixtures.imagenet import write_imagenet_fixture
    from cabench.models.mobilenetv2 import MobileNetV2
    from cabench.models.registry import ModelSpec
    from cabench.profiles.evaluate import evaluate_checkpoint

    root = write_imagenet_fixture(tmp_path / "imagenet", train_per_class=1, val_per_class=2)
    ckpt = tmp_path / "w.pth"
    torch.save({"model": MobileNetV2(width=0.5, attention="ca", num_classes=1000).state_dict()}, ckpt)
    calls: list[tuple[int, int, str]] = []
    spec = ModelSpec("mobilenetv2", 0.5, "ca")
    metrics, _, _ = evaluate_checkpoint(
        spec, ckpt, {"imagenet": root}, batch_size=3, progress=lambda *a: calls.append(a)
    )
    n = metrics["val_n"]
    assert calls[0] == (0, n, "images") and calls[-1] == (n, n, "images") and len(calls) == 1 + -(-n // 3)


def test_without_a_terminal_progress_is_a_plain_line_now_and_then(capsys: pytest.CaptureFixture[str]) -> None:
    # Under nohup a run used to log nothing for minutes: the bar is TTY-only.
    from cabench.cli import _PlainProgress

    plain = _PlainProgress("table1/ca", every_s=3600)
    plain.show(1, 100, "loss 2.3")  # within the interval: quiet
    plain.last -= 3600
    plain.show(50, 100, "loss 1.1 ETA 00:10")
    plain.show(100, 100, "loss 0.9")  # the last step always
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["table1/ca: 50/100 loss 1.1 ETA 00:10", "table1/ca: 100/100 loss 0.9"]
