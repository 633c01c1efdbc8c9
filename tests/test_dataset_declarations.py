"""The built-in datasets are declarations (suites/datasets/builtin.yaml): every hook they name exists and takes the
arguments it is called with, and knowing them imports no dataset code."""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import fields

import pytest

from cabench.data.base import DATASETS, DatasetInfo
from cabench.data.declared import DECLARATIONS, dataset_from_yaml
from cabench.registry import LazyCall, import_object

# How each hook is called (the positional arguments its callers pass).
CALLED_WITH = {
    "validate": ("root",),
    "build": ("root", "recipe"),
    "eval_only": ("root", "recipe"),
    "at_smoke_sizes": ("recipe",),
    "fingerprint": ("root",),
    "files": ("root",),
    "manifest": ("root",),
}


def _hooks(info: DatasetInfo) -> list[tuple[str, LazyCall]]:
    named = [(f.name, getattr(info, f.name)) for f in fields(info)]
    named += [(name, getattr(info.identity, name)) for name in ("files", "manifest") if hasattr(info.identity, name)]
    return [(name, value) for name, value in named if isinstance(value, LazyCall)]


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_declared_hook_resolves_to_a_function_taking_its_call(name: str) -> None:
    hooks = _hooks(DATASETS.get(name))
    assert {"validate", "build", "files"} <= {hook for hook, _ in hooks}, name
    for hook, call in hooks:
        target = import_object(call.path)
        inspect.signature(target).bind(*CALLED_WITH[hook], **call.bound)  # TypeError if it cannot take the call


def test_knowing_every_dataset_and_what_a_run_fills_imports_no_torch() -> None:
    code = (
        "import sys; from cabench.data.base import DATASETS, fills_cells; from cabench.recipe import load_recipe\n"
        "names = DATASETS.names(); [DATASETS.get(n).identity for n in names]\n"
        "load_recipe('voc-deeplabv3-paper'); fills_cells({'dataset': 'coco', 'data_identity': {'paper': True}})\n"
        "print(len(names), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(DATASETS.names())), "False"]


def test_a_malformed_declaration_is_one_error_naming_the_field() -> None:
    entry = {"task": "classify", "data_key": "x", "title": "t", "validate": "m:f", "build": "m:g", "colour": "red"}
    with pytest.raises(TypeError, match="colour"):
        dataset_from_yaml("x", {**entry, "identity": {"manifest": {"files": "m:h", "manifest": "m:i"}}})
    assert DECLARATIONS.is_file()
