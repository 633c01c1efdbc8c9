"""Suites: one YAML file per paper table, loaded and validated into :class:`Suite`.

A suite is pure data: the table's rows in the paper's order, each with the
model it needs and its published values in the table's units and printed
precision, a tolerance per column, and notes. Loading never builds a model;
it checks that every architecture, attention kind and column is known, and
raises :class:`SuiteError` with one line naming the file, the row and the field
otherwise.

Published numbers keep their printed precision: the loader reads YAML floats
as ``Decimal`` so ``2.0`` stays ``2.0``. A column whose tolerance is
``printed`` (the default) accepts a reproduced value within half a unit of the
published value's last printed digit (``3.89`` -> +-0.005, ``3.5`` -> +-0.05).
"""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cabench.columns import COLUMNS
from cabench.models.registry import ModelSpec, validate_spec
from cabench.yamlio import first_validation_error, read_yaml_mapping

__all__ = [
    "COLUMNS",
    "SUITES_DIR",
    "Column",
    "Row",
    "Suite",
    "SuiteError",
    "find_suite",
    "known_suites",
    "load_suite",
    "suite_group",
]

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


# Every column key a suite may use is a registered report column (cabench.columns.COLUMNS): the count and
# latency profiles and every task register theirs.
UNIT_SCALE = {"M": 1e6, "B": 1e9, "%": 1.0, "ms": 1.0}
SETTING_FIELDS = ("width", "attention", "reduction", "output_stride", "num_classes")


class SuiteError(ValueError):
    """A suite that cannot be used; the message is one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    unit: Literal["M", "B", "%", "ms"]
    tolerance: Decimal | Literal["printed"] = "printed"
    label: str | None = None


class ModelField(_Strict):
    arch: str
    width: float = 1.0
    attention: str | None = None
    reduction: int | None = None
    num_classes: int | None = None
    output_stride: int | None = None

    def spec(self) -> ModelSpec:
        return ModelSpec(**self.model_dump())


Published = Decimal | tuple[Decimal, Decimal]


class Row(_Strict):
    name: str
    id: str | None = None
    model: ModelField | None = None
    cited: bool = False
    floor: str | None = None  # a registered floor (cabench.floors) computed instead of a model
    source: str | None = None
    published: dict[str, Published] = Field(default_factory=dict)
    notes: dict[str, str] = Field(default_factory=dict)

    @field_validator("published", mode="before")
    @classmethod
    def _ranges(cls, value: Any) -> Any:
        # "14-16" (a range, as Table 1 prints latency) -> (14, 16)
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(v, str) and re.fullmatch(r"\s*[\d.]+\s*-\s*[\d.]+\s*", v):
                    lo, hi = (Decimal(p.strip()) for p in v.split("-"))
                    out[k] = (lo, hi)
                else:
                    out[k] = v
            return out
        return value

    @model_validator(mode="after")
    def _needs_model(self) -> Row:
        if not self.cited and self.model is None and self.floor is None:
            raise ValueError("a row that is not cited needs a 'model' (or a 'floor')")
        if self.floor is not None and self.model is not None:
            raise ValueError("a row has either a 'model' or a 'floor', not both")
        return self

    @property
    def key(self) -> str:
        return self.id or slugify(self.name)


class Suite(_Strict):
    id: str
    title: str
    source: str
    task: str  # a registered task (cabench.tasks.base.TASKS)
    recipe: str | None = None
    baseline: str | None = None
    settings: dict[str, str] = Field(default_factory=dict)  # printed label -> model field
    columns: dict[str, Column]
    rows: list[Row]
    notes: list[str] = Field(default_factory=list)

    # Set by the loader, not the YAML.
    path: Path | None = None

    def row(self, key: str) -> Row:
        for r in self.rows:
            if r.key == key or r.name == key:
                return r
        raise KeyError(key)

    def tolerance(self, column: str, published: Published) -> Decimal:
        col = self.columns[column]
        if col.tolerance != "printed":
            return col.tolerance  # type: ignore[return-value]
        if isinstance(published, tuple):
            return Decimal(0)
        exponent = published.as_tuple().exponent
        return Decimal(5) * Decimal(10) ** (int(exponent) - 1)

    def column_label(self, column: str) -> str:
        col = self.columns[column]
        return col.label or f"{COLUMNS.get(column).label} ({col.unit})"


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class _DecimalLoader(yaml.SafeLoader):
    """Safe YAML loader that keeps printed precision (floats become Decimal)."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    return Decimal(loader.construct_scalar(node).replace("_", ""))


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal)


