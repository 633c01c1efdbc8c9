"""Semantic-segmentation transforms (DeepLabV3 practice), ``pad_collate``, and the file readers the datasets share.

Conventions shared by :mod:`cabench.data.voc_segmentation` and :mod:`cabench.data.cityscapes`:

* a dataset reads an image as a uint8 tensor ``[3, H, W]`` (RGB) and its mask as a uint8 tensor ``[H, W]`` of
  class indices ``0..C-1`` or ``IGNORE_INDEX`` (255), then calls ``transform(image, mask)`` (the transforms also
  take float images in [0, 1] and masks of any integer dtype);
* a transform returns ``(image, mask)``: image float32 ``[3, H', W']`` normalized with the ImageNet mean/std,
  mask int64 ``[H', W']``. Padding is always at the bottom/right, with 0 in the image (the mean colour after
  normalization) and 255 in the mask, so padded pixels never count in the loss or in the confusion matrix.

Train (:class:`SegmentationTrainTransform`), in this order, each random draw from torch's global RNG only
(``torch.rand``/``torch.randint``) so that seeding torch per sample makes a sample's augmentation reproducible:

1. scale by a factor drawn from ``scale_range`` (one ``torch.rand`` draw): image bilinear (no antialiasing, as
   TF's ``resize_bilinear``), mask nearest;
2. pad bottom/right to at least ``crop_size`` x ``crop_size``;
3. random crop ``crop_size`` x ``crop_size`` (two ``torch.randint`` draws: top, then left);
4. horizontal flip with probability ``flip_p`` (one ``torch.rand`` draw);
5. normalize with the ImageNet mean/std.

Eval (:class:`SegmentationEvalTransform`): normalize; with ``eval_size``, pad bottom/right to ``eval_size`` x
``eval_size`` (a side already longer is left as it is), the fixed 513 x 513 input of DeepLab's VOC evaluation.

Why not torchvision ``transforms.v2`` with ``tv_tensors.Mask``: its scale transforms draw a different quantity
(torchvision 0.29: ``RandomResize`` an integer shorter side in ``[min_size, max_size)``; ``ScaleJitter`` a factor of
a fixed ``target_size``, not of the image's own size) and antialias the image by default, so none of them is
DeepLabV3's "scale the image by U(0.5, 2)". The crop, pad and flip steps alone would be ``RandomCrop`` with
``pad_if_needed`` (which pads on every side, not bottom/right) and ``RandomHorizontalFlip``; cabench keeps its own
steps so that one ``torch.rand`` per draw keeps a sample's augmentation reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cabench.data.base import SMOKE_SIZES
from cabench.data.errors import DatasetError
from cabench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IGNORE_INDEX",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "bad_values",
    "check_same_size",
    "pad_collate",
    "read_label_png",
]

IGNORE_INDEX = 255
_LABEL_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B")  # single-channel integer PNG modes in PIL


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------- file readers


def read_label_png(path: Path) -> np.ndarray:
    """Read a label PNG's stored values as a ``(H, W)`` integer array (the palette *indices* of a mode-P PNG).

    Raises ``DatasetError`` naming the file if it is unreadable, not a PNG, or not single-channel (e.g. an RGB
    colour rendering of the labels).
    """

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise DatasetError(f"{path}: label file is not a PNG (found {image.format or 'unknown'} data)")
            if image.mode not in _LABEL_MODES:
                raise DatasetError(
                    f"{path}: label PNG has mode {image.mode}; expected a single-channel index map (mode L or P), "
                    "not a colour rendering"
                )
            labels = np.asarray(image)  # mode P gives the indices, never the palette colours
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable label PNG ({type(exc).__name__}: {_one_line(exc)})") from exc
    if labels.ndim != 2:
        raise DatasetError(f"{path}: label PNG decodes to shape {labels.shape}, expected (H, W)")
    return labels


def check_same_size(image: Tensor, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    """``DatasetError`` naming the mask if its (H, W) differs from the image's."""
    h, w = image.shape[-2:]
    if tuple(mask.shape) != (h, w):
        raise DatasetError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image_path} is {w}x{h}"
        )


def bad_values(values: np.ndarray, limit: int = 5) -> str:
    """The first ``limit`` distinct values of ``values``, comma-separated, for error messages."""
    distinct = np.unique(values)
    shown = ", ".join(str(int(v)) for v in distinct[:limit])
    return shown + (f", ... ({len(distinct)} distinct)" if len(distinct) > limit else "")


# ---------------------------------------------------------------- transforms


