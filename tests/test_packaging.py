"""Suites and recipes ship with the package: a built wheel (not an editable install) finds them.

The trap this guards: ``pip install .`` once built a wheel with no YAML at all, so ``cabench run all`` ran 0 rows
and ``cabench check`` passed on 0 cells. The test builds the wheel, installs it into a fresh virtual environment
(its dependencies are borrowed from the running interpreter's site-packages through a ``.pth`` file, so that no
torch is downloaded) and runs the commands there from an empty folder.

The full ``run all`` / ``check`` over all nine tables recounts 49 models (minutes on a loaded 2-core machine); the
default run counts Table 5 (two models) and reports every table, and ``CABENCH_SLOW_TESTS=1`` runs all of it.
"""

from __future__ import annotations

import csv
import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cabench.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent
SLOW = os.environ.get("CABENCH_SLOW_TESTS") == "1"


def _sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = _sh(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        cwd=out,
    )
    assert build.returncode == 0, build.stderr
    (whl,) = out.glob("cabench-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; dependencies come from this interpreter's site-packages."""
    home = tmp_path_factory.mktemp("venv") / "v"
    base = getattr(sys, "_base_executable", sys.executable)
    made = _sh([base, "-m", "venv", "--without-pip", str(home)], cwd=home.parent)
    assert made.returncode == 0, made.stderr
    python = home / "bin" / "python"
    purelib = _sh([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=home)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q"]
    installed = _sh([*pip, str(wheel)], cwd=home, env=_env())  # no PYTHONPATH: its metadata would satisfy pip
    assert installed.returncode == 0, installed.stderr
    # Only now borrow the dependencies: before, pip would have seen this checkout's editable cabench there.
    Path(purelib.stdout.strip(), "_borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return home


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "CABENCH_"))}
    return env | {"COLUMNS": "200"}


def test_the_wheel_holds_every_suite_recipe_and_the_lock(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT).as_posix() for p in (ROOT / "suites").rglob("*") if p.suffix in (".yaml", ".json")]
    assert shipped, "the repository has no suites?"
    missing = [p for p in shipped if f"cabench/{p}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "cabench/suites/counts.lock.json" in names
    assert any(n.startswith("cabench/suites/recipes/") for n in names)


def _lock() -> dict[str, dict[str, int]]:
    return json.loads((ROOT / "suites" / "counts.lock.json").read_text())["counts"]


@pytest.mark.slow
def test_the_installed_wheel_runs_checks_and_reports_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    cabench = str(venv / "bin" / "cabench")
    work = tmp_path / "empty"
    work.mkdir()
    which = _sh([str(venv / "bin" / "python"), "-c", "import cabench; print(cabench.__file__)"], work, _env())
    assert str(venv) in which.stdout, which.stdout + which.stderr  # the wheel's copy, not the checkout
    target = ["all"] if SLOW else ["table5"]
    ran = _sh([cabench, "run", *target], work, _env())
    assert ran.returncode == 0, ran.stderr
    suites = sorted(p.stem for p in (ROOT / "suites").glob("*.yaml"))
    rows = sum(1 for p in (ROOT / "suites").glob("*.yaml") for r in load_suite(p).rows if r.model is not None)
    expected = f"{rows} rows of {len(suites)} suite(s)" if SLOW else "rows of 1 suite(s)"
    assert expected in ran.stdout, ran.stdout
    checked = _sh([cabench, "check", *([] if SLOW else ["table5"]), "--json"], work, _env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = json.loads(checked.stdout)
    assert result["cells"] > 0 and result["lock_checked"] > 0 and result["ok"]
    assert not result["unlocked"]  # the packaged lock came along
    reported = _sh([cabench, "report", "--no-figures"], work, _env())
    assert reported.returncode == 0, reported.stderr
    assert sorted(p.stem for p in (work / "reports").glob("table*.md")) == sorted(s for s in suites if "table" in s)
    with open(work / "reports" / "results.csv") as fh:
        cells = [c for c in csv.DictReader(fh) if c["column"] == "params" and c["exact"]]
    lock = _lock()
    locked_params = {v["params"] for v in lock.values()}
    assert cells and all(int(c["exact"]) in locked_params for c in cells)  # the repo's exact counts
    page = (work / "reports" / "table4.md").read_text()
    assert "`cabench:suites/table4.yaml`" in page  # named relative to where it was found, not an absolute path


def test_the_docker_line_keeps_runs_and_passes_gpus() -> None:
    readme = (ROOT / "docs" / "reference.md").read_text()
    line = readme[readme.index("Docker (CUDA") :].split("\n\n", 1)[0]
    assert "--gpus all" in line and '-v "$PWD/runs:/work/runs"' in line
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /work\n" in dockerfile  # where the mounted runs/ is read and written
    assert "setup.py" in dockerfile  # the packaging (suites as package data) needs it
