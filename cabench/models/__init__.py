"""Models of the paper: attention blocks, backbones, detector and segmenter, behind two registries.

Importing this package is cheap: the architectures and blocks register themselves when the registries
(:data:`cabench.models.registry.ARCHS`, :data:`cabench.models.blocks.ATTENTIONS`) are first asked.
"""

from cabench.models.blocks import ATTENTIONS, attention_provenance, create_attention, register_attention
from cabench.models.registry import ARCHS, ModelSpec, architectures, build_model, register_arch

__all__ = [
    "ARCHS",
    "ATTENTIONS",
    "ModelSpec",
    "architectures",
    "attention_provenance",
    "build_model",
    "create_attention",
    "register_arch",
    "register_attention",
]
