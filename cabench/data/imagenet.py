"""ImageNet (ILSVRC-2012) as a torchvision ImageFolder, with the MobileNetV2 training recipe's transforms.

Expected layout (the usual "extracted and sorted into class folders" ImageNet)::

    <root>/train/<wnid>/*.JPEG
    <root>/val/<wnid>/*.JPEG

Image files are those ending in .jpg, .jpeg or .png (any case); anything else is ignored, the same rule for
validation and for loading.

The paper trains "using the same methods as in MobileNetV2", i.e. the standard Inception-style augmentation:

* train: RandomResizedCrop(224) + RandomHorizontalFlip + to float + Normalize(ImageNet mean/std)
* eval:  Resize(256) + CenterCrop(224) + to float + Normalize(ImageNet mean/std)

all through torchvision ``transforms.v2``. A recipe can change the crop's area range, the flip, and add AutoAugment
(ImageNet policy) and random erasing (:func:`recipe_train_transform`). Sizes come from the recipe; the smoke
profile trains the recipe :func:`at_smoke_sizes` gives (64-pixel crops).

Where the data lives is decided by :mod:`cabench.data.roots` (``--data``, the environment, the config file).

torch, torchvision and PIL are imported lazily.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cabench.data.base import SMOKE_SIZES
from cabench.data.errors import BadImageError, DatasetError, dataset_root
from cabench.data.images import IMAGE_EXTENSIONS, decode_rgb, is_image, load_rgb, walk_files
from cabench.data.subsets import Selection, class_folders, load_selection

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageFolderInfo",
    "build_imagenet",
    "build_subset",
    "eval_transform",
    "imagenet_datasets",
    "imagenet_eval_dataset",
    "imagenet_eval_only",
    "recipe_train_transform",
    "recipe_transforms",
    "subset_datasets",
    "subset_eval_only",
    "train_transform",
    "validate_imagefolder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LAYOUT = "expected train/<class>/*.JPEG and val/<class>/*.JPEG"
_SPLITS = ("train", "val")
_MAX_NAMES = 5


@dataclass(frozen=True)
class ImageFolderInfo:
    """What ``validate_imagefolder`` found: the class folder names (sorted) and image counts per split."""

    root: Path
    classes: tuple[str, ...]
    n_train: int
    n_val: int


def _class_dirs(split_dir: Path) -> list[str]:
    """Class folder names, sorted; the same rule as torchvision's ``find_classes`` (every sub-directory)."""
    with os.scandir(split_dir) as it:
        return sorted(entry.name for entry in it if entry.is_dir())


def _images_in(class_dir: Path) -> list[Path]:
    """Image files under a class folder (recursively, following links, each real folder once), sorted."""
    return walk_files(class_dir, is_image)


def _names(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_MAX_NAMES])
    more = len(names) - _MAX_NAMES
    return f"{shown}, ... and {more} more" if more > 0 else shown


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def validate_imagefolder(root: Path, check_images: int = 0, splits: tuple[str, ...] = _SPLITS) -> ImageFolderInfo:
    """Check that ``root`` holds ``train/<class>/*`` and ``val/<class>/*`` with the same classes.

    Raises ``DatasetError`` (one line, naming the path) on: a missing root or one that is not a folder; no
    ``train`` or ``val`` folder; no class folders; train and val class sets that differ; a class folder with no
    image files. With ``check_images > 0`` it also opens the first ``check_images`` images of each split (classes
    and files in sorted order) with PIL's ``verify()`` and reports the first unreadable one. ``splits=("val",)``
    checks the evaluation split alone (evaluating a checkpoint needs no ``train/``); ``n_train`` is then 0.
    """
    layout = _LAYOUT if splits == _SPLITS else "expected val/<class>/*.JPEG"
    root = dataset_root(root, layout)
    for split in splits:
        if not (root / split).is_dir():
            raise DatasetError(f"{root}: no '{split}' folder ({layout})")

    classes = {split: _class_dirs(root / split) for split in splits}
    for split in splits:
        if not classes[split]:
            raise DatasetError(f"{root / split}: no class folders ({layout})")
    if len(splits) == 2 and classes["train"] != classes["val"]:
        train, val = set(classes["train"]), set(classes["val"])
        parts = []
        if train - val:
            parts.append(f"{len(train - val)} missing from val ({_names(train - val)})")
        if val - train:
            parts.append(f"{len(val - train)} missing from train ({_names(val - train)})")
        raise DatasetError(f"{root}: train and val class folders differ: {'; '.join(parts)}")

    counts = dict.fromkeys(_SPLITS, 0)
    sample: dict[str, list[Path]] = {split: [] for split in splits}
    for split in splits:
        for name in classes[split]:
            images = _images_in(root / split / name)
            if not images:
                exts = ", ".join(IMAGE_EXTENSIONS)
                raise DatasetError(f"{root / split / name}: class folder has no image files ({exts}, any case)")
            counts[split] += len(images)
            if len(sample[split]) < check_images:
                sample[split].extend(images[: check_images - len(sample[split])])

    if check_images > 0:
        from PIL import Image

        for split in splits:
            for path in sample[split]:
                try:
                    with Image.open(path) as image:
                        image.verify()
                except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
                    raise BadImageError(f"{path}: unreadable image ({type(exc).__name__}: {_one_line(exc)})") from exc

    return ImageFolderInfo(root=root, classes=tuple(classes[splits[0]]), n_train=counts["train"], n_val=counts["val"])


