"""Bad input files end in one line naming the file, never a traceback: limits, numbers, tags, ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cabench.check import read_lock
from cabench.data.coco import validate_coco
from cabench.data.errors import DatasetError
from cabench.recipe import RecipeError, load_recipe
from cabench.suite import SUITES_DIR, SuiteError, load_suite
from cabench.yamlio import MAX_DEPTH, MAX_FILE_BYTES

TABLE1 = (SUITES_DIR / "table1.yaml").read_text()
RECIPE = (SUITES_DIR / "recipes" / "imagenet-mbv2-paper.yaml").read_text()


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def _one_line_suite_error(path: Path, expected: str) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expected in message, message
    assert len(message) < 400, message
    return message


BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10 if prev else ['x'] * 10)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f", "g"], "abcdefgh", strict=True)
)

BAD_SUITES = {
    "deep list": ("rows: " + "[" * 50_000 + "]" * 50_000 + "\n", f"nested deeper than {MAX_DEPTH} levels"),
    "deep map": ("rows:\n" + "".join(" " * i + "a:\n" for i in range(500)), "nested deeper than"),
    "alias bomb as a row name": (
        BOMB + TABLE1.replace("name: Baseline", "name: *h", 1),
        "too many values",
    ),
    "bad float tag": (TABLE1.replace("width: 1.0", "width: !!float abc", 1), "'abc' is not a finite number"),
    "bad int tag": (TABLE1.replace("reduction: 32", "reduction: !!int abc", 1), "does not fit its YAML tag"),
    "python tag": ("!!python/object/apply:os.system ['true']\n", "YAML error"),
    "nan width": (TABLE1.replace("width: 1.0", "width: .nan", 1), "'.nan' is not a finite number"),
    "inf published": (TABLE1.replace("params: 3.5", "params: .inf", 1), "'.inf' is not a finite number"),
    "nan as a string": (TABLE1.replace("width: 1.0", "width: 'nan'", 1), "model.width: Input should be a finite"),
    "huge width": (TABLE1.replace("width: 1.0", "width: 1e300", 1), "model.width"),
    "huge class count": (TABLE1.replace("width: 1.0", "width: 1.0, num_classes: 10000000000000", 1), "num_classes"),
    "negative published": (TABLE1.replace("params: 3.5", "params: -3.5", 1), "not a finite number in [0, 1e15]"),
    "percent above 100": (TABLE1.replace("top1: 72.3", "top1: 172.3", 1), "above 100%"),
    "reversed range": (TABLE1.replace('"14-16"', '"16-14"', 1), "reversed"),
    "negative tolerance": (TABLE1.replace("tolerance: 5", "tolerance: -1", 1), "columns.madds.tolerance"),
    "tolerance that switches the check off": (TABLE1.replace("tolerance: 5", "tolerance: 1e400", 1), "tolerance"),
    "tolerance wider than the value": (
        TABLE1.replace("tolerance: 0.3", "tolerance: 80", 1),
        "any result down to zero would match",
    ),
    "suite id that is a path": (TABLE1.replace("id: table1", "id: ../../x", 1), "suite id '../../x' is not a name"),
    "absolute suite id": (TABLE1.replace("id: table1", "id: /tmp/x", 1), "is not a name"),
    "row id that is a path": (TABLE1.replace("id: baseline", "id: ../../../etc", 1), "row id '../../../etc'"),
    "row name with a newline": (TABLE1.replace("name: Baseline", 'name: "a\\nb"', 1), "control characters"),
    "row name with no id in it": (TABLE1.replace("name: Baseline\n    id: baseline", 'name: "+++"', 1), "give the"),
    "row name far too long": (TABLE1.replace("name: Baseline", "name: " + "x" * 5000, 1), "longer than 200"),
    "recipe reference that is a path": (TABLE1.replace("recipe: imagenet", "recipe: ../imagenet", 1), "reference"),
    "empty file": ("", "must be a YAML mapping"),
    "a list": ("- 1\n- 2\n", "must be a YAML mapping"),
    "non-string top-level key": ("1: 2\n", "must be a string"),
    "duplicate key": (TABLE1.replace("task: classify", "task: classify\ntask: detect", 1), "duplicate key 'task'"),
}


@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_a_bad_suite_file_is_one_line(tmp_path: Path, case: str) -> None:
    text, expected = BAD_SUITES[case]
    start = time.perf_counter()
    _one_line_suite_error(_suite(tmp_path, text), expected)
    assert time.perf_counter() - start < 5  # nothing is expanded or recursed into


def test_binary_garbage_oversize_and_directories_are_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(256)) * 4)
    _one_line_suite_error(garbage, "not a UTF-8 text file")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    _one_line_suite_error(big, "too large")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    _one_line_suite_error(folder, "a directory")


def test_markup_and_unicode_names_load_as_plain_text(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, TABLE1.replace("name: Baseline", "name: '[/] [bold]ü 名'", 1)))
    assert suite.rows[0].name == "[/] [bold]ü 名"


def test_the_shipped_suites_and_recipes_stay_valid() -> None:
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        load_suite(path)
    for path in sorted((SUITES_DIR / "recipes").glob("*.yaml")):
        load_recipe(path)


BAD_RECIPES = {
    "infinite lr": (RECIPE.replace("lr: 0.05", "lr: .inf"), "lr"),
    "nan weight decay": (RECIPE.replace("weight_decay: 4.0e-5", "weight_decay: .nan"), "weight_decay"),
    "absurd batch": (RECIPE.replace("batch_size: 256", "batch_size: 100000000000"), "batch_size"),
    "absurd input size": (RECIPE + "eval_size: 1000000\n", "eval_size"),
    "duplicate key": (RECIPE + "lr: 0.1\n", "duplicate key 'lr'"),
    "bad tag": (RECIPE.replace("lr: 0.05", "lr: !!float abc"), "YAML"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_a_bad_recipe_file_is_one_line(tmp_path: Path, case: str) -> None:
    text, expected = BAD_RECIPES[case]
    assert text != RECIPE, "the mutation must change the recipe"
    path = tmp_path / "imagenet-mbv2-paper.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "no such file"),
        ("[1, 2]", "'counts' object"),
        ('{"counts": {"m": 5}}', "expected an object with params/madds"),
        ('{"counts": {"m": {"params": "x"}}}', "expected a count"),
        ('{"counts": {"m": {"params": 1.5}}}', "expected a count"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_missing_or_malformed_lock_is_refused(tmp_path: Path, body: str | None, expected: str) -> None:
    lock = tmp_path / "lock.json"
    if body is not None:
        lock.write_text(body)
    with pytest.raises(ValueError, match=expected):
        read_lock(lock)
    assert read_lock(tmp_path / "absent.json", missing_ok=True) == {}


def test_a_deeply_nested_coco_annotation_file_is_one_line(tmp_path: Path) -> None:
    from cabench.data.base import write_fixture

    root = write_fixture("coco", tmp_path / "coco")
    ann = root / "annotations" / "instances_val2017.json"
    ann.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DatasetError) as info:
        validate_coco(root)
    assert str(ann) in str(info.value) and "nested too deeply" in str(info.value)
    ann.write_text(json.dumps({"images": 1}) + "garbage")
    with pytest.raises(DatasetError, match="not valid JSON"):
        validate_coco(root)


def test_a_lock_or_config_that_is_a_directory_or_fifo_says_what_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from cabench.data.roots import config_path

    fifo = tmp_path / "lock.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"lock\.fifo: not a counts lock file \(not a regular file\)"):
        read_lock(fifo)  # it used to say "no such file"
    with pytest.raises(ValueError, match=r": not a counts lock file \(a directory\)"):
        read_lock(tmp_path)
    monkeypatch.setenv("CABENCH_CONFIG", str(tmp_path))
    with pytest.raises(ValueError, match="the config file named by CABENCH_CONFIG is a directory"):
        config_path()


def test_a_long_scalar_aliased_many_times_is_refused_at_once(tmp_path: Path) -> None:
    # Issue 22: a 404 KB suite of scalar aliases (no nesting) grew to 4.7 GB of RSS and ended in MemoryError.
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(["id: t", "title: &t " + "x" * 10_000, "source: s", "notes:"] + ["  - *t"] * 40_000))
    with pytest.raises(SuiteError, match=r"too much text .* once aliases are expanded"):
        load_suite(path)  # refused while reading the parse events, before any value is built
