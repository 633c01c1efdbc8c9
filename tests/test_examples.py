"""The README's "Bring your own block" example, run as written from a folder outside the repository.

The example files are copied to a temporary folder, and cabench runs there in a fresh process through each
of the three routes: the block's import path in a suite row, ``--plugin``, and an entry point of a package
(a ``*.dist-info`` folder with ``entry_points.txt`` on ``PYTHONPATH``: what ``pip install`` would leave).
Each route counts the block, runs one smoke row with it, and reports it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end runs in subprocesses: the full tier only

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _cabench(folder: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "import sys; from cabench.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900, check=False)


def _setup(tmp_path: Path, route: str) -> tuple[Path, dict[str, str], list[str]]:
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(EXAMPLES / "my_block.py", folder)
    suite = (EXAMPLES / "my_suite.yaml").read_text()
    paths = [str(ROOT)]
    plugin: list[str] = []
    if route == "import-path":
        paths.append(str(folder))
    else:
        suite = suite.replace('attention: "my_block:GatedPool"', "attention: gated-pool")
        assert "attention: gated-pool" in suite
        if route == "plugin":
            paths.append(str(folder))
            plugin = ["--plugin", "my_block"]
        else:  # an installed package: the module and its dist-info with the entry point, in site-packages
            site = tmp_path / "site"
            (site / "mylab_blocks-0.1.dist-info").mkdir(parents=True)
            shutil.move(str(folder / "my_block.py"), site / "my_block.py")
            (site / "mylab_blocks-0.1.dist-info" / "METADATA").write_text(
                "Metadata-Version: 2.1\nName: mylab-blocks\nVersion: 0.1\n"
            )
            (site / "mylab_blocks-0.1.dist-info" / "entry_points.txt").write_text(
                "[cabench.plugins]\nmy_block = my_block\n"
            )
            paths.append(str(site))
    (folder / "my_suite.yaml").write_text(suite)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "CABENCH_PLUGINS": "", "CABENCH_RUNS": "runs"}
    return folder, env, plugin


@pytest.mark.parametrize("route", ["import-path", "plugin", "entry-point"])
def test_the_readme_example_runs_from_outside_the_repository(tmp_path: Path, route: str) -> None:
    folder, env, plugin = _setup(tmp_path, route)
    block = "my_block:GatedPool" if route == "import-path" else "gated-pool"
    count = _cabench(folder, "count", "mobilenetv2", "--attention", block, "--json", *plugin, env=env)
    assert count.returncode == 0, count.stderr
    assert json.loads(count.stdout)["params"] > 3_504_872  # MobileNetV2 plus the block's gates
    for args in (["run", "my_suite.yaml"], ["run", "my_suite.yaml", "--profile", "smoke", "--rows", "mine"]):
        result = _cabench(folder, *args, *plugin, env=env)
        assert result.returncode == 0, result.stderr
    report = _cabench(folder, "report", "my_suite.yaml", "--out", "reports", "--no-figures", *plugin, env=env)
    assert report.returncode == 0, report.stderr
    with open(folder / "reports" / "results.csv") as fh:
        cells = {(c["row"], c["column"]): c for c in csv.DictReader(fh)}
    assert cells[("mine", "params")]["status"] == "new" and cells[("mine", "params")]["exact"]
    assert cells[("baseline", "params")]["status"] == "match"
    page = (folder / "reports" / "my-suite.md").read_text()
    assert "not built into cabench" in page and "my_block" in page
    config = json.loads(next((folder / "runs" / "my-suite" / "mine" / "smoke").glob("*/config.json")).read_text())
    assert config["attention_block"]["import_path"] == "my_block:GatedPool"
    assert len(config["attention_block"]["sha256"]) == 64
