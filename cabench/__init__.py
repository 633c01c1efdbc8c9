"""cabench: reproduce every table of 'Coordinate Attention for Efficient Mobile Network Design'.

Extension points (importing ``cabench`` stays cheap: these load on first use)::

    import cabench

    @cabench.register_attention("myblock")
    class MyBlock(torch.nn.Module): ...          # called as MyBlock(channels, reduction=R)

    @cabench.register_arch("mynet", task="classify", input_size=(224, 224), num_classes=1000, options=(...))
    def mynet(**options): ...
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it (imported on first access: torch is not loaded by `import cabench`).
_LAZY = {
    "register_attention": "cabench.models.blocks",
    "create_attention": "cabench.models.blocks",
    "attention_provenance": "cabench.models.blocks",
    "ATTENTIONS": "cabench.models.blocks",
    "register_arch": "cabench.models.registry",
    "ARCHS": "cabench.models.registry",
    "ModelSpec": "cabench.models.registry",
    "build_model": "cabench.models.registry",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cabench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
