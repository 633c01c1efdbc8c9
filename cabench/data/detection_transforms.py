"""Detection transforms: SSD-style training augmentation and the evaluation transform (to tensor only).

Both are callables ``(PIL image, target) -> (float32 tensor [3, H, W] in [0, 1], target)``. ``target`` is the
dict the detection datasets build: ``boxes`` (float32 ``[N, 4]``, xyxy, absolute pixels in the continuous frame
where pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``), ``labels`` (int64 ``[N]``), ``image_id`` and optionally
more per-box tensors (e.g. VOC's ``difficult``). Any tensor value whose first dimension is ``N`` is treated as
per-box and filtered together with the boxes; other values pass through.

The images are *not* normalised and not resized: the torchvision ``SSD`` does both (its transform resizes every
image to 320x320 and maps boxes back in eval). :func:`ssdlite_train_transform` can optionally resize to a fixed
size itself (``size=(320, 320)``), with the same bilinear interpolation the SSD uses, which makes the resize in the
model a no-op and keeps DataLoader traffic small after a 4x zoom-out.

Training augmentation (:class:`SSDTrainTransform`), the original SSD recipe (Liu et al., ECCV 2016, Sec. 2.2 and
3.6) as used by the authors' SSDLite code base (``houqb/ssdlite-pytorch-mobilenext``, derived from
``lufficc/SSD``), applied in this order:

1. photometric distortion: brightness shift ``U(-32, 32)/255`` (p=0.5); contrast scale ``U(0.5, 1.5)`` (p=0.5),
   before or after (p=0.5 each) saturation ``U(0.5, 1.5)`` (p=0.5) and hue shift ``U(-18, 18)`` degrees (p=0.5);
   a random channel permutation (p=0.5); values clamped to [0, 1];
2. zoom out ("expand", p=0.5): the image placed at a random integer offset on a canvas ``r`` times larger,
   ``r ~ U(1, 4)``, filled with ``fill`` (the dataset mean, ImageNet RGB (123, 117, 104) by default);
3. random IoU crop: a mode is drawn from {no crop, min IoU 0.1, 0.3, 0.7, 0.9, any} (the code base's list;
   the paper also names 0.5); up to 50 integer crops with sides ``U(0.3, 1)`` of the canvas and aspect ratio
   ``h/w`` in [0.5, 2] are tried; a crop is accepted when the best IoU between the crop and any box reaches the
   mode's minimum and at least one box centre lies strictly inside it; if all trials fail a new mode is drawn.
   Boxes whose centre lies outside the crop are dropped, the rest clipped. Images without boxes are not cropped;
4. horizontal flip (p=0.5).

Geometry is integer-valued (offsets, canvas and crop sizes), so boxes stay exact; the zoom-out canvas is never
materialised beyond the final crop. Randomness comes from torch's global generator, which DataLoader seeds per
worker.

Why not torchvision ``transforms.v2`` (``RandomPhotometricDistort``, ``RandomZoomOut``, ``RandomIoUCrop``,
``RandomHorizontalFlip``, ``SanitizeBoundingBoxes``): they build a different augmentation, not the same one with
another random stream, so no fixed-seed equality is possible. Read from torchvision 0.29's defaults:
``RandomPhotometricDistort`` scales brightness by ``U(0.875, 1.125)`` where the SSD recipe adds ``U(-32, 32)``
(hue ``+-0.05`` of a turn is the same ``+-18`` degrees); ``RandomIoUCrop`` draws its mode from
{0, 0.1, 0.3, 0.5, 0.7, 0.9, no crop} (the authors' code base has no 0.5 and keeps "any crop" apart from 0),
tries 40 crops per mode instead of 50, and measures the IoU only against boxes whose centre lies in the crop.
``RandomZoomOut`` (``side_range (1, 4)``, p 0.5) and the flip match. cabench keeps its own transform so that the
training data is the authors'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision.transforms.functional as tvf
from PIL import Image
from torch import Tensor

__all__ = [
    "IMAGENET_FILL",
    "DetectionEvalTransform",
    "SSDTrainTransform",
    "detection_eval_transform",
    "pil_to_float_tensor",
    "ssdlite_train_transform",
]

IMAGENET_FILL: tuple[int, int, int] = (123, 117, 104)
_CROP_MODES: tuple[float | None, ...] = (None, 0.1, 0.3, 0.7, 0.9, -math.inf)
_CROP_TRIALS = 50


def pil_to_float_tensor(image: Image.Image) -> Tensor:
    """An RGB float32 tensor ``[3, H, W]`` in [0, 1] from a PIL image of any mode."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return tvf.pil_to_tensor(image).to(torch.float32).div_(255.0)


