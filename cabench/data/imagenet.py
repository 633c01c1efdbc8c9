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

Where the data lives (``resolve_data_root``), highest precedence first:

1. the command line: ``--data imagenet=/path`` (repeatable; any ``name=path``, e.g. ``coco=...``,
   ``voc=...``, ``cityscapes=...``), parsed by ``parse_data_option``;
2. the environment variable ``CABENCH_DATA_<NAME>``, e.g. ``CABENCH_DATA_IMAGENET=/datasets/imagenet``;
3. the ``[data]`` table of a TOML config file: ``$CABENCH_CONFIG`` if that variable is set (the file must then
   exist), else ``~/.config/cabench/config.toml`` if it exists::

       [data]
       imagenet = "/datasets/imagenet"

   A relative path in the config file is taken relative to the file's folder.

``~`` is expanded in every source. Nothing found anywhere gives ``None``.

torch, torchvision and PIL are imported lazily: option parsing and root resolution stay cheap.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cabench.data.base import SMOKE_SIZES, DatasetInfo, register_dataset
from cabench.data.errors import BadImageError, DatasetError
from cabench.data.identity import PaperSplit, imagefolder_split
from cabench.data.images import decode_rgb, load_rgb, walk_files
from cabench.yamlio import read_text_file, shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageFolderInfo",
    "check_data_key",
    "config_path",
    "data_keys",
    "eval_transform",
    "imagenet_datasets",
    "imagenet_eval_dataset",
    "parse_data_option",
    "read_config",
    "recipe_train_transform",
    "recipe_transforms",
    "resolve_data_root",
    "train_transform",
    "validate_imagefolder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared case-insensitively: .JPEG counts
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


def _is_image(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _class_dirs(split_dir: Path) -> list[str]:
    """Class folder names, sorted; the same rule as torchvision's ``find_classes`` (every sub-directory)."""
    with os.scandir(split_dir) as it:
        return sorted(entry.name for entry in it if entry.is_dir())


def _images_in(class_dir: Path) -> list[Path]:
    """Image files under a class folder (recursively, following links, each real folder once), sorted."""
    return walk_files(class_dir, _is_image)


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
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist ({layout})")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder ({layout})")
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
    PIL's); a tensor needs no ``ToImage`` wrapping (v2 treats a lone plain tensor as the image), which with the
    fused normalisation saves a third of the transform's time per image.
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
    return v2.Compose(steps)


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


def _fixed_classes_image_folder() -> type:
    """An ImageFolder subclass whose class -> index mapping is given rather than discovered.

    Built on first use (torchvision stays a lazy import) and published as a module attribute, so datasets pickle
    into DataLoader workers, spawned ones included (the module ``__getattr__`` rebuilds it there).
    """
    cls = globals().get("_FixedClassesImageFolder")
    if cls is not None:
        return cls
    from torchvision.datasets import ImageFolder

    class _FixedClassesImageFolder(ImageFolder):
        """Also: images decode through ``loader`` (:func:`load_rgb` to PIL, or :data:`TRAIN_LOADER` to a tensor;
        both one-line errors) and the folder walk is loop-free."""

        def __init__(
            self, root: str, class_to_idx: Mapping[str, int] | None = None, loader: Any = load_rgb, **kwargs: Any
        ) -> None:
            self._given_class_to_idx = dict(class_to_idx) if class_to_idx is not None else None
            super().__init__(root, loader=loader, **kwargs)

        def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
            mapping = self._given_class_to_idx
            if mapping is None:
                return super().find_classes(directory)
            return sorted(mapping, key=mapping.__getitem__), dict(mapping)

        @staticmethod
        def make_dataset(
            directory: str | os.PathLike[str],
            class_to_idx: dict[str, int],
            extensions: tuple[str, ...] | None = None,
            is_valid_file: Any = None,
            allow_empty: bool = False,
        ) -> list[tuple[str, int]]:
            keep = is_valid_file or _is_image
            return [
                (str(path), index)
                for name, index in sorted(class_to_idx.items())
                for path in walk_files(Path(directory, name), keep)
            ]

    _FixedClassesImageFolder.__qualname__ = "_FixedClassesImageFolder"
    globals()["_FixedClassesImageFolder"] = _FixedClassesImageFolder
    return _FixedClassesImageFolder


def __getattr__(name: str) -> Any:
    if name == "_FixedClassesImageFolder":
        return _fixed_classes_image_folder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def imagenet_datasets(
    root: Path, size: int = 224, resize: int = 256, train_tf: Any | None = None, eval_tf: Any | None = None
) -> tuple[Dataset, Dataset]:
    """Validate ``root`` then return ``(train, val)`` ImageFolders with ``train_tf`` and ``eval_tf`` (default:
    MobileNetV2's :func:`train_transform` and :func:`eval_transform` at ``size`` / ``resize``).

    The val set is built with the train set's ``class_to_idx``, so labels agree by construction.
    """
    info = validate_imagefolder(root)
    folder = _fixed_classes_image_folder()
    train = folder(
        str(info.root / "train"),
        transform=train_tf if train_tf is not None else train_transform(size),
        is_valid_file=_is_image,
        loader=TRAIN_LOADER,
    )
    val = folder(
        str(info.root / "val"),
        train.class_to_idx,
        transform=eval_tf if eval_tf is not None else eval_transform(size, resize),
        is_valid_file=_is_image,
    )
    return train, val


