"""Models of the paper: attention blocks, backbones, detector and segmenter, behind one registry."""

from cabench.models.attention import ATTENTION_KINDS, create_attention
from cabench.models.registry import ModelSpec, architectures, build_model

__all__ = ["ATTENTION_KINDS", "ModelSpec", "architectures", "build_model", "create_attention"]
