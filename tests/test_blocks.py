"""Attention blocks by name, import path or class; architectures through one registry; block arguments."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import cabench
from cabench.models.blocks import ATTENTIONS, attention_provenance, create_attention, default_reduction
from cabench.models.registry import ARCHS, ModelSpec, build_model, validate_spec
from cabench.registry import RegistryError

ROOT = Path(__file__).resolve().parent.parent

BLOCK_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Gate(nn.Module):
        default_reduction = 16

        def __init__(self, channels, reduction=4, scale=1.0):
            super().__init__()
            self.reduction = reduction
            self.scale = scale
            self.fc = nn.Conv2d(channels, max(1, channels // reduction), 1)
            self.fc2 = nn.Conv2d(max(1, channels // reduction), channels, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc(x.mean((2, 3), keepdim=True))))) * self.scale


    class NoReduction(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.w = nn.Parameter(torch.ones(channels))

        def forward(self, x):
            return x * self.w[None, :, None, None]


    class Shrinks(nn.Module):
        def __init__(self, channels, reduction=8):
            super().__init__()

        def forward(self, x):
            return x[:, :1]


    class Broken(nn.Module):
        def __init__(self, channels, reduction=8):
            raise RuntimeError("no")
    """
)


@pytest.fixture()
def user_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module ``user_blocks_mod`` outside the package, importable as a user's would be."""
    path = tmp_path / "user_blocks_mod.py"
    path.write_text(BLOCK_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_blocks_mod", None)
    yield path
    sys.modules.pop("user_blocks_mod", None)


def test_a_block_is_named_by_registry_name_import_path_or_class(user_blocks: Path) -> None:
    by_path = create_attention("user_blocks_mod:Gate", 64)
    assert type(by_path).__name__ == "Gate"
    assert by_path.reduction == 16  # the block's declared default_reduction, not its signature's
    assert create_attention("user_blocks_mod:Gate", 64, reduction=8).reduction == 8
    assert create_attention(type(by_path), 64, scale=2.0).scale == 2.0
    # A block without default_reduction is built without a reduction.
    assert type(create_attention("user_blocks_mod:NoReduction", 8)).__name__ == "NoReduction"
    assert default_reduction("user_blocks_mod:NoReduction") is None
    assert default_reduction("ca") == 32


def test_bad_blocks_are_one_line_errors_naming_the_block(user_blocks: Path) -> None:
    cases = {
        "user_blocks_mod:Shrinks": "changes the tensor shape",
        "user_blocks_mod:Broken": "failed: RuntimeError: no",
        "user_blocks_mod:Missing": "has no attribute 'Missing'",
        "no_such_module_xyz:Block": "cannot import 'no_such_module_xyz'",
        "sse": "did you mean 'se'",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message) as e:
            create_attention(path, 32)
        assert path in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="reduction"):
        create_attention("user_blocks_mod:NoReduction", 8, reduction=4)  # takes no reduction: refused


def test_probing_a_block_does_not_consume_the_callers_random_stream(user_blocks: Path) -> None:
    torch.manual_seed(3)
    create_attention("user_blocks_mod:Gate", 48, scale=3.0)  # first use of this configuration: probed
    after = torch.rand(4)
    torch.manual_seed(3)
    torch.nn.Conv2d(48, 3, 1)  # what create_attention built, without the probe
    torch.nn.Conv2d(3, 48, 1)
    assert torch.equal(after, torch.rand(4))


def test_provenance_names_the_file_and_its_hash_for_user_blocks_only(user_blocks: Path) -> None:
    import hashlib

    assert attention_provenance("ca") is None
    assert attention_provenance(None) is None
    prov = attention_provenance("user_blocks_mod:Gate")
    assert prov == {
        "attention": "user_blocks_mod:Gate",
        "import_path": "user_blocks_mod:Gate",
        "file": str(user_blocks.resolve()),
        "sha256": hashlib.sha256(user_blocks.read_bytes()).hexdigest(),
    }


