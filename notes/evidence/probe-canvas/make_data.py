"""Experiment (issue 20 item 5), not part of the package: the probe's digit data with smaller dense canvases.

Writes /work/data/digits48 and /work/data/digits40 with the flat preset's parameters except the dense scenes
(canvas, digits per scene, digit heights). Classification scenes are drawn from their own seeded streams, so
classify/ is byte-identical to the 64-px folder's (checked with diff -r).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cabench.data.fixtures.digits import DigitsParams, _write_all

CANVASES = {48: ((18, 26), (20, 28)), 40: ((16, 22), (18, 24))}  # canvas -> (detect heights, segment heights)

for size, (detect_heights, segment_heights) in CANVASES.items():
    params = DigitsParams(
        preset=f"flat-{size}",
        scene_size=size,
        detect_digits=(1, 2),
        detect_heights=detect_heights,
        segment_digits=(1, 2),
        segment_heights=segment_heights,
    )
    out = Path(f"/work/data/digits{size}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _write_all(out, 0, params)
