"""Suite lookup is explicit: --suites DIR, $CABENCH_SUITES, ./suites, then the packaged suites."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cabench import locate
from cabench.recipe import load_recipe
from cabench.suite import SuiteError, all_suite_files, find_suite, load_suite

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CABENCH_SUITES", raising=False)
    locate.set_suites_dir(None)
    yield
    locate.set_suites_dir(None)


def _edited_table1(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "suites" / "table1.yaml").read_text().replace("title:", "title: EDITED", 1)
    (folder / "table1.yaml").write_text(text)
    return folder / "table1.yaml"


def test_a_suites_folder_in_the_working_directory_shadows_the_packaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edited = _edited_table1(tmp_path / "suites")
    monkeypatch.chdir(tmp_path)
    assert find_suite("table1").resolve() == edited.resolve()  # the edit is not silently ignored
    assert load_suite(find_suite("table1")).title.startswith("EDITED")
    assert locate.display_path(find_suite("table1")) == "suites/table1.yaml"
    # the other tables and the recipes still come from the package
    assert find_suite("table2").resolve() == (locate.PACKAGED_SUITES / "table2.yaml").resolve()
    assert locate.display_path(find_suite("table2")) == "cabench:suites/table2.yaml"
    assert load_recipe("imagenet-mbv2-paper").id == "imagenet-mbv2-paper"
    assert "table9" in all_suite_files()


def test_cabench_suites_and_the_suites_option_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env_dir, cli_dir = tmp_path / "env", tmp_path / "cli"
    env_file, cli_file = _edited_table1(env_dir), _edited_table1(cli_dir)
    monkeypatch.setenv("CABENCH_SUITES", str(env_dir))
    assert find_suite("table1").resolve() == env_file.resolve()
    locate.set_suites_dir(cli_dir)
    assert find_suite("table1").resolve() == cli_file.resolve()
    assert [d.origin for d in locate.search_path()] == ["--suites", "CABENCH_SUITES", "packaged"]
    with pytest.raises(ValueError, match="no such folder"):
        locate.set_suites_dir(tmp_path / "missing")


def test_a_lock_beside_the_chosen_suites_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert locate.default_lock().resolve() == (locate.PACKAGED_SUITES / "counts.lock.json").resolve()
    _edited_table1(tmp_path / "suites")
    shutil.copy(ROOT / "suites" / "counts.lock.json", tmp_path / "suites" / "counts.lock.json")
    assert locate.default_lock() == Path("suites") / "counts.lock.json"


def test_no_suite_anywhere_is_an_error_not_an_empty_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locate, "PACKAGED_SUITES", tmp_path / "nothing")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SuiteError, match="no suite files"):
        all_suite_files()


CITED_ONLY = """\
id: citedonly
title: "Only cited rows"
source: "test"
task: classify
columns:
  params: {unit: M}
rows:
  - name: Someone else's net
    cited: true
    published: {params: 3.5}
"""


def test_check_and_run_over_zero_cells_are_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cabench.cli import app

    suite = tmp_path / "citedonly.yaml"
    suite.write_text(CITED_ONLY)
    runner = CliRunner()
    checked = runner.invoke(app, ["check", str(suite), "--lock", str(tmp_path / "lock.json")])
    assert checked.exit_code == 2 and "nothing to check" in checked.stderr
    ran = runner.invoke(app, ["run", str(suite), "--runs-dir", str(tmp_path / "runs")])
    assert ran.exit_code == 2 and "nothing to run" in ran.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lock.json").exists()


def test_the_suites_option_is_searched_first(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cabench.cli import app

    _edited_table1(tmp_path / "mine")
    runner = CliRunner()
    result = runner.invoke(app, ["--suites", str(tmp_path / "mine"), "show", "table1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "EDITED" in result.stdout
    missing = runner.invoke(app, ["--suites", str(tmp_path / "nope"), "show", "table1"])
    assert missing.exit_code == 2 and "no such folder" in missing.stderr
