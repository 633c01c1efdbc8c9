"""A plugin is untrusted code run on purpose: whatever it raises while importing, and whatever a block raises while
being built (SystemExit and KeyboardInterrupt included), is one line naming it and exit 2, never a traceback, exit 1
(the drift code) or a silent exit 0; a function of the standard library named as a block is refused before it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end runs in subprocesses: the full tier only

ROOT = Path(__file__).resolve().parent.parent

PLUGINS = {
    "exits": "import sys\nsys.exit(0)\n",
    "interrupts": "raise KeyboardInterrupt\n",
    "base_exception": "class Odd(BaseException):\n    pass\n\nraise Odd('odd')\n",
}


def _cabench(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-c", "import sys; from cabench.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("command", [["list"], ["show", "table1"], ["count", "mobilenetv2"]])
@pytest.mark.parametrize("kind", list(PLUGINS))
def test_a_plugin_that_fails_on_import_is_one_line_exit_2(tmp_path: Path, kind: str, command: list[str]) -> None:
    (tmp_path / f"plugin_{kind}.py").write_text(PLUGINS[kind])
    done = _cabench(tmp_path, *command, "--plugin", f"plugin_{kind}")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"cabench: error: plugin 'plugin_{kind}' failed while importing: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_block_whose_constructor_exits_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "quitter.py").write_text(
        "import sys\n\n\nclass Quitter:\n    def __init__(self, c):\n        sys.exit(0)\n"
    )
    done = _cabench(tmp_path, "count", "mobilenetv2", "--attention", "quitter:Quitter")
    assert done.returncode == 2 and "quitter:Quitter" in done.stderr and "SystemExit" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("path", ["os:_exit", "sys:exit"])
def test_a_standard_library_function_is_not_a_block(tmp_path: Path, path: str) -> None:
    done = _cabench(tmp_path, "count", "mobilenetv2", "--attention", path)  # os:_exit(64) used to end the process
    assert done.returncode == 2 and f"attention {path!r} comes from the standard library" in done.stderr


FUSSY_BLOCK = """\
from torch import nn


class Fussy(nn.Module):
    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        if x.shape[0] > 3:  # the construction probe's batches have 2 and 3 images, training's more
            raise RuntimeError("Fussy wants small batches")
        return x
"""

FUSSY_SUITE = """\
id: fussy
title: "A user's block in Table 1's backbone"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
columns:
  top1: {unit: "%"}
rows:
  - name: "+ Fussy"
    id: fussy
    model: {arch: mobilenetv2, width: 0.5, attention: "fussy_block:Fussy"}
"""


def test_a_block_that_raises_only_on_real_batches_is_one_line_naming_its_line(tmp_path: Path) -> None:
    # Issue 22: it passed the construction probe, then failed in training with exit 3 ("unexpected error").
    (tmp_path / "fussy_block.py").write_text(FUSSY_BLOCK)
    (tmp_path / "fussy.yaml").write_text(FUSSY_SUITE)
    done = _cabench(tmp_path, "run", "fussy.yaml", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs"))
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("cabench: error:")]
    where = f"{tmp_path / 'fussy_block.py'}:10 (in forward)"
    assert line.startswith(f"cabench: error: your code raised RuntimeError: Fussy wants small batches at {where}")
    log = Path(line.rpartition("traceback in ")[2])
    assert "Fussy wants small batches" in log.read_text() and "Traceback" not in done.stderr
