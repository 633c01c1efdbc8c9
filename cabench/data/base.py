"""Datasets and fixtures as registries: each dataset is declared (what it is, and its code by import path).

A recipe names its dataset (``dataset: coco``); :data:`DATASETS` maps that name to a
:class:`DatasetInfo`: which ``--data`` key gives its root (Tables 7 and 8 both read ``voc``: one
VOCdevkit holds VOC2007 and VOC2012), which generated fixture stands in for it in the smoke profile,
how to validate a root (one line, exit 2, before any work), which recipe fields it needs, and how to
build the train and evaluation datasets with the recipe's augmentation. The built-in ones are data
(``suites/datasets/builtin.yaml``, registered by :mod:`cabench.data.declared`). :data:`FIXTURES` holds the
generated datasets (``cabench fixtures KIND DIR``), one per data key, each registered by its writer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cabench.data.errors import DatasetError
from cabench.registry import Registry

if TYPE_CHECKING:
    from cabench.data.identity import DataIdentity, IdentityCheck

__all__ = [
    "DATASETS",
    "FIXTURES",
    "SMOKE_SIZES",
    "DatasetInfo",
    "Fixture",
    "atomic_folder",
    "data_identity",
    "fills_cells",
    "fixture",
    "register_dataset",
    "register_fixture",
    "write_fixture",
]

# How small the smoke profile loads images: 64-pixel ImageNet crops, 64-pixel segmentation crops (each dataset's
# `at_smoke_sizes` writes them into the recipe the smoke profile trains with).
SMOKE_SIZES = {"image_size": 64, "crop_size": 64}


def same_recipe(recipe: Any) -> Any:
    """``DatasetInfo.at_smoke_sizes`` of a dataset the smoke profile loads at its recipe's own sizes."""
    return recipe


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # the recipe's `dataset`
    task: str  # the task whose recipes may train on it
    data_key: str  # --data KEY=PATH, CABENCH_DATA_<KEY>, [data] KEY in the config file
    title: str  # for messages
    validate: Callable[[Path], None]  # raises DatasetError (one line)
    build: Callable[[Path, Any], tuple[Any, Any]]  # (root, recipe) -> (train, evaluation)
    fixture: str | None = None  # the FIXTURES kind that stands in for it
    requires: tuple[str, ...] = ()  # recipe fields that must be set for this dataset
    input_size: Callable[[Any], int | None] = lambda recipe: recipe.train_size
    # The recipe the smoke profile trains with: this one at the smoke sizes (ImageNet: 64-pixel crops), recorded
    # as the run's effective pipeline; the recipe itself where the data are small already.
    at_smoke_sizes: Callable[[Any], Any] = same_recipe
    # What a run records about the data beyond its root (generated data: the manifest's fingerprint, generator
    # and parameters); its "fingerprint" value is part of the key deciding whether a run is done.
    fingerprint: Callable[[Path], dict[str, Any]] | None = None
    # (root, recipe) -> the evaluation dataset, checking only the evaluation split (evaluating a checkpoint then
    # needs no training data); None: validate and build the whole dataset.
    eval_only: Callable[[Path, Any], Any] | None = None
    # Which data a number on it was computed on, and so which cells it may fill (cabench.data.identity):
    # PaperSplit (the paper's evaluation split, by size) or GeneratorManifest (generated data, by its manifest).
    # Every dataset declares one; register_dataset refuses a dataset without.
    identity: IdentityCheck | None = None
    evaluation: str | None = None  # the metric protocol its evaluator follows, for the run's pipeline record


@dataclass(frozen=True)
class Fixture:
    kind: str
    write: Callable[..., Path]  # (root, seed=...) -> root
    layout: str  # what it holds
    hint: str  # a smoke command to try, with {root}


# The built-in datasets are data (suites/datasets/builtin.yaml), registered by a module that imports no dataset code.
DATASETS = Registry[DatasetInfo]("dataset", builtin_modules=("cabench.data.declared",))
FIXTURES = Registry[Fixture]("fixture", builtin_modules=("cabench.data.fixtures.*",))


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.identity is None:
        raise ValueError(
            f"dataset {info.name!r} declares no identity check (DatasetInfo.identity: PaperSplit or "
            "GeneratorManifest from cabench.data.identity): the report could not tell what its numbers may fill"
        )
    DATASETS.register(info.name, info)
    return info


def register_fixture(fixture: Fixture) -> Fixture:
    FIXTURES.register(fixture.kind, fixture)
    return fixture


def fixture(kind: str, *, layout: str, hint: str) -> Callable[[Callable[..., None]], Callable[..., Path]]:
    """Register the decorated ``fill(folder, seed, **options)`` as the fixture ``kind`` (``layout``: what it holds;
    ``hint``: a smoke command to try, with ``{root}``) and return its writer ``write(root, seed=0, **options)``.

    The writer refuses a negative seed and writes atomically: ``fill`` fills a temporary sibling of ``root``, which
    is renamed to ``root`` once complete, so a fixture never overwrites anything (``DatasetError`` if ``root``
    exists and is not an empty folder) and a failure leaves nothing behind. It returns ``root``, absolute.
    """

    def decorate(fill: Callable[..., None]) -> Callable[..., Path]:
        @functools.wraps(fill)
        def write(root: str | os.PathLike[str], seed: int = 0, **options: Any) -> Path:
            if seed < 0:
                raise ValueError(f"{fill.__name__}: seed must be >= 0, got {seed}")
            with atomic_folder(Path(root), kind) as folder:
                fill(folder, seed, **options)
            return Path(root).expanduser().absolute()

        register_fixture(Fixture(kind, write, layout, hint))
        return write

    return decorate


@contextlib.contextmanager
def atomic_folder(root: Path, what: str) -> Iterator[Path]:
    """Yield a temporary sibling of ``root`` to fill; rename it to ``root`` when the block succeeds.

    Refuses with :class:`DatasetError` if ``root`` exists and is not an empty folder, so a fixture
    never overwrites anything and a crash leaves no half-written dataset behind.
    """
    root = Path(root).expanduser().absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root}: refusing to write the {what} fixture: path exists and is not an empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0o700
        yield tmp
        if root.exists():
            root.rmdir()  # empty (checked above); rename cannot replace a folder portably
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_fixture(kind: str, root: Path, seed: int = 0) -> Path:
    """Write the ``kind`` fixture dataset at ``root``."""
    return FIXTURES.get(kind).write(root, seed=seed)


def data_identity(dataset: str, root: Path) -> DataIdentity:
    """The evaluation split of registered ``dataset`` at ``root``, judged by the check the dataset declares."""
    info = DATASETS.get(dataset)
    return info.identity.identify(dataset, root)


def fills_cells(config: dict[str, Any], dataset: str | None = None) -> bool:
    """Whether a run (its config.json) may fill its suite's cells, as its dataset's identity check decides.

    ``dataset`` stands in for a config that does not name its dataset (the suite's recipe's); a dataset that is
    not registered fills nothing.
    """
    name = config.get("dataset") or dataset
    if not isinstance(name, str) or name not in DATASETS:
        return False
    return DATASETS.get(name).identity.fills(config)
