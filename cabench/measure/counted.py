"""What counting a model gives, as plain data: importable without torch, so that a cached count needs none."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Complexity"]


@dataclass(frozen=True)
class Complexity:
    params: int
    madds: int | None = None  # paper convention (conv + linear)
    fvcore_total: int | None = None  # fvcore's own total (adds BN, pooling, ...)
    input_size: tuple[int, int] | None = None
    by_operator: dict[str, int] = field(default_factory=dict)
    skipped_ops: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "params": self.params,
            "madds": self.madds,
            "fvcore_total": self.fvcore_total,
            "input_size": list(self.input_size) if self.input_size else None,
            "by_operator": self.by_operator,
            "skipped_ops": self.skipped_ops,
        }
