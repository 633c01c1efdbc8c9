"""The attention-block registry and the one factory every architecture builds its blocks with.

An attention block is any callable ``Block(channels, reduction=R, **attention_args) -> nn.Module`` whose module maps
``(N, C, H, W) -> (N, C, H, W)``. Blocks are named three ways, everywhere a block is named (suite rows,
``cabench count --attention``, :func:`create_attention`):

* a registered name (``se``, ``ca``, ``eca``, ...): the built-in blocks are declared in :mod:`cabench.models.catalogue`
  (each by its import path, imported when first built); a plugin module registers its own with
  :func:`register_attention` (exported as ``cabench.register_attention``), on the class or by path;
* an import path ``"package.module:Class"``;
* the class (or factory function) itself.

``reduction`` is passed only when it is given, or else when the block declares a class attribute
``default_reduction`` (Table 1's ``r``: 24 for ``se``/``cbam``/``x``/``y``, 32 for ``ca``); a block without one
(``eca``, ``triplet``) is built without it. Each distinct (block, reduction, arguments) is checked once per process
by building it for a small probe tensor: a block that cannot be built, or whose output shape differs from its
input's, is a :class:`ValueError` naming the block.

The built-in architectures are declared alike (:mod:`cabench.models.archs`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cabench.models.catalogue import BUILTIN_BLOCKS
from cabench.registry import Registry, RegistryError, import_object, is_import_path

__all__ = [
    "ATTENTIONS",
    "AttentionLike",
    "ConfiguredAttention",
    "attention_label",
    "attention_provenance",
    "canonical_args",
    "check_attention",
    "create_attention",
    "default_reduction",
    "register_attention",
    "resolve_attention",
]


#: Attention blocks by name. Values are block classes (or factories) called as ``Block(channels, reduction=R)``;
#: the built-in ones are registered by their declared paths, a plugin's where it is defined.
ATTENTIONS: Registry[Callable[..., Any]] = Registry("attention")
for _name, _entry in BUILTIN_BLOCKS.items():
    ATTENTIONS.register(_name, _entry.path)


def register_attention(name: str, obj: Any = None) -> Any:
    """Register an attention block under ``name``: ``@register_attention("eca")`` on the class, or
    ``register_attention("mine", "pkg.mod:Block")`` (imported on first use)."""
    return ATTENTIONS.register(name) if obj is None else ATTENTIONS.register(name, obj)


@dataclass(frozen=True)
class ConfiguredAttention:
    """A block together with its arguments (``attention_args``), passed where a block name is expected.

    ``create_attention(ConfiguredAttention("se", (("act", "hswish"),)), 96)`` builds ``se`` with ``act="hswish"``.
    """

    kind: Any  # a registered name, an import path, or the block itself
    args: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        return f"{attention_label(self.kind)}({', '.join(f'{k}={v!r}' for k, v in self.args)})"


AttentionLike = str | Callable[..., Any] | ConfiguredAttention


def attention_label(kind: Any) -> str:
    """How messages name a block: its registered name or import path, or ``module:qualname`` for a class."""
    if isinstance(kind, str):
        return kind
    if isinstance(kind, ConfiguredAttention):
        return str(kind)
    return f"{getattr(kind, '__module__', '?')}:{getattr(kind, '__qualname__', type(kind).__name__)}"


def resolve_attention(kind: Any) -> Callable[..., Any]:
    """The block class/factory a name, import path or object stands for (:class:`RegistryError` if none)."""
    if isinstance(kind, ConfiguredAttention):
        return resolve_attention(kind.kind)
    obj = kind
    if isinstance(kind, str):
        obj = import_object(kind) if is_import_path(kind) else ATTENTIONS.get(kind)
    if not callable(obj):
        raise RegistryError(f"attention {attention_label(kind)!r} is a {type(obj).__name__}, not a block class")
    module = (getattr(obj, "__module__", None) or "builtins").partition(".")[0]
    if module in sys.stdlib_module_names:  # os:_exit, sys:exit: would end the process, not build a block
        raise RegistryError(f"attention {attention_label(kind)!r} comes from the standard library, not a block class")
    return obj  # type: ignore[no-any-return]


def default_reduction(kind: AttentionLike) -> int | None:
    """The reduction ratio a block is built with when none is given (its ``default_reduction``), or None."""
    value = getattr(resolve_attention(kind), "default_reduction", None)
    return int(value) if value is not None else None


def canonical_args(kind: AttentionLike, args: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``args`` sorted, without those equal to the block's own defaults (``se`` with ``act: relu`` is ``se``)."""
    defaults = _keyword_defaults(kind)
    return tuple(
        (name, args[name]) for name in sorted(args) if not (name in defaults and _same(defaults[name], args[name]))
    )


