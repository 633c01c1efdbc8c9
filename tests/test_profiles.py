"""Profiles as modules: the registry behind `cabench run`, seeds as part of a run's identity, plugins."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.fixtures import write_imagenet_fixture
from cabench.profiles.train import parse_seeds

runner = CliRunner()

SUITE = """\
id: tiny
title: "One row of Table 1"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
columns:
  params: {unit: M}
  top1: {unit: "%", tolerance: 0.3}
rows:
  - name: "+ CA"
    id: ca
    model: {arch: mobilenetv2, width: 0.5, attention: ca}
    published: {params: 2.1, top1: 67.0}
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE)
    return path


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_fixture(tmp_path_factory.mktemp("data") / "imagenet", train_per_class=4, val_per_class=2)


def test_seeds_are_a_list_or_a_count() -> None:
    assert parse_seeds("0,1,2", None) == [0, 1, 2]
    assert parse_seeds("3", None) == [0, 1, 2]
    assert parse_seeds("5,", None) == [5]
    assert parse_seeds(None, 4) == [4] and parse_seeds(None, None) == [0]
    for bad in ("0", "a,b", "1,1", "-1", "0,,1", ",", ""):
        with pytest.raises(ValueError):
            parse_seeds(bad, None)
    with pytest.raises(ValueError, match="--seed 0"):
        parse_seeds("0", None)


