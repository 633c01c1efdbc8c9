"""``small_input``: the CIFAR stride pattern (stem and first downsampling stage at stride 1, output stride 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cabench.cli import app
from cabench.measure.complexity import count_params
from cabench.models import ModelSpec, build_model
from cabench.models.detection import ssd_counting_view
from cabench.models.mobilenetv2 import MobileNetV2
from cabench.models.registry import SMALL_INPUT_SIZE, counting_input_size, validate_spec
from cabench.suite import SuiteError, all_suite_files, load_suite

LOCK = Path(__file__).resolve().parents[1] / "suites" / "counts.lock.json"


def test_small_input_mobilenetv2_has_output_stride_8_and_the_same_parameters() -> None:
    small = MobileNetV2(width=0.5, num_classes=10, small_input=True).eval()
    plain = MobileNetV2(width=0.5, num_classes=10).eval()
    assert small.features[0][0].stride == (1, 1)
    assert small.features[2].conv[3].stride == (1, 1)  # the first 24-channel block's depthwise conv
    with torch.no_grad():
        assert small.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)
        assert plain.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (1, 1)
        assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_params(small) == count_params(plain)
    assert small.state_dict().keys() == plain.state_dict().keys()


def test_small_input_is_part_of_the_key_and_the_dict_only_when_true() -> None:
    plain = ModelSpec("mobilenetv2", 0.5, "ca", num_classes=10)
    small = ModelSpec("mobilenetv2", 0.5, "ca", num_classes=10, small_input=True)
    assert plain.key() == "mobilenetv2-w0.5-ca-r32-c10"
    assert small.key() == "mobilenetv2-w0.5-ca-r32-c10-small"
    assert "small_input" not in plain.as_dict()
    assert small.as_dict()["small_input"] is True
    assert counting_input_size(plain) == (224, 224)
    assert counting_input_size(small) == SMALL_INPUT_SIZE == (32, 32)


def test_the_keys_of_rows_without_small_input_are_the_locked_ones() -> None:
    locked = set(json.loads(LOCK.read_text())["counts"])
    rows = [
        row.model.spec()
        for path in all_suite_files().values()
        for row in load_suite(path, probe=False).rows
        if row.model is not None and not row.cited and not row.model.small_input
    ]
    assert rows
    for spec in rows:
        assert spec.key() in locked, spec


@pytest.mark.slow
def test_small_input_deeplabv3_os8_runs_at_64() -> None:
    model = build_model(
        ModelSpec("deeplabv3_mobilenetv2", 0.5, num_classes=11, output_stride=8, small_input=True)
    ).eval()
    plain = build_model(ModelSpec("deeplabv3_mobilenetv2", 0.5, num_classes=11, output_stride=8))
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert model.features(x).shape[-2:] == (8, 8)
        assert model(x).shape == (1, 11, 64, 64)
    dilations = {m.dilation for m in model.features.modules() if isinstance(m, nn.Conv2d)}
    assert dilations == {(1, 1)}  # the trunk is at output stride 8 already: nothing to dilate
    assert count_params(model) == count_params(plain)


def test_small_input_deeplabv3_needs_output_stride_8() -> None:
    with pytest.raises(ValueError, match=r"small_input .* set output_stride to 8"):
        build_model(ModelSpec("deeplabv3_mobilenetv2", small_input=True))
    with pytest.raises(ValueError, match=r"small_input .* set output_stride to 8"):
        build_model(ModelSpec("deeplabv3_mobilenetv2", output_stride=16, small_input=True))


@pytest.mark.slow
def test_small_input_ssdlite_runs_at_64() -> None:
    spec = ModelSpec("ssdlite320_mobilenetv2", 0.5, num_classes=11, small_input=True)
    model = build_model(spec).eval()
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        maps = list(model.backbone(x).values())
        boxes, logits = ssd_counting_view(model)(x)
        detections = model([torch.zeros(3, 64, 64)])
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2, 1, 1]  # output strides 4 and 8, then the extras
    assert boxes.shape[1] == logits.shape[1] > 0 and logits.shape[2] == 11
    assert len(detections) == 1
    assert count_params(model) == count_params(build_model(ModelSpec("ssdlite320_mobilenetv2", 0.5, num_classes=11)))


def test_an_arch_without_the_option_refuses_small_input_in_one_line(tmp_path: Path) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "id: bad\ntitle: t\nsource: s\ntask: classify\ncolumns:\n  params: {unit: M}\n"
        "rows:\n  - name: E\n    model: {arch: efficientnet_b0, small_input: true}\n"
    )
    for probe in (False, True):
        with pytest.raises(SuiteError) as e:
            load_suite(suite, probe=probe)
        message = str(e.value)
        assert "\n" not in message
        assert "row 1 (E): model: efficientnet_b0 does not take 'small_input'" in message
    validate_spec(ModelSpec("efficientnet_b0", small_input=False))  # False, the default, is accepted


def test_count_small_input_counts_at_32() -> None:
    result = CliRunner().invoke(
        app, ["count", "mobilenetv2", "--width", "0.5", "--num-classes", "10", "--small-input", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["key"] == "mobilenetv2-w0.5-none-c10-small"
    assert data["model"]["small_input"] is True
    assert data["input_size"] == [32, 32]
