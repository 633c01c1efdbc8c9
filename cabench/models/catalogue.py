"""The built-in attention blocks as plain data, for reading suites without importing torch.

``cabench list`` and ``cabench show`` check a row's block against these (its name, its arguments' allowed values)
instead of loading the model modules and building the block; the arch's own facts come from its declaration
(:mod:`cabench.models.archs`). A block they do not cover (a plugin's, an import path, arguments not listed) goes
through the registries as everywhere else. The full check
(:func:`cabench.models.registry.validate_spec` with ``probe=True``) still runs before anything is counted or
trained. ``tests/test_startup.py`` holds these equal to what the registries hold.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ACTIVATIONS", "BUILTIN_BLOCKS", "BlockEntry", "listed"]


ACTIVATIONS = ("relu", "hswish", "silu")  # the act option of se, cbam and ca (cabench.models.attention)


class BlockEntry(NamedTuple):
    reduction: bool  # whether the block takes a reduction ratio
    args: dict[str, tuple[object, ...]]  # arguments a listing may check without building: their allowed values
    default_reduction: int | None = None  # the block's default_reduction (a model's key names it)
    defaults: tuple[tuple[str, object], ...] = ()  # its keyword defaults but reduction (a key leaves them out)


#: Built-in blocks. An argument not listed (an int such as kernel_size, checked when the block is built) or a
#: reduction given to a block that takes none means a full check.
BUILTIN_BLOCKS: dict[str, BlockEntry] = {
    "ca": BlockEntry(True, {"act": ACTIVATIONS, "softmax": (True, False)}, 32, (("act", "hswish"), ("softmax", False))),
    "cbam": BlockEntry(True, {"act": ACTIVATIONS}, 24, (("kernel_size", 7), ("act", "relu"))),
    "eca": BlockEntry(False, {}, None, (("gamma", 2), ("b", 1))),
    "none": BlockEntry(True, {}),
    "se": BlockEntry(True, {"act": ACTIVATIONS}, 24, (("act", "relu"),)),
    "triplet": BlockEntry(False, {}, None, (("kernel_size", 7),)),
    "x": BlockEntry(True, {}, 24),
    "y": BlockEntry(True, {}, 24),
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