def test_an_unknown_profile_is_one_line_with_the_available_ones(tmp_path: Path, suite: Path) -> None:
    result = runner.invoke(app, ["run", str(suite), "--profile", "papr", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "unknown profile 'papr' (did you mean 'paper'?)" in line
    assert "count" in line and "latency" in line and "smoke" in line
    assert not (tmp_path / "runs").exists()


def test_an_option_of_another_profile_is_refused_not_ignored(tmp_path: Path, suite: Path) -> None:
    result = runner.invoke(app, ["run", str(suite), "--rounds", "5", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "--rounds does not apply to profile 'count' (it applies to latency)" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_each_seed_is_its_own_run_and_a_done_seed_is_skipped(tmp_path: Path, suite: Path, imagenet: Path) -> None:
    runs = tmp_path / "runs"
    base = ["run", str(suite), "--profile", "paper", "--data", f"imagenet={imagenet}", "--runs-dir", str(runs)]
    base += ["--epochs", "1", "--batch-size", "8", "--workers", "0"]
    first = runner.invoke(app, base)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [*base, "--seeds", "0,1"])
    assert again.exit_code == 0, again.output
    assert "seed 0: done already, skipped" in again.stderr and "seed 1: training" in again.stderr
    configs = [json.loads((d / "config.json").read_text()) for d in (runs / "tiny" / "ca" / "paper").iterdir()]
    assert sorted(c["seed"] for c in configs) == [0, 1]
    assert len({c["resume_key"] for c in configs}) == 2
    assert all(c["seeded"] == ["weight initialisation", "data order", "augmentation"] for c in configs)
    assert all(c["settings"]["seed"] == c["seed"] for c in configs)


@pytest.mark.slow
def test_a_row_seed_another_suite_trained_already_is_recorded_not_retrained(
    tmp_path: Path, suite: Path, imagenet: Path
) -> None:
    twin = tmp_path / "twin.yaml"  # another suite, another row id, the same model (its defaults spelled out)
    twin.write_text(
        SUITE.replace("id: tiny", "id: twin")
        .replace("id: ca", "id: ca-hswish")
        .replace("attention: ca}", "attention: ca, reduction: 32, attention_args: {act: hswish}}")
    )
    runs = tmp_path / "runs"
    options = ["--profile", "paper", "--data", f"imagenet={imagenet}", "--runs-dir", str(runs)]
    options += ["--epochs", "1", "--batch-size", "8", "--workers", "0"]
    assert runner.invoke(app, ["run", str(suite), *options]).exit_code == 0
    again = runner.invoke(app, ["run", str(twin), *options, "--seeds", "0,1"])
    assert again.exit_code == 0, again.output
    (source,) = (runs / "tiny" / "ca" / "paper").iterdir()
    assert f"seed 0: the same run as tiny/ca/paper/{source.name} (recorded, not retrained)" in again.stderr
    assert "seed 1: training" in again.stderr
    by_seed = {}
    for run in (runs / "twin" / "ca-hswish" / "paper").iterdir():
        by_seed[json.loads((run / "config.json").read_text())["seed"]] = run
    recorded, source_metrics = by_seed[0], json.loads((source / "metrics.json").read_text())
    metrics = json.loads((recorded / "metrics.json").read_text())
    assert metrics["top1"] == source_metrics["top1"] and metrics["same_run_as"] == f"tiny/ca/paper/{source.name}"
    assert (recorded / "env.json").read_bytes() == (source / "env.json").read_bytes()
    assert not list(recorded.glob("*.pt"))  # a record, not a copy of the weights
    assert "same_run_as" not in json.loads((by_seed[1] / "config.json").read_text())


def test_a_plugin_profile_brings_its_own_option(tmp_path: Path, suite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "myprofiles.py").write_text(
        textwrap.dedent(
            """
            from cabench.profiles import Option, Outcome, Profile, register_profile

            class Echo(Profile):
                name = "echo"
                description = "records each row's name, times --repeat"
                options = (Option("repeat", int, 1, "echo: how many times"),)

                def run(self, request):
                    records = []
                    for suite in request.suites:
                        for row in request.selected(suite):
                            metrics = {"echo": row.name * request.options["repeat"]}
                            records.append(request.store.write_run(suite.id, row.key, self.name, {}, metrics))
                    return Outcome(records, columns=("echo",))

            register_profile(Echo())
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    runs = tmp_path / "runs"
    args = ["run", str(suite), "--profile", "echo", "--repeat", "2", "--runs-dir", str(runs), "--plugin", "myprofiles"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "+ CA+ CA" in result.stdout
    record = json.loads(next((runs / "tiny" / "ca" / "echo").iterdir()).joinpath("metrics.json").read_text())
    assert record["echo"] == "+ CA+ CA"
    sys.modules.pop("myprofiles", None)


def test_a_plugin_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--plugin", "no_such_plugin_module", "list"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot import plugin 'no_such_plugin_module'" in result.stderr


def test_a_row_without_published_values_is_new_never_a_match(tmp_path: Path) -> None:
    text = SUITE.replace("    published: {params: 2.1, top1: 67.0}\n", "")
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    assert runner.invoke(app, ["run", str(path), "--runs-dir", str(runs)]).exit_code == 0
    result = runner.invoke(app, ["report", str(path), "--runs-dir", str(runs), "--out", str(reports), "--no-figures"])
    assert result.exit_code == 0, result.output
    lines = (reports / "results.csv").read_text().splitlines()
    params = next(line for line in lines if line.startswith("tiny,ca,params,"))
    assert params.split(",")[4] == "" and params.split(",")[8] == "new"  # no published value, status new
    row = next(line for line in (reports / "tiny.md").read_text().splitlines() if line.startswith("| + CA"))
    assert "🆕" in row and "✅" not in row


def test_registries_name_what_is_available() -> None:
    from cabench.columns import COLUMNS
    from cabench.data.base import DATASETS, FIXTURES
    from cabench.profiles import PROFILES
    from cabench.tasks.base import TASKS

    assert {"classify", "detect", "segment"} <= set(TASKS)
    assert {"imagenet", "coco", "voc-detection", "voc-segmentation", "cityscapes"} <= set(DATASETS)
    assert {"imagenet", "coco", "voc", "cityscapes"} <= set(FIXTURES)
    assert {"count", "latency", "smoke", "paper", "eval"} <= set(PROFILES)
    assert {c.key for t in TASKS.names() for c in TASKS[t].metrics} | {"params", "madds", "latency"} == set(COLUMNS)
    assert "unknown dataset 'cocoa' (did you mean 'coco'?)" in DATASETS.unknown("cocoa")


def test_torchrun_workers_get_the_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block registered by a wrapper (not through --plugin) must be known in every worker too."""
    from cabench.engine import distributed

    (tmp_path / "wrapper_columns.py").write_text(
        "from cabench.columns import ColumnInfo, register_column\n"
        "register_column(ColumnInfo('wrapper_metric', 'W', '%', 'accuracy'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CABENCH_PLUGINS", "")
    import wrapper_columns  # noqa: F401  (registers as a wrapper script would)

    seen: dict[str, str] = {}
    monkeypatch.setattr(distributed.subprocess, "call", lambda cmd, env: seen.update(env) or 0)
    assert distributed.launch_torchrun(2, ["run", "x", "--nproc", "2"]) == 0
    assert "wrapper_columns" in seen["CABENCH_PLUGINS"].split(",")


def test_a_resumed_run_says_where_it_resumes(tmp_path: Path) -> None:
    from cabench.profiles.train import _starting

    assert _starting(tmp_path) == "training"
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert _starting(tmp_path) == "resuming from its checkpoint"  # stopped otherwise (killed, time limit)
    (tmp_path / "log.jsonl").write_text('{"step": 3}\n{"event": "interrupted", "step": 4, "time": 0}\n')
    assert _starting(tmp_path) == "resuming at step 4"
