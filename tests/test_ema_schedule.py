"""EMA through ``torch.optim.swa_utils.AveragedModel`` and the lr schedule through ``LambdaLR``: equal to the
hand-written versions they replaced, and checkpointed so a resumed run stays bitwise identical."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from test_training import N_TRAIN, N_VAL, assert_same_weights, deterministic_metrics, settings, synthetic, tiny_cnn
from torch import nn

from cabench.checkpoint import load_checkpoint, save_checkpoint
from cabench.engine.ema import build_ema
from cabench.engine.schedule import build_scheduler, lr_at, total_steps_of
from cabench.engine.settings import TrainSettings
from cabench.recipe import known_recipes, load_recipe
from cabench.tasks._impl.classification import train_classifier

# --- the implementations replaced (verbatim from cabench before AveragedModel / LambdaLR) -------------


@torch.no_grad()
def previous_ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1.0 + step) / (10.0 + step))  # TF ExponentialMovingAverage(num_updates=step)
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def previous_lr_at(step: int, s: TrainSettings, steps_per_epoch: int) -> float:
    total = total_steps_of(s, steps_per_epoch)
    warmup = s.warmup_iterations or round(s.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return s.lr * (step + 1) / warmup
    if s.schedule == "step":
        assert s.step_gamma is not None and s.step_epochs is not None
        return s.lr * s.step_gamma ** math.floor(step / (s.step_epochs * steps_per_epoch))
    if s.schedule == "multistep":
        assert s.step_gamma is not None
        return s.lr * s.step_gamma ** sum(1 for m in s.milestones if step >= m)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if s.schedule == "cosine":
        return 0.5 * s.lr * (1.0 + math.cos(math.pi * t))
    return s.lr * (1.0 - t) ** s.poly_power


# --- EMA ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", [0.9999, 0.9])
def test_averaged_model_ema_equals_the_previous_update_bitwise(decay: float) -> None:
    model = tiny_cnn(seed=1)
    old = copy.deepcopy(model).eval()
    new = build_ema(model, decay)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    data = synthetic(64, 2)
    for step in range(30):
        x, y = data.tensors[0][step % 8 * 8 : step % 8 * 8 + 8], data.tensors[1][step % 8 * 8 : step % 8 * 8 + 8]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        previous_ema_update(old, model, decay, step)
        new.update_parameters(model)
        assert int(new.n_averaged) == step + 2
        assert_same_weights(new.module.state_dict(), old.state_dict())  # params and BN buffers, every step
    # and it moved: the average is neither the initial nor the trained weights
    assert not torch.equal(new.module[0].weight, model[0].weight)
    assert not torch.equal(new.module[0].weight, tiny_cnn(seed=1)[0].weight)


def test_the_decay_is_read_from_the_cpu_counter_not_the_device_copy() -> None:
    """AveragedModel hands multi_avg_fn ``n_averaged.to(device)``; reading that on CUDA would synchronise every
    step, so the decay comes from the model's own counter (on the CPU)."""
    raw = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        raw.weight.fill_(0.0)
        ema = build_ema(raw, 0.9999)
        raw.weight.fill_(1.0)
    assert ema.n_averaged.device.type == "cpu" and int(ema.n_averaged) == 1
    params = [p.detach() for p in ema.module.parameters()]
    ema.multi_avg_fn(params, [p.detach() for p in raw.parameters()], torch.tensor(10**6))  # a misleading copy
    assert float(ema.module.weight) == pytest.approx(0.9)  # step 0's decay, 1 / 10


# --- lr schedule --------------------------------------------------------------------------------------

IMAGENET_TRAIN = 1_281_167


def _settings_of(recipe_id: str) -> tuple[TrainSettings, int]:
    recipe = load_recipe(recipe_id)
    s = TrainSettings.from_recipe(recipe)
    spe = IMAGENET_TRAIN // s.batch_size if s.iterations is None else 1000
    return s, spe


def _check_steps(s: TrainSettings, spe: int) -> tuple[set[int], int]:
    """Every step up to 3000, then ~2000 spread over the run plus every boundary's neighbours."""
    total = total_steps_of(s, spe)
    warmup = s.warmup_iterations or round(s.warmup_epochs * spe)
    marks = set(range(min(total, 3000))) | {round(k * (total - 1) / 2000) for k in range(2001)}
    for b in (warmup, *s.milestones, *(round(k * (s.step_epochs or 0) * spe) for k in range(1, 400))):
        marks |= {b - 1, b, b + 1}
    return {m for m in marks if 0 <= m < total}, warmup