def train_transform(
    size: int = 224,
    *,
    random_resized_crop: bool = True,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    autoaugment: bool = False,
    random_erasing: float = 0.0,
    resize: int | None = None,
) -> Any:
    """ImageNet training augmentation through torchvision ``transforms.v2``, in this order:

    ``RandomResizedCrop(size, scale=crop_scale)`` (else ``Resize(resize)`` + ``CenterCrop(size)``, the evaluation
    geometry), ``RandomHorizontalFlip()`` if ``hflip``, ``AutoAugment(IMAGENET policy)`` if ``autoaugment`` (on the
    uint8 image, as the policy's magnitudes assume), :func:`to_normalized_float` (``ToDtype`` + ``Normalize`` with
    ImageNet's mean/std in one pass), ``RandomErasing(p=random_erasing)`` if the probability is positive. The
    defaults are MobileNetV2's (Inception-style crop and flip). The input is the training loader's uint8 tensor
    (:data:`TRAIN_LOADER`) or a PIL image, made a uint8 tensor first (cropping and resizing a tensor is faster than
    PIL's); a tensor needs no ``ToImage`` wrapping (v2 treats a lone plain tensor as the image). The steps run as
    v2's image kernels with each step's own draws (:class:`~cabench.data.kernel_compose.KernelCompose`: the same
    outputs as ``v2.Compose`` of the same steps).
    """
    if size < 1:
        raise ValueError(f"train_transform: size must be positive, got {size}")
    import PIL.Image
    import torch
    from torchvision.transforms import v2

    steps: list[Any] = [v2.Lambda(v2.functional.pil_to_tensor, PIL.Image.Image)]  # a PIL image: to uint8 first
    if random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True))
    else:
        steps += [v2.Resize(resize or size, antialias=True), v2.CenterCrop(size)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    steps.append(v2.Lambda(to_normalized_float, torch.Tensor))
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing))
    from cabench.data.kernel_compose import KernelCompose

    return KernelCompose(steps)


def to_normalized_float(image: Any) -> Any:
    """A uint8 ``(3, H, W)`` image tensor as float32 ``(x / 255 - mean) / std`` (ImageNet's), computed as
    ``(x - 255 mean) * (1 / (255 std))``: equal to ``ToDtype(scale=True)`` then ``Normalize`` to float rounding."""
    import torch

    mean, scale = _normalizer(image.device)
    return image.to(torch.float32).sub_(mean).mul_(scale)


@functools.lru_cache(maxsize=8)
def _normalizer(device: Any) -> tuple[Any, Any]:
    """``(255 mean, 1 / (255 std))`` as ``(3, 1, 1)`` float32 tensors on ``device``, made once per device."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1) * 255.0
    return mean, 1.0 / (torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1) * 255.0)


def recipe_train_transform(recipe: Any) -> Any:
    """:func:`train_transform` with a recipe's fields."""
    return train_transform(
        recipe.train_size,
        random_resized_crop=recipe.random_resized_crop,
        crop_scale=tuple(recipe.crop_scale),
        hflip=recipe.hflip,
        autoaugment=recipe.autoaugment,
        random_erasing=recipe.random_erasing,
        resize=recipe.eval_resize,
    )


def eval_transform(size: int = 224, resize: int = 256) -> Any:
    """MobileNetV2 evaluation (``transforms.v2``): Resize(shorter side to ``resize``) + CenterCrop(``size``), to a
    float tensor in [0, 1], Normalize."""
    if size < 1 or resize < size:
        raise ValueError(f"eval_transform: need 0 < size <= resize, got size={size}, resize={resize}")
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


#: How training splits read an image: a uint8 tensor straight from ``torchvision.io`` (JPEG), for ``transforms.v2``
#: to crop and resize on uint8. Evaluation keeps PIL (:func:`load_rgb`), as torchvision's reference evaluation
#: does, so published checkpoints are scored on the pixels their authors' resizing saw.
TRAIN_LOADER = decode_rgb


