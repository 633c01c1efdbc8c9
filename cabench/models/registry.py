"""Architecture registry: a model spec (plain data) becomes an ``nn.Module``.

Each architecture registers a builder with the options it accepts, its task,
the input size the paper measures it at, and its default number of classes.
Suites and the CLI name architectures only through this registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cabench.models.attention import ATTENTION_KINDS, default_reduction

__all__ = [
    "MAX_CLASSES",
    "MAX_REDUCTION",
    "MAX_WIDTH",
    "ArchInfo",
    "ModelSpec",
    "arch_info",
    "architectures",
    "build_model",
    "register_arch",
]

# Bounds that keep a spec buildable on one machine (checked before any allocation).
MAX_WIDTH = 4.0  # the paper's widths are 0.5-1.4
MAX_REDUCTION = 1024
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841

# Modules whose import registers architectures. Kept lazy so ``cabench list``
# does not pay for importing every model.
_ARCH_MODULES = (
    "cabench.models.mobilenetv2",
    "cabench.models.mobilenext",
    "cabench.models.efficientnet",
    "cabench.models.detection",
    "cabench.models.segmentation",
)

MODEL_OPTIONS = ("width", "attention", "reduction", "num_classes", "output_stride")


@dataclass(frozen=True)
class ModelSpec:
    """What a suite row or ``cabench count`` asks for. ``None`` means the arch's default."""

    arch: str
    width: float = 1.0
    attention: str | None = None
    reduction: int | None = None
    num_classes: int | None = None
    output_stride: int | None = None

    def key(self) -> str:
        """A stable, human-readable identity, used to count each model once."""
        info = arch_info(self.arch)
        attention = self.attention or info.default_attention
        parts = [self.arch, f"w{self.width:g}", attention]
        reduction = self.reduction
        if reduction is None and attention not in ("none", info.default_attention):
            reduction = default_reduction(attention)  # "se" and "se, r=24" are one model
        if reduction is not None:
            parts.append(f"r{reduction}")
        parts.append(f"c{self.num_classes or info.num_classes}")
        if "output_stride" in info.options:
            parts.append(f"os{self.output_stride or info.default_output_stride}")
        return "-".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ArchInfo:
    name: str
    builder: Callable[..., nn.Module]
    task: str  # classify | detect | segment
    input_size: tuple[int, int]  # (H, W) the paper counts multiply-adds at
    num_classes: int
    options: frozenset[str]
    widths: tuple[float, ...] | None = None  # None: any width
    default_output_stride: int | None = None
    default_attention: str = "none"
    # Maps the built model to the module whose forward(images) is counted
    # (e.g. a detector without its post-processing).
    counting_view: Callable[[nn.Module], nn.Module] = field(default=lambda m: m)
    summary: str = ""


_REGISTRY: dict[str, ArchInfo] = {}
_loaded = False


def register_arch(
    name: str,
    *,
    task: str,
    input_size: tuple[int, int],
    num_classes: int,
    options: tuple[str, ...],
    widths: tuple[float, ...] | None = None,
    default_output_stride: int | None = None,
    default_attention: str = "none",
    counting_view: Callable[[nn.Module], nn.Module] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder(**options) -> nn.Module`` under ``name``."""
    unknown = set(options) - set(MODEL_OPTIONS)
    if unknown:
        raise ValueError(f"{name}: unknown options {sorted(unknown)}")

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ArchInfo(
            name=name,
            builder=builder,
            task=task,
            input_size=input_size,
            num_classes=num_classes,
            options=frozenset(options),
            widths=widths,
            default_output_stride=default_output_stride,
            default_attention=default_attention,
            counting_view=counting_view or (lambda m: m),
            summary=(builder.__doc__ or "").strip().splitlines()[0] if builder.__doc__ else "",
        )
        return builder

    return wrap


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in _ARCH_MODULES:
            importlib.import_module(module)
        _loaded = True


def architectures() -> dict[str, ArchInfo]:
    _load_all()
    return dict(_REGISTRY)


def arch_info(name: str) -> ArchInfo:
    archs = architectures()
    if name not in archs:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(sorted(archs))}")
    return archs[name]


def validate_spec(spec: ModelSpec) -> None:
    """Raise ``ValueError`` with one readable sentence if ``spec`` cannot be built."""
    info = arch_info(spec.arch)
    if spec.attention is not None and spec.attention not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention {spec.attention!r}; expected one of {', '.join(ATTENTION_KINDS)}")
    given = {k for k, v in spec.as_dict().items() if k != "arch"}
    defaults = {"width": 1.0}
    for opt in sorted(given - info.options):
        if defaults.get(opt) != getattr(spec, opt):
            raise ValueError(f"{spec.arch} does not take {opt!r}; it takes {', '.join(sorted(info.options))}")
    if isinstance(spec.width, (int, float)) and spec.width <= 0:
        raise ValueError(f"width must be positive, not {spec.width!r}")
    if not isinstance(spec.width, (int, float)) or not math.isfinite(spec.width) or spec.width > MAX_WIDTH:
        raise ValueError(f"width must be a number in (0, {MAX_WIDTH:g}], not {spec.width!r}")
    if info.widths is not None and spec.width not in info.widths:
        raise ValueError(f"{spec.arch} supports widths {', '.join(f'{w:g}' for w in info.widths)}, not {spec.width:g}")
    if spec.reduction is not None and not 1 <= spec.reduction <= MAX_REDUCTION:
        raise ValueError(f"reduction must be an integer in [1, {MAX_REDUCTION}], not {spec.reduction}")
    if spec.output_stride is not None and spec.output_stride not in (8, 16):
        raise ValueError(f"output stride must be 8 or 16, not {spec.output_stride}")
    if spec.num_classes is not None and not 1 <= spec.num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be an integer in [1, {MAX_CLASSES:,}], not {spec.num_classes}")


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the ``nn.Module`` a spec describes (random init, train mode)."""
    validate_spec(spec)
    info = arch_info(spec.arch)
    kwargs: dict[str, Any] = {}
    for opt in info.options:
        value = getattr(spec, opt)
        if value is not None:
            kwargs[opt] = value
    return info.builder(**kwargs)
