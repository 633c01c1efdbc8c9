"""The handwritten-digits probe: the generator, its three layouts through the real loaders, the floors, and a
reduced probe (tiny scenes, a few steps) through `cabench run` and `cabench report`."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.base import DATASETS
from cabench.data.fixtures.digit_scenes import digit_pools, load_glyphs
from cabench.data.fixtures.digits import TINY, DigitsParams, write_digits
from cabench.recipe import load_recipe
from cabench.suite import SuiteError, load_suite, suite_group

runner = CliRunner()
SUITES = ("probe-classify", "probe-detect", "probe-segment")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits") / "d"
    result = runner.invoke(app, ["fixtures", "digits-tiny", str(root)])
    assert result.exit_code == 0, result.output
    return root


def test_pools_are_disjoint_and_cover_every_glyph() -> None:
    _, labels = load_glyphs()
    train, val = digit_pools(labels, 0.3, seed=0)
    assert len(labels) == 1797
    assert not set(train) & set(val)
    assert len(train) + len(val) == 1797
    for c in range(10):  # every class on both sides, about 30% to val
        n = int((labels == c).sum())
        assert int((labels[val] == c).sum()) == round(0.3 * n)
    other, _ = digit_pools(labels, 0.3, seed=1)
    assert not np.array_equal(train, other)


def test_manifest_fingerprints_every_file(tiny: Path) -> None:
    manifest = json.loads((tiny / "manifest.json").read_text())
    files = [p for p in tiny.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert sorted(manifest["files"]) == sorted(str(p.relative_to(tiny)) for p in files)
    for name, digest in list(manifest["files"].items())[:20]:
        assert hashlib.sha256((tiny / name).read_bytes()).hexdigest() == digest
    assert manifest["params"] == TINY.as_dict() and manifest["seed"] == 0
    assert not set(manifest["pools"]["train"]) & set(manifest["pools"]["val"])


def test_same_seed_same_bytes_other_seed_other_bytes(tiny: Path, tmp_path: Path) -> None:
    small = DigitsParams(classify_glyphs_per_class=1, detect_train=3, detect_test=2, segment_train=3, segment_val=2)
    a, b, c = (write_digits(tmp_path / n, seed=s, params=small) for n, s in (("a", 5), ("b", 5), ("c", 6)))
    fp = [json.loads((r / "manifest.json").read_text())["fingerprint"] for r in (a, b, c)]
    assert fp[0] == fp[1] != fp[2]


def test_layouts_written_by_worker_processes_are_the_same_bytes(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cabench.data.fixtures import digits

    monkeypatch.setattr(digits, "PARALLEL_FROM_SCENES", 0)  # the tiny preset, written as a full one is
    monkeypatch.setattr(digits.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    parallel = write_digits(tmp_path / "p", seed=0, params=TINY)
    assert (parallel / "manifest.json").read_bytes() == (tiny / "manifest.json").read_bytes()


def test_real_loaders_read_the_three_layouts(tiny: Path) -> None:
    for suite_id, n_classes in (("probe-classify", 10), ("probe-detect", 11), ("probe-segment", 11)):
        recipe = load_recipe(load_suite(f"suites/{suite_id}.yaml").recipe)
        source = DATASETS.get(recipe.dataset)
        source.validate(tiny)
        train, val = source.build(tiny, recipe)
        assert len(train) > 0 and len(val) > 0
        if suite_id == "probe-classify":
            image, _ = val[0]
            assert image.shape == (3, 32, 32) and len(train.classes) == n_classes
        elif suite_id == "probe-detect":
            assert train.num_classes == n_classes
            target = val.target(0)
            assert target["labels"].min() >= 1 and target["labels"].max() <= 10 and len(target["boxes"]) >= 1
        else:
            _, mask = val.load(0)
            values = set(np.unique(mask.numpy()).tolist())
            assert val.num_classes == n_classes and values <= set(range(11)) | {255} and len(values - {0, 255}) >= 1


def test_a_missing_manifest_is_one_line(tiny: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", "probe-classify", "--profile", "paper", "--data", f"digits={tmp_path}", "--runs-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "manifest" in result.output and "Traceback" not in result.output


def test_suites_group_and_floor_names() -> None:
    assert suite_group("probe") == list(SUITES)
    for suite_id in SUITES:
        suite = load_suite(f"suites/{suite_id}.yaml")
        assert {r.key for r in suite.rows} == {"baseline", "se", "cbam", "x", "y", "ca", "floor"}
        ratios = {r.key: r.model.reduction for r in suite.rows if r.model is not None}
        assert ratios == {"baseline": None, "se": 24, "cbam": 24, "x": 24, "y": 24, "ca": 32}


def test_probe_fairness_is_the_fairness_suite_on_the_probe() -> None:
    fairness, probe = load_suite("suites/fairness.yaml"), load_suite("suites/probe-fairness.yaml")
    assert probe.recipe == load_suite("suites/probe-classify.yaml").recipe
    blocks = {r.key: (r.model.attention, r.model.reduction, dict(r.model.attention_args)) for r in fairness.rows}
    probe_blocks = {
        r.key: (r.model.attention, r.model.reduction, dict(r.model.attention_args)) for r in probe.rows if r.model
    }
    assert probe_blocks == blocks  # the same blocks, activations and ratios
    assert {(r.model.width, r.model.num_classes) for r in probe.rows if r.model} == {(0.5, 10)}
    assert [r.floor for r in probe.rows if r.model is None] == ["logistic-pixels"]
    assert [c.id for c in probe.claims] == [c.id for c in fairness.claims]


def test_unknown_floor_is_a_suite_error(tmp_path: Path) -> None:
    text = Path("suites/probe-classify.yaml").read_text().replace("floor: logistic-pixels", "floor: logistc-pixels")
    path = tmp_path / "probe-classify.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError, match="did you mean 'logistic-pixels'"):
        load_suite(path)


@pytest.mark.slow
@pytest.mark.parametrize("suite_id", SUITES)
def test_reduced_probe_trains_evaluates_and_reports_floor(tiny: Path, tmp_path: Path, suite_id: str) -> None:
    runs = tmp_path / "runs"
    common = ["--rows", "baseline", "--profile", "paper", "--workers", "0", "--batch-size", "8"]
    common += ["--data", f"digits={tiny}", "--runs-dir", str(runs)]
    if suite_id != "probe-classify":  # the dense rows start from the classification row's checkpoint
        result = runner.invoke(app, ["run", "probe-classify", *common, "--epochs", "1"])
        assert result.exit_code == 0, result.output
    length = ["--epochs", "1"] if suite_id == "probe-classify" else ["--iterations", "2"]
    result = runner.invoke(app, ["run", suite_id, *common, "--rows", "floor", *length])
    assert result.exit_code == 0, result.output
    metric = {"probe-classify": "top1", "probe-detect": "map", "probe-segment": "miou"}[suite_id]
    fingerprint = json.loads((tiny / "manifest.json").read_text())["fingerprint"]
    for row in ("baseline", "floor"):
        (run,) = (runs / suite_id / row / "paper").iterdir()
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert 0.0 <= metrics[metric] <= 100.0
        assert config["data_fingerprint"]["fingerprint"] == fingerprint
        ident = config["data_identity"]  # the generator's manifest is the data identity of the probe
        assert ident["check"] == "manifest" and ident["fingerprint"] == f"sha256:{fingerprint}" and ident["fills"]
    result = runner.invoke(
        app, ["report", suite_id, "--runs-dir", str(runs), "--out", str(tmp_path / "reports"), "--no-figures"]
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "reports" / f"{suite_id}.md").read_text()
    assert "Floor" in page
    # The probe's results fill the probe's own cells (never shunted to "not the paper's data", never ✅/❌).
    assert "not the paper's data" not in page.lower()
    with open(tmp_path / "reports" / "results.csv") as fh:
        cells = {(c["row"], c["column"]): c for c in csv.DictReader(fh) if c["suite"] == suite_id}
    for row in ("baseline", "floor"):
        (run,) = (runs / suite_id / row / "paper").iterdir()
        value = json.loads((run / "metrics.json").read_text())[metric]
        cell = cells[(row, metric)]
        assert float(cell["reproduced"]) == pytest.approx(value, abs=1e-3) and cell["status"] == "new"


def test_a_launched_probe_computes_its_floor_in_the_launching_process(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    runs = tmp_path / "runs"
    args = ["run", "probe-classify", "--rows", "floor", "--profile", "paper", "--launcher", "local"]
    result = runner.invoke(app, [*args, "--data", f"digits={tiny}", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "probe-classify/floor: logistic-pixels done here" in result.output
    (run,) = (runs / "probe-classify" / "floor" / "paper").iterdir()
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["top1"] <= 100.0
    again = runner.invoke(app, [*args, "--data", f"digits={tiny}", "--runs-dir", str(runs)])
    assert again.exit_code == 0, again.output
    assert len(list((runs / "probe-classify" / "floor" / "paper").iterdir())) == 1  # a floor is computed once


def test_a_smoke_floor_fits_on_a_spread_sample_and_a_paper_floor_on_every_image(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    from cabench.floors import spread_images
    from cabench.profiles.train import SMOKE_FLOOR_IMAGES

    root = tmp_path / "d"
    few = {"detect_train": 2, "detect_test": 2, "segment_train": 2, "segment_val": 2}  # classification is what counts
    write_digits(root, 0, params=DigitsParams(classify_train_per_glyph=1, classify_val_per_glyph=1, **few))
    train = ImageFolder(str(root / "classify" / "train"))
    assert len(train) > SMOKE_FLOOR_IMAGES  # the sample is a real cut here
    cut = spread_images(train, SMOKE_FLOOR_IMAGES)
    assert len(cut.samples) <= SMOKE_FLOOR_IMAGES and set(cut.targets) == set(train.targets)  # every class kept
    assert cut.imgs == cut.samples and len(train.samples) > len(cut.samples)  # the dataset itself is untouched
    runs = tmp_path / "runs"
    for profile in ("smoke", "paper"):
        args = ["run", "probe-classify", "--rows", "floor", "--profile", profile, "--data", f"digits={root}"]
        result = runner.invoke(app, [*args, "--runs-dir", str(runs)])
        assert result.exit_code == 0, result.output
        (run,) = (runs / "probe-classify" / "floor" / profile).iterdir()
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
        if profile == "smoke":
            assert metrics["train_n"] == len(cut.samples) and config["floor_images"] == SMOKE_FLOOR_IMAGES
        else:
            assert metrics["train_n"] == len(train.samples) and "floor_images" not in config
