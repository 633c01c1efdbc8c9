"""The built-in attention blocks, declared: each block's implementation by its import path, and its facts as data.

The attention registry (:data:`cabench.models.blocks.ATTENTIONS`) registers every block here by its path, so a
block's module (and torch) is imported only when the block is built. ``cabench list``, ``show``, ``report`` and a
cached count check a row's block against these facts (its name, its arguments' allowed values, its defaults)
instead of building it; the arch's own facts come from its declaration (:mod:`cabench.models.archs`). A block they
do not cover (a plugin's, an import path, arguments not listed) goes through the registries as everywhere else.
The full check (:func:`cabench.models.registry.validate_spec` with ``probe=True``) still runs before anything is
counted or trained. ``tests/test_startup.py`` holds each declaration equal to its class's signature.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ACTIVATIONS", "BUILTIN_BLOCKS", "BlockEntry", "listed"]


ACTIVATIONS = ("relu", "hswish", "silu")  # the act option of se, cbam and ca (cabench.models.attention)


class BlockEntry(NamedTuple):
    path: str  # the implementation: "package.module:Class" (or a factory function)
    reduction: bool  # whether the block takes a reduction ratio
    args: dict[str, tuple[object, ...]]  # arguments a listing may check without building: their allowed values
    default_reduction: int | None = None  # the block's default_reduction (a model's key names it)
    defaults: tuple[tuple[str, object], ...] = ()  # its keyword defaults but reduction (a key leaves them out)


_ATTENTION = "cabench.models.attention:"

#: Built-in blocks. An argument not listed (an int such as kernel_size, checked when the block is built) or a
#: reduction given to a block that takes none means a full check.
BUILTIN_BLOCKS: dict[str, BlockEntry] = {
    "ca": BlockEntry(
        _ATTENTION + "CoordinateAttention",
        True,
        {"act": ACTIVATIONS, "softmax": (True, False)},
        32,
        (("act", "hswish"), ("softmax", False)),
    ),
    "cbam": BlockEntry(_ATTENTION + "CBAM", True, {"act": ACTIVATIONS}, 24, (("kernel_size", 7), ("act", "relu"))),
    "eca": BlockEntry("cabench.models.eca:EfficientChannelAttention", False, {}, None, (("gamma", 2), ("b", 1))),
    "none": BlockEntry(_ATTENTION + "no_attention", True, {}),
    "se": BlockEntry(_ATTENTION + "SqueezeExcite", True, {"act": ACTIVATIONS}, 24, (("act", "relu"),)),
    "triplet": BlockEntry("cabench.models.triplet:TripletAttention", False, {}, None, (("kernel_size", 7),)),
    "x": BlockEntry(_ATTENTION + "XAttention", True, {}, 24),
    "y": BlockEntry(_ATTENTION + "YAttention", True, {}, 24),
}


def listed(block: str, reduction: int | None, args: dict[str, object]) -> bool:
    """Whether ``block`` is built in, takes ``reduction`` if one is given, and every argument of ``args`` is one
    this catalogue lists for it with an allowed value."""
    entry = BUILTIN_BLOCKS.get(block)
    if entry is None or (reduction is not None and not entry.reduction):
        return False
    return all(
        name in entry.args and any(type(v) is type(value) and v == value for v in entry.args[name])
        for name, value in args.items()
    )