def _normalizer(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    return (
        torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
        torch.tensor(std, dtype=torch.float32).view(3, 1, 1),
    )


def _to_unit_float(image: Tensor) -> Tensor:
    """uint8 ``[3, H, W]`` -> float32 in [0, 1]; a float image is taken to be in [0, 1] already."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(255.0)
    return image.to(torch.float32)


def _resize_nearest(mask: Tensor, height: int, width: int) -> Tensor:
    """Nearest-neighbour resize of an integer mask; "nearest-exact" samples pixel centres like bilinear does."""
    lo, hi = torch.aminmax(mask)
    dtype = torch.uint8 if int(lo) >= 0 and int(hi) <= 255 else torch.float64  # holds the labels exactly
    resized = F.interpolate(mask.to(dtype)[None, None], size=(height, width), mode="nearest-exact")[0, 0]
    return resized.to(mask.dtype)


def _check_pair(image: Tensor, mask: Tensor) -> None:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"segmentation transform: image must be [3, H, W], got {list(image.shape)}")
    if mask.shape != image.shape[1:]:
        raise ValueError(f"segmentation transform: mask {list(mask.shape)} does not match image {list(image.shape)}")


class SegmentationTrainTransform:
    """DeepLabV3 training augmentation on an ``(image uint8 [3,H,W], mask uint8 [H,W])`` pair; see the module doc.

    The scale factor is drawn *continuously*, uniform in ``scale_range`` (the usual PyTorch DeepLab practice).
    TF DeepLab's ``train.py`` instead draws from steps of ``scale_factor_step_size=0.25`` (0.5, 0.75, ..., 2.0);
    pass ``scale_step=0.25`` for that. Either way exactly one ``torch.rand`` value is consumed for the scale.
    """

    def __init__(
        self,
        crop_size: int = 513,
        scale_range: tuple[float, float] = (0.5, 2.0),
        *,
        scale_step: float | None = None,
        flip_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        lo, hi = (float(s) for s in scale_range)
        if crop_size < 1:
            raise ValueError(f"SegmentationTrainTransform: crop_size must be positive, got {crop_size}")
        if not 0 < lo <= hi:
            raise ValueError(f"SegmentationTrainTransform: need 0 < min <= max in scale_range, got {scale_range}")
        if scale_step is not None and scale_step <= 0:
            raise ValueError(f"SegmentationTrainTransform: scale_step must be positive, got {scale_step}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"SegmentationTrainTransform: flip_p must be in [0, 1], got {flip_p}")
        self.crop_size = int(crop_size)
        self.scale_range = (lo, hi)
        self.scale_step = scale_step
        self.flip_p = float(flip_p)
        self.mean, self.std = tuple(mean), tuple(std)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop_size={self.crop_size}, scale_range={self.scale_range}, "
            f"scale_step={self.scale_step}, flip_p={self.flip_p})"
        )

    def draw_scale(self) -> float:
        """One scale factor from torch's global RNG (one ``torch.rand`` draw)."""
        lo, hi = self.scale_range
        u = float(torch.rand(()))
        if self.scale_step is None:
            return lo + (hi - lo) * u
        steps = int((hi - lo) / self.scale_step + 1e-9) + 1
        return lo + min(int(u * steps), steps - 1) * self.scale_step

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair(image, mask)
        h, w = image.shape[-2:]
        scale = self.draw_scale()
        sh, sw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        if (sh, sw) != (h, w):
            # uint8 images are resized as uint8 (several times faster than float32, within 1 grey level of it)
            if image.dtype != torch.uint8:
                image = image.to(torch.float32)
            image = F.interpolate(image[None], size=(sh, sw), mode="bilinear", align_corners=False, antialias=False)[0]
            mask = _resize_nearest(mask, sh, sw)

        # Padding is bottom/right only, so the crop window of the padded image always holds the image part at
        # its top-left corner: copy that part onto a canvas of padding values instead of padding the whole image.
        crop = self.crop_size
        top = int(torch.randint(max(sh, crop) - crop + 1, ()))
        left = int(torch.randint(max(sw, crop) - crop + 1, ()))
        flip = bool(torch.rand(()) < self.flip_p)

        part = _to_unit_float(image[:, top : top + crop, left : left + crop])
        mean, std = _normalizer(self.mean, self.std)
        out_image = torch.zeros(3, crop, crop, dtype=torch.float32)
        out_image[:, : part.shape[1], : part.shape[2]] = (part - mean) / std
        out_mask = torch.full((crop, crop), IGNORE_INDEX, dtype=torch.int64)
        out_mask[: part.shape[1], : part.shape[2]] = mask[top : top + crop, left : left + crop]
        if flip:
            out_image, out_mask = out_image.flip(-1), out_mask.flip(-1)
        return out_image.contiguous(), out_mask.contiguous()


class SegmentationEvalTransform:
    """Evaluation: normalize; with ``eval_size``, pad bottom/right to ``eval_size`` x ``eval_size`` (image 0, mask
    255; a side longer than ``eval_size`` is left unpadded). No randomness."""

    def __init__(
        self,
        eval_size: int | None = None,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if eval_size is not None and eval_size < 1:
            raise ValueError(f"SegmentationEvalTransform: eval_size must be positive or None, got {eval_size}")
        self.eval_size = eval_size
        self.mean, self.std = tuple(mean), tuple(std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eval_size={self.eval_size})"

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair(image, mask)
        mean, std = _normalizer(self.mean, self.std)
        image = (_to_unit_float(image) - mean) / std
        mask = mask.to(torch.int64)
        if self.eval_size is None:
            return image.contiguous(), mask.contiguous()
        h, w = image.shape[-2:]
        ph, pw = max(h, self.eval_size), max(w, self.eval_size)
        if (ph, pw) == (h, w):
            return image.contiguous(), mask.contiguous()
        out_image = torch.zeros(3, ph, pw, dtype=torch.float32)
        out_image[:, :h, :w] = image
        out_mask = torch.full((ph, pw), IGNORE_INDEX, dtype=torch.int64)
        out_mask[:h, :w] = mask
        return out_image, out_mask


def pad_collate(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack ``(image [3,H,W], mask [H,W])`` pairs of different sizes: pad bottom/right to the batch's largest H
    and W, images with 0 (the mean colour after normalization) and masks with 255. Returns ``[N,3,H,W]``, ``[N,H,W]``.
    """

    if not batch:
        raise ValueError("pad_collate: empty batch")
    height = max(int(image.shape[-2]) for image, _ in batch)
    width = max(int(image.shape[-1]) for image, _ in batch)
    first_image, first_mask = batch[0]
    images = torch.zeros(len(batch), first_image.shape[0], height, width, dtype=first_image.dtype)
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=first_mask.dtype)
    for k, (image, mask) in enumerate(batch):
        if mask.shape != image.shape[-2:]:
            raise ValueError(
                f"pad_collate: sample {k}: mask {list(mask.shape)} does not match image {list(image.shape)}"
            )
        h, w = image.shape[-2:]
        images[k, :, :h, :w] = image
        masks[k, :h, :w] = mask
    return images, masks


def segmentation_sizes(recipe: Any) -> dict[str, Any]:
    """Crop, scale range, flip probability and evaluation padding from a recipe."""
    flip = {"flip_p": 0.5 if recipe.hflip else 0.0}
    sizes = {"crop_size": recipe.crop_size, "scale_range": tuple(recipe.scale_range), "eval_size": recipe.eval_size}
    return sizes | flip


def at_smoke_sizes(recipe: Any) -> Any:
    """A segmentation recipe at the smoke profile's 64-pixel crops, unpadded evaluation, and a sliding window (if
    the recipe evaluates with one) scaled like its crops."""
    crop = SMOKE_SIZES["crop_size"]
    update: dict[str, Any] = {"crop_size": crop, "eval_size": None}
    protocol = recipe.segmentation
    if protocol is not None and protocol.eval_mode == "sliding":
        window = max(1, round(protocol.window * crop / recipe.crop_size))
        stride = min(window, max(1, round(protocol.stride * crop / recipe.crop_size)))
        update["segmentation"] = protocol.model_copy(update={"window": window, "stride": stride})
    return recipe.model_copy(update=update)


def deeplab_transforms(
    crop_size: int,
    scale_range: tuple[float, float],
    eval_size: int | None,
    flip_p: float,
    train_transform: Any | None = None,
    eval_transform: Any | None = None,
) -> tuple[Any, Any]:
    """``(train, eval)`` transforms: those given, else DeepLabV3's (random scale in ``scale_range``, crop to
    ``crop_size``, flip with probability ``flip_p``; evaluation normalised and padded to ``eval_size``, or at its
    own size when None)."""
    train = train_transform or SegmentationTrainTransform(crop_size=crop_size, scale_range=scale_range, flip_p=flip_p)
    return train, eval_transform or SegmentationEvalTransform(eval_size)


def recipe_transforms(recipe: Any) -> dict[str, Any]:
    """A segmentation recipe's ``train_transform`` and ``eval_transform`` (see :func:`segmentation_sizes`)."""
    sizes = segmentation_sizes(recipe)
    train = SegmentationTrainTransform(
        crop_size=sizes["crop_size"], scale_range=tuple(sizes["scale_range"]), flip_p=sizes["flip_p"]
    )
    return {"train_transform": train, "eval_transform": SegmentationEvalTransform(sizes["eval_size"])}
