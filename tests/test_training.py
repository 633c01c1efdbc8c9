"""The classification engine: exact resume after SIGKILL / Ctrl-C, atomic checkpoints, DDP equivalence, recipes.

Everything runs on CPU with a tiny CNN on 16x16 synthetic images (a few milliseconds a step).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from torch import nn
from torch.utils.data import TensorDataset

from cabench.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cabench.engine import EvalSetup
from cabench.engine.distributed import torchrun_command
from cabench.engine.sampling import EpochSampler as _EpochSampler
from cabench.recipe import Recipe, RecipeError, load_recipe
from cabench.tasks._impl.classification import (
    TrainingInterrupted,
    TrainSettings,
    evaluate_classifier,
    lr_at,
    train_classifier,
)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
N_TRAIN, N_VAL, BATCH = 50, 21, 8  # 6 steps an epoch (2 images dropped), an odd-sized val set


# --- fixtures shared with subprocesses (imported there from this file) -----------------------------


def synthetic(n: int, seed: int, classes: int = 4) -> TensorDataset:
    """Random 16x16 images whose mean depends on the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 3, 16, 16, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float() * 0.3
    return TensorDataset(x, y)


def tiny_cnn(seed: int = 0, bn: bool = True) -> nn.Module:
    """conv-norm-relu-pool-dropout-linear. ``bn=False`` uses GroupNorm (identical across world sizes)."""
    torch.manual_seed(seed)
    norm = nn.BatchNorm2d(8) if bn else nn.GroupNorm(2, 8)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        norm,
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2 if bn else 0.0),
        nn.Linear(8, 4),
    )


def settings(**kw: Any) -> TrainSettings:
    base: dict[str, Any] = dict(
        lr=0.1, batch_size=BATCH, epochs=2, weight_decay=1e-4, ckpt_every_steps=1, log_every=1, seed=3
    )
    base.update(kw)
    return TrainSettings(**base)


def deterministic_metrics(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in ("img_per_s", "wall_s")}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Run A: 2 epochs x 6 steps, never interrupted."""
    model = tiny_cnn()
    metrics = train_classifier(
        model, synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), settings(), tmp_path_factory.mktemp("run_a")
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, metrics


# --- resume ---------------------------------------------------------------------------------------

CHILD = """
import sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})
from test_training import N_TRAIN, N_VAL, settings, synthetic, tiny_cnn
from cabench.tasks._impl.classification import train_classifier
# Slow the run down (progress is called after each logged step) so the parent can kill it mid-epoch.
train_classifier(tiny_cnn(), synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), settings(), {run!r},
                 progress=lambda e: time.sleep(0.25))
