"""A runs directory shared by several processes: leases per row and seed, temp files, damaged folders.

The concurrency tests start real processes (``sys.executable -c``) that race on one store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cabench.lease import acquire, holder, host_name
from cabench.store import Store, StoreError, atomic_write_text, new_run_id

ROOT = Path(__file__).resolve().parent.parent

# Each worker walks the same seeds; for each it takes the lease, skips seeds already done,
# "trains" (appends to a shared log, sleeps) and records the result, then releases.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    import cabench.store
    from cabench.store import Store
    cabench.store.environment = dict  # not under test here; spares each worker a torch import
    store, log, seeds = Store(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    while not Path(sys.argv[4]).exists():  # start together
        time.sleep(0.005)
    for seed in seeds:
        lease = store.lease("t", "row", "smoke", seed)
        if lease is None:
            continue
        with lease:
            done = [r for r in store.runs("t", "row", "smoke") if r.config.get("seed") == seed]
            if done:
                continue
            with open(log, "a") as fh:
                fh.write(f"{seed} {os.getpid()}\\n")
            time.sleep(0.02)
            store.write_run("t", "row", "smoke", {"seed": seed}, {"train_loss": 1.0})
    """
)


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", *args], env=env, stderr=subprocess.PIPE)


def test_processes_sharing_a_store_train_each_row_seed_once_and_keep_every_result(tmp_path: Path) -> None:
    runs, log, go = tmp_path / "runs", tmp_path / "trained.log", tmp_path / "go"
    seeds = list(range(24))
    workers = [_spawn(WORKER, str(runs), str(log), json.dumps(seeds), str(go)) for _ in range(4)]
    time.sleep(0.5)
    go.touch()
    for w in workers:
        _, stderr = w.communicate(timeout=120)
        assert w.returncode == 0, stderr.decode()
    trained = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(seed) for seed, _ in trained) == seeds  # each seed exactly once
    records = Store(runs).runs("t", "row", "smoke")
    assert sorted(r.config["seed"] for r in records) == seeds  # no result lost
    assert len({pid for _, pid in trained}) > 1, "the workers were meant to share the work"
    assert not list((runs / "t" / "row" / "smoke").glob(".seed-*"))  # every lease released


def test_a_lease_of_a_killed_process_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / ".seed-0.lease"
    holder_script = "import sys, time; from pathlib import Path; from cabench.lease import acquire\n"
    holder_script += "lease = acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", holder_script, str(path)], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
    assert acquire(path) is None  # a live holder keeps it
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    lease = acquire(path)  # its pid is gone: the lease is stale at once
    assert lease is not None
    assert holder(path)["pid"] == os.getpid()
    lease.release()
    assert not path.exists()


def test_a_suspended_holder_on_this_host_keeps_its_lease(tmp_path: Path) -> None:
    # Issue 22: suspend a training past stale_after (Ctrl-Z, a paused VM, SLURM suspend), start the same command:
    # the lease was broken on its old heartbeat and two processes trained one run directory.
    path = tmp_path / ".seed-3.lease"
    holder_script = "import sys, time; from pathlib import Path; from cabench.lease import acquire\n"
    holder_script += "lease = acquire(Path(sys.argv[1]), 0.6); print('held', flush=True); time.sleep(60)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", holder_script, str(path)], env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        proc.send_signal(signal.SIGSTOP)
        old = time.time() - 120
        os.utime(path, (old, old))  # its heartbeat is long stopped
        assert acquire(path, stale_after=0.6) is None  # but its pid lives on this host: still held
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert acquire(path, stale_after=0.6) is not None  # gone: stale at once


@pytest.mark.parametrize("fields", [{"pid": 2**62}, {"pid": -5}, {"pid": 1 << 23}])
def test_a_lease_with_a_pid_no_process_can_have_is_stale(tmp_path: Path, fields: dict[str, int]) -> None:
    path = tmp_path / ".seed-4.lease"
    path.write_text(json.dumps({"host": host_name(), "token": "x", "started": 1e300, **fields}))
    lease = acquire(path, stale_after=60)  # used to exit 3 (OverflowError in os.kill)
    assert lease is not None
    lease.release()