def _scheduler_lrs(s: TrainSettings, spe: int, steps: set[int]) -> dict[int, float]:
    """The lr the LambdaLR puts on the optimizer at each step: stepped one by one through the first 3000,
    then moved to each later mark the way ``step()`` moves (``last_epoch`` + 1, lr = base * factor)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=s.lr)
    sched = build_scheduler(opt, s, spe)
    out: dict[int, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        for step in sorted(steps):
            if step - sched.last_epoch > 1:
                sched.last_epoch = step - 1
            while sched.last_epoch < step:
                opt.step()
                sched.step()
            out[step] = opt.param_groups[0]["lr"]
    return out


def _within_two_roundings(new: float, old: float) -> bool:
    """Warmup only: ``lr * ((k+1) / w)`` (LambdaLR: base lr times the factor) against the previous
    ``(lr * (k+1)) / w``. Each is two roundings (each within 2**-53 relative) of the same exact value, so they
    agree within 2**-51 relative; every other step multiplies ``lr`` by the same factor in both and is equal."""
    return abs(new - old) <= 2.0**-51 * abs(old)


@pytest.mark.parametrize("recipe_id", sorted(known_recipes()))
def test_lambdalr_gives_the_previous_lr_at_every_checked_step(recipe_id: str) -> None:
    s, spe = _settings_of(recipe_id)
    steps, warmup = _check_steps(s, spe)
    lrs = _scheduler_lrs(s, spe, steps)
    off_by_an_ulp = 0
    for step in sorted(steps):
        new, old = lrs[step], previous_lr_at(step, s, spe)
        assert new == lr_at(step, s, spe)  # what the pipeline description and the log report
        if step < warmup:
            assert _within_two_roundings(new, old), (step, new, old)
            off_by_an_ulp += new != old
        else:
            assert new == old, (step, new, old)
    assert off_by_an_ulp <= warmup


@pytest.mark.parametrize(
    "kw",
    [
        dict(schedule="cosine", epochs=3, warmup_epochs=1),
        dict(schedule="step", epochs=4, step_gamma=0.5, step_epochs=1.5, warmup_iterations=3),
        dict(schedule="multistep", iterations=40, step_gamma=0.1, milestones=(10, 25)),
        dict(schedule="poly", iterations=40, poly_power=0.9, warmup_iterations=4),
    ],
)
def test_every_schedule_kind_steps_exactly_like_the_previous_function(kw: dict[str, Any]) -> None:
    s = TrainSettings(lr=0.3, **kw)
    total = total_steps_of(s, 10)
    lrs = _scheduler_lrs(s, 10, set(range(total)))
    warmup = s.warmup_iterations or round(s.warmup_epochs * 10)
    for step in range(total):
        old = previous_lr_at(step, s, 10)
        assert _within_two_roundings(lrs[step], old) if step < warmup else lrs[step] == old, step
    assert len(set(lrs.values())) > 2  # the schedule moves


# --- checkpoints: resumed == uninterrupted, with EMA and a warmup + cosine schedule ---------------------


def _ema_settings(**kw: Any) -> TrainSettings:
    return settings(ema=True, ema_decay=0.95, warmup_epochs=1, **kw)


@pytest.fixture(scope="module")
def ema_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    run = tmp_path_factory.mktemp("ema_a")
    metrics = train_classifier(tiny_cnn(), synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), _ema_settings(), run)
    return load_checkpoint(run / "checkpoint.pt"), metrics


def _resume(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics = train_classifier(tiny_cnn(), synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), _ema_settings(), run)
    return load_checkpoint(run / "checkpoint.pt"), metrics


def _assert_same_run(a: tuple[dict[str, Any], dict[str, Any]], b: tuple[dict[str, Any], dict[str, Any]]) -> None:
    assert_same_weights(a[0]["model"], b[0]["model"])
    assert_same_weights(a[0]["ema"], b[0]["ema"])
    assert a[0]["scheduler"] == b[0]["scheduler"]
    assert deterministic_metrics(a[1]) == deterministic_metrics(b[1])


def test_checkpoint_holds_averaged_model_and_scheduler_state(ema_uninterrupted: Any) -> None:
    ck, metrics = ema_uninterrupted
    assert int(ck["ema"]["n_averaged"]) == 12 + 1 and any(k.startswith("module.") for k in ck["ema"])
    assert ck["scheduler"]["last_epoch"] == 12 and ck["scheduler"]["base_lrs"] == [0.1]
    assert "top1_raw" in metrics  # the EMA weights were evaluated, the raw ones beside them
    assert not torch.equal(ck["ema"]["module.0.weight"], ck["model"]["0.weight"])


def test_resume_with_ema_and_scheduler_is_bitwise_identical(ema_uninterrupted: Any, tmp_path: Path) -> None:
    train_classifier(tiny_cnn(), synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), _ema_settings(max_steps=5), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 5
    _assert_same_run(_resume(tmp_path), ema_uninterrupted)


def test_checkpoint_from_before_averaged_model_and_lambdalr_resumes_identically(
    ema_uninterrupted: Any, tmp_path: Path
) -> None:
    """A run killed under the previous code (bare-module EMA, scheduler as a description, optimizer lr of the
    last step taken) continues exactly as it would have."""
    s = _ema_settings(max_steps=5)
    train_classifier(tiny_cnn(), synthetic(N_TRAIN, 0), synthetic(N_VAL, 1), s, tmp_path)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    ck["ema"] = {k.removeprefix("module."): v for k, v in ck["ema"].items() if k != "n_averaged"}
    ck["scheduler"] = {"kind": "cosine", "step": 5, "lr": previous_lr_at(5, s, 6), "steps_per_epoch": 6}
    for group in ck["optimizer"]["param_groups"]:
        group.pop("initial_lr")
        group["lr"] = previous_lr_at(4, s, 6)
    save_checkpoint(tmp_path / "checkpoint.pt", ck)
    _assert_same_run(_resume(tmp_path), ema_uninterrupted)
