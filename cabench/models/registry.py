"""Architecture registry: a model spec (plain data) becomes an ``nn.Module``.

Each architecture registers a builder (``@register_arch``, exported as
``cabench.register_arch``) with the options it accepts, its task, the input
size the paper measures it at, and its default number of classes, in
:data:`ARCHS`. The built-in ones are declared in :mod:`cabench.models.archs`,
which names each builder by import path (imported when a model is built), so
reading and checking suites imports no torch; a plugin's register when the
plugin is imported. Suites and the CLI name architectures only
through this registry; attention blocks only through
:mod:`cabench.models.blocks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cabench.models.blocks import (
    ConfiguredAttention,
    args_text,
    canonical_args,
    check_attention,
    default_reduction,
    resolve_attention,
)
from cabench.models.catalogue import BUILTIN_BLOCKS, listed
from cabench.registry import Registry, import_object

if TYPE_CHECKING:
    from torch import nn  # annotations only: naming a model spec must not import torch

__all__ = [
    "ARCHS",
    "MAX_CLASSES",
    "MAX_REDUCTION",
    "MAX_WIDTH",
    "SMALL_INPUT_SIZE",
    "ArchInfo",
    "ModelSpec",
    "arch_info",
    "architectures",
    "build_model",
    "counting_input_size",
    "register_arch",
]

# Bounds that keep a spec buildable on one machine (checked before any allocation).
MAX_WIDTH = 4.0  # the paper's widths are 0.5-1.4
MAX_REDUCTION = 1024
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841

MODEL_OPTIONS = ("width", "attention", "reduction", "attention_args", "num_classes", "output_stride", "small_input")
SMALL_INPUT_SIZE = (32, 32)  # what a small_input model is counted at, unless an input size is given


@dataclass(frozen=True)
class ModelSpec:
    """What a suite row or ``cabench count`` asks for. ``None`` means the arch's default.

    ``attention`` is a registered block name or an import path ``"pkg.mod:Block"``; ``attention_args`` are
    keyword arguments of the block (``{"act": "relu"}``), kept as a read-only mapping. ``small_input``: the stride
    pattern of the CIFAR literature for 32x32 inputs (the stem and the first downsampling stage at stride 1, output
    stride 8 instead of 32), for archs that list the option.
    """

    arch: str
    width: float = 1.0
    attention: str | None = None
    reduction: int | None = None
    num_classes: int | None = None
    output_stride: int | None = None
    attention_args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    small_input: bool = False

    def __post_init__(self) -> None:
        args = self.attention_args or {}
        if not isinstance(args, Mapping):
            raise ValueError(f"attention_args must be a mapping of argument names to values, not {args!r}")
        object.__setattr__(self, "attention_args", MappingProxyType(dict(sorted(args.items()))))

    def key(self) -> str:
        """A stable, human-readable identity, used to count each model once.

        A ``small_input`` model's key ends in ``-small``; without it the key is what it was before the option.
        """
        # An arch's facts come from its declaration and a built-in block's from the catalogue: no torch.
        info = arch_info(self.arch)
        attention = self.attention or info.default_attention
        parts = [self.arch, f"w{self.width:g}", attention]
        reduction = self.reduction
        if reduction is None and attention not in ("none", info.default_attention):
            block = BUILTIN_BLOCKS.get(attention) if isinstance(attention, str) else None
            # "se" and "se, r=24" are one model
            reduction = block.default_reduction if block is not None else default_reduction(attention)
        if reduction is not None:
            parts.append(f"r{reduction}")
        if self.attention_args:  # arguments equal to the block's defaults are left out: they are one model
            parts += args_text(canonical_args(attention, self.attention_args))
        parts.append(f"c{self.num_classes or info.num_classes}")
        if "output_stride" in info.options:
            parts.append(f"os{self.output_stride or info.default_output_stride}")
        if self.small_input:
            parts.append("small")
        return "-".join(parts)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: getattr(self, k) for k in ("arch", "width", "attention", "reduction", "num_classes", "output_stride")
        }
        out = {k: v for k, v in out.items() if v is not None}
        if self.attention_args:
            out["attention_args"] = dict(self.attention_args)
        if self.small_input:
            out["small_input"] = True
        return out


@dataclass(frozen=True)
class ArchInfo:
    name: str
    builder: Callable[..., nn.Module] | str  # or "pkg.mod:fn", imported on first build
    task: str  # classify | detect | segment
    input_size: tuple[int, int]  # (H, W) the paper counts multiply-adds at
    num_classes: int
    options: frozenset[str]
    widths: tuple[float, ...] | None = None  # None: any width
    default_output_stride: int | None = None
    default_attention: str = "none"
    # Maps the built model to the module whose forward(images) is counted (e.g. a detector without its
    # post-processing); a callable or "pkg.mod:fn"; None: the model itself.
    counting_view: Callable[[nn.Module], nn.Module] | str | None = None

    def __post_init__(self) -> None:
        # Where the registry says the entry comes from (duplicate-name messages): the builder's definition.
        module, _, qualname = self.builder.partition(":") if isinstance(self.builder, str) else ("", "", "")
        object.__setattr__(self, "__module__", module or getattr(self.builder, "__module__", "?"))
        object.__setattr__(self, "__qualname__", qualname or getattr(self.builder, "__qualname__", self.name))

    def build(self, **options: Any) -> nn.Module:
        builder = import_object(self.builder) if isinstance(self.builder, str) else self.builder
        return builder(**options)  # type: ignore[no-any-return]

    def view_for_counting(self, model: nn.Module) -> nn.Module:
        view = self.counting_view
        if view is None:
            return model
        return (import_object(view) if isinstance(view, str) else view)(model)  # type: ignore[no-any-return]


#: Architectures by name; the built-in ones are declared in :mod:`cabench.models.archs`.
ARCHS: Registry[ArchInfo] = Registry("architecture", builtin_modules=("cabench.models.archs",))


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
    counting_view: Callable[[nn.Module], nn.Module] | str | None = None,
    builder: str | None = None,
) -> Any:
    """Decorator registering ``builder(**options) -> nn.Module`` under ``name``; or, given ``builder`` as an
    import path (``"pkg.mod:fn"``), the registration itself, the builder imported on first build."""
    unknown = set(options) - set(MODEL_OPTIONS)
    if unknown:
        raise ValueError(f"{name}: unknown options {sorted(unknown)}")

    def wrap(build: Callable[..., nn.Module] | str) -> Any:
        info = ArchInfo(
            name=name,
            builder=build,
            task=task,
            input_size=input_size,
            num_classes=num_classes,
            options=frozenset(options),
            widths=widths,
            default_output_stride=default_output_stride,
            default_attention=default_attention,
            counting_view=counting_view,
        )
        ARCHS.register(name, info)
        return build

    return wrap if builder is None else wrap(builder)


def architectures() -> dict[str, ArchInfo]:
    return dict(ARCHS.items())


def arch_info(name: str) -> ArchInfo:
    return ARCHS.get(name)


def counting_input_size(spec: ModelSpec) -> tuple[int, int]:
    """The (H, W) a spec's multiply-adds are counted at when none is given: the arch's paper size, or
    :data:`SMALL_INPUT_SIZE` for a ``small_input`` model (its stride pattern is the one for 32x32 inputs)."""
    if spec.small_input:
        return SMALL_INPUT_SIZE
    return arch_info(spec.arch).input_size


def validate_spec(spec: ModelSpec, *, probe: bool = True) -> None:
    """Raise ``ValueError`` with one readable sentence if ``spec`` cannot be built.

    ``probe=False`` (listing or showing suites): a spec whose block is built in, with arguments the catalogue lists,
    is checked against its arch's declaration (options, widths, bounds) and :mod:`cabench.models.catalogue`
    without importing torch or building the block; any other spec is checked in full, as with ``probe=True``.
    """
    entry = None if probe else _catalogued(spec)
    if entry is not None:
        _check_fields(spec, entry.options, entry.widths)
        return
    info = arch_info(spec.arch)
    _check_fields(spec, info.options, info.widths)
    if "attention" in info.options:
        _validate_attention(spec.attention or info.default_attention, spec.reduction, spec.attention_args)


def _catalogued(spec: ModelSpec) -> ArchInfo | None:
    """The arch's declaration when its block is built in with arguments the catalogue lists, else None."""
    entry = arch_info(spec.arch)
    if "attention" not in entry.options:
        return None
    if not listed(spec.attention or entry.default_attention, spec.reduction, dict(spec.attention_args)):
        return None
    return entry


