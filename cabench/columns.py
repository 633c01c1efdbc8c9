"""Report columns: the keys a suite may list under ``columns:``, registered by whatever produces them.

The count profile registers Param. and M-Adds, the latency profile Latency, and every task the metrics
its evaluation returns (:func:`cabench.tasks.base.register_task`). Suites, the report and the gate know
columns only through :data:`COLUMNS`; a column's ``kind`` says which profiles may fill it
(:attr:`cabench.profiles.base.Profile.fills`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cabench.registry import Registry, RegistryError

__all__ = ["COLUMNS", "ColumnInfo", "count_columns", "register_column"]

ColumnKind = Literal["count", "latency", "accuracy"]


@dataclass(frozen=True)
class ColumnInfo:
    key: str  # the key in suites, metrics.json and results.csv
    label: str  # what the paper prints
    unit: str  # the unit a run records it in ("%", "ms", or "count": an exact integer)
    kind: ColumnKind  # count: exact integers; latency: compared as a ratio; accuracy: a measured metric
    description: str = ""


COLUMNS = Registry[ColumnInfo]("column", builtin_modules=("cabench.profiles.*", "cabench.tasks.*"))


def register_column(info: ColumnInfo) -> ColumnInfo:
    """Register ``info``; registering the very same column again (two tasks sharing a metric) is fine."""
    known = COLUMNS.registered(info.key)
    if known is not None:
        if known != info:
            raise RegistryError(f"column {info.key!r} is registered twice, differently: {known} and {info}")
        return known
    COLUMNS.register(info.key, info)
    return info


def count_columns() -> tuple[str, ...]:
    """The columns filled with exact counts (Param., M-Adds)."""
    return tuple(key for key, info in COLUMNS.items() if info.kind == "count")
