"""Budget subsets (issue 26): a committed class selection of the user's ImageNet, read in place, with budget suites
that take a paper suite's rows and claims and fill only their own cells."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.base import DATASETS, data_identity
from cabench.data.errors import DatasetError
from cabench.data.fixtures.imagenet import write_imagenet_fixture
from cabench.data.subsets import load_selection
from cabench.recipe import load_recipe
from cabench.suite import find_suite, load_suite

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _woof_tree(root: Path, val_per_class: int = 2, drop: str | None = None) -> Path:
    names = [c for c in load_selection("imagewoof").classes if c != drop]
    return write_imagenet_fixture(root, train_per_class=2, val_per_class=val_per_class, size=16, class_names=names)


def test_the_selections_are_the_cited_class_lists() -> None:
    in100, woof = load_selection("imagenet-100"), load_selection("imagewoof")
    assert len(in100.classes) == len(set(in100.classes)) == 100 and in100.val_images == 5_000
    assert {"n02869837", "n01749939", "n02090622"} <= set(in100.classes)  # first, second and last of CMC's list
    assert woof.classes[0] == "n02086240" and len(woof.classes) == 10 and woof.val_images == 500
    assert list(in100.classes) == sorted(in100.classes)  # class k is the k-th id in sorted order, as ImageFolder


def test_a_budget_suite_takes_its_paper_suites_rows_and_claims_but_no_published_value() -> None:
    paper, budget = load_suite(find_suite("table1"), probe=False), load_suite(find_suite("table1-in100"), probe=False)
    assert [r.key for r in budget.rows] == [r.key for r in paper.rows if not r.cited]
    assert [r.model for r in budget.rows] == [r.model for r in paper.rows if not r.cited]
    assert all(not r.published for r in budget.rows) and any(r.published for r in paper.rows)
    assert [c.id for c in budget.claims] == [c.id for c in paper.claims]
    assert budget.recipe == "imagenet100-mbv2-budget" and load_recipe(budget.recipe).dataset == "imagenet-100"
    narrow = load_suite(find_suite("table2-in100"), probe=False)
    assert [r.key for r in narrow.rows] == ["mbv2-1.0", "mbv2-1.0-se", "mbv2-1.0-cbam", "mbv2-1.0-ca"]
    assert {c.id for c in narrow.claims} == {
        "se-beats-baseline-w1.0",
        "ca-beats-se-w1.0",
        "ca-beats-cbam-w1.0",
        "cbam-equals-se-w1.0",
    }


def test_a_budget_suite_may_not_restate_what_its_paper_suite_declares(tmp_path: Path) -> None:
    text = (ROOT / "suites" / "table1-woof.yaml").read_text()
    for extra, message in (("task: classify\n", "'task' comes from its paper suite"), ("", "")):
        path = tmp_path / "bad.yaml"
        path.write_text(text + extra if extra else text.replace("budget_of:\n  suite: table1", "budget_of: table1"))
        result = runner.invoke(app, ["show", str(path)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert (message or "budget_of: expected {suite: PAPER_SUITE") in result.stderr


def test_the_subset_reads_only_the_selected_classes_at_the_recipes_size(tmp_path: Path) -> None:
    root = _woof_tree(tmp_path / "imagenet")
    write_imagenet_fixture(tmp_path / "other", classes=3, train_per_class=1, val_per_class=1, size=16)
    for folder in (tmp_path / "other").iterdir():  # three classes outside the selection, in the same tree
        for split in folder.iterdir():
            split.rename(root / folder.name / split.name)
    train, val = DATASETS.get("imagewoof").build(root, load_recipe("imagewoof-mbv2-budget"))
    assert len(train) == 20 and len(val) == 20  # 2 per selected class; the three others are not read
    assert train.class_to_idx == {wnid: k for k, wnid in enumerate(load_selection("imagewoof").classes)}
    assert tuple(train[0][0].shape) == (3, 128, 128) and tuple(val[0][0].shape) == (3, 128, 128)  # down-sampled


def test_a_tree_without_a_selected_class_is_one_line_naming_it(tmp_path: Path) -> None:
    root = _woof_tree(tmp_path / "imagenet", drop="n02099601")
    with pytest.raises(DatasetError, match=r"no folder for class n02099601 of the Imagewoof"):
        DATASETS.get("imagewoof").validate(root)
    result = runner.invoke(
        app, ["run", "table1-woof", "--profile", "smoke", "--data", f"imagenet={root}", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no folder for class n02099601" in result.stderr, result.output
    assert result.stderr.count("\n") == 1


def test_the_identity_is_the_selection_at_its_declared_size(tmp_path: Path) -> None:
    small = data_identity("imagewoof", _woof_tree(tmp_path / "small"))
    assert (small.check, small.paper, small.fills, small.images) == ("budget-subset", False, False, 20)
    assert small.detail == "not the Imagewoof (10 dog breeds) val split (20 images in 10 classes)"
    full = data_identity("imagewoof", _woof_tree(tmp_path / "full", val_per_class=50))
    assert (full.paper, full.fills, full.images, full.expected_images) == (False, True, 500, 500)


@pytest.mark.slow
def test_a_budget_run_fills_its_own_cell_and_never_a_paper_cell(tmp_path: Path) -> None:
    root, runs, reports = _woof_tree(tmp_path / "imagenet", val_per_class=50), tmp_path / "runs", tmp_path / "out"
    args = ["run", "table1-woof", "--profile", "paper", "--rows", "baseline", "--data", f"imagenet={root}"]
    args += ["--epochs", "1", "--batch-size", "10", "--workers", "0", "--keep-checkpoints", "none"]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    (run_dir,) = (runs / "table1-woof" / "baseline" / "paper").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "imagewoof" and config["data_identity"]["fills"] is True
    result = runner.invoke(
        app, ["report", "table1-woof", "table1", "--runs-dir", str(runs), "--out", str(reports), "--no-figures"]
    )
    assert result.exit_code == 0, result.output
    with open(reports / "results.csv") as fh:
        cells = {(c["suite"], c["row"], c["column"]): c for c in csv.DictReader(fh)}
    own, paper = cells[("table1-woof", "baseline", "top1")], cells[("table1", "baseline", "top1")]
    assert own["reproduced"] != "" and own["published"] == "" and own["status"] != "match"
    assert paper["reproduced"] == "" and paper["status"] == "pending"
    assert "Budget: Imagewoof at 128 px, 80 epochs" in (reports / "table1-woof.md").read_text()


@pytest.mark.slow
def test_the_budget_recipe_runs_end_to_end_with_smoke_on_its_own_fixture(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "table1-woof", "--profile", "smoke", "--rows", "ca", "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    fixture = tmp_path / "runs" / "_fixtures" / "imagewoof"  # written by cabench.data.fixtures.subsets
    assert sorted(p.name for p in (fixture / "val").iterdir()) == list(load_selection("imagewoof").classes)


def test_show_gives_the_cost_per_row_seed_without_importing_torch() -> None:
    code = (
        "import sys; sys.argv = ['cabench', 'show', 'table1-in100']\n"
        "from cabench.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    text = " ".join(done.stdout.split())
    assert text.endswith("False"), done.stdout
    assert "Cost: about 0.5 GPU-hours per row-seed (3,800,670 training images at 2,000 img/s: assumed" in text