def _check_fields(spec: ModelSpec, options: frozenset[str], widths: tuple[float, ...] | None) -> None:
    given = {k for k, v in spec.as_dict().items() if k != "arch"}
    defaults: dict[str, Any] = {"width": 1.0, "small_input": False}
    # An arch that places attention takes the block's arguments too (they travel with the block).
    accepted = options | ({"attention_args"} if "attention" in options else set())
    for opt in sorted(given - accepted):
        if defaults.get(opt) != getattr(spec, opt):
            raise ValueError(f"{spec.arch} does not take {opt!r}; it takes {', '.join(sorted(accepted))}")
    if isinstance(spec.width, (int, float)) and spec.width <= 0:
        raise ValueError(f"width must be positive, not {spec.width!r}")
    if not isinstance(spec.width, (int, float)) or not math.isfinite(spec.width) or spec.width > MAX_WIDTH:
        raise ValueError(f"width must be a number in (0, {MAX_WIDTH:g}], not {spec.width!r}")
    if widths is not None and spec.width not in widths:
        raise ValueError(f"{spec.arch} supports widths {', '.join(f'{w:g}' for w in widths)}, not {spec.width:g}")
    if spec.reduction is not None and not 1 <= spec.reduction <= MAX_REDUCTION:
        raise ValueError(f"reduction must be an integer in [1, {MAX_REDUCTION}], not {spec.reduction}")
    if spec.output_stride is not None and spec.output_stride not in (8, 16):
        raise ValueError(f"output stride must be 8 or 16, not {spec.output_stride}")
    if not isinstance(spec.small_input, bool):
        raise ValueError(f"small_input must be true or false, not {spec.small_input!r}")
    if spec.small_input and "output_stride" in options and spec.output_stride != 8:
        raise ValueError(f"{spec.arch} with small_input has output stride 8 at most: set output_stride to 8")
    if spec.num_classes is not None and not 1 <= spec.num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be an integer in [1, {MAX_CLASSES:,}], not {spec.num_classes}")


def _validate_attention(attention: str, reduction: int | None, args: Mapping[str, Any]) -> None:
    """The block resolves, builds with these options and keeps its input's shape (checked once per process)."""
    block = resolve_attention(attention)
    check_attention(
        block,
        reduction if reduction is not None else default_reduction(block),
        canonical_args(block, args),
        label=attention,
    )


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the ``nn.Module`` a spec describes (random init, train mode)."""
    validate_spec(spec)
    info = arch_info(spec.arch)
    kwargs: dict[str, Any] = {}
    for opt in info.options - {"attention_args"}:
        value = getattr(spec, opt)
        if value is not None:
            kwargs[opt] = value
    if spec.attention_args:  # the block travels with its arguments, to wherever the arch places attention
        kind = spec.attention or info.default_attention
        kwargs["attention"] = ConfiguredAttention(kind, canonical_args(kind, spec.attention_args))
    return info.build(**kwargs)
