"""Training and evaluation tasks (classification first), DDP-aware; see :mod:`cabench.tasks.classification`."""

from cabench.tasks.classification import (
    TrainingInterrupted,
    TrainSettings,
    evaluate_classifier,
    lr_at,
    train_classifier,
)

__all__ = ["TrainSettings", "TrainingInterrupted", "evaluate_classifier", "lr_at", "train_classifier"]
