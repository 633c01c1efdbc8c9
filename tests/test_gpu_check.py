"""benchmarks/gpu_check.py runs where only torch and torchvision are guaranteed (CPU, small sizes, optional
packages blocked), and writes its results where it is told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("fvcore", "iopath", "pycocotools", "scipy", "sklearn", "timm")


@pytest.mark.slow
def test_gpu_check_stages_run_without_the_optional_packages(tmp_path: Path) -> None:
    out = tmp_path / "out"
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in BLOCKED)  # importing them raises ImportError
    code = (
        f"import sys, runpy; {block}; "
        "sys.argv = ['gpu_check.py', 'bench', 'pipeline', 'epoch', '--quick', '--device', 'cpu', '--rounds', '1', "
        f"'--out', {str(out)!r}]; runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_check.py')!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    bench = json.loads((out / "bench.json").read_text())
    assert set(bench["skipped"]) == {"timm_ca", "timm_mobilenetv2"}  # timm blocked: skipped with the reason
    assert "timm" in bench["skipped"]["timm_ca"]
    for section in bench["sections"]:
        assert section["rows"]["baseline"]["ratio"] == 1.0
        assert set(section["rows"]) == {"baseline", "ca"}
    pipeline = json.loads((out / "pipeline.json").read_text())
    assert pipeline["per_worker_img_s"]["cabench"] > 0 and pipeline["per_worker_img_s"]["reference"] > 0
    epoch = json.loads((out / "epoch.json").read_text())
    assert set(epoch["rows"]) == {"baseline", "ca"}
    for row in epoch["rows"].values():
        assert row["cabench_img_s"] > 0
        assert str(row["timm_step_img_s"]).startswith("skipped: timm not importable")
