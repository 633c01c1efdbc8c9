"""`--launcher slurm` and `cabench status` against a real SLURM: the one-node cluster of tests/cluster/slurm-up
(Debian's slurmctld, slurmd, slurmdbd with MariaDB, munge). .ci/run brings it up before the tests and down after;
run alone, this module starts it itself (and stops what it started). Skipped, with the script's reason, only where
the script says the machine cannot run it (not root, no apt-get)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = Path(os.environ.get("CABENCH_SLURM_DIR", "/tmp/cabench-slurm"))
WAIT_S = 300


def _answers(env: dict[str, str]) -> bool:
    done = subprocess.run(["sinfo", "-h"], env=env, capture_output=True, text=True, check=False)
    return done.returncode == 0 and done.stdout.strip() != ""


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    env = {**os.environ, "SLURM_CONF": str(CLUSTER / "slurm.conf")}
    started = False
    if not (CLUSTER / "slurm.conf").is_file() or not _answers(env):
        up = subprocess.run([str(ROOT / "tests" / "cluster" / "slurm-up")], capture_output=True, text=True)
        if up.returncode == 3:
            pytest.skip(f"no SLURM cluster on this machine: {up.stdout.strip().splitlines()[-1]}")
        assert up.returncode == 0, up.stdout + up.stderr
        started = True
    yield env
    if started:
        subprocess.run([str(ROOT / "tests" / "cluster" / "slurm-down")], capture_output=True, check=False)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cabench.data.fixtures.imagenet import write_imagenet_fixture

    return write_imagenet_fixture(tmp_path_factory.mktemp("data") / "imagenet", train_per_class=4, val_per_class=2)


def _cabench(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])}
    full.update(OMP_NUM_THREADS="1", CABENCH_CONFIG=str(cwd / "cabench.toml"))
    cmd = [sys.executable, "-m", "cabench.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=600, check=False)


def _status(cwd: Path, env: dict[str, str], suite: str) -> dict[tuple[str, int], dict[str, Any]]:
    done = _cabench(cwd, env, "status", suite, "--json")
    assert done.returncode == 0, done.stderr
    return {(s["row"], s["seed"]): s for s in json.loads(done.stdout)}


def _settle(cwd: Path, env: dict[str, str], suite: str) -> dict[tuple[str, int], dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    while True:
        status = _status(cwd, env, suite)
        if not any(s["state"] in ("queued", "running") for s in status.values()):
            return status
        assert time.monotonic() < deadline, f"jobs still waiting after {WAIT_S} s: {status}"
        time.sleep(1)


def _job_field(env: dict[str, str], job: str, field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True, check=True)
    for word in shown.stdout.split():
        if word.startswith(field + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{field} not in scontrol show job {job}: {shown.stdout}")


def _begin_now(env: dict[str, str], job: str) -> None:
    """Once the requeued ``job`` is pending again, move the BeginTime SLURM gave it to now."""
    deadline = time.monotonic() + WAIT_S
    while _job_field(env, job, "JobState") != "PENDING":
        assert time.monotonic() < deadline, f"job {job} not pending again after {WAIT_S} s"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True, capture_output=True)


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"no {what} in {WAIT_S} s"
        time.sleep(0.2)


def _cells(reports: Path) -> dict[tuple[str, str], tuple[str, str]]:
    with open(reports / "results.csv") as fh:
        return {(c["row"], c["column"]): (c["reproduced"], c["status"]) for c in csv.DictReader(fh)}


FUSSY = """\
from torch import nn


class Fussy(nn.Module):
    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        if x.shape[0] > 3:
            raise RuntimeError("Fussy wants small batches")
        return x
"""

SUITE = """\
id: tiny
title: "Two rows of Table 1 and a block that fails in training"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
baseline: baseline
columns:
  params: {unit: M}
  top1: {unit: "%"}
rows:
  - {name: Baseline, id: baseline, model: {arch: mobilenetv2, width: 0.5, attention: none}}
  - {name: "+ CA", id: ca, model: {arch: mobilenetv2, width: 0.5, attention: ca}}
  - {name: "+ Fussy", id: fussy, model: {arch: mobilenetv2, width: 0.5, attention: "fussy_block:Fussy"}}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "fussy_block.py").write_text(FUSSY)
    (tmp_path / "tiny.yaml").write_text(SUITE)
    (tmp_path / "cabench.toml").write_text("[launcher]\ncpus_per_gpu = 1\n")
    return tmp_path


def _requeue_a_held_job(work: Path, slurm_env: dict[str, str], imagenet: Path) -> Path:
    """Submit one row-seed of hold.yaml that waits after its first checkpoint, `scontrol requeue` it, release it.
    SLURM holds a requeued job back until a BeginTime about two minutes on; the test sets it to now (scheduling
    policy, not what is tested), and the caller goes on while the job starts again and resumes."""
    (work / "hold.yaml").write_text(SUITE.replace("id: tiny", "id: hold"))  # same models: smoke never twins them
    hold = work / "hold"
    hold.mkdir()
    env = {**slurm_env, "CABENCH_PLUGINS": "launch_hold_plugin", "CABENCH_TEST_HOLD": str(hold)}
    args = ["run", "hold.yaml", "--profile", "smoke", "--data", f"imagenet={imagenet}", "--rows", "ca"]
    submitted = _cabench(work, env, *args, "--ckpt-every", "1", "--keep-checkpoints", "last", "--launcher", "slurm")
    assert submitted.returncode == 0, submitted.stderr
    (job,) = re.findall(r"hold/ca seed 0: job (\S+)", submitted.stderr)
    _wait_for(hold / "held-1", "held job")  # step 1 trained and checkpointed; the job waits there
    subprocess.run(["scontrol", "requeue", job], env=slurm_env, check=True, capture_output=True)
    (hold / "release-1").touch()
    _begin_now(slurm_env, job)
    return work / "runs" / "hold" / "ca" / "smoke"


