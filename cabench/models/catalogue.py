"""The built-in architectures and attention blocks as plain data, for reading suites without importing torch.

``cabench list`` and ``cabench show`` check a row's model against these (its arch's options and widths, its
block's name) instead of loading the model modules and building the block; a model they do not cover (a plugin's
arch or block, an import path, block arguments) goes through the registries as everywhere else. The full check
(:func:`cabench.models.registry.validate_spec` with ``probe=True``) still runs before anything is counted or
trained. ``tests/test_startup.py`` holds these equal to what the registries hold.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ACTIVATIONS", "BUILTIN_ARCHS", "BUILTIN_BLOCKS", "ArchEntry", "BlockEntry", "listed"]


class ArchEntry(NamedTuple):
    options: frozenset[str]
    widths: tuple[float, ...] | None
    default_attention: str
    num_classes: int  # with default_output_stride: what a model's key needs (ModelSpec.key, no torch)
    input_size: tuple[int, int]  # what its multiply-adds are counted at (a count run records it)
    default_output_stride: int | None = None


_BACKBONE = frozenset({"attention", "num_classes", "reduction", "width"})

BUILTIN_ARCHS: dict[str, ArchEntry] = {
    "deeplabv3_mobilenetv2": ArchEntry(_BACKBONE | {"output_stride", "small_input"}, None, "none", 21, (513, 513), 16),
    "efficientnet_b0": ArchEntry(frozenset({"attention", "num_classes", "reduction"}), None, "se", 1000, (224, 224)),
    "mobilenetv2": ArchEntry(_BACKBONE | {"small_input"}, None, "none", 1000, (224, 224)),
    "mobilenext": ArchEntry(_BACKBONE, None, "none", 1000, (224, 224)),
    "ssdlite320_mobilenetv2": ArchEntry(_BACKBONE | {"small_input"}, None, "none", 81, (320, 320)),
    "ssdlite320_mobilenext": ArchEntry(_BACKBONE, None, "none", 81, (320, 320)),
}

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
