"""cabench bench: the rows, the ratio table, the input-pipeline measurement and the CLI's refusals."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import cabench.measure.bench
from cabench.cli import app
from cabench.data.errors import BadImageError
from cabench.data.fixtures.photos import write_photo_jpegs
from cabench.data.imagenet import TRAIN_LOADER, train_transform
from cabench.data.images import decode_rgb, jpeg_size
from cabench.data.pipeline import gpu_train_batch, reference_train_transform
from cabench.measure.bench import BenchOptions, format_bench, run_bench
from cabench.measure.bench_rows import build_row
from cabench.measure.pipeline import PipelineError, find_images, run_pipeline_bench, workers_per_gpu
from cabench.models.attention import CoordinateAttention

runner = CliRunner()


@pytest.mark.slow
def test_the_three_ca_rows_compute_the_same_function() -> None:
    x = torch.randn(2, 3, 64, 48)
    torch.manual_seed(0)
    ours = build_row("ca").eval()
    torch.manual_seed(0)
    theirs = build_row("authors_ca").eval()  # the same seed: the same weights, another block implementation
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_run_bench_reports_ratios_to_the_baseline_of_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    opts = BenchOptions(
        rows=("baseline", "ca", "authors_ca"), latency_batches=(1,), train_batches=(2,), rounds=2, input_size=32
    )
    folded: list[nn.Module] = []
    fold = cabench.measure.bench.fold_for_inference
    monkeypatch.setattr("cabench.measure.bench.fold_for_inference", lambda m: folded.append(fold(m)) or m)
    seen: list[str] = []
    result = run_bench(opts, progress=lambda what, done, total: seen.append(what))
    # Latency times the CA block as deployed (its BatchNorm folded, a copy per section); training the block as is.
    blocks = [m for model in folded for m in model.modules() if isinstance(m, CoordinateAttention)]
    assert len(folded) == 3 and len(blocks) >= 16 and all(isinstance(b.bn1, nn.Identity) for b in blocks)
    assert [s["kind"] for s in result["sections"]] == ["latency", "train"]
    for section in result["sections"]:
        rows = section["rows"]
        assert rows["baseline"]["ratio"] == 1.0
        for row in rows.values():
            assert row["p10"] <= row["median"] <= row["p90"]
            assert row["ratio"] == pytest.approx(row["median"] / rows["baseline"]["median"])
    assert any("round 2/2" in s for s in seen)
    text = format_bench(result)
    assert "MobileNetV2 + CA (authors'-style block)" in text and "1.000x" in text
    json.dumps(result)  # serialisable


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rows", "baseline,caa"], "did you mean 'ca'"),
        (["--rows", "ca,se"], "must include 'baseline'"),
        (["--amp", "fp8"], "--amp must be one of"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--latency-batches", "1,x"], "--latency-batches: expected comma-separated integers"),
    ],
)
def test_bench_refuses_bad_options_in_one_line(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_bench_refuses_cuda_without_a_gpu() -> None:
    result = runner.invoke(app, ["bench", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_jpegs(tmp_path_factory.mktemp("p") / "photos", count=6, width=120, height=90, classes=2)


def test_photo_jpegs_are_imagenet_layout_with_varied_sizes(photos: Path) -> None:
    files = find_images(photos, 100)
    assert len(files) == 6 and all(f.parent.parent.name == "train" for f in files)
    sizes = {Image.open(f).size for f in files}
    assert len(sizes) > 1
    assert sorted(p.name for p in (photos / "val").iterdir()) == ["n00000000", "n00000001"]


def test_tensor_pipeline_matches_the_reference_preset_in_shape_range_and_flip(photos: Path) -> None:
    path = find_images(photos, 1)[0]
    ours = train_transform(32)(TRAIN_LOADER(path))  # what the ImageNet training datasets do per image
    ref = reference_train_transform(32)(Image.open(path).convert("RGB"))
    assert ours.shape == ref.shape == (3, 32, 32) and ours.dtype == ref.dtype == torch.float32
    # The same decode: identical pixels from torchvision.io and from PIL (both libjpeg-turbo, same IDCT).
    pil = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(decode_rgb(path), pil)
    # The whole image, no flip: scale=(1, 1) and ratio at the image's own aspect crop nothing.
    from torchvision.transforms import v2

    img = decode_rgb(path)
    h, w = img.shape[1:]
    full = v2.RandomResizedCrop((h, w), scale=(1.0, 1.0), ratio=(w / h, w / h), antialias=True)(img)
    assert torch.equal(full, img)


def test_the_fused_normalisation_equals_todtype_then_normalize(photos: Path) -> None:
    from torchvision.transforms import v2

    from cabench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, to_normalized_float

    path = find_images(photos, 1)[0]
    two_steps = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    want = two_steps(decode_rgb(path))
    got = to_normalized_float(decode_rgb(path))
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want.as_subclass(torch.Tensor), atol=1e-6, rtol=0)
    from_pil = train_transform(32, random_resized_crop=False, hflip=False)(Image.open(path).convert("RGB"))
    assert torch.equal(from_pil, train_transform(32, random_resized_crop=False, hflip=False)(decode_rgb(path)))


VARIANTS = [
    {},
    {"random_resized_crop": False, "resize": 40},
    {"hflip": False, "crop_scale": (0.5, 1.0)},
    {"autoaugment": True},
    {"random_erasing": 0.5},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=["default", "resize-centre", "no-flip", "autoaugment", "erasing"])
def test_the_kernel_path_draws_and_computes_what_transforms_v2_does(photos: Path, variant: dict) -> None:
    from torchvision.transforms import v2

    fast = train_transform(32, **variant)
    plain = v2.Compose(list(fast.transforms))  # the same step objects through torchvision's own Compose
    for path in find_images(photos, 6):
        for image in (decode_rgb(path), Image.open(path).convert("RGB")):
            torch.manual_seed(7)
            got, next_draw = fast(image), torch.rand(1)
            torch.manual_seed(7)
            want = plain(image)
            assert torch.equal(got, want.as_subclass(torch.Tensor)) and type(got) is torch.Tensor
            assert torch.equal(next_draw, torch.rand(1))  # the same number of random draws


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def test_jpeg_size_reads_the_frame_header_as_pil_does() -> None:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "cabench"  # Make
    encodings = {
        "baseline": _jpeg(rgb),
        "progressive": _jpeg(rgb, progressive=True),
        "optimised, 4:4:4": _jpeg(rgb, optimize=True, subsampling=0),
        "grayscale": _jpeg(rgb.convert("L")),
        "exif and icc": _jpeg(rgb, exif=exif, icc_profile=b"\0" * 300),
        "restart markers": _jpeg(rgb, restart_marker_rows=1),
    }
    for name, data in encodings.items():
        assert jpeg_size(data) == Image.open(io.BytesIO(data)).size == (53, 37), name
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    for not_read in (png.getvalue(), b"", b"\xff\xd8", encodings["baseline"][:20], b"\xff\xd8\x00" + bytes(40)):
        assert jpeg_size(not_read) is None


def test_the_pixel_limit_is_read_from_the_header_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(_jpeg(Image.new("RGB", (40, 30))))
    monkeypatch.setattr("cabench.data.images.MAX_IMAGE_PIXELS", 40 * 30 - 1)
    with pytest.raises(BadImageError, match=r"x\.jpg: unreadable image \(DecompressionBombError: 40x30 pixels"):
        decode_rgb(path)
    monkeypatch.setattr("cabench.data.images.MAX_IMAGE_PIXELS", 40 * 30)
    assert decode_rgb(path).shape == (3, 30, 40)


def test_gpu_batch_path_runs_on_the_cpu_device_too(photos: Path) -> None:
    files = find_images(photos, 4)
    batch = gpu_train_batch(files, device="cpu", size=40)
    assert batch.shape == (4, 3, 40, 40) and batch.dtype == torch.float32
    assert batch.abs().max() < 5  # normalised


def test_decode_rgb_gives_three_channels_for_grayscale_and_png(tmp_path: Path) -> None:
    gray = np.random.default_rng(0).integers(0, 255, (20, 30), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.jpg")
    Image.fromarray(gray).save(tmp_path / "g.png")
    for name in ("g.jpg", "g.png"):
        t = decode_rgb(tmp_path / name)
        assert t.shape == (3, 20, 30) and t.dtype == torch.uint8


def test_pipeline_bench_measures_both_pipelines_and_sizes_workers(photos: Path) -> None:
    result = run_pipeline_bench(photos, images=4, size=32, chunk=2)
    rates = result["per_worker_img_s"]
    assert rates["cabench"] > 0 and rates["reference"] > 0 and rates["pil_v2"] > 0
    assert result["ratio_cabench_to_reference"] == pytest.approx(rates["cabench"] / rates["reference"])
    assert result["ratio_cabench_to_pil_v2"] == pytest.approx(rates["cabench"] / rates["pil_v2"])
    assert workers_per_gpu(200.0, (1000.0, 2500.0)) == {"1000": 5, "2500": 13}


def test_pipeline_bench_names_a_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(PipelineError, match="no image files"):
        find_images(tmp_path, 10)
    result = runner.invoke(app, ["bench", "--no-models", "--data", f"imagenet={tmp_path}"])
    assert result.exit_code == 2 and "no image files" in result.output


def test_bench_cli_pipeline_json(photos: Path) -> None:
    result = runner.invoke(
        app, ["bench", "--no-models", "--data", f"imagenet={photos}", "--pipeline-images", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pipeline"]["images"] == 2


def test_rounds_bound_every_model_measurement_and_progress_reaches_its_total() -> None:
    from cabench.measure.bench import _interleaved

    calls = {"baseline": 0, "ca": 0}
    steps = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    seen: list[tuple[int, int]] = []
    opts = BenchOptions(rows=("baseline", "ca"), rounds=3, warmup=2)
    times = _interleaved(steps, opts, "latency batch 1", lambda what, done, total: seen.append((done, total)))
    assert calls == {"baseline": 5, "ca": 5}  # warmup + rounds, nothing more
    assert {name: len(t) for name, t in times.items()} == {"baseline": 3, "ca": 3}
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == list(range(1, 11))


def test_each_timed_round_says_how_long_the_section_has_left() -> None:
    from cabench.measure.bench import _interleaved

    steps = {name: (lambda: time.sleep(0.02)) for name in ("baseline", "ca")}  # one round: about 0.04 s
    seen: list[str] = []
    opts = BenchOptions(rows=("baseline", "ca"), rounds=3, warmup=1)
    _interleaved(steps, opts, "training batch 32", lambda what, done, total: seen.append(what))
    rounds = [w for w in seen if ": round " in w]
    assert rounds[0].startswith("training batch 32: round 1/3, about ") and rounds[0].endswith(" s left")
    assert rounds[-1].startswith("training batch 32: round 3/3, about 0 s left")


def test_each_ratio_carries_the_spread_of_its_paired_rounds() -> None:
    from cabench.measure.bench import _summarise

    # Round by round the CA row takes 1.1x the baseline's time, whatever the machine's load did to both.
    base = [0.010, 0.020, 0.012, 0.030, 0.011]
    times = {"baseline": base, "ca": [1.1 * t for t in base]}
    latency = _summarise(times, 1, "latency")["ca"]
    assert latency["ratio_p10"] == pytest.approx(1.1) and latency["ratio_p90"] == pytest.approx(1.1)
    assert latency["p90"] / latency["p10"] > 2  # the absolute times spread; their paired ratio does not
    train = _summarise(times, 32, "train")["ca"]
    assert train["ratio_p10"] == pytest.approx(1 / 1.1) and train["ratio"] == pytest.approx(1 / 1.1)


def test_the_timm_row_finds_coordattn_where_timm_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from cabench.measure.bench_rows import _timm_coord_attn

    class CoordAttn(torch.nn.Module):
        pass

    layers = types.ModuleType("timm.layers")  # timm 1.0.31: not re-exported from timm.layers
    inner = types.ModuleType("timm.layers.coord_attn")
    inner.CoordAttn = CoordAttn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", types.ModuleType("timm"))
    monkeypatch.setitem(sys.modules, "timm.layers", layers)
    monkeypatch.setitem(sys.modules, "timm.layers.coord_attn", inner)
    assert _timm_coord_attn() is CoordAttn