def test_an_array_fills_the_cells_an_inline_run_fills_status_reads_sacct_and_requeue_resumes(
    work: Path, slurm_env: dict[str, str], imagenet: Path
) -> None:
    requeued = _requeue_a_held_job(work, slurm_env, imagenet)
    smoke = ["run", "tiny.yaml", "--profile", "smoke", "--data", f"imagenet={imagenet}"]
    submitted = _cabench(work, slurm_env, *smoke, "--seeds", "0,1", "--rows", "baseline", "--launcher", "slurm")
    assert submitted.returncode == 0 and "2 job(s) submitted of 2" in submitted.stdout, submitted.stderr
    status = _settle(work, slurm_env, "tiny.yaml")
    assert {k: s["state"] for k, s in status.items() if k[0] == "baseline"} == {
        ("baseline", 0): "done",
        ("baseline", 1): "done",
    }
    assert set(status) == {("baseline", 0), ("baseline", 1)}  # status follows what was planned

    failing = _cabench(work, slurm_env, *smoke, "--rows", "fussy", "--rows", "ca", "--launcher", "slurm")
    assert failing.returncode == 0, failing.stderr
    status = _settle(work, slurm_env, "tiny.yaml")
    assert status[("ca", 0)]["state"] == "done"
    failed = status[("fussy", 0)]
    assert failed["state"] == "failed" and Path(failed["log"]).is_file(), failed
    assert "Fussy wants small batches" in Path(failed["log"]).read_text()

    again = _cabench(
        work, slurm_env, *smoke, "--seeds", "0,1", "--rows", "fussy", "--rows", "ca", "--launcher", "slurm"
    )
    assert "3 job(s) submitted of 4" in again.stdout, again.stdout + again.stderr  # failed + missing only
    _settle(work, slurm_env, "tiny.yaml")

    inline = _cabench(work, slurm_env, *smoke, "--rows", "baseline", "--rows", "ca", "--runs-dir", "inline")
    assert inline.returncode == 0, inline.stderr
    for runs, out in (("runs", "from-slurm"), ("inline", "from-inline")):
        done = _cabench(work, slurm_env, "report", "tiny.yaml", "--runs-dir", runs, "--out", out, "--no-figures")
        assert done.returncode == 0, done.stderr
    slurm_cells, inline_cells = _cells(work / "from-slurm"), _cells(work / "from-inline")
    for key in (("baseline", "top1"), ("ca", "top1"), ("baseline", "params"), ("ca", "params")):
        assert slurm_cells[key] == inline_cells[key], key

    assert _settle(work, slurm_env, "hold.yaml")[("ca", 0)]["state"] == "done"
    (run,) = [p for p in requeued.iterdir() if not p.name.startswith(".")]  # one run, resumed
    events = [json.loads(x)["event"] for x in (run / "log.jsonl").read_text().splitlines() if '"event"' in x]
    assert "resume" in events and events[-1] == "final", events


def test_launcher_settings_from_the_config_file_reach_sbatch_and_scancel_stops_one_element(
    work: Path, slurm_env: dict[str, str], imagenet: Path
) -> None:
    (work / "cabench.toml").write_text(
        '[launcher]\npartition = "debug"\ncpus_per_gpu = 1\ntime_limit = 30\nmem = "1G"\n'
        '[launcher.sbatch]\ncomment = "cabench-test"\n'
    )
    args = ["run", "tiny.yaml", "--profile", "smoke", "--data", f"imagenet={imagenet}", "--rows", "baseline"]
    submitted = _cabench(work, slurm_env, *args, "--seeds", "0,1,2", "--launcher", "slurm")
    assert submitted.returncode == 0, submitted.stderr
    jobs = dict(re.findall(r"tiny/baseline seed (\d): job (\S+)", submitted.stderr))
    assert sorted(jobs) == ["0", "1", "2"], submitted.stderr
    first = jobs["0"]
    subprocess.run(["scancel", jobs["2"]], env=slurm_env, check=True)
    assert _job_field(slurm_env, first, "Partition") == "debug"
    assert _job_field(slurm_env, first, "TimeLimit") == "00:30:00"
    assert _job_field(slurm_env, first, "MinMemoryNode") == "1G"
    assert _job_field(slurm_env, first, "Comment") == "cabench-test"
    status = _settle(work, slurm_env, "tiny.yaml")
    assert status[("baseline", 0)]["state"] == "done" and status[("baseline", 1)]["state"] == "done"
    assert status[("baseline", 2)]["state"] == "failed"  # cancelled: resubmitted by the next command


def test_a_job_asking_for_more_cpus_than_any_node_has_is_refused_before_submitting(
    work: Path, slurm_env: dict[str, str], imagenet: Path
) -> None:
    args = ["run", "tiny.yaml", "--profile", "smoke", "--data", f"imagenet={imagenet}", "--launcher", "slurm"]
    refused = _cabench(work, slurm_env, *args, "--cpus-per-gpu", "4096")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "each job asks for 4096 CPUs (--cpus-per-gpu 4096) and no node of the default partition" in refused.stderr
    assert not (work / "runs" / "tiny").exists()