"""


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(uninterrupted, tmp_path: Path) -> None:
    run = tmp_path / "run_b"
    code = CHILD.format(tests=str(TESTS), threads=torch.get_num_threads(), run=str(run))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    log = run / "log.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = log.read_text().splitlines() if log.exists() else []
            if len([x for x in lines if '"step"' in x]) >= 3:
                break
            assert proc.poll() is None, "the child exited before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["epoch"] == 0 and 0 < ck["step_in_epoch"] < 6, "the kill must land mid-epoch"
    logged = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert max(logged) > ck["step"], "the killed run logged steps its checkpoint does not have"
    (run / ".checkpoint.pt.deadbeef.tmp").write_bytes(b"torn write")  # a writer killed mid-way

    model = tiny_cnn(seed=99)  # whatever the init: the checkpoint overwrites it
    metrics = train_classifier(model, synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), settings(), run)

    ref_state, ref_metrics = uninterrupted
    assert_same_weights(model.state_dict(), ref_state)
    assert deterministic_metrics(metrics) == deterministic_metrics(ref_metrics)
    assert metrics["steps"] == 12 and metrics["epochs"] == 2
    assert not list(run.glob("*.tmp"))
    records = [json.loads(x) for x in log.read_text().splitlines()]
    steps = [r["step"] for r in records if "event" not in r]
    assert steps == list(range(1, 13)), "the log holds each step once, in order"
    assert [r["event"] for r in records if "event" in r] == ["resume", "final"]


def test_ctrl_c_saves_at_a_step_boundary_and_resumes_exactly(uninterrupted, tmp_path: Path) -> None:
    model = tiny_cnn()
    calls = {"n": 0}

    def sigint_mid_forward(module: nn.Module, args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 8:  # inside step 8: SIGINT is held until the step completes
            os.kill(os.getpid(), signal.SIGINT)

    hook = model.register_forward_pre_hook(sigint_mid_forward)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 8"):
        train_classifier(model, synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), settings(), tmp_path)
    hook.remove()
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (ck["step"], ck["epoch"], ck["step_in_epoch"]) == (8, 1, 2)
    metrics = train_classifier(tiny_cnn(seed=5), synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), settings(), tmp_path)
    model2 = tiny_cnn(seed=5)
    model2.load_state_dict(load_checkpoint(tmp_path / "checkpoint.pt")["model"])
    assert_same_weights(model2.state_dict(), uninterrupted[0])
    assert deterministic_metrics(metrics) == deterministic_metrics(uninterrupted[1])


def test_checkpoint_contents_are_weights_only(uninterrupted, tmp_path: Path) -> None:
    train_classifier(tiny_cnn(), synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), settings(max_steps=3), tmp_path)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "sampler", "ranks", "config"} <= ck.keys()
    assert ck["sampler"] == {
        "seed": 3,
        "epoch": 0,
        "step_in_epoch": 3,
        "shuffle": True,
        "global_batch": 8,
        "world_size": 1,
        "dataset_len": 50,
        "steps_per_epoch": 6,
    }
    rng = ck["ranks"][0]["rng"]
    assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["python"]["state"], torch.Tensor)
    assert isinstance(rng["numpy"]["keys"], torch.Tensor)
    config = json.loads(ck["config"])
    assert config["settings"]["batch_size"] == 8 and config["world_size"] == 1


class NoisyDataset(torch.utils.data.Dataset):
    """Random augmentation from all three RNGs (torch, numpy, python), as real transforms use them."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import random

        import numpy as np

        x, y = self.base[i]
        noise = torch.randn_like(x) * 0.1 + float(np.random.rand()) * 0.1 + random.random() * 0.1
        return (x.flip(-1) if random.random() < 0.5 else x) + noise, y


def test_results_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    states = []
    for workers in (0, 2):
        model = tiny_cnn()
        s = settings(epochs=1, workers=workers, ckpt_every_steps=0, log_every=6)
        train_classifier(model, NoisyDataset(synthetic(N_TRAIN, 0)), synthetic(N_VAL, 1), s, tmp_path / str(workers))
        states.append(model.state_dict())
    assert_same_weights(*states)


def test_a_sample_is_drawn_from_its_own_seed_and_leaves_the_training_rngs_alone() -> None:
    import random

    import numpy as np

    from cabench.engine.sampling import SeededDataset, mix_seed

    data = SeededDataset(NoisyDataset(synthetic(4, 0)), seed=3)
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    first, again = data[(1, 2)][0], data[(1, 2)][0]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    s = mix_seed(3, 1, 2)  # the sample equals one drawn after seeding every generator the old way
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % (1 << 32))
        expected = NoisyDataset(synthetic(4, 0))[2][0]
    assert torch.equal(first, again) and torch.equal(first, expected)
    assert not torch.equal(first, data[(2, 2)][0])  # another epoch, another draw


# --- atomic writes --------------------------------------------------------------------------------