def test_a_lease_holder_with_an_absurd_start_time_is_still_named(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs")
    cell = store.cell_dir("t", "row", "smoke")
    cell.mkdir(parents=True)
    (cell / ".seed-0.lease").write_text(json.dumps({"host": "h", "pid": 7, "started": 1e300}))
    assert store.lease_holder("t", "row", "smoke", 0) == "pid 7 on host h"


def test_a_lease_from_another_host_is_broken_only_once_its_heartbeat_stops(tmp_path: Path) -> None:
    path = tmp_path / ".seed-1.lease"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))
    assert acquire(path, stale_after=60) is None  # fresh heartbeat: held
    old = time.time() - 120
    os.utime(path, (old, old))
    lease = acquire(path, stale_after=60)
    assert lease is not None and holder(path)["host"] == host_name()
    lease.release()
    path.write_text("")  # its creator died before writing it
    os.utime(path, (old, old))
    assert acquire(path, stale_after=60) is not None


@pytest.mark.slow
def test_the_heartbeat_keeps_a_long_lease_alive(tmp_path: Path) -> None:
    path = tmp_path / ".seed-2.lease"
    lease = acquire(path, stale_after=0.6)
    assert lease is not None
    time.sleep(1.5)  # longer than stale_after: only the heartbeat keeps it fresh
    assert acquire(path, stale_after=0.6) is None
    assert not lease.lost
    lease.release()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "results.csv"
    dead = tmp_path / f".results.csv.{host_name()}-{_dead_pid()}.0a1b2c3d.tmp"
    live = tmp_path / f".results.csv.{host_name()}-{os.getpid()}.0a1b2c3e.tmp"
    other = tmp_path / ".other.csv.elsewhere-1.0a1b2c3f.tmp"
    for p in (dead, live, other):
        p.write_text("half")
    atomic_write_text(target, "a,b\n")
    assert target.read_text() == "a,b\n"
    assert not dead.exists()  # its writer is gone
    assert live.exists() and other.exists()  # a live writer's, and another file's, stay


