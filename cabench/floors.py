"""Floors: what a task's evaluator gives a predictor that needs no deep network, reported beside a suite's rows.

A suite row may name a floor instead of a model (``floor: logistic-pixels``); ``cabench run SUITE --profile
paper`` computes it on the suite recipe's datasets, through the same evaluator as the trained rows, and
records it as a run like any row. A trained row that does not clearly beat its floor has learned nothing the
data does not give away.

* ``logistic-pixels`` (classification): scikit-learn's multinomial logistic regression on the raw RGB pixels
  of the training images (scaled to 0..1, standardised), top-1 on the val images.
* ``mean-box`` (detection): the same boxes for every image whatever it shows: for each class, its mean
  training box (in image-relative coordinates), scored with the class's share of training boxes; VOC07 mAP.
* ``all-background`` (segmentation): every pixel predicted background; mIoU over the val masks.

Floors register in :data:`FLOORS` (a :class:`cabench.registry.Registry`); a plugin can add its own. A
task declares which floors its suites' rows may name (:attr:`cabench.tasks.base.TaskInfo.floors`), and a
floor is called with that task: a floor that computes one number reports it under the task's headline
metric, one that runs the dataset's evaluator reports what the evaluator reports.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cabench.registry import Registry

if TYPE_CHECKING:
    import numpy as np  # imported where a floor is computed: naming floors (listing suites) imports no numpy

__all__ = ["FLOORS", "FloorFn", "all_background", "logistic_pixels", "mean_box", "spread_images"]

FloorFn = Callable[[Any, Any, Any], dict[str, Any]]  # (train dataset, evaluation dataset, TaskInfo) -> metrics
FLOORS: Registry[FloorFn] = Registry("floor")


def spread_images(ds: Any, n: int) -> Any:
    """An ImageFolder-like ``ds`` (one that lists ``samples``) cut to about ``n`` images taken at an even stride,
    so every class keeps its share; any other dataset, or one of at most ``n`` images, as it is."""
    samples = getattr(ds, "samples", None)
    if not isinstance(samples, list) or len(samples) <= n:
        return ds
    cut = copy.copy(ds)
    cut.samples = samples[:: -(-len(samples) // n)]
    cut.imgs, cut.targets = cut.samples, [label for _, label in cut.samples]
    return cut


def _pixels(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels of an ImageFolder's images (as stored), flattened and scaled to 0..1, and the labels."""
    import numpy as np
    from PIL import Image

    rows, labels = [], []
    for path, label in ds.samples:
        with Image.open(path) as image:
            rows.append(np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1) / 255.0)
        labels.append(label)
    return np.stack(rows), np.asarray(labels)


@FLOORS.register("logistic-pixels")
def logistic_pixels(train: Any, val: Any, task: Any) -> dict[str, Any]:
    """Top-1 (%) of a logistic regression on raw pixels, as ``task``'s headline metric; images must all have
    one size."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = _pixels(train)
    x_val, y_val = _pixels(val)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.01))
    model.fit(x_train, y_train)
    top1 = 100.0 * float((model.predict(x_val) == y_val).mean())
    return {task.headline_metric: top1, "val_n": len(y_val), "train_n": len(y_train), "floor": "logistic-pixels"}


@FLOORS.register("mean-box")
def mean_box(train: Any, val: Any, task: Any) -> dict[str, Any]:
    """VOC mAP (%) of predicting, in every image, each class's mean training box scored by the class's share."""
    import numpy as np
    import torch

    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for i in range(len(train)):
        target = train.target(i)
        width, height = train.image_size(i)
        for box, label in zip(target["boxes"].numpy(), target["labels"].tolist(), strict=True):
            sums[label] = sums.get(label, np.zeros(4)) + box / np.array([width, height, width, height])
            counts[label] = counts.get(label, 0) + 1
    total = sum(counts.values())
    labels = sorted(counts)
    relative = np.stack([sums[c] / counts[c] for c in labels]) if labels else np.zeros((0, 4))
    scores = torch.tensor([counts[c] / total for c in labels], dtype=torch.float32)
    evaluator = val.make_evaluator()
    for i in range(len(val)):
        width, height = val.image_size(i)
        boxes = torch.as_tensor(relative * np.array([width, height, width, height]), dtype=torch.float32)
        output = {"boxes": boxes, "scores": scores, "labels": torch.tensor(labels, dtype=torch.int64)}
        evaluator.update([val.target(i)], [output])
    return {**evaluator.compute(), "val_n": len(val), "floor": "mean-box"}


@FLOORS.register("all-background")
def all_background(train: Any, val: Any, task: Any) -> dict[str, Any]:
    """mIoU (%) of predicting background (class 0) everywhere."""
    import torch

    from cabench.metrics.segmentation import ConfusionMatrix

    matrix = ConfusionMatrix(val.num_classes, ignore_index=val.ignore_index, class_names=val.class_names)
    for i in range(len(val)):
        _, mask = val.load(i)
        matrix.update(torch.zeros_like(mask, dtype=torch.int64), mask)
    return {**matrix.compute(), "val_n": len(val), "floor": "all-background"}
