"""The built-in datasets, declared as data: ``suites/datasets/builtin.yaml`` registered as :class:`DatasetInfo`.

The registry of datasets imports this module (and nothing else) to learn the built-in ones, so knowing a dataset's
task, ``--data`` key, required recipe fields and identity check imports none of the code that reads it: each hook
is a :class:`~cabench.registry.LazyCall` that imports its module on the first call. The budget subsets of ImageNet
(``suites/subsets/``) are registered here too. A plugin registers its own dataset with
:func:`~cabench.data.base.register_dataset`, hooks as callables or as ``LazyCall`` paths.
"""

from __future__ import annotations

from typing import Any

from cabench.data.base import DatasetInfo, register_dataset
from cabench.data.identity import GeneratorManifest, PaperSplit
from cabench.data.subsets import SHIPPED, register_subset
from cabench.locate import PACKAGED_SUITES
from cabench.registry import LazyCall
from cabench.yamlio import read_yaml_mapping

__all__ = ["DECLARATIONS", "dataset_from_yaml"]

DECLARATIONS = PACKAGED_SUITES / "datasets" / "builtin.yaml"
_HOOKS = {"validate", "build", "eval_only", "at_smoke_sizes", "fingerprint", "files", "manifest"}
_IDENTITIES = {PaperSplit.kind: PaperSplit, GeneratorManifest.kind: GeneratorManifest}


def _value(key: str, value: Any) -> Any:
    """A hook's declaration as a LazyCall (``"pkg.mod:fn"`` or ``{call: "pkg.mod:fn", arg: value}``); a list as
    a tuple; anything else as it is."""
    if key in _HOOKS and isinstance(value, str):
        return LazyCall(value)
    if key in _HOOKS and isinstance(value, dict):
        bound = dict(value)
        return LazyCall(bound.pop("call"), **bound)
    return tuple(value) if isinstance(value, list) else value


def dataset_from_yaml(name: str, entry: dict[str, Any]) -> DatasetInfo:
    """The :class:`DatasetInfo` one entry of the declarations file describes."""
    fields = {key: _value(key, value) for key, value in entry.items() if key != "identity"}
    ((kind, check),) = entry["identity"].items()
    identity = _IDENTITIES[kind](**{key: _value(key, value) for key, value in check.items()})
    return DatasetInfo(name=name, identity=identity, **fields)


def _register_builtins() -> None:
    for name, entry in read_yaml_mapping(DECLARATIONS, "dataset declarations", ValueError).items():
        try:
            register_dataset(dataset_from_yaml(name, entry))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{DECLARATIONS}: dataset {name!r} is malformed ({type(e).__name__}: {e})") from None
    for name in SHIPPED:
        register_subset(name)


_register_builtins()
