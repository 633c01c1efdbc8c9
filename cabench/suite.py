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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from cabench.columns import COLUMNS
from cabench.floors import FLOORS
from cabench.locate import PACKAGED_SUITES, describe, suite_files
from cabench.models.registry import MAX_CLASSES, MAX_REDUCTION, MAX_WIDTH, ModelSpec, validate_spec
from cabench.registry import did_you_mean
from cabench.tasks.base import TASKS
from cabench.yamlio import StrictLoader, first_validation_error, read_yaml_mapping, shown

__all__ = [
    "CLAIMS_DIR",
    "COLUMNS",
    "SUITES_DIR",
    "Claim",
    "ClaimFile",
    "Column",
    "Row",
    "Suite",
    "SuiteError",
    "Term",
    "all_suite_files",
    "check_id",
    "check_row_selection",
    "find_suite",
    "known_claim_files",
    "known_suites",
    "load_claim_file",
    "load_suite",
    "suite_group",
]

SUITES_DIR = PACKAGED_SUITES  # the packaged suites; lookup goes through cabench.locate
CLAIMS_DIR = SUITES_DIR / "claims"  # claims across suites, one file each


# Every column key a suite may use is a registered report column (cabench.columns.COLUMNS): the count and
# latency profiles and every task register theirs.
UNIT_SCALE = {"M": 1e6, "B": 1e9, "%": 1.0, "ms": 1.0}
SETTING_FIELDS = ("width", "attention", "reduction", "output_stride", "num_classes", "small_input")


class SuiteError(ValueError):
    """A suite that cannot be used; the message is one line for the user."""


# Ids name files and folders (runs/<suite>/<row>/...), so they are names, never paths.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
MAX_PUBLISHED = Decimal(10) ** 15  # no column of any table comes near this
MAX_CLAIM_NUMBER = Decimal(10) ** 6  # a claim's margin, published difference or constant
MIN_CLAIM_NUMBER = Decimal("1e-9")