def _location(suite_path: Path, data: Any, loc: tuple[Any, ...]) -> str:
    """'row 3 (+ SE): published.top2' from a pydantic error location."""
    parts = list(loc)
    where = ""
    if len(parts) >= 2 and parts[0] == "rows" and isinstance(parts[1], int):
        idx = parts[1]
        name = ""
        with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
            name = data["rows"][idx].get("name", "")
        where = f"row {idx + 1}" + (f" ({name})" if name else "") + ": "
        parts = parts[2:]
    field = ".".join(str(p) for p in parts if not str(p).startswith(("function-", "tagged-union")))
    return where + (field or "(suite)")


def load_suite(path: str | Path) -> Suite:
    """Load and validate a suite file; raise :class:`SuiteError` (one line) if it is unusable."""
    path = Path(path)
    where = str(path)
    data = read_yaml_mapping(path, "suite", SuiteError, _DecimalLoader)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        loc, msg = first_validation_error(e)
        raise SuiteError(f"{where}: {_location(path, data, loc)}: {msg}") from None
    _check_semantics(suite, where)
    return suite.model_copy(update={"path": path})


def _check_semantics(suite: Suite, where: str) -> None:
    from cabench.tasks.base import TASKS

    if suite.task not in TASKS:
        raise SuiteError(f"{where}: task: {TASKS.unknown(suite.task)}")
    for key in suite.columns:
        if key not in COLUMNS:
            raise SuiteError(f"{where}: columns.{key}: {COLUMNS.unknown(key)}")
    for label, fld in suite.settings.items():
        if fld not in SETTING_FIELDS:
            raise SuiteError(f"{where}: settings.{label}: unknown model field {fld!r}")
    seen: set[str] = set()
    for i, row in enumerate(suite.rows):
        at = f"{where}: row {i + 1} ({row.name})"
        if row.key in seen:
            raise SuiteError(f"{at}: id: duplicate row id {row.key!r}; give the row a unique 'id'")
        seen.add(row.key)
        for section in (row.published, row.notes):
            name = "published" if section is row.published else "notes"
            for key in section:
                if key not in suite.columns:
                    raise SuiteError(f"{at}: {name}.{key}: unknown column (this suite has {', '.join(suite.columns)})")
        if row.floor is not None:
            from cabench.floors import FLOORS

            if row.floor not in FLOORS:
                raise SuiteError(f"{at}: floor: {FLOORS.unknown(row.floor)}")
        if row.model is not None:
            try:
                validate_spec(row.model.spec())
            except ValueError as e:
                field = "model.arch" if "architecture" in str(e) else "model"
                if "attention" in str(e):
                    field = "model.attention"
                raise SuiteError(f"{at}: {field}: {e}") from None
    if suite.baseline is not None and suite.baseline not in seen:
        raise SuiteError(f"{where}: baseline: no row with id {suite.baseline!r}")


def known_suites(directory: Path = SUITES_DIR) -> dict[str, Path]:
    """Suite id -> file, for the suites shipped in ``suites/`` (ids are the file stems)."""
    return {p.stem: p for p in sorted(directory.glob("*.yaml"), key=_natural)}


def _natural(p: Path) -> tuple[Any, ...]:
    """The paper's tables first (table1 < table2 < table10), then cabench's own suites (the probe), by name."""
    return (not re.fullmatch(r"table\d+", p.stem), *(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)))


GROUPS_DIR = SUITES_DIR / "groups"


def suite_group(name: str, directory: Path = GROUPS_DIR) -> list[str] | None:
    """The suite ids of group ``name`` (``suites/groups/<name>.yaml``: ``suites: [id, ...]``), or None."""
    path = directory / f"{name}.yaml"
    if not path.is_file() or name in known_suites():
        return None
    data = read_yaml_mapping(path, "suite group", SuiteError)
    members = data.get("suites")
    if set(data) != {"suites"} or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise SuiteError(f"{path}: expected one key, suites: [suite id, ...]")
    return members


def find_suite(name_or_path: str) -> Path:
    """Resolve a suite id (``table2``) or a path to a suite file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise SuiteError(f"{name_or_path}: no such suite file")
        return candidate
    suites = known_suites()
    if name_or_path not in suites:
        raise SuiteError(f"unknown suite {name_or_path!r}; known suites: {', '.join(suites)}")
    return suites[name_or_path]
