"""`cabench --help`, `list` and `show` start without importing torch (issue 12: they took 5-7 s), and the
catalogue of built-in models that lets them do so agrees with the registries."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cabench.models import catalogue
from cabench.models.blocks import ATTENTIONS, resolve_attention
from cabench.models.registry import ARCHS, ModelSpec, validate_spec
from cabench.suite import all_suite_files, load_suite

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
sys.argv = ["cabench", *sys.argv[1:]]
from cabench.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "torchvision", "pandas", "scipy", "matplotlib") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["list"], ["show", "table1"], ["show", "fairness"], ["show", "probe-classify"]]
)
def test_help_list_and_show_import_no_torch(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": []}, (done.stdout[-500:], done.stderr[-2000:])


@pytest.mark.parametrize(
    "args",
    [
        ["run", "table1", "--rows", "basline"],
        ["run", "table1", "--profile", "paper", "--seeds", "abc"],
        ["run", "table1", "--profile", "paper", "--seeds", "0,,1"],
        ["run", "table1", "--profile", "paper", "--data", "imagenet"],
        ["count", "mobilenetv2", "--width", "0"],
    ],
)
def test_input_errors_that_need_no_model_are_found_before_torch(args: list[str]) -> None:
    # They took 17-22 s under load because every row's model was probed (importing torch) first.
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result == {"code": 2, "heavy": []}, done.stderr[-2000:]
    assert done.stderr.startswith("cabench: error: ") and done.stderr.count("cabench: error") == 1


def _builtin(registry) -> set[str]:  # type: ignore[no-untyped-def]
    return {name for name, obj in registry.items() if getattr(obj, "__module__", "").startswith("cabench.models")}


def test_every_builtin_arch_is_declared_with_a_builder_that_takes_its_declared_options() -> None:
    import inspect

    from cabench.registry import import_object

    declared = {name: info for name, info in ARCHS.items() if info.__module__.startswith("cabench.models")}
    assert set(declared) == {
        "mobilenetv2", "mobilenext", "efficientnet_b0", "ssdlite320_mobilenetv2", "ssdlite320_mobilenext",
        "deeplabv3_mobilenetv2",
    }  # fmt: skip
    for name, info in declared.items():
        assert isinstance(info.builder, str), name  # named by import path: declaring imports no torch
        parameters = inspect.signature(import_object(info.builder)).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        assert takes_any or info.options <= set(parameters), (name, info.options - set(parameters))
        if info.counting_view is not None:
            assert callable(import_object(info.counting_view)), name


def test_the_catalogue_lists_every_builtin_block_with_its_signature() -> None:
    from cabench.models.attention import ACTIVATIONS

    assert tuple(ACTIVATIONS) == catalogue.ACTIVATIONS
    assert set(catalogue.BUILTIN_BLOCKS) == _builtin(ATTENTIONS)
    for name, entry in catalogue.BUILTIN_BLOCKS.items():
        params = inspect.signature(resolve_attention(name)).parameters
        assert entry.reduction == ("reduction" in params), name
        assert set(entry.args) <= set(params), name
        assert entry.default_reduction == getattr(resolve_attention(name), "default_reduction", None), name
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        assert dict(entry.defaults) == {k: v for k, v in defaults.items() if k != "reduction"}, name


def _outcome(spec: ModelSpec, probe: bool) -> str:
    try:
        validate_spec(spec, probe=probe)
    except ValueError as e:
        return str(e)
    return "ok"


SPECS = [
    ModelSpec(arch, width, attention, reduction, attention_args=args)
    for arch in ("mobilenetv2", "efficientnet_b0", "deeplabv3_mobilenetv2")
    for width in (1.0, 0.5)
    for attention in ("ca", "se", "eca", "triplet", "none", "bogus")
    for reduction in (None, 8)
    for args in ({}, {"act": "relu"}, {"act": "rleu"}, {"softmax": True}, {"softmax": 1}, {"kernel_size": 3})
]


def test_listing_and_building_judge_every_spec_alike() -> None:
    """The catalogue's shortcut (probe=False) accepts exactly what the full check accepts, with its messages."""
    from cabench.models.registry import _catalogued

    for spec in SPECS:
        assert _outcome(spec, probe=False) == _outcome(spec, probe=True), spec
    shortcut = [s for s in SPECS if _catalogued(s) is not None]
    assert len(shortcut) >= 50  # the shortcut is taken, so the comparison above tests it
    assert any(_outcome(s, probe=False) != "ok" for s in shortcut)  # and it refuses things too (width, ...)


def test_every_packaged_suite_loads_alike_with_and_without_probing() -> None:
    for path in all_suite_files().values():
        assert load_suite(path, probe=False) == load_suite(path)


@pytest.mark.slow
def test_check_and_run_with_every_count_cached_import_no_torch(tmp_path: Path) -> None:
    # Issue 24's gate: with the counts cached, `check` and `run` (count) are a few file reads, not a torch import.
    env = {**os.environ, "CABENCH_CACHE_DIR": str(tmp_path / "cache"), "CABENCH_RUNS": str(tmp_path / "runs")}
    warm = subprocess.run(
        [sys.executable, "-c", PROBE, "check", "table1"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert json.loads(warm.stderr.strip().splitlines()[-1])["code"] == 0, warm.stderr[-2000:]
    for args in (["check", "table1"], ["run", "table1"]):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert json.loads(done.stderr.strip().splitlines()[-1]) == {"code": 0, "heavy": []}, done.stderr[-2000:]