def _keyword_defaults(kind: AttentionLike) -> dict[str, Any]:
    """A block's keyword defaults: a built-in block's from the catalogue (no torch), any other's signature."""
    entry = BUILTIN_BLOCKS.get(kind) if isinstance(kind, str) else None
    if entry is not None:
        return dict(entry.defaults)
    try:
        params = inspect.signature(resolve_attention(kind)).parameters
    except (TypeError, ValueError):  # no introspectable signature: keep every argument
        return {}
    return {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def create_attention(kind: AttentionLike, channels: int, reduction: int | None = None, **attention_args: Any) -> Any:
    """Build the attention block ``kind`` for a ``channels``-wide feature map.

    ``kind`` is a registered name, an import path ``"pkg.mod:Block"``, a block class, or a
    :class:`ConfiguredAttention`. ``"none"`` gives ``nn.Identity``, so a network's layout (and its state dict
    keys) does not depend on which attention it carries. Raises :class:`ValueError` (one line naming the block)
    when the block cannot be resolved, cannot be built, or changes its input's shape.
    """
    if isinstance(kind, ConfiguredAttention):
        attention_args = {**dict(kind.args), **attention_args}
        kind = kind.kind
    block = resolve_attention(kind)
    args = canonical_args(block, attention_args)
    if reduction is None:
        reduction = default_reduction(block)
    check_attention(block, reduction, args, label=attention_label(kind))
    return _build(block, channels, reduction, args, attention_label(kind))


def _build(
    block: Callable[..., Any], channels: int, reduction: int | None, args: tuple[tuple[str, Any], ...], label: str
) -> Any:
    from torch import nn

    kwargs = dict(args)
    if reduction is not None:
        kwargs["reduction"] = reduction
    try:
        module = block(channels, **kwargs)
    except BaseException as e:  # a block is a plugin's code: sys.exit() in its constructor is one line too
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(
            f"attention {label!r}: building it for {channels} channels"
            + (f" with {given}" if given else "")
            + f" failed: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(module, nn.Module):
        raise ValueError(f"attention {label!r}: built a {type(module).__name__}, not a torch.nn.Module")
    return module


# Probe: channels and a non-square map, batch 2 (so BatchNorm in training mode would also work).
_PROBE_CHANNELS = 64
_PROBE_SHAPE = (2, _PROBE_CHANNELS, 6, 10)
# A second shape (batch, height and width all different, odd sizes): a block that keeps only the first shape's
# sizes (a fixed pooling size, a hard-coded H or W) is found here rather than in the middle of a training.
_PROBE_SHAPES = (_PROBE_SHAPE, (3, _PROBE_CHANNELS, 7, 5))


def check_attention(
    block: Callable[..., Any], reduction: int | None, args: tuple[tuple[str, Any], ...] = (), label: str | None = None
) -> None:
    """Build ``block`` once for a probe tensor and check it keeps the input's shape (cached per configuration)."""
    try:
        key = (block, reduction, args)
        hash(key)
    except TypeError:  # unhashable argument values: check every time
        _probe(block, reduction, args, label or attention_label(block))
        return
    _probe_cached(block, reduction, args, label or attention_label(block))


@functools.lru_cache(maxsize=512)
def _probe_cached(
    block: Callable[..., Any], reduction: int | None, args: tuple[tuple[str, Any], ...], label: str
) -> None:
    _probe(block, reduction, args, label)


def _probe(block: Callable[..., Any], reduction: int | None, args: tuple[tuple[str, Any], ...], label: str) -> None:
    import torch

    # Building draws random weights: keep the caller's random stream as it was, so a model's initial weights do
    # not depend on whether its blocks were probed.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        module = _build(block, _PROBE_CHANNELS, reduction, args, label).eval()
        for probe_shape in _PROBE_SHAPES:
            x = torch.randn(probe_shape, generator=torch.Generator().manual_seed(0))
            try:
                y = module(x)
            except BaseException as e:
                raise ValueError(
                    f"attention {label!r}: its forward on a {tuple(x.shape)} tensor failed: {type(e).__name__}: {e}"
                ) from None
            _check_output(label, x, y)


def _check_output(label: str, x: Any, y: Any) -> None:
    """A block returns a tensor of its input's shape and dtype."""
    shape = tuple(getattr(y, "shape", ()))
    if shape != tuple(x.shape):
        raise ValueError(
            f"attention {label!r} changes the tensor shape: {tuple(x.shape)} in, {shape or type(y).__name__} out "
            "(a block must return a tensor of its input's shape)"
        )
    if y.dtype != x.dtype:
        raise ValueError(f"attention {label!r} returns {y.dtype} for {x.dtype} input (a block keeps its input's dtype)")


def attention_provenance(kind: AttentionLike | None) -> dict[str, Any] | None:
    """Where a block that is not built into cabench comes from, or None for a built-in block.

    ``{"attention": <as named>, "import_path": "pkg.mod:Block", "file": <defining file>, "sha256": <its hash>}``:
    recorded with a run, and the hash is part of the key that decides whether a row is already done, so editing
    the block's file reruns the row.
    """
    if kind is None:
        return None
    if isinstance(kind, ConfiguredAttention):
        kind = kind.kind

    if isinstance(kind, str) and kind in BUILTIN_BLOCKS:  # built in, by its registered name: nothing to import
        return None
    obj = resolve_attention(kind)
    module = getattr(obj, "__module__", None) or ""
    if module == "cabench" or module.startswith("cabench."):
        return None
    path = _defining_file(obj, module)
    return {
        "attention": kind if isinstance(kind, str) else attention_label(kind),
        "import_path": f"{module}:{getattr(obj, '__qualname__', type(obj).__name__)}",
        "file": str(path) if path else None,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path else None,
    }


def _defining_file(obj: Any, module: str) -> Path | None:
    try:
        source = inspect.getsourcefile(obj)
    except TypeError:
        source = None
    if source is None:
        source = getattr(sys.modules.get(module), "__file__", None)
    return Path(source).resolve() if source and Path(source).is_file() else None


def args_text(args: tuple[tuple[str, Any], ...]) -> list[str]:
    """``[("act", "relu")] -> ["act=relu"]``: how attention arguments appear in a model key."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args]