def _per_box_keys(target: dict[str, Any], n: int) -> list[str]:
    return [k for k, v in target.items() if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == n]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _coin(p: float) -> bool:
    return float(torch.rand(())) < p


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, ()))


class DetectionEvalTransform:
    """PIL image -> float tensor in [0, 1]; the target is returned unchanged."""

    def __call__(self, image: Image.Image, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        return pil_to_float_tensor(image), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SSDTrainTransform:
    """The SSD training augmentation (see the module docstring). Picklable, for DataLoader workers.

    Args:
        fill: canvas colour of the zoom-out, RGB 0-255.
        photometric: apply the photometric distortion.
        max_zoom_out: largest zoom-out ratio (1 disables the zoom-out).
        zoom_out_p: probability of a zoom-out.
        crop: apply the random IoU crop.
        flip_p: probability of a horizontal flip.
        size: ``(height, width)`` to resize the result to (bilinear, as the SSD's own transform), or ``None``.
    """

    def __init__(
        self,
        fill: tuple[int, int, int] = IMAGENET_FILL,
        *,
        photometric: bool = True,
        max_zoom_out: float = 4.0,
        zoom_out_p: float = 0.5,
        crop: bool = True,
        flip_p: float = 0.5,
        size: tuple[int, int] | None = None,
    ) -> None:
        if len(fill) != 3 or not all(0 <= int(c) <= 255 for c in fill):
            raise ValueError(f"fill must be three values in 0..255, got {fill!r}")
        if max_zoom_out < 1.0:
            raise ValueError(f"max_zoom_out must be >= 1, got {max_zoom_out}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (height, width) with positive values, got {size!r}")
        self.fill = tuple(int(c) for c in fill)
        self.photometric = photometric
        self.max_zoom_out = float(max_zoom_out)
        self.zoom_out_p = float(zoom_out_p)
        self.crop = crop
        self.flip_p = float(flip_p)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fill={self.fill}, photometric={self.photometric}, "
            f"max_zoom_out={self.max_zoom_out}, zoom_out_p={self.zoom_out_p}, crop={self.crop}, "
            f"flip_p={self.flip_p}, size={self.size})"
        )

    # ------------------------------------------------------------------ photometric

    @staticmethod
    def _distort(img: Tensor) -> Tensor:
        if _coin(0.5):
            img = (img + _uniform(-32.0, 32.0) / 255.0).clamp_(0.0, 1.0)
        contrast_first = _coin(0.5)
        if contrast_first and _coin(0.5):
            img = (img * _uniform(0.5, 1.5)).clamp_(0.0, 1.0)
        if _coin(0.5):
            img = tvf.adjust_saturation(img, _uniform(0.5, 1.5)).clamp_(0.0, 1.0)
        if _coin(0.5):
            img = tvf.adjust_hue(img, _uniform(-18.0, 18.0) / 360.0).clamp_(0.0, 1.0)
        if not contrast_first and _coin(0.5):
            img = (img * _uniform(0.5, 1.5)).clamp_(0.0, 1.0)
        if _coin(0.5):
            img = img[torch.randperm(3)]
        return img

    # ------------------------------------------------------------------ geometry

    @staticmethod
    def _iou_with_crop(boxes: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
        left, top, right, bottom = crop
        iw = np.clip(np.minimum(boxes[:, 2], right) - np.maximum(boxes[:, 0], left), 0.0, None)
        ih = np.clip(np.minimum(boxes[:, 3], bottom) - np.maximum(boxes[:, 1], top), 0.0, None)
        inter = iw * ih
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return inter / (areas + (right - left) * (bottom - top) - inter)

    @staticmethod
    def _sample_crop(boxes: np.ndarray, width: int, height: int) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """A crop ``(left, top, right, bottom)`` and the mask of boxes kept, or ``None`` for "no crop"."""
        centres_x = (boxes[:, 0] + boxes[:, 2]) / 2
        centres_y = (boxes[:, 1] + boxes[:, 3]) / 2
        while True:
            mode = _CROP_MODES[_randint(0, len(_CROP_MODES) - 1)]
            if mode is None:
                return None
            for _ in range(_CROP_TRIALS):
                w = int(_uniform(0.3, 1.0) * width)
                h = int(_uniform(0.3, 1.0) * height)
                if w < 1 or h < 1 or not 0.5 <= h / w <= 2.0:
                    continue
                left = _randint(0, width - w)
                top = _randint(0, height - h)
                crop = (left, top, left + w, top + h)
                if SSDTrainTransform._iou_with_crop(boxes, crop).max() < mode:
                    continue
                inside = (centres_x > crop[0]) & (centres_x < crop[2]) & (centres_y > crop[1]) & (centres_y < crop[3])
                if not inside.any():
                    continue
                return crop, inside

    def __call__(self, image: Image.Image, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        img = pil_to_float_tensor(image)
        if self.photometric:
            img = self._distort(img)
        _, height, width = img.shape
        boxes_t = target["boxes"]
        n = int(boxes_t.shape[0])
        per_box = _per_box_keys(target, n)
        boxes = boxes_t.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
        keep = np.ones(n, dtype=bool)

        # Zoom out: the image sits at (off_x, off_y) on a canvas_w x canvas_h canvas (not materialised).
        off_x = off_y = 0
        canvas_w, canvas_h = width, height
        if self.max_zoom_out > 1.0 and _coin(self.zoom_out_p):
            ratio = _uniform(1.0, self.max_zoom_out)
            canvas_w, canvas_h = max(width, int(width * ratio)), max(height, int(height * ratio))
            off_x, off_y = _randint(0, canvas_w - width), _randint(0, canvas_h - height)
            boxes = boxes + np.array([off_x, off_y, off_x, off_y], dtype=np.float64)

        crop = (0, 0, canvas_w, canvas_h)
        if self.crop and n > 0:
            sampled = self._sample_crop(boxes, canvas_w, canvas_h)
            if sampled is not None:
                crop, keep = sampled
                boxes = boxes[keep]
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], crop[0], crop[2]) - crop[0]
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], crop[1], crop[3]) - crop[1]
        out_w, out_h = crop[2] - crop[0], crop[3] - crop[1]

        # Materialise the crop of the canvas: fill colour plus the part of the image that falls inside.
        if (off_x, off_y, canvas_w, canvas_h) == (0, 0, width, height) and crop == (0, 0, width, height):
            out = img
        else:
            fill = torch.tensor(self.fill, dtype=torch.float32).div_(255.0).view(3, 1, 1)
            out = fill.expand(3, out_h, out_w).clone()
            x0, y0 = max(crop[0], off_x), max(crop[1], off_y)
            x1, y1 = min(crop[2], off_x + width), min(crop[3], off_y + height)
            if x1 > x0 and y1 > y0:
                out[:, y0 - crop[1] : y1 - crop[1], x0 - crop[0] : x1 - crop[0]] = img[
                    :, y0 - off_y : y1 - off_y, x0 - off_x : x1 - off_x
                ]

        if _coin(self.flip_p):
            out = out.flip(-1)
            boxes = np.stack([out_w - boxes[:, 2], boxes[:, 1], out_w - boxes[:, 0], boxes[:, 3]], axis=1)

        if self.size is not None and (out_h, out_w) != self.size:
            out = nnf.interpolate(out[None], size=self.size, mode="bilinear", align_corners=False)[0]
            sy, sx = self.size[0] / out_h, self.size[1] / out_w
            boxes = boxes * np.array([sx, sy, sx, sy], dtype=np.float64)
            out_h, out_w = self.size

        boxes = boxes.reshape(-1, 4)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, out_w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, out_h)
        positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        kept_index = np.flatnonzero(keep)[positive]

        new_target = dict(target)
        index = torch.as_tensor(kept_index, dtype=torch.long)
        for key in per_box:
            new_target[key] = target[key][index]
        new_target["boxes"] = torch.as_tensor(boxes[positive], dtype=torch.float32).reshape(-1, 4)
        return out.contiguous(), new_target