def check_id(value: str, what: str = "id") -> str:
    """``value`` if it is a safe name (letters, digits, ``_.+-``, at most 64, no ``..``); ValueError otherwise."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} {shown(value)} is not a name: use 1-64 letters, digits and _ . + - "
            "(starting with a letter or digit, no '..')"
        )
    return value


def _one_line(value: str, limit: int) -> str:
    if len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters (newline, tab, ...) are not allowed")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Column(_Strict):
    unit: Literal["M", "B", "%", "ms"]
    tolerance: Annotated[Decimal, Field(ge=0, le=MAX_PUBLISHED)] | Literal["printed"] = "printed"
    label: str | None = None

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return value if value is None else _one_line(value, 80)


class ModelField(_Strict):
    arch: str = Field(max_length=64)
    width: float = Field(default=1.0, gt=0, le=MAX_WIDTH)
    # A registered block name or an import path "package.module:Block".
    attention: str | None = Field(default=None, max_length=200)
    reduction: int | None = Field(default=None, ge=1, le=MAX_REDUCTION)
    num_classes: int | None = Field(default=None, ge=1, le=MAX_CLASSES)
    output_stride: int | None = Field(default=None, ge=1, le=64)
    # The stride pattern for 32x32 inputs (stem and first downsampling stage at stride 1); MobileNetV2 archs.
    small_input: StrictBool = False
    # Keyword arguments of the attention block, e.g. {act: relu} (see cabench.models.blocks).
    attention_args: dict[str, StrictBool | StrictInt | float | str] = Field(default_factory=dict, max_length=32)

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

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a row needs a non-empty name")
        return _one_line(value, 200)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return value if value is None else check_id(value, "row id")

    @field_validator("published", mode="before")
    @classmethod
    def _ranges(cls, value: Any) -> Any:
        # "14-16" (a range, as Table 1 prints latency) -> (14, 16)
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(v, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*-\s*\d+(\.\d+)?\s*", v):
                    lo, hi = (Decimal(p.strip()) for p in v.split("-"))
                    out[k] = (lo, hi)
                else:
                    out[k] = v
            return out
        return value

    @field_validator("published")
    @classmethod
    def _published_values(cls, value: dict[str, Published]) -> dict[str, Published]:
        for column, v in value.items():
            for x in v if isinstance(v, tuple) else (v,):
                if not x.is_finite() or x < 0 or x > MAX_PUBLISHED:
                    raise ValueError(f"{column}: {x} is not a finite number in [0, 1e15]")
            if isinstance(v, tuple) and v[0] > v[1]:
                raise ValueError(f"{column}: range {v[0]}-{v[1]} is reversed")
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


class Term(_Strict):
    """One side of a claim: a row's metric, or a gain (``row`` minus ``minus``) in it.

    ``suite`` and ``metric`` are given only in a cross-suite claim file; inside a
    suite they are the suite itself and the claim's ``metric``.
    """

    row: str
    minus: str | None = None
    suite: str | None = None
    metric: str | None = None

    def rows(self) -> tuple[str, ...]:
        return (self.row,) if self.minus is None else (self.row, self.minus)


class Claim(_Strict):
    """A sentence or table of the paper, as a test: ``a`` relation ``b`` (a row, a gain, or a constant).

    ``greater``: a > b. ``equal``: |a - b| < margin. ``published`` is the paper's
    difference a - b (read from the rows' published values when omitted; checked
    against them when given); None where the paper prints no number.
    """

    id: str
    source: str
    relation: Literal["greater", "equal"]
    a: Term
    b: Term | Decimal
    metric: str | None = None
    margin: Decimal | None = Field(default=None, gt=0)
    published: Decimal | None = None
    note: str | None = None

    @field_validator("id")
    @classmethod
    def _id_is_a_name(cls, value: str) -> str:
        return check_id(value, "claim id")

    @field_validator("margin", "published", "b")
    @classmethod
    def _sane_number(cls, value: Any) -> Any:
        # 1e400, 1e-400 and 1e30 were accepted: a difference of any metric lies within ±1e6, and a margin is
        # either 0 < margin or absent (margins below 1e-9 cannot be told from rounding noise).
        if isinstance(value, Decimal):
            if not value.is_finite() or abs(value) > MAX_CLAIM_NUMBER:
                raise ValueError(f"{value} is not a finite number within ±{MAX_CLAIM_NUMBER:,}")
            if value != 0 and abs(value) < MIN_CLAIM_NUMBER:
                raise ValueError(f"{value} is too small to tell from rounding (at least {MIN_CLAIM_NUMBER})")
        return value

    @model_validator(mode="after")
    def _two_different_sides(self) -> Claim:
        if isinstance(self.b, Term) and self.a == self.b:
            raise ValueError("a and b are the same term: a claim compares two different rows (or gains)")
        for term in self.terms():
            if term.minus is not None and term.minus == term.row:
                raise ValueError(f"a gain of {term.row} over itself is always 0")
        return self

    @field_validator("a", "b", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # "se" -> {row: se}; a number (b only) is a constant
        if isinstance(value, str):
            return {"row": value}
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Decimal(str(value))
        return value

    def terms(self) -> tuple[Term, ...]:
        return (self.a,) if isinstance(self.b, Decimal) else (self.a, self.b)

    def qualified(self, suite_id: str | None = None) -> tuple[Term, Term | Decimal]:
        """``(a, b)`` with every term's suite and metric filled in (``suite_id`` for a suite's own claims)."""

        def fill(t: Term) -> Term:
            return t.model_copy(update={"suite": t.suite or suite_id, "metric": t.metric or self.metric})

        return fill(self.a), (self.b if isinstance(self.b, Decimal) else fill(self.b))


class ClaimFile(_Strict):
    """Claims spanning several suites (``suites/claims/*.yaml``); every term names its suite and metric."""

    id: str
    title: str
    claims: list[Claim]
    path: Path | None = None


class Cost(_Strict):
    """What a row-seed of a suite costs on a GPU, for ``cabench show``: the training images one run reads (its
    dataset's per-epoch count times the recipe's epochs) at ``img_per_s``, an assumed training speed whose
    ``basis`` says where it comes from (replace it with what ``cabench bench`` measures on your card)."""

    img_per_s: Annotated[int, Field(ge=1, le=10**7)]
    basis: str = Field(max_length=400)


class Suite(_Strict):
    id: str
    title: str
    source: str
    task: str  # a registered task (cabench.tasks.base.TASKS)
    recipe: str | None = None
    baseline: str | None = None
    # A classification suite whose trained runs start this suite's rows: the `paper` profile initialises each
    # row-seed's backbone from that suite's checkpoint of the same row key and seed (as the paper starts SSDLite and
    # DeepLabV3 from ImageNet backbones), and records its sha256.
    backbone_from: str | None = None
    settings: dict[str, str] = Field(default_factory=dict)  # printed label -> model field
    columns: dict[str, Column]
    rows: list[Row]
    notes: list[str] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)
    cost: Cost | None = None

    # Set by the loader, not the YAML.
    path: Path | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value, "suite id")

    @field_validator("recipe", "baseline", "backbone_from")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return value if value is None else check_id(value, "reference")

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _one_line(value, 300)

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


class _DecimalLoader(StrictLoader):
    """Safe YAML loader that keeps printed precision (floats become Decimal)."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        value = Decimal(text)
    except ArithmeticError:
        value = None
    if value is None or not value.is_finite():
        raise yaml.constructor.ConstructorError(None, None, f"{shown(text)} is not a finite number", node.start_mark)
    return value


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal)


def _location(suite_path: Path, data: Any, loc: tuple[Any, ...]) -> str:
    """'row 3 (+ SE): published.top2' from a pydantic error location."""
    parts = list(loc)
    where = ""
    for section, what, label in (("rows", "row", "name"), ("claims", "claim", "id")):
        if len(parts) >= 2 and parts[0] == section and isinstance(parts[1], int):
            idx = parts[1]
            name = ""
            with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
                name = data[section][idx].get(label, "")
            where = f"{what} {idx + 1}" + (f" ({_cut(name)})" if isinstance(name, str) and name else "") + ": "
            parts = parts[2:]
            break
    field = ".".join(_cut(str(p)) for p in parts if not _union_member(str(p)))
    return where + (field or ("(claim)" if where.startswith("claim") else "(suite)"))


def _union_member(part: str) -> bool:
    """Pydantic location parts naming a union member or validator, not a field."""
    return part.startswith(("function-", "tagged-union", "decimal", "literal[", "tuple[")) or part in (
        "Term",
        "Decimal",
    )


def _cut(text: str, limit: int = 60) -> str:
    """A user-written name for a message: one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_suite(path: str | Path, *, probe: bool = True) -> Suite:
    """Load and validate a suite file; raise :class:`SuiteError` (one line) if it is unusable.

    ``probe=False`` (``list``, ``show``): rows with a built-in model are checked without importing torch
    (:func:`cabench.models.registry.validate_spec`); everything else is checked as always.
    """
    path = Path(path)
    where = str(path)
    data = read_yaml_mapping(path, "suite", SuiteError, _DecimalLoader)
    if "budget_of" in data:
        data = _budget_suite(data, where)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        loc, msg = first_validation_error(e)
        raise SuiteError(f"{where}: {_location(path, data, loc)}: {msg}") from None
    _check_semantics(suite, where, probe)
    return suite.model_copy(update={"path": path})


#: What a budget suite takes from its paper suite, and what it must say itself.
_INHERITED = ("task", "baseline", "settings", "columns", "rows", "claims")
_OWN = ("id", "title", "source", "recipe", "budget_of", "cost")


def _budget_suite(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A budget suite (``budget_of: {suite: table1, rows: [...]}``): the paper suite's task, baseline, settings,
    columns, rows (all, or those listed) and the claims among them, under this file's id, title, source, recipe,
    notes and cost. Rows lose their published values and notes: a budget number is never set against a paper one."""
    spec = data["budget_of"]
    if not isinstance(spec, dict) or not isinstance(spec.get("suite"), str) or set(spec) - {"suite", "rows"}:
        raise SuiteError(f"{where}: budget_of: expected {{suite: PAPER_SUITE, rows: [ROW, ...]}} (rows optional)")
    missing = [k for k in _OWN if k not in data]
    taken = [k for k in _INHERITED if k in data]
    if missing or taken:
        what = f"needs {missing[0]!r}" if missing else f"{taken[0]!r} comes from its paper suite"
        raise SuiteError(f"{where}: a budget suite {what}")
    base = read_yaml_mapping(find_suite(spec["suite"]), "suite", SuiteError, _DecimalLoader)
    if "budget_of" in base:
        raise SuiteError(f"{where}: budget_of: {spec['suite']} is a budget suite itself; name a paper suite")
    wanted = spec.get("rows")
    rows = [dict(r) for r in base.get("rows") or [] if isinstance(r, dict) and not r.get("cited")]
    keys = [r.get("id") or r.get("name") for r in rows]
    if wanted is not None:
        unknown = [w for w in wanted if w not in keys] if isinstance(wanted, list) else [wanted]
        if unknown:
            raise SuiteError(f"{where}: budget_of.rows: {unknown[0]!r} is not a row of {spec['suite']}")
        rows = [r for r, k in zip(rows, keys, strict=True) if k in wanted]
    for row in rows:
        for own in ("published", "notes"):  # the paper's values and their notes stay with the paper suite
            row.pop(own, None)
    kept = {r.get("id") or r.get("name") for r in rows}
    claims = [c for c in base.get("claims") or [] if isinstance(c, dict) and _claim_rows(c) <= kept]
    inherited = {k: base[k] for k in _INHERITED if k in base}
    own = {k: v for k, v in data.items() if k != "budget_of"}
    return {**inherited, "rows": rows, "claims": claims, **own}


def _claim_rows(claim: dict[str, Any]) -> set[str]:
    """The row ids a claim of a suite file names (``a: ca``, ``a: {row: ca, minus: baseline}``)."""
    found = set()
    for side in (claim.get("a"), claim.get("b")):
        if isinstance(side, str):
            found.add(side)
        elif isinstance(side, dict):
            found |= {str(side[k]) for k in ("row", "minus") if side.get(k) is not None}
    return found


def _check_semantics(suite: Suite, where: str, probe: bool = True) -> None:
    if suite.task not in TASKS:
        raise SuiteError(f"{where}: task: {TASKS.unknown(_cut(suite.task))}")
    for key in suite.columns:
        if key not in COLUMNS:
            raise SuiteError(f"{where}: columns.{_cut(key)}: {COLUMNS.unknown(_cut(key))}")
    for label, fld in suite.settings.items():
        if fld not in SETTING_FIELDS:
            raise SuiteError(f"{where}: settings.{_cut(label)}: unknown model field {shown(fld)}")
    seen: set[str] = set()
    for i, row in enumerate(suite.rows):
        at = f"{where}: row {i + 1} ({_cut(row.name)})"
        if row.id is None and not ID_PATTERN.fullmatch(row.key):
            raise SuiteError(f"{at}: id: the name does not make an id (1-64 letters/digits); give the row an 'id'")
        if row.key in seen:
            raise SuiteError(f"{at}: id: duplicate row id {row.key!r}; give the row a unique 'id'")
        seen.add(row.key)
        for section in (row.published, row.notes):
            name = "published" if section is row.published else "notes"
            for key in section:
                if key not in suite.columns:
                    have = ", ".join(suite.columns)
                    raise SuiteError(f"{at}: {name}.{_cut(key)}: unknown column (this suite has {have})")
        _check_published(suite, row, at)
        if row.floor is not None:
            if row.floor not in FLOORS:
                raise SuiteError(f"{at}: floor: {FLOORS.unknown(row.floor)}")
            floors = TASKS.get(suite.task).floors
            if row.floor not in floors:
                raise SuiteError(
                    f"{at}: floor: {_cut(row.floor)!r} is not a floor of task {suite.task!r} "
                    f"(its floors: {', '.join(floors) or 'none'})"
                )
        if row.model is not None:
            try:
                validate_spec(row.model.spec(), probe=probe)
            except ValueError as e:
                field = "model.arch" if "architecture" in str(e) else "model"
                if "attention" in str(e) and "does not take" not in str(e):  # not the list of options it takes
                    field = "model.attention"
                raise SuiteError(f"{at}: {field}: {e}") from None
    if suite.backbone_from is not None:
        if not TASKS.get(suite.task).takes_backbone:
            raise SuiteError(f"{where}: backbone_from: {TASKS.get(suite.task).title} rows take no backbone")
        known = all_suite_files()
        if suite.backbone_from not in known or suite.backbone_from == suite.id:
            raise SuiteError(f"{where}: backbone_from: no other suite {suite.backbone_from!r} ({', '.join(known)})")
    if suite.baseline is not None and suite.baseline not in seen:
        raise SuiteError(f"{where}: baseline: no row with id {suite.baseline!r}")
    _check_claims(suite.claims, where, {suite.id: suite}, own=suite.id)


def _check_claims(claims: list[Claim], where: str, suites: dict[str, Suite], own: str | None) -> None:
    """Every claim names known suites, accuracy metrics and modelled rows; its published Δ matches the rows'."""
    ids: set[str] = set()
    for i, claim in enumerate(claims):
        at = f"{where}: claim {i + 1} ({claim.id})"
        if claim.id in ids:
            raise SuiteError(f"{at}: id: duplicate claim id {claim.id!r}")
        ids.add(claim.id)
        if claim.relation == "equal" and claim.margin is None:
            raise SuiteError(f"{at}: margin: missing field (an 'equal' claim needs a margin)")
        if claim.relation == "greater" and claim.margin is not None:
            raise SuiteError(f"{at}: margin: a margin applies to 'equal' claims only")
        for side, term in zip(("a", "b"), claim.terms(), strict=False):
            _check_term(claim, term, at, side, suites, own)
        computed = published_delta(claim, suites, own)
        if claim.published is not None and computed is not None and claim.published != computed:
            raise SuiteError(f"{at}: published: {claim.published} but the rows' published values give {computed}")


def _check_term(claim: Claim, term: Term, at: str, side: str, suites: dict[str, Suite], own: str | None) -> None:
    if own is not None and term.suite is not None:
        raise SuiteError(
            f"{at}: {side}.suite: a suite's claims compare its own rows; cross-suite claims go in suites/claims/"
        )
    suite_id = term.suite or own
    if suite_id is None:
        raise SuiteError(f"{at}: {side}.suite: missing field (a cross-suite claim names each term's suite)")
    suite = suites.get(suite_id)
    if suite is None:
        raise SuiteError(f"{at}: {side}.suite: unknown suite {suite_id!r}; known suites: {', '.join(suites)}")
    metric = term.metric or claim.metric
    field = "metric" if term.metric is None else f"{side}.metric"
    if metric is None:
        raise SuiteError(f"{at}: {field}: missing field")
    accuracy = [k for k in suite.columns if COLUMNS[k].kind == "accuracy"]
    if metric not in accuracy:
        raise SuiteError(
            f"{at}: {field}: unknown metric {metric!r} for {suite_id} (its accuracy columns: {', '.join(accuracy)})"
        )
    for name, key in (("row", term.row), ("minus", term.minus)):
        if key is None:
            continue
        row = next((r for r in suite.rows if r.key == key), None)
        if row is None:
            raise SuiteError(f"{at}: {side}.{name}: unknown row id {key!r} in {suite_id}")
        if row.cited or row.model is None:
            raise SuiteError(f"{at}: {side}.{name}: row {key!r} of {suite_id} is cited; there is nothing to reproduce")


def published_delta(claim: Claim, suites: dict[str, Suite], own: str | None = None) -> Decimal | None:
    """The paper's a - b from the rows' published values; None if a row has no published value."""
    a, b = claim.qualified(own)

    def value(t: Term) -> Decimal | None:
        suite = suites[t.suite or ""]
        parts = [suite.row(k).published.get(t.metric or "") for k in t.rows()]
        if any(p is None or isinstance(p, tuple) for p in parts):
            return None
        return parts[0] - parts[1] if len(parts) == 2 else parts[0]  # type: ignore[operator,return-value]

    va = value(a)
    vb = b if isinstance(b, Decimal) else value(b)
    return None if va is None or vb is None else va - vb


def load_claim_file(path: str | Path, suites: dict[str, Suite] | None = None) -> ClaimFile:
    """Load a cross-suite claims file, checked against ``suites`` (the shipped suites by default)."""
    path = Path(path)
    where = str(path)
    data = read_yaml_mapping(path, "claims", SuiteError, _DecimalLoader)
    try:
        claims = ClaimFile.model_validate(data)
    except ValidationError as e:
        loc, msg = first_validation_error(e)
        raise SuiteError(f"{where}: {_location(path, data, loc)}: {msg}") from None
    if suites is None:  # its rows are checked against the models catalogue: no block is built to read claims
        suites = {sid: load_suite(p, probe=False) for sid, p in known_suites().items()}
    _check_claims(claims.claims, where, suites, own=None)
    return claims.model_copy(update={"path": path})


def known_claim_files(directory: Path = CLAIMS_DIR) -> dict[str, Path]:
    """Cross-suite claim file id -> file (``suites/claims/*.yaml``)."""
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def _check_published(suite: Suite, row: Row, at: str) -> None:
    """Percentages at most 100; a tolerance smaller than the value it applies to (else it accepts zero)."""
    for key, value in row.published.items():
        col = suite.columns[key]
        top = value[1] if isinstance(value, tuple) else value
        if col.unit == "%" and top > 100:
            raise SuiteError(f"{at}: published.{key}: {top}% is above 100%")
        if col.tolerance != "printed" and not isinstance(value, tuple) and value > 0 and col.tolerance >= value:
            raise SuiteError(
                f"{at}: published.{key}: the column's tolerance {col.tolerance} is not smaller than the value "
                f"{value}, so any result down to zero would match"
            )


def known_suites(directory: Path | None = None) -> dict[str, Path]:
    """Suite id -> file: those of ``directory`` (ids are the file stems), or by default of the whole search path
    (``--suites``, ``$CABENCH_SUITES``, ``./suites``, the packaged suites; see :mod:`cabench.locate`)."""
    if directory is None:
        return suite_files()
    return {p.stem: p for p in sorted(directory.glob("*.yaml"), key=_natural)}


def all_suite_files() -> dict[str, Path]:
    """Every suite file on the search path; none at all is an error (a gate over nothing must not pass)."""
    files = known_suites()
    if not files:
        raise SuiteError(f"no suite files (*.yaml) found; looked in {describe()}")
    return files


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
    """Resolve a suite id (``table2``, searched on the suite path) or a path to a suite file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if candidate.is_dir():
            raise SuiteError(f"{name_or_path}: a folder, not a suite file (name a .yaml file or a suite id)")
        if not candidate.is_file():
            raise SuiteError(f"{name_or_path}: no such suite file")
        return candidate
    suites = known_suites()
    if name_or_path not in suites:
        hint = did_you_mean(name_or_path, suites)
        raise SuiteError(f"unknown suite {name_or_path!r}{hint}; known suites: {', '.join(suites) or '(none)'}")
    return suites[name_or_path]


def _runnable(row: Row) -> bool:
    """A row ``--rows`` may select: one with a model or a floor to compute."""
    return row.model is not None or row.floor is not None


def check_row_selection(suites: list[Suite] | tuple[Suite, ...], wanted: set[str] | list[str] | None) -> None:
    """Every ``--rows`` entry names exactly one row (by id or printed name) in some suite; raise ``SuiteError``
    otherwise, with the valid choices. A printed name shared by several rows of one suite (Table 4's "+ SE") is
    ambiguous: the message lists their ids."""
    for name in sorted(wanted or ()):
        hits = 0
        for suite in suites:
            matches = [r for r in suite.rows if name in (r.key, r.name) and _runnable(r)]
            if len(matches) > 1:
                ids = ", ".join(r.key for r in matches)
                raise SuiteError(f"--rows {name!r} matches {len(matches)} rows of {suite.id} ({ids}): name one by id")
            hits += len(matches)
        if not hits:
            keys = list(dict.fromkeys(r.key for s in suites for r in s.rows if _runnable(r)))
            where, hint = ", ".join(s.id for s in suites), did_you_mean(name, keys)
            raise SuiteError(f"--rows {name!r}: no such row in {where}{hint}; rows: {', '.join(keys)}")