def test_public_decorator_registers_and_duplicates_are_errors() -> None:
    @cabench.register_attention("test-blocks-double")
    class Double(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    assert "test-blocks-double" in ATTENTIONS
    assert isinstance(create_attention("test-blocks-double", 8), Double)
    model = build_model(ModelSpec("mobilenetv2", width=0.5, attention="test-blocks-double"))
    assert sum(isinstance(m, Double) for m in model.modules()) == 16  # every block but the t=1 one
    with pytest.raises(RegistryError, match="registered twice"):
        cabench.register_attention("test-blocks-double")(Double)
    ARCHS.names()  # built-ins loaded: a second "mobilenetv2" is refused
    with pytest.raises(RegistryError, match="registered twice"):
        cabench.register_arch("mobilenetv2", task="classify", input_size=(224, 224), num_classes=10, options=())(
            lambda: nn.Identity()
        )


def test_architectures_come_from_the_registry_without_a_module_list() -> None:
    assert {"mobilenetv2", "mobilenext", "efficientnet_b0", "deeplabv3_mobilenetv2"} <= set(ARCHS.names())
    with pytest.raises(ValueError, match="did you mean 'mobilenetv2'"):
        validate_spec(ModelSpec("mobilenetv3"))


def test_attention_args_reach_every_block_and_defaults_are_one_model() -> None:
    relu = ModelSpec("mobilenetv2", attention="ca", attention_args={"act": "relu"})
    assert relu.key() == "mobilenetv2-w1-ca-r32-act=relu-c1000"
    assert relu.as_dict()["attention_args"] == {"act": "relu"}
    # An argument equal to the block's default is the same model (as "se" and "se, r=24" are).
    assert (
        ModelSpec("mobilenetv2", attention="ca", attention_args={"act": "hswish"}).key()
        == ModelSpec("mobilenetv2", attention="ca").key()
    )
    assert "attention_args" not in ModelSpec("mobilenetv2", attention="ca").as_dict()
    with pytest.raises(TypeError):
        relu.attention_args["act"] = "silu"  # type: ignore[index]
    hash(relu)
    model = build_model(ModelSpec("mobilenetv2", width=0.5, attention="ca", attention_args={"act": "silu"}))
    acts = [type(m.act).__name__ for m in model.modules() if type(m).__name__ == "CoordinateAttention"]
    assert acts == ["SiLU"] * 16
    model = build_model(ModelSpec("efficientnet_b0", attention="se", attention_args={"act": "hswish"}))
    assert sum(type(m).__name__ == "SqueezeExcite" for m in model.modules()) == 16  # cabench SE replaces each
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        validate_spec(ModelSpec("mobilenetv2", attention="se", attention_args={"act": "gelu"}))
    with pytest.raises(ValueError, match="unexpected keyword argument 'foo'"):
        validate_spec(ModelSpec("mobilenetv2", attention="se", attention_args={"foo": 1}))


def test_suite_rows_take_import_paths_and_attention_args(user_blocks: Path, tmp_path: Path) -> None:
    from cabench.suite import SuiteError, load_suite

    def suite(model: str) -> Path:
        path = tmp_path / "mine.yaml"
        path.write_text(
            "id: mine\ntitle: t\nsource: s\ntask: classify\ncolumns: {params: {unit: M}}\n"
            f"rows:\n  - name: Mine\n    model: {model}\n"
        )
        return path

    row = load_suite(suite('{arch: mobilenetv2, attention: "user_blocks_mod:Gate", reduction: 16}')).rows[0]
    assert row.model is not None and row.model.spec().attention == "user_blocks_mod:Gate"
    row = load_suite(suite("{arch: mobilenetv2, attention: ca, attention_args: {softmax: true}}")).rows[0]
    assert row.model is not None and dict(row.model.spec().attention_args) == {"softmax": True}
    with pytest.raises(SuiteError, match=r"row 1 \(Mine\): model.attention: .*user_blocks_mod:Shrinks"):
        load_suite(suite('{arch: mobilenetv2, attention: "user_blocks_mod:Shrinks"}'))
    with pytest.raises(SuiteError, match="row 1"):
        load_suite(suite("{arch: mobilenetv2, attention: ca, attention_args: {act: [1]}}"))


@pytest.mark.slow
def test_cli_count_takes_an_import_path_and_block_arguments(user_blocks: Path) -> None:
    from typer.testing import CliRunner

    from cabench.cli import app

    runner = CliRunner()
    args = ["count", "mobilenetv2", "--width", "0.5", "--attention", "user_blocks_mod:Gate", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout)
    assert payload["key"] == "mobilenetv2-w0.5-user_blocks_mod:Gate-r16-c1000"
    expected = sum(p.numel() for p in build_model(ModelSpec("mobilenetv2", 0.5, "user_blocks_mod:Gate")).parameters())
    assert payload["params"] == expected
    for bad, message in (
        (["--attention", "user_blocks_mod:Shrinks"], "changes the tensor shape"),
        (["--attention", "ca", "--attention-arg", "act"], "expected KEY=VALUE"),
        (["--attention", "ca", "--attention-arg", "act=gelu"], "unknown activation 'gelu'"),
    ):
        r = runner.invoke(app, ["count", "mobilenetv2", *bad])
        assert r.exit_code == 2 and r.exception is not None and message in r.stderr, r.output
        assert "Traceback" not in r.stderr


def test_importing_cabench_does_not_import_torch() -> None:
    code = "import sys, cabench; assert 'torch' not in sys.modules; cabench.register_attention; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_a_block_is_probed_on_two_shapes_and_must_keep_the_dtype() -> None:
    # Issue 22: a block returning float64, or keeping only the probe's (6, 10), passed the check and failed in
    # training with a traceback (exit 3).
    from torch import nn

    from cabench.models.blocks import check_attention

    class Doubles(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.double()

    class FixedSize(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1, channels, 6, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    with pytest.raises(ValueError, match=r"returns torch\.float64 for torch\.float32 input"):
        check_attention(Doubles, None, (), label="doubles")
    with pytest.raises(ValueError, match=r"its forward on a \(3, 64, 7, 5\) tensor failed"):
        check_attention(FixedSize, None, (), label="fixed")
