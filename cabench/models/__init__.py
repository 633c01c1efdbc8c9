"""Models of the paper: attention blocks, backbones, detector and segmenter, behind two registries.

Importing this package is cheap: the built-in architectures (``suites/archs/builtin.yaml``) and blocks
(:mod:`cabench.models.catalogue`) are declared with their code's import path, registered in
:data:`cabench.models.registry.ARCHS` and :data:`cabench.models.blocks.ATTENTIONS`, and a model's module is
imported when it is first built.
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
