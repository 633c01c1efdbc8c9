"""Datasets and fixtures as registries: each dataset module registers what it is and how to use it.

A recipe names its dataset (``dataset: coco``); :data:`DATASETS` maps that name to a
:class:`DatasetInfo`: which ``--data`` key gives its root (Tables 7 and 8 both read ``voc``: one
VOCdevkit holds VOC2007 and VOC2012), which generated fixture stands in for it in the smoke profile,
how to validate a root (one line, exit 2, before any work), which recipe fields it needs, and how to
build the train and evaluation datasets with the recipe's augmentation. :data:`FIXTURES` holds the
generated datasets (``cabench fixtures KIND DIR``), one per data key, each registered by its writer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cabench.registry import Registry

if TYPE_CHECKING:
    from cabench.data.identity import DataIdentity, IdentityCheck

__all__ = [
    "DATASETS",
    "FIXTURES",
    "SMOKE_SIZES",
    "DatasetInfo",
    "Fixture",
    "data_identity",
    "fills_cells",
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


DATASETS = Registry[DatasetInfo]("dataset", builtin_modules=("cabench.data.*",))
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


def fixture(kind: str, *, layout: str, hint: str) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Register the decorated ``write(root, seed=0) -> root`` as the fixture ``kind`` (``layout``: what it holds;
    ``hint``: a smoke command to try, with ``{root}``)."""

    def decorate(write: Callable[..., Path]) -> Callable[..., Path]:
        register_fixture(Fixture(kind, write, layout, hint))
        return write

    return decorate


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