def imagenet_datasets(
    root: Path, size: int = 224, resize: int = 256, train_tf: Any | None = None, eval_tf: Any | None = None
) -> tuple[Dataset, Dataset]:
    """Validate ``root`` then return ``(train, val)`` ImageFolders with ``train_tf`` and ``eval_tf`` (default:
    MobileNetV2's :func:`train_transform` and :func:`eval_transform` at ``size`` / ``resize``).

    The val set is built with the train set's ``class_to_idx``, so labels agree by construction.
    """
    from cabench.data.image_folder import FixedClassesImageFolder

    info = validate_imagefolder(root)
    train = FixedClassesImageFolder(
        str(info.root / "train"),
        transform=train_tf if train_tf is not None else train_transform(size),
        is_valid_file=is_image,
        loader=TRAIN_LOADER,
    )
    val = FixedClassesImageFolder(
        str(info.root / "val"),
        train.class_to_idx,
        transform=eval_tf if eval_tf is not None else eval_transform(size, resize),
        is_valid_file=is_image,
    )
    return train, val


def imagenet_eval_dataset(root: Path, size: int = 224, resize: int = 256) -> Dataset:
    """The val ImageFolder alone (classes: the sorted class folders of ``val/``, the same indices a full
    ImageNet's train split gives), after checking ``val/`` only: evaluating needs no ``train/`` folder."""
    from cabench.data.image_folder import FixedClassesImageFolder

    info = validate_imagefolder(root, check_images=2, splits=("val",))
    mapping = {name: i for i, name in enumerate(info.classes)}
    return FixedClassesImageFolder(
        str(info.root / "val"), mapping, transform=eval_transform(size, resize), is_valid_file=is_image
    )


def recipe_transforms(recipe: Any) -> tuple[Any, Any]:
    """``(train, eval)`` transforms of a classification recipe."""
    return recipe_train_transform(recipe), eval_transform(recipe.train_size, recipe.eval_resize)


def at_smoke_sizes(recipe: Any) -> Any:
    """A classification recipe at the smoke profile's 64-pixel crops, its evaluation resize scaled alike."""
    size = SMOKE_SIZES["image_size"]
    return recipe.model_copy(
        update={"train_size": size, "eval_resize": round(size * recipe.eval_resize / recipe.train_size)}
    )


def build_imagenet(root: Path, recipe: Any) -> tuple[Dataset, Dataset]:
    """``(train, val)`` with the recipe's transforms (the ``imagenet`` dataset's declared ``build``)."""
    train_tf, eval_tf = recipe_transforms(recipe)
    return imagenet_datasets(root, train_tf=train_tf, eval_tf=eval_tf)


def imagenet_eval_only(root: Path, recipe: Any) -> Dataset:
    """The val split alone at the recipe's sizes (the ``imagenet`` dataset's declared ``eval_only``)."""
    return imagenet_eval_dataset(root, size=recipe.train_size, resize=round(recipe.eval_resize))


def subset_datasets(
    root: Path, recipe: Any, selection: Selection, splits: tuple[str, ...] = ("train", "val")
) -> tuple[Any, ...]:
    """ImageFolders of ``splits`` over a budget selection's classes only, with the recipe's transforms and size."""
    from cabench.data.image_folder import FixedClassesImageFolder

    for split in splits:
        class_folders(root, split, selection)
    mapping = {wnid: k for k, wnid in enumerate(selection.classes)}
    transforms = dict(zip(("train", "val"), recipe_transforms(recipe), strict=True))
    root = Path(root).expanduser()
    out = []
    for split in splits:
        loader = TRAIN_LOADER if split == "train" else load_rgb
        dataset = FixedClassesImageFolder(
            str(root / split), mapping, transform=transforms[split], is_valid_file=is_image, loader=loader
        )
        if len(dataset) == 0:
            raise DatasetError(f"{root / split}: no images in the {len(mapping)} selected class folders")
        out.append(dataset)
    return tuple(out)


def build_subset(root: Path, recipe: Any, name: str) -> tuple[Any, ...]:
    """``(train, val)`` of the budget selection ``name`` (a subset dataset's declared ``build``)."""
    return subset_datasets(root, recipe, load_selection(name))


def subset_eval_only(root: Path, recipe: Any, name: str) -> Any:
    """The val split of the budget selection ``name`` alone (a subset dataset's declared ``eval_only``)."""
    return subset_datasets(root, recipe, load_selection(name), splits=("val",))[-1]