def imagenet_eval_dataset(root: Path, size: int = 224, resize: int = 256) -> Dataset:
    """The val ImageFolder alone (classes: the sorted class folders of ``val/``, the same indices a full
    ImageNet's train split gives), after checking ``val/`` only: evaluating needs no ``train/`` folder."""
    info = validate_imagefolder(root, check_images=2, splits=("val",))
    mapping = {name: i for i, name in enumerate(info.classes)}
    return _fixed_classes_image_folder()(
        str(info.root / "val"), mapping, transform=eval_transform(size, resize), is_valid_file=_is_image
    )


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def parse_data_option(values: list[str]) -> dict[str, Path]:
    """Parse repeated ``--data NAME=PATH`` options into ``{name: Path}`` (names lower-cased, ``~`` expanded).

    Raises ``ValueError`` (one line) on an item without ``=``, an empty or non-identifier name, an empty path,
    or a name given twice.
    """
    parsed: dict[str, Path] = {}
    for item in values:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not _NAME.fullmatch(name) or not path:
            raise ValueError(f"--data {item!r}: expected NAME=PATH, e.g. --data imagenet=/datasets/imagenet")
        key = name.lower()
        check_data_key(key, f"--data {item!r}")
        if key in parsed:
            raise ValueError(f"--data {item!r}: '{key}' given twice (already {parsed[key]})")
        parsed[key] = Path(path).expanduser()
    return parsed


def config_path() -> Path | None:
    """The config file to read: ``$CABENCH_CONFIG`` if set, else ``~/.config/cabench/config.toml`` if it exists."""
    explicit = os.environ.get("CABENCH_CONFIG", "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            kind = "is a directory" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
            raise ValueError(f"{path}: the config file named by CABENCH_CONFIG {kind}")
        return path
    default = Path.home() / ".config" / "cabench" / "config.toml"
    return default if default.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The whole config file as a dict (its ``[data]`` table is read here, ``[launcher]`` by
    :mod:`cabench.launch.settings`); ValueError (one line naming the file) when it cannot be read."""
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise ValueError(f"{path}: reading the config file needs Python >= 3.11 or the 'tomli' package")
    text = read_text_file(path, "config", ValueError)
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: cannot read config file ({_one_line(exc)})") from None
    except RecursionError:
        raise ValueError(f"{path}: cannot read config file (nested too deeply)") from None
    for key in config:
        if key not in ("data", "launcher"):
            raise ValueError(
                f"{path}: unknown config key {key!r}; the config file has two tables: [data] and [launcher]"
            )
    return config


def _config_data_table(path: Path) -> dict[str, Any]:
    data = read_config(path).get("data", {})
    if not isinstance(data, dict):
        raise ValueError(f"{path}: 'data' must be a table, e.g. [data] imagenet = \"/datasets/imagenet\"")
    for key in data:
        check_data_key(key, f"{path}: [data] {key}")
    return data


def data_keys() -> list[str]:
    """The dataset keys ``--data``, ``CABENCH_DATA_<KEY>`` and ``[data]`` accept (every registered dataset's)."""
    from cabench.data.base import DATASETS

    return sorted({info.data_key for _, info in DATASETS.items()})


def check_data_key(key: str, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` when ``key`` is no dataset's key (a typo must not fall back silently)."""
    from cabench.registry import did_you_mean

    keys = data_keys()
    if key.lower() not in keys:
        hint = did_you_mean(key, keys)
        raise ValueError(f"{where}: unknown dataset key {key!r}{hint}; expected one of {', '.join(keys)}")


def resolve_data_root(name: str, given: dict[str, Path]) -> Path | None:
    """Where dataset ``name`` lives: ``given`` (the CLI) > ``CABENCH_DATA_<NAME>`` > config ``[data]`` > ``None``."""
    key = name.lower()
    cli = {k.lower(): v for k, v in given.items()}
    if key in cli:
        return Path(cli[key]).expanduser()
    env = os.environ.get(f"CABENCH_DATA_{key.upper()}", "").strip()
    if env:
        return Path(env).expanduser()
    path = config_path()
    if path is None:
        return None
    data = _config_data_table(path)
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: [data] {key} must be a non-empty path string, got {shown(value)}")
    found = Path(value.strip()).expanduser()
    return found if found.is_absolute() else path.parent / found


def recipe_transforms(recipe: Any) -> tuple[Any, Any]:
    """``(train, eval)`` transforms of a classification recipe."""
    return recipe_train_transform(recipe), eval_transform(recipe.train_size, recipe.eval_resize)


def at_smoke_sizes(recipe: Any) -> Any:
    """A classification recipe at the smoke profile's 64-pixel crops, its evaluation resize scaled alike."""
    size = SMOKE_SIZES["image_size"]
    return recipe.model_copy(
        update={"train_size": size, "eval_resize": round(size * recipe.eval_resize / recipe.train_size)}
    )


def _build(root: Path, recipe: Any) -> tuple[Dataset, Dataset]:
    train_tf, eval_tf = recipe_transforms(recipe)
    return imagenet_datasets(root, train_tf=train_tf, eval_tf=eval_tf)


register_dataset(
    DatasetInfo(
        name="imagenet",
        task="classify",
        data_key="imagenet",
        title="ImageNet (val/<class>/*.JPEG to evaluate, train/<class>/*.JPEG too to train)",
        validate=lambda root: validate_imagefolder(root, check_images=2) and None,
        build=_build,
        fixture="imagenet",
        at_smoke_sizes=at_smoke_sizes,
        eval_only=lambda root, recipe: imagenet_eval_dataset(
            root, size=recipe.train_size, resize=round(recipe.train_size * recipe.eval_resize / recipe.train_size)
        ),
        identity=PaperSplit("ImageNet val (ILSVRC-2012)", 50_000, 1_000, files=imagefolder_split),
    )
)