def ssdlite_train_transform(
    fill: tuple[int, int, int] = IMAGENET_FILL, **options: Any
) -> Callable[[Image.Image, dict], tuple[Tensor, dict]]:
    """The SSD training augmentation (photometric, zoom out, IoU crop, flip); see :class:`SSDTrainTransform`.

    ``options`` are :class:`SSDTrainTransform`'s keyword arguments (``photometric``, ``max_zoom_out``,
    ``zoom_out_p``, ``crop``, ``flip_p``, ``size``).
    """
    return SSDTrainTransform(fill, **options)


def detection_eval_transform() -> Callable[[Image.Image, dict], tuple[Tensor, dict]]:
    """PIL image -> float32 tensor in [0, 1], boxes untouched (the SSD resizes and normalises)."""
    return DetectionEvalTransform()


def recipe_transforms(recipe: Any) -> dict[str, Any]:
    """A detection recipe's transforms: SSD augmentation, then the resize to the detector's input done in the
    loader (the SSD's own resize is then the identity), so zoomed-out canvases never travel through the
    DataLoader."""
    size = (recipe.train_size, recipe.train_size)
    flip = 0.5 if recipe.hflip else 0.0
    return {
        "train_transform": ssdlite_train_transform(size=size, flip_p=flip),
        "eval_transform": detection_eval_transform(),
    }
