"""Outcomes, floors, figures and recipes read what the registered tasks declare, not task or metric names."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from cabench import plots
from cabench.floors import FLOORS
from cabench.recipe import RecipeError, load_recipe
from cabench.suite import SuiteError, load_suite
from cabench.tasks.base import TASKS, statistic_for


def test_every_declared_outcome_statistic_is_what_statistic_for_returns() -> None:
    seen = set()
    for _, task in TASKS.items():
        metrics = {c.key for c in task.metrics} | {m for m, _ in task.headline}
        for kind, stats in task.outcomes.items():
            assert kind not in seen, f"outcome kind {kind!r} declared by two tasks"
            seen.add(kind)
            for metric, stat in stats.items():
                assert metric in metrics, (task.name, kind, metric)
                assert statistic_for(kind, metric) is stat
    assert {"classify", "segment", "voc", "coco"} <= seen
    assert statistic_for("coco", "ap") is None  # declared, with no bootstrap statistic
    assert statistic_for("no-such-kind", "top1") is None


def test_every_task_floor_is_registered_and_fills_a_metric_of_the_task() -> None:
    for _, task in TASKS.items():
        for floor in task.floors:
            assert floor in FLOORS, (task.name, floor)
        assert task.headline_metric in {c.key for c in task.metrics} | {m for m, _ in task.headline}


def test_a_floor_of_another_task_is_one_line(tmp_path: Path) -> None:
    text = Path("suites/probe-classify.yaml").read_text().replace("floor: logistic-pixels", "floor: mean-box")
    path = tmp_path / "probe-classify.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError, match=r"floor: 'mean-box' is not a floor of task 'classify' \(its floors: logistic"):
        load_suite(path)


def test_figure1_panels_draw_each_suites_headline_metric() -> None:
    cells = pd.DataFrame(
        [
            {"suite": suite, "column": column}
            for suite, columns in {
                "table2": ("params", "madds", "top1"),
                "table6": ("params", "madds", "ap50", "ap", "ap_s"),  # ap comes first in the task's headline
                "table8": ("params", "miou"),
                "table1": ("params", "madds"),
            }.items()
            for column in columns
        ]
    )
    got = {s: plots.headline_column(cells, s) for s in ("table2", "table6", "table8", "table1")}
    assert got == {"table2": "top1", "table6": "ap", "table8": "miou", "table1": None}
    assert not hasattr(plots.FIGURE1_PANELS[0], "column")


def test_recipe_fields_of_another_task_are_refused_from_the_task_declarations(tmp_path: Path) -> None:
    classify = TASKS.get("classify")
    assert "label_smoothing" in classify.recipe_fields and "detection" in TASKS.get("detect").requires
    text = Path("suites/recipes/digits-mbv2-probe.yaml").read_text() + "crop_size: 321\n"
    path = tmp_path / "digits-mbv2-probe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match="crop_size only apply to segment recipes, not classify"):
        load_recipe(path)


def _compared_strings(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                out += [
                    (node.lineno, e.value) for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                ]
    return out


def test_no_module_outside_tasks_and_datasets_compares_against_their_names() -> None:
    """Task, dataset, training-profile and task-metric names are compared only where they are defined (the task
    and dataset modules); everything else reads the registries' declarations. ("count", "latency", "eval" and
    "params" are left out: they are also column kinds, a progress phase and torch's param-group key.)"""
    from cabench.data.base import DATASETS

    names = set(TASKS.names()) | set(DATASETS.names()) | {"smoke", "paper", "madds"}
    names |= {c.key for _, t in TASKS.items() for c in t.metrics} | {m for _, t in TASKS.items() for m, _ in t.headline}
    package = Path(__file__).resolve().parent.parent / "cabench"
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name in ("tasks", "data", "fixtures"):
            continue
        for line, value in _compared_strings(ast.parse(path.read_text())):
            if value in names:
                found.append(f"{path.relative_to(package)}:{line}: {value!r}")
    assert not found, found
