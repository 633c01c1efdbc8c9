"""Data layer: dataset validation, MobileNetV2-style transforms, data-root resolution and generated fixtures.

Submodules import torch/torchvision lazily; importing this package is cheap.
"""

from cabench.data.errors import DatasetError

__all__ = ["DatasetError"]
