"""EfficientNet-b0 (Tan & Le, ICML 2019) with its own SE, or with every SE replaced (Table 5).

The network is torchvision's ``efficientnet_b0`` (random init), so with
``attention="se"`` (its native block) the parameter count is torchvision's
exactly. Any other attention replaces each ``SqueezeExcitation`` in place
("we simply replace the SE attention with our proposed coordinate attention",
Section 4.3), on the same tensor: the depthwise conv's output, whose width is
the block's expanded channel count. The replacement's reduction ratio divides
that expanded width (CA default 32, floor 8); EfficientNet's own SE instead
squeezes to a quarter of the block's *input* width, which is kept for ``se``.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import efficientnet_b0 as tv_efficientnet_b0
from torchvision.ops.misc import SqueezeExcitation

from cabench.models.blocks import AttentionLike, create_attention

__all__ = ["efficientnet_b0", "replace_squeeze_excitation"]


def replace_squeeze_excitation(model: nn.Module, attention: AttentionLike, reduction: int | None = None) -> int:
    """Swap every torchvision ``SqueezeExcitation`` in ``model`` for ``attention``; return how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SqueezeExcitation):
                setattr(parent, name, create_attention(attention, child.fc1.in_channels, reduction))
                replaced += 1
    return replaced


def efficientnet_b0(
    attention: AttentionLike = "se", reduction: int | None = None, num_classes: int = 1000
) -> nn.Module:
    """EfficientNet-b0 with its native SE (``se``) or every SE replaced (Table 5)."""
    model = tv_efficientnet_b0(weights=None, num_classes=num_classes)
    if attention != "se" or reduction is not None:
        replace_squeeze_excitation(model, attention, reduction)
    return model