WRITER = """
import sys, torch
from cabench.checkpoint import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint({path!r}, {{"v": i, "w": torch.full((4_000_000,), float(i))}})
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_corrupts(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torn = 0
    for attempt in range(6):
        before = path.stat().st_ino if path.exists() else None
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(path=str(path))], cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            # Wait for this writer's first complete file (os.replace gives it a new inode), then kill
            # at some point of its next writes (each takes tens of milliseconds).
            while time.monotonic() < deadline and (not path.exists() or path.stat().st_ino == before):
                time.sleep(0.005)
            time.sleep(0.04 + 0.023 * attempt)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        leftovers = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
        torn += bool(leftovers)
        state = load_checkpoint(path)  # never torn: the previous or the new complete file
        assert torch.equal(state["w"], torch.full((4_000_000,), float(state["v"])))
        for p in leftovers:
            p.unlink()
        if torn:
            break
    assert torn, "no kill landed during a write; the test proved nothing"


class _Arbitrary:
    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(Path(os.environ.get("CABENCH_MARKER", "/nonexistent")) / "pwned"), "w"))


def test_checkpoint_with_pickled_object_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CABENCH_MARKER", str(tmp_path))
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="weights-only") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()
    save_checkpoint(tmp_path / "ok.pt", {"x": torch.ones(2), "cfg": "{}", "none": None, "l": [1, 2.5, "a"]})
    assert load_checkpoint(tmp_path / "ok.pt")["l"] == [1, 2.5, "a"]


# --- distributed ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, run: str, out: str, threads: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(threads)
    from cabench.engine.distributed import cleanup

    try:
        model = tiny_cnn(bn=False)
        metrics = train_classifier(
            model,
            synthetic(40, 0),
            synthetic(N_VAL, 1),
            settings(epochs=1, ckpt_every_steps=0, log_every=2, momentum=0.9, nesterov=True),
            Path(run),
        )
        # Every rank: the same weights (DDP) and the same all-reduced metrics.
        torch.save({"state": model.state_dict(), "metrics": metrics}, f"{out}.{rank}")
    finally:
        cleanup()


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path: Path) -> None:
    s = settings(epochs=1, ckpt_every_steps=0, log_every=2, momentum=0.9, nesterov=True)
    single = tiny_cnn(bn=False)
    m1 = train_classifier(single, synthetic(40, 0), synthetic(N_VAL, 1), s, tmp_path / "one")

    out = str(tmp_path / "ddp")
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two"), out, 1), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    for k, v in single.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, atol=1e-5, rtol=0)
        assert torch.equal(r0["state"][k], r1["state"][k])
    assert r0["metrics"]["val_n"] == r1["metrics"]["val_n"] == N_VAL  # no padded sample counted twice
    assert r0["metrics"]["top1"] == r1["metrics"]["top1"] == pytest.approx(m1["top1"])
    assert r0["metrics"]["steps"] == m1["steps"] == 5
    assert r0["metrics"]["train_loss"] == pytest.approx(m1["train_loss"], abs=1e-5)
    log = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "event" not in r] == [2, 4, 5]  # rank 0 only writes


def test_global_batch_is_split_across_ranks_without_changing_it() -> None:
    one = _EpochSampler(50, rank=0, world=1, seed=7, shuffle=True, per_rank_batch=8, drop_last=True)
    two = [_EpochSampler(50, rank=r, world=2, seed=7, shuffle=True, per_rank_batch=4, drop_last=True) for r in (0, 1)]
    for sampler in (one, *two):
        sampler.set_epoch(3)
    full = [i for _, i in one]
    parts = [[i for _, i in s] for s in two]
    assert len(full) == 48 and all(len(p) == 24 for p in parts)
    for step in range(6):
        batch = set(full[step * 8 : (step + 1) * 8])
        assert batch == set(parts[0][step * 4 : (step + 1) * 4]) | set(parts[1][step * 4 : (step + 1) * 4])
    one.set_epoch(3, start_batch=4)  # resume: skip the 4 global batches already consumed
    assert [i for _, i in one] == full[32:]
    kw = dict(world=2, seed=0, shuffle=False, per_rank_batch=4, drop_last=False)
    evals = [_EpochSampler(21, rank=r, **kw) for r in (0, 1)]  # type: ignore[arg-type]
    assert sorted(i for s in evals for _, i in s) == list(range(21))


def test_global_batch_must_divide_over_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cabench.engine.loop as engine

    monkeypatch.setattr(engine, "init_distributed", lambda: (0, 2, 0, torch.device("cpu")))
    with pytest.raises(ValueError, match="global batch 7 does not divide over 2 processes"):
        train_classifier(tiny_cnn(), synthetic(8, 0), synthetic(4, 1), settings(batch_size=7), tmp_path)


def test_torchrun_command_reexecutes_cabench() -> None:
    cmd = torchrun_command(4, ["run", "table1", "--nproc", "4", "--profile=paper"])
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    assert cmd[-2:] == ["table1", "--profile=paper"] and "--nproc" not in cmd[cmd.index("-c") :]


def test_evaluate_counts_every_sample_once() -> None:
    model = tiny_cnn()
    ev = evaluate_classifier(model, synthetic(N_VAL, 1), EvalSetup(batch_size=4))
    assert ev["n"] == N_VAL and 0 <= ev["top1"] <= ev["top5"] <= 100 and ev["loss"] > 0
    assert model.training  # mode restored


# --- schedule -------------------------------------------------------------------------------------


def test_lr_schedules() -> None:
    cos = TrainSettings(lr=0.05, epochs=2, schedule="cosine")
    assert lr_at(0, cos, 10) == 0.05 and lr_at(10, cos, 10) == pytest.approx(0.025)
    assert lr_at(19, cos, 10) == pytest.approx(0.5 * 0.05 * (1 + math.cos(math.pi * 19 / 20)))
    warm = TrainSettings(lr=0.256, epochs=10, schedule="step", step_gamma=0.97, step_epochs=2.4, warmup_epochs=5)
    assert lr_at(0, warm, 10) == pytest.approx(0.256 / 50) and lr_at(49, warm, 10) == pytest.approx(0.256)
    assert lr_at(50, warm, 10) == pytest.approx(0.256 * 0.97**2)  # floor(50 / 24) = 2
    assert lr_at(71, warm, 10) == pytest.approx(0.256 * 0.97**2)
    assert lr_at(72, warm, 10) == pytest.approx(0.256 * 0.97**3)
    poly = TrainSettings(lr=1.0, epochs=1, schedule="poly", poly_power=2.0)
    assert lr_at(5, poly, 10) == pytest.approx(0.25)


# --- recipes --------------------------------------------------------------------------------------


def test_shipped_recipes_follow_their_papers() -> None:
    mbv2 = load_recipe("imagenet-mbv2-paper")
    assert (mbv2.optimizer, mbv2.momentum, mbv2.weight_decay) == ("sgd", 0.9, 4e-5)
    assert (mbv2.lr, mbv2.schedule, mbv2.nesterov) == (0.05, "cosine", False)
    assert (mbv2.batch_size, mbv2.epochs, mbv2.label_smoothing, mbv2.warmup_epochs) == (256, 200, 0.0, 0)
    assert not (mbv2.mixup or mbv2.autoaugment or mbv2.random_erasing or mbv2.ema)
    assert any("momentum 0.9" in n for n in mbv2.notes)
    eff = load_recipe("imagenet-efficientnet-b0")
    assert (eff.optimizer, eff.rmsprop_decay, eff.momentum, eff.weight_decay) == ("rmsprop", 0.9, 0.9, 1e-5)
    assert (eff.lr, eff.step_gamma, eff.step_epochs, eff.batch_size, eff.epochs) == (0.256, 0.97, 2.4, 4096, 350)
    assert (eff.bn_momentum, eff.dropout, eff.autoaugment, eff.mixup) == (0.01, 0.2, True, False)
    assert "EfficientNet" in eff.source and "1905.11946" in eff.source
    for name in ("imagenet-mbv2-paper", "imagenet-efficientnet-b0"):
        assert load_recipe(REPO / "suites" / "recipes" / f"{name}.yaml").id == name
    for suite in ("table1", "table5"):  # suites name recipes that exist
        assert load_recipe(yaml.safe_load((REPO / "suites" / f"{suite}.yaml").read_text())["recipe"])


def test_overrides_are_recorded_and_reach_the_settings() -> None:
    recipe = load_recipe("imagenet-mbv2-paper")
    new, applied = recipe.with_overrides(epochs=2, batch_size=32, lr=None, momentum=0.9)
    assert applied == {"epochs": 2, "batch_size": 32}  # None = not given; unchanged values are not overrides
    assert (new.epochs, new.batch_size, new.lr) == (2, 32, 0.05) and recipe.epochs == 200
    s = TrainSettings.from_recipe(new, max_steps=5, workers=None, config={"overrides": applied})
    assert (s.epochs, s.batch_size, s.max_steps, s.workers) == (2, 32, 5, 0)
    assert s.config["overrides"] == applied and s.config["recipe"]["id"] == "imagenet-mbv2-paper"
    with pytest.raises(RecipeError, match="cannot override nope"):
        recipe.with_overrides(nope=1)
    with pytest.raises(RecipeError, match="batch_size"):
        recipe.with_overrides(batch_size=0)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"lr": "fast"}, "lr"),
        ({"optimiser": "sgd"}, "optimiser"),
        ({"schedule": "linear"}, "schedule"),
        ({"epochs": -3}, "epochs"),
    ],
)
def test_bad_recipe_file_is_one_line_with_file_and_field(tmp_path: Path, edit: dict[str, Any], field: str) -> None:
    data = load_recipe("imagenet-mbv2-paper").model_dump()
    data.update(edit)
    data["id"] = "bad"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and field in msg


def test_unknown_recipe_and_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    bad = tmp_path / "broken.yaml"
    bad.write_text("id: broken\nlr: [0.1\n")
    with pytest.raises(RecipeError, match=r"broken\.yaml: YAML syntax error"):
        load_recipe(bad)
    assert issubclass(RecipeError, ValueError) and Recipe.model_config["extra"] == "forbid"
