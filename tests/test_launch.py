"""Launchers (cabench.launch): a job per row x seed through submitit, with no cluster.

The local launcher runs real jobs (submitit's LocalExecutor: one process per row-seed) on a two-row suite of
small MobileNetV2s with the smoke profile; the SLURM launcher runs against a fake ``sbatch`` and ``sacct`` on
PATH that record what would be submitted. Launchers run as subprocesses (``python -m cabench.cli``), as a user
would start them; the tests kill, preempt and race them.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from cabench.checkpoint import load_checkpoint
from cabench.cli import app

pytestmark = pytest.mark.slow  # end-to-end runs in subprocesses: the full tier only

pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

SUITE = """\
id: tiny
title: "Two rows of Table 1, half width"
source: "test"
task: classify
recipe: imagenet-mbv2-paper
baseline: baseline
columns:
  params: {unit: M}
  top1: {unit: "%", tolerance: 0.3}
rows:
  - name: Baseline
    id: baseline
    model: {arch: mobilenetv2, width: 0.5, attention: none}
    published: {params: 2.0, top1: 65.4}
  - name: "+ CA"
    id: ca
    model: {arch: mobilenetv2, width: 0.5, attention: ca}
    published: {params: 2.1, top1: 67.0}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(SUITE)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CABENCH_CONFIG", "CABENCH_PLUGINS", "CABENCH_RUNS")}
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _cabench(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cabench.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600)


