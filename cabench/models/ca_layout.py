"""How a Coordinate Attention block lays its two pooled strips side by side: the one rule every CA path follows.

Eq. 6 joins ``z^h`` (one value per row, ``H`` of them) and ``z^w`` (one per column, ``W``) along the spatial axis,
rows first, runs the shared ``conv1`` + BatchNorm + activation over the joined strip, and Eq. 7-8 split it back:
the first ``H`` positions feed ``conv_h``, the rest ``conv_w``.

* **Plain layout** ``[h | w]``, ``H + W`` positions (the module path and the training path,
  :mod:`cabench.models.ca_autograd`): :func:`join_strips` and :func:`split_strips`.
* **Padded layout** (the batch-1 inference path in :mod:`cabench.models.attention`): zero-padded to a multiple
  of 16 columns, which keeps CPU BLAS on its fast kernels, either compact ``[h | w | pad]`` (``conv1`` and both
  gate convs over all ``length`` columns: ``3 * mip * C * length`` multiply-adds) or split ``[h | pad | w | pad]``,
  two halves of ``hp`` columns (``conv1`` over ``2 hp`` columns, each gate conv over its ``hp``:
  ``4 * mip * C * hp``), whichever is cheaper (:class:`StripLayout`). Padded columns are computed and dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["StripLayout", "join_strips", "round_up", "split_strips"]


def round_up(value: int, multiple: int = 16) -> int:
    return (value + multiple - 1) // multiple * multiple


def join_strips(z_h: torch.Tensor, z_w: torch.Tensor, dim: int) -> torch.Tensor:
    """The plain layout: the row strip then the column strip, joined along ``dim`` (``H + W`` positions)."""
    return torch.cat([z_h, z_w], dim=dim)


def split_strips(f: torch.Tensor, h: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo :func:`join_strips`: the first ``h`` positions along ``dim`` (rows) and the rest (columns), as views."""
    return f.narrow(dim, 0, h), f.narrow(dim, h, f.shape[dim] - h)


@dataclass(frozen=True)
class StripLayout:
    """The padded layout of an ``H x W`` map's strips: ``length`` columns, ``z^w`` starting at ``w_offset``."""

    h: int
    w: int
    hp: int  # a half of the split layout: max(H, W) rounded up to 16
    length: int  # columns of the joined strip
    compact: bool  # [h | w | pad] when True, else [h | pad | w | pad]

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def of(h: int, w: int) -> StripLayout:
        hp, length = round_up(max(h, w)), round_up(h + w)
        compact = 3 * length < 4 * hp
        return StripLayout(h, w, hp, length if compact else 2 * hp, compact)

    @property
    def w_offset(self) -> int:
        """The first column of ``z^w``."""
        return self.h if self.compact else self.hp

    def join(self, z_h: torch.Tensor, z_w: torch.Tensor) -> torch.Tensor:
        """``(C, H)`` and ``(C, W)`` strips into one zero-padded ``(C, length)`` matrix."""
        if self.compact:
            return F.pad(torch.cat([z_h, z_w], dim=1), (0, self.length - self.h - self.w))
        return torch.cat([F.pad(z_h, (0, self.hp - self.h)), F.pad(z_w, (0, self.hp - self.w))], dim=1)

    def gate_columns(self, a_h: torch.Tensor, a_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``H`` columns of ``conv_h``'s output and the ``W`` of ``conv_w``'s that are real (not padding), given
        each computed over the columns its layout feeds it (compact: all ``length``; split: its half)."""
        start = self.w_offset if self.compact else 0
        return a_h[:, : self.h], a_w[:, start : start + self.w]

    def halves(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What each gate conv runs over: the whole joined strip (compact) or its own half (split)."""
        if self.compact:
            return f, f
        return f[:, : self.hp], f[:, self.hp :]