@pytest.mark.slow
def test_a_writer_killed_mid_report_leaves_nothing_a_reader_takes_for_a_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process writes runs in a loop while this one reads; it is then SIGKILLed. Every read is whole."""
    runs = tmp_path / "runs"
    script = (
        "import sys, cabench.store; from cabench.store import Store\nstore = Store(sys.argv[1])\n"
        "cabench.store.environment = dict\n"
        "for i in range(100000):\n"
        "    store.write_run('t', 'r', 'count', {'i': i}, {'params': i, 'blob': 'x' * 200000})\n"
    )
    proc = _spawn(script, str(runs))
    deadline_start = time.time()
    store, seen = Store(runs), 0
    while store.latest("t", "r", "count") is None:
        assert proc.poll() is None and time.time() < deadline_start + 60
        time.sleep(0.01)
    deadline = time.time() + 2
    while time.time() < deadline:
        record = store.latest("t", "r", "count")
        if record is not None:
            assert record.metrics["status"] == "complete" and record.metrics["params"] == record.config["i"]
            seen += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert seen > 0
    record = store.latest("t", "r", "count")
    assert record is not None and record.metrics["params"] == record.config["i"]
    assert store.problems == []
    monkeypatch.setattr("cabench.store.environment", dict)
    store.write_run("t", "r", "count", {"i": -1}, {"params": 0})  # the next writer sweeps the killed one's temp
    assert not [p for p in (runs / "t" / "r" / "count").iterdir() if p.name.endswith(".tmp")]


def test_ids_that_are_paths_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs")
    for suite, row in (("../x", "r"), ("/abs", "r"), ("t", "a/b"), ("t", ".."), ("t", "")):
        with pytest.raises(StoreError, match="is not a name"):
            store.write_run(suite, row, "count", {}, {"params": 1})
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "t" / "r").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="outside the runs directory"):
        store.write_run("t", "r", "count", {}, {"params": 1})
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_damaged_and_hand_made_folders_never_reach_a_report(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs")
    good = store.write_run("t", "r", "count", {"suite": "t", "row": "r", "profile": "count"}, {"params": 7})
    cell = good.path.parent
    handmade = cell / "zzzz"
    handmade.mkdir()
    (handmade / "metrics.json").write_text(json.dumps({"status": "complete", "params": 1}))
    (handmade / "config.json").write_text("{}")
    listed = cell / "29990101-000000-abcdef"
    listed.mkdir()
    (listed / "metrics.json").write_text("[1, 2]")
    (listed / "config.json").write_text("{}")
    moved = cell / "29990101-000000-abcdee"
    moved.mkdir()
    (moved / "metrics.json").write_text(json.dumps({"status": "complete", "params": 3}))
    (moved / "config.json").write_text(json.dumps({"suite": "other"}))
    (cell / "stray.txt").write_text("x")
    record = store.latest("t", "r", "count")
    assert record is not None and record.run_id == good.run_id and record.metrics["params"] == 7
    problems = "\n".join(store.problems)
    assert f"{handmade}: not a run directory" in problems
    assert f"{listed / 'metrics.json'}: holds a list" in problems
    assert f"{moved / 'config.json'}: suite is 'other'" in problems
    assert f"{cell / 'stray.txt'}: not a run directory" in problems
    assert len(store.problems) == 4


def test_a_non_finite_metric_never_fills_a_cell(tmp_path: Path) -> None:
    from cabench.cells import build_cells
    from cabench.suite import SUITES_DIR, load_suite

    suite = load_suite(SUITES_DIR / "table2.yaml")
    row = next(r for r in suite.rows if r.model is not None)
    store = Store(tmp_path / "runs")
    store.write_run(suite.id, row.key, "paper", {"recipe": suite.recipe}, {"top1": float("nan")}, new_run_id())
    cells = [c for c in build_cells([suite], store) if c.row == row.key and c.column == "top1"]
    assert cells and cells[0].reproduced is None and cells[0].status == "pending"
    assert any("top1 is nan, not a usable number" in p for p in store.problems)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from cabench.store import Store
    store = Store(sys.argv[1])
    leases = [store.lease("tiny", row, "smoke", 0) for row in sys.argv[2:]]
    assert all(leases)
    print("held", flush=True)
    time.sleep(120)
    """
)


def test_run_on_rows_another_process_is_training_says_so_and_exits_busy(tmp_path: Path) -> None:
    """Not "no row matches": the row exists, another live process holds its lease; its pid and host are named."""
    from test_jobs import SUITE
    from typer.testing import CliRunner

    from cabench.cli import EXIT_BUSY, app
    from cabench.data.fixtures import write_imagenet_fixture

    runs, suite = tmp_path / "runs", tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    data = write_imagenet_fixture(tmp_path / "imagenet", train_per_class=2, val_per_class=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(runs), "ca", "baseline"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        base = ["run", str(suite), "--profile", "smoke", "--data", f"imagenet={data}", "--runs-dir", str(runs)]
        for extra, named in ((["--rows", "ca"], ["tiny/ca seed 0"]), ([], ["tiny/baseline seed 0", "tiny/ca seed 0"])):
            result = CliRunner().invoke(app, base + extra)
            assert result.exit_code == EXIT_BUSY == 75, result.output
            line = result.stderr.strip().splitlines()[-1]  # after one progress line per skipped row
            assert "another process is training every selected row" in line and "no row matches" not in line
            assert all(f"{n}: being trained by pid {child.pid} on host {host_name()}, since " in line for n in named)
            assert line.startswith("cabench: nothing to do now") and "Traceback" not in result.output
        assert not [p for p in (runs / "tiny").rglob("*") if p.is_dir() and p.parent.name == "smoke"]  # no run dir
    finally:
        child.kill()
        child.wait()


def test_a_lease_knows_when_another_process_has_taken_it(tmp_path: Path) -> None:
    path = tmp_path / ".seed-5.lease"
    lease = acquire(path, stale_after=60)
    assert lease is not None and lease.held()
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "theirs"}))  # broken and taken meanwhile
    assert not lease.held() and lease.lost
    lease.release()
    assert holder(path)["token"] == "theirs"  # releasing a lost lease leaves the new holder's file alone
