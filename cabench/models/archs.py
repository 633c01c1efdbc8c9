"""The built-in architectures, declared: what each takes, what the paper counts it at, and where its builder lives.

Builders are named by import path and imported when a model is built, so listing, showing and checking suites (and
a count answered from the cache) read these declarations without importing torch. A plugin's arch registers the
same way, or with ``@cabench.register_arch`` on its builder.
"""

from __future__ import annotations

from cabench.models.registry import register_arch

_BACKBONE = ("width", "attention", "reduction", "num_classes")
_SSD_VIEW = "cabench.models.detection:ssd_counting_view"  # the detector without its post-processing

register_arch(
    "mobilenetv2",
    builder="cabench.models.mobilenetv2:mobilenetv2",
    task="classify",
    input_size=(224, 224),
    num_classes=1000,
    options=(*_BACKBONE, "small_input"),
)
register_arch(
    "mobilenext",
    builder="cabench.models.mobilenext:mobilenext",
    task="classify",
    input_size=(224, 224),
    num_classes=1000,
    options=_BACKBONE,
)
register_arch(
    "efficientnet_b0",
    builder="cabench.models.efficientnet:efficientnet_b0",
    task="classify",
    input_size=(224, 224),
    num_classes=1000,
    options=("attention", "reduction", "num_classes"),
    default_attention="se",
)
register_arch(
    "ssdlite320_mobilenetv2",
    builder="cabench.models.detection:ssdlite320_mobilenetv2",
    task="detect",
    input_size=(320, 320),
    num_classes=81,
    options=(*_BACKBONE, "small_input"),
    counting_view=_SSD_VIEW,
)
register_arch(
    "ssdlite320_mobilenext",
    builder="cabench.models.detection:ssdlite320_mobilenext",
    task="detect",
    input_size=(320, 320),
    num_classes=81,
    options=_BACKBONE,
    counting_view=_SSD_VIEW,
)
register_arch(
    "deeplabv3_mobilenetv2",
    builder="cabench.models.segmentation:deeplabv3_mobilenetv2",
    task="segment",
    input_size=(513, 513),
    num_classes=21,
    options=(*_BACKBONE, "output_stride", "small_input"),
    default_output_stride=16,
)
