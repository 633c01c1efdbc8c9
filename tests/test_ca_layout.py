"""The CA block's strip layout lives in one module, and its inference path is an injected function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from cabench.models.ca_layout import StripLayout, join_strips, split_strips

MODELS = Path(__file__).resolve().parent.parent / "cabench" / "models"


@pytest.mark.parametrize("hw", [(8, 8), (7, 30), (30, 7), (5, 3), (56, 56), (1, 1)])
def test_padded_layout_holds_the_plain_layout_with_zeros_between(hw: tuple[int, int]) -> None:
    h, w = hw
    z_h, z_w = torch.randn(6, h), torch.randn(6, w)
    layout = StripLayout.of(h, w)
    joined = layout.join(z_h, z_w)
    assert joined.shape == (6, layout.length) and layout.length % 16 == 0
    plain_h, plain_w = split_strips(join_strips(z_h, z_w, dim=1), h, dim=1)
    assert torch.equal(joined[:, :h], plain_h) and torch.equal(
        joined[:, layout.w_offset : layout.w_offset + w], plain_w
    )
    padding = torch.ones(layout.length, dtype=torch.bool)
    padding[:h] = False
    padding[layout.w_offset : layout.w_offset + w] = False
    assert int(padding.sum()) == layout.length - h - w and not joined[:, padding].any()  # the rest is zeros
    f_h, f_w = layout.halves(joined)
    a_h, a_w = layout.gate_columns(f_h, f_w)
    assert torch.equal(a_h, plain_h) and torch.equal(a_w, plain_w)
    # the cheaper of the two layouts in multiply-adds per mip * C: 3 * length (compact) or 4 * hp (split)
    compact_length = -(-(h + w) // 16) * 16
    assert layout.compact == (3 * compact_length < 4 * layout.hp)
    assert layout.length == (compact_length if layout.compact else 2 * layout.hp)


def test_no_ca_module_writes_its_own_strip_layout() -> None:
    """Only ca_layout.py concatenates or splits along the strips; the CA paths call it."""
    for name in ("attention.py", "ca_autograd.py"):
        tree = ast.parse((MODELS / name).read_text())
        calls = {
            ast.unparse(node.func)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        assert "torch.split" not in calls, name
        assert "_round_up" not in (MODELS / name).read_text(), name
    assert "round_up" in (MODELS / "ca_layout.py").read_text()
