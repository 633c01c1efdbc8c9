"""cabench: reproduce every table of 'Coordinate Attention for Efficient Mobile Network Design'.

Extension points (importing ``cabench`` stays cheap: the registries are torch-free; a model's code loads when it is
built)::

    import cabench

    @cabench.register_attention("myblock")
    class MyBlock(torch.nn.Module): ...          # called as MyBlock(channels, reduction=R)

    @cabench.register_arch("mynet", task="classify", input_size=(224, 224), num_classes=1000, options=(...))
    def mynet(**options): ...
"""

from __future__ import annotations

from cabench.models.blocks import ATTENTIONS, attention_provenance, create_attention, register_attention
from cabench.models.registry import ARCHS, ModelSpec, build_model, register_arch

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "ATTENTIONS",
    "ModelSpec",
    "__version__",
    "attention_provenance",
    "build_model",
    "create_attention",
    "register_arch",
    "register_attention",
]