def _start(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "cabench.cli", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _status(cwd: Path, *suites: str) -> dict[tuple[str, int], dict[str, Any]]:
    given = [str(cwd / s) for s in suites]
    result = runner.invoke(app, ["status", *given, "--runs-dir", str(cwd / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    return {(s["row"], s["seed"]): s for s in json.loads(result.stdout)}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _runs(cwd: Path, row: str) -> list[Path]:
    return sorted(p for p in (cwd / "runs" / "tiny" / row / "smoke").iterdir() if not p.name.startswith("."))


SMOKE = ("run", "tiny.yaml", "--profile", "smoke", "--launcher", "local")
KEEP = ("--keep-checkpoints", "last")  # the final weights stay in checkpoint.pt (smoke keeps none by default)


def test_two_launchers_at_once_run_jobs_at_once_and_train_each_row_seed_once(work: Path) -> None:
    args = (*SMOKE, "--seeds", "0,1", "--rows", "baseline")
    launchers = [_start(work, *args) for _ in range(2)]
    for launcher in launchers:
        _, stderr = launcher.communicate(timeout=600)
        assert launcher.returncode == 0, stderr
        lines = stderr.splitlines()
        started = [i for i, line in enumerate(lines) if line.endswith(" started")]
        ended = [i for i, line in enumerate(lines) if ": done -> " in line or "another process" in line]
        assert len(started) <= 2 and len(ended) == len(started), stderr
        assert not started or max(started) < min(ended), "every job was running before the first one ended"
    assert len(_runs(work, "baseline")) == 2  # one run per seed
    logs = "".join(p.read_text() for p in (work / "runs" / "_jobs" / "submitit").glob("*_log.out"))
    assert logs.count(": training -> ") == 2, logs  # each row-seed trained by one job only
    status = _status(work, "tiny.yaml")
    assert sorted(status) == [("baseline", 0), ("baseline", 1)]
    assert {s["state"] for s in status.values()} == {"done"}
    for (row, seed), s in status.items():
        config = json.loads((work / s["run"]).joinpath("config.json").read_text())
        assert (config["row"], config["seed"]) == (row, seed)


def test_a_job_preempted_then_killed_resumes_each_time_to_the_weights_of_an_uninterrupted_run(work: Path) -> None:
    ref = _cabench(work, "run", "tiny.yaml", "--profile", "smoke", "--rows", "ca", "--runs-dir", "ref", *KEEP)
    assert ref.returncode == 0, ref.stderr
    (reference,) = sorted(p for p in (work / "ref" / "tiny" / "ca" / "smoke").iterdir())
    hold = work / "hold"
    hold.mkdir()
    args = (*SMOKE, "--rows", "ca", "--ckpt-every", "1", *KEEP)
    env = {"CABENCH_PLUGINS": "launch_hold_plugin", "CABENCH_TEST_HOLD": str(hold), "CABENCH_TEST_HOLDS": "2"}
    launcher = _start(work, *args, **env)
    os.kill(_wait_held(hold / "held-1", launcher), signal.SIGUSR2)  # submitit's preemption / time-limit signal
    os.kill(_wait_held(hold / "held-2", launcher), signal.SIGKILL)  # the requeued job, one step later
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 4 and "FAILED" in stderr, stderr
    failed = _status(work, "tiny.yaml")[("ca", 0)]
    assert failed["state"] == "failed" and failed["job"]
    assert Path(failed["log"]).is_file() and '"step": 2' in failed["last_line"]
    (run,) = _runs(work, "ca")
    assert not (run / "metrics.json").exists()

    again = _cabench(work, *args)
    assert again.returncode == 0 and "1 job(s) submitted of 1" in again.stdout, again.stderr
    done = _status(work, "tiny.yaml")[("ca", 0)]
    assert done["state"] == "done" and work / done["run"] == run  # the same run, resumed twice
    events = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    expected = [("interrupted", 1), ("resume", 1), ("resume", 2), ("final", 3)]
    assert [(e["event"], e["step"]) for e in events if "event" in e] == expected
    assert [e["step"] for e in events if "event" not in e] == [1, 2, 3]
    logs = "".join(p.read_text() for p in (work / "runs" / "_jobs" / "submitit").glob("*_log.*"))
    assert "requeued" in logs.lower()
    _assert_same_weights(_weights(run), _weights(reference))


def test_ctrl_c_on_the_local_launcher_is_one_line_and_the_job_checkpoints_and_resumes(work: Path) -> None:
    hold = work / "hold"
    hold.mkdir()
    args = (*SMOKE, "--rows", "ca", "--ckpt-every", "1", *KEEP)
    env = {"CABENCH_PLUGINS": "launch_hold_plugin", "CABENCH_TEST_HOLD": str(hold)}
    cmd = [sys.executable, "-m", "cabench.cli", *args]
    launcher = subprocess.Popen(
        cmd,
        cwd=work,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    job = _wait_held(hold / "held-1", launcher)
    os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C at the terminal: every process of the foreground group
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.splitlines()[-1] == (
        "cabench: interrupted: 1 running job(s) told to checkpoint and stop, 0 not started; the same command "
        "resumes them"
    )
    (hold / "release-1").touch()  # the held job goes on to its step boundary, where the SIGTERM stops it
    deadline = time.monotonic() + 60
    while _alive(job):  # the job checkpoints at its step boundary and ends
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.05)
    (run,) = _runs(work, "ca")
    assert not (run / "metrics.json").exists()
    again = _cabench(work, *args)
    assert again.returncode == 0, again.stderr
    events = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if "event" in e] == ["interrupted", "resume", "final"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_held(marker: Path, launcher: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 300
    while not marker.exists() or not marker.read_text():
        assert launcher.poll() is None, launcher.communicate()[1]
        assert time.monotonic() < deadline, f"no job reached {marker.name}"
        time.sleep(0.05)
    return int(marker.read_text())


FAKE_SBATCH = """#!/bin/sh
n=$(ls "$FAKE_SLURM" | grep -c '^submitted-')
cp "$1" "$FAKE_SLURM/submitted-$n.sh"
echo "Submitted batch job $((4242 + n))"
"""
FAKE_SINFO = """#!/bin/sh
echo "gpu* 64"
"""
FAKE_SACCT = """#!/bin/sh
[ -f "$FAKE_SLURM/sacct.fail" ] && { echo "sacct: fatal: Could not establish a configuration source" >&2; exit 1; }
echo "$@" >> "$FAKE_SLURM/sacct.calls"
cat "$FAKE_SLURM/sacct.txt"
"""
FAKE_SQUEUE = """#!/bin/sh
# squeue -h -r -o %i -j IDS: those of IDS listed in squeue.txt (the jobs the controller holds), as SLURM answers
found=""
for id in $(echo "$6" | tr ',' ' '); do grep -qx "$id" "$FAKE_SLURM/squeue.txt" 2>/dev/null && found="$found $id"; done
[ -n "$found" ] || { echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; }
for id in $found; do echo "$id"; done
"""
CONFIG = """
[launcher]
partition = "gpu"
account = "lab"
mem = "64G"

[launcher.sbatch]
qos = "normal"
"""


@pytest.fixture
def fake_slurm(work: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``sbatch`` (keeps each submitted script, answers job 4242, 4243, ...), ``sacct`` and ``srun`` (which
    submitit looks for) on PATH."""
    bin_dir, fake = work / "bin", work / "slurm"
    bin_dir.mkdir()
    fake.mkdir()
    for name, text in (
        ("sbatch", FAKE_SBATCH),
        ("sacct", FAKE_SACCT),
        ("srun", "#!/bin/sh\nexit 1\n"),
        ("sinfo", FAKE_SINFO),
        ("squeue", FAKE_SQUEUE),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(fake))
    (work / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("CABENCH_CONFIG", str(work / "config.toml"))
    return fake


def _sbatch_lines(script: Path) -> set[str]:
    return {line for line in script.read_text().splitlines() if line.startswith("#SBATCH")}


def test_slurm_submits_one_array_of_the_missing_row_seeds_and_resubmits_only_the_failed(
    work: Path, fake_slurm: Path
) -> None:
    from cabench.launch.job import RowSeedJob

    runs = str(work / "runs")
    args = ["run", str(work / "tiny.yaml"), "--profile", "smoke", "--seeds", "0,1", "--runs-dir", runs]
    args += ["--launcher", "slurm", "--gpus-per-job", "2", "--time-limit", "1:30:00", "--max-parallel", "3"]
    result = runner.invoke(app, [*args, "--sbatch", "constraint=a100", "--mem", "80G"])
    assert result.exit_code == 0, result.output
    assert "4 job(s) submitted of 4 row-seed(s)" in result.stdout
    lines = _sbatch_lines(fake_slurm / "submitted-0.sh")
    expected = {"--array=0-3%3", "--partition=gpu", "--account=lab", "--mem=80G", "--gpus-per-node=2",
                "--cpus-per-task=16", "--time=90", "--nodes=1", "--ntasks-per-node=1", "--qos=normal",
                "--constraint=a100", "--signal=USR2@90"}  # fmt: skip
    assert {f"#SBATCH {e}" for e in expected} <= lines, lines
    folder = work / "runs" / "_jobs" / "submitit"
    jobs = {}
    for i in range(4):
        with open(folder / f"4242_{i}_submitted.pkl", "rb") as fh:
            job = pickle.load(fh).function
        assert isinstance(job, RowSeedJob) and job.spec.options["nproc"] == 2  # torchrun inside, a GPU each
        jobs[(job.unit.row, job.unit.seed)] = f"4242_{i}"
    assert sorted(jobs) == [("baseline", 0), ("baseline", 1), ("ca", 0), ("ca", 1)]

    states = {("baseline", 0): "RUNNING", ("baseline", 1): "PENDING", ("ca", 0): "FAILED", ("ca", 1): "COMPLETED"}
    sacct = ["JobID|State|NodeList"] + [f"{jobs[k]}|{v}|node1" for k, v in states.items()]
    (fake_slurm / "sacct.txt").write_text("\n".join(sacct) + "\n")
    (folder / f"{jobs['ca', 0]}_0_log.err").write_text(
        "Traceback (most recent call last):\nRuntimeError: out of memory\n"
    )
    status = _status(work, "tiny.yaml")
    assert {k: s["state"] for k, s in status.items()} == {
        ("baseline", 0): "running", ("baseline", 1): "queued", ("ca", 0): "failed", ("ca", 1): "failed"
    }  # fmt: skip
    assert status["baseline", 0]["job"] == jobs["baseline", 0]
    assert status["ca", 0]["last_line"] == "RuntimeError: out of memory"
    assert status["ca", 0]["log"] == str(folder / f"{jobs['ca', 0]}_0_log.err")
    assert (fake_slurm / "sacct.calls").read_text().count("\n") == 1  # one sacct call for the whole array

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "2 job(s) submitted of 4 row-seed(s) (1 running, 1 queued before)" in " ".join(again.stdout.split())
    assert "#SBATCH --array=0-1%2" in _sbatch_lines(fake_slurm / "submitted-1.sh")
    with open(folder / "4243_0_submitted.pkl", "rb") as fh:
        assert pickle.load(fh).function.unit.row == "ca"


def test_a_job_without_an_accounting_record_is_queued_while_the_controller_holds_it_and_failed_after(
    work: Path, fake_slurm: Path
) -> None:
    # Met on the one-node cluster: an array element cancelled while still pending leaves no record in sacct nor in
    # squeue, and status showed it queued for ever; a job too new for the accounting database is held by slurmctld.
    args = ["run", str(work / "tiny.yaml"), "--profile", "smoke", "--runs-dir", str(work / "runs")]
    assert runner.invoke(app, [*args, "--launcher", "slurm"]).exit_code == 0
    (fake_slurm / "sacct.txt").write_text("JobID|State|NodeList\n4242_0|RUNNING|node1\n")  # nothing on 4242_1
    (fake_slurm / "squeue.txt").write_text("4242_0\n4242_1\n")
    assert {k: s["state"] for k, s in _status(work, "tiny.yaml").items()} == {
        ("baseline", 0): "running", ("ca", 0): "queued"
    }  # fmt: skip
    (fake_slurm / "squeue.txt").write_text("4242_0\n")
    assert _status(work, "tiny.yaml")["ca", 0]["state"] == "failed"
    (fake_slurm / "squeue.txt").unlink()  # squeue holds neither: it fails outright, as SLURM's does
    assert _status(work, "tiny.yaml")["ca", 0]["state"] == "failed"


def test_status_says_once_in_one_line_that_sacct_failed(work: Path, fake_slurm: Path) -> None:
    # Met on a real cluster: with SLURM_CONF unset, sacct fails and submitit printed its warning per query plus
    # sacct's own lines between cabench's output.
    args = ["run", str(work / "tiny.yaml"), "--profile", "smoke", "--runs-dir", str(work / "runs")]
    assert runner.invoke(app, [*args, "--launcher", "slurm"]).exit_code == 0
    (fake_slurm / "sacct.fail").touch()
    result = runner.invoke(app, ["status", str(work / "tiny.yaml"), "--runs-dir", str(work / "runs")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "sacct" in line]
    assert notes == [
        "cabench: note: sacct failed (sacct: fatal: Could not establish a configuration source); jobs it could not "
        "report are shown as queued"
    ], result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "gpu"], "--partition applies to a launcher: add --launcher local or --launcher slurm"),
        (["--launcher", "local", "--partition", "gpu"], "--partition does not apply to --launcher local"),
        (["--launcher", "slurm", "--time-limit", "soon"], "--time-limit 'soon': expected minutes"),
        (["--launcher", "slurm", "--mem", "lots"], "--mem 'lots': expected a SLURM memory size"),
        (["--launcher", "slurm", "--sbatch", "qos"], "--sbatch 'qos': expected NAME=VALUE"),
        (["--launcher", "pbs"], "unknown launcher 'pbs'"),
        (["--launcher", "slurm", "--profile", "count"], "--launcher applies to the training profiles"),
    ],
)
def test_bad_launcher_options_are_one_line_before_any_job(work: Path, args: list[str], message: str) -> None:
    runs = work / "runs"
    result = runner.invoke(app, ["run", str(work / "tiny.yaml"), "--profile", "smoke", "--runs-dir", str(runs), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (runs / "_jobs" / "submitit").exists()


def test_an_unknown_key_in_the_launcher_table_names_the_file(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "config.toml").write_text('[launcher]\npartition = "gpu"\nqueue = "fast"\n')
    monkeypatch.setenv("CABENCH_CONFIG", str(work / "config.toml"))
    result = runner.invoke(app, ["run", str(work / "tiny.yaml"), "--profile", "smoke", "--launcher", "slurm"])
    assert result.exit_code == 2
    assert f"{work / 'config.toml'}: [launcher] queue: unknown key" in result.output


def test_without_submitit_a_launcher_is_one_line_naming_the_extra(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cabench.launch.base

    real = cabench.launch.base.importlib.util.find_spec
    monkeypatch.setattr(
        cabench.launch.base.importlib.util, "find_spec", lambda n, *a: None if n == "submitit" else real(n, *a)
    )
    result = runner.invoke(app, ["run", str(work / "tiny.yaml"), "--profile", "smoke", "--launcher", "slurm"])
    assert result.exit_code == 2
    assert result.output.strip() == "cabench: error: --launcher slurm needs submitit: pip install 'cabench[slurm]'"


def test_status_names_the_job_holding_a_row_seed_and_says_missing_for_one_never_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cabench.launch.records import write_record
    from cabench.profiles.base import RowSeed
    from cabench.store import Store

    store = Store(tmp_path / "runs")
    held, planned = (RowSeed("tiny", "tiny.yaml", "baseline", "paper", seed, f"key{seed}") for seed in (0, 1))
    for unit in (held, planned):
        write_record(store, unit, None)  # planned, never submitted (a launcher interrupted before submitting)
    monkeypatch.setenv("CABENCH_JOB_ID", "4242_7")  # what a launcher's job sets before it trains
    lease = store.lease("tiny", "baseline", "paper", 0)
    assert lease is not None
    try:
        status = _status(tmp_path)
    finally:
        lease.release()
    assert (status["baseline", 0]["state"], status["baseline", 0]["job"]) == ("running", "4242_7")
    assert status["baseline", 1]["state"] == "missing"
    assert _status(tmp_path)["baseline", 0]["state"] == "missing"  # released, and no result: missing again


def test_local_launcher_says_jobs_ended_and_time_left_from_the_mean_job(monkeypatch: pytest.MonkeyPatch) -> None:
    from cabench.launch import local

    now = iter([0.0, 0.0, 10.0, 10.0, 30.0, 30.0, 70.0, 90.0])
    monkeypatch.setattr(local.time, "monotonic", lambda: next(now))
    eta = local._Eta(total=4, parallel=2)
    eta.started("a"), eta.started("b")
    assert eta.finished("a", failed=0) == "1/4 jobs ended (0 failed), mean 0:10 per job, about 0:15 left"
    eta.started("c")
    assert eta.finished("b", failed=1) == "2/4 jobs ended (1 failed), mean 0:20 per job, about 0:20 left"
    eta.started("d")
    eta.finished("c", failed=1)
    assert eta.finished("d", failed=1) == "4/4 jobs ended (1 failed), mean 0:40 per job"


def test_the_local_launcher_runs_at_most_one_job_per_core_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten jobs that each import torch on two cores ran 3.9x slower than one process: the default is now the cores.
    from cabench.launch import local

    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert local.machine_slots(gpus_per_job=0) == 2
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert local.machine_slots(gpus_per_job=1) == 2  # no GPU here: the cores decide
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 8)
    assert local.machine_slots(gpus_per_job=2) == 4
