"""The models ``cabench bench`` compares, one registry entry per row.

Every row is MobileNetV2 (width 1.0, 1000 classes, 224x224) with one attention block after each depthwise conv,
except ``baseline`` (torchvision's own ``mobilenet_v2``) and ``timm_mobilenetv2`` (timm's ``mobilenetv2_100``, the
same network written by another library; only when timm is importable). ``authors_ca`` and ``timm_ca`` carry the
weights of the ``ca`` row in a different block implementation, so the three CA rows compute the same function and
differ only in how. A builder raises :class:`RowUnavailable` (with the reason) when a row cannot be built here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from cabench.measure.ca_reference import swap_in_authors_style
from cabench.models.attention import CoordinateAttention
from cabench.models.mobilenetv2 import MobileNetV2
from cabench.registry import Registry

__all__ = ["BENCH_ROWS", "BenchRow", "RowUnavailable", "bench_row", "build_row", "row_label"]


class RowUnavailable(RuntimeError):
    """A row that cannot be built in this environment (e.g. timm not installed)."""


class BenchRow(NamedTuple):
    label: str  # what the tables print
    build: Callable[[], nn.Module]


BENCH_ROWS: Registry[BenchRow] = Registry("bench row")


def bench_row(name: str, label: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Register the decorated builder as the row ``name``, printed as ``label``."""

    def decorate(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        BENCH_ROWS.register(name, BenchRow(label, build))
        return build

    return decorate


def _cabench(attention: str) -> nn.Module:
    return MobileNetV2(attention=attention)


@bench_row("baseline", "MobileNetV2 (torchvision)")
def _baseline() -> nn.Module:
    import torchvision

    return torchvision.models.mobilenet_v2()


@bench_row("backbone", "MobileNetV2 (cabench backbone, no attention)")
def _backbone() -> nn.Module:
    """cabench's own MobileNetV2 without attention: what the attention rows add to, apart from the backbone's
    own speed against torchvision's (its ReLU6 trains without torch's input copy)."""
    return _cabench("none")


@bench_row("se", "MobileNetV2 + SE (r=24)")
def _se() -> nn.Module:
    return _cabench("se")


@bench_row("cbam", "MobileNetV2 + CBAM (r=24)")
def _cbam() -> nn.Module:
    return _cabench("cbam")


@bench_row("ca", "MobileNetV2 + CA (cabench block)")
def _ca() -> nn.Module:
    return _cabench("ca")


@bench_row("ca_modules", "MobileNetV2 + CA (cabench block, module path only)")
def _ca_modules() -> nn.Module:
    """The ``ca`` row with every block held to its module path (plain ops and autograd): against ``ca``, what the
    block's batch-1 inference path and hand-written backward save."""
    model = _cabench("ca")
    for block in model.modules():
        if isinstance(block, CoordinateAttention):
            block.forward = block._forward_modules  # type: ignore[method-assign]
    return model


@bench_row("authors_ca", "MobileNetV2 + CA (authors'-style block)")
def _authors_ca() -> nn.Module:
    model = _cabench("ca")
    swap_in_authors_style(model)
    return model


def _timm_coord_attn() -> type[nn.Module]:
    import importlib

    # timm re-exports it from timm.layers in some releases; 1.0.31 keeps it in timm.layers.coord_attn only.
    errors = []
    for module in ("timm.layers", "timm.layers.coord_attn"):
        try:
            return importlib.import_module(module).CoordAttn  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as e:  # timm missing, or a timm without CoordAttn there
            errors.append(f"{module}: {e}")
    raise RowUnavailable(f"timm's CoordAttn is not importable ({'; '.join(errors)})")


@bench_row("timm_ca", "MobileNetV2 + CA (timm CoordAttn, as the paper)")
def _timm_ca() -> nn.Module:
    """cabench's MobileNetV2+CA with every block replaced by timm's CoordAttn configured as the paper's block:
    ``mip = max(8, C // 32)`` channels, biases, BatchNorm, h_swish, sigmoid gates (the same state dict names)."""
    coord_attn = _timm_coord_attn()
    model = _cabench("ca")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is CoordinateAttention:
                block = coord_attn(
                    child.conv1.in_channels, rd_channels=child.conv1.out_channels, bias=True, act_layer=nn.Hardswish
                )
                block.load_state_dict(child.state_dict())
                setattr(parent, name, block)
    return model


@bench_row("timm_mobilenetv2", "MobileNetV2 (timm mobilenetv2_100)")
def _timm_mobilenetv2() -> nn.Module:
    try:
        import timm
    except ImportError as e:
        raise RowUnavailable(f"timm is not importable ({e})") from None
    return timm.create_model("mobilenetv2_100", pretrained=False)


def build_row(name: str) -> nn.Module:
    """The row's model, freshly initialised (raises RowUnavailable or RegistryError)."""
    return BENCH_ROWS.get(name).build()


def row_label(name: str) -> str:
    """The row's printed label."""
    return BENCH_ROWS.get(name).label
