"""Reading the project's YAML data files (suites, recipes) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

__all__ = ["first_validation_error", "read_yaml_mapping"]


def read_yaml_mapping(
    path: Path, what: str, error: type[ValueError], loader: type[yaml.SafeLoader] = yaml.SafeLoader
) -> dict[str, Any]:
    """Parse ``path`` as a YAML mapping; raise ``error`` with one line naming the file (and line) otherwise."""
    where = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise error(f"{where}: cannot read {what} file ({e.strerror})") from None
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{where}: YAML syntax error{at}: {problem}") from None
    if not isinstance(data, dict):
        raise error(f"{where}: a {what} must be a YAML mapping")
    return data


def first_validation_error(e: ValidationError) -> tuple[tuple[Any, ...], str]:
    """The location and a short message of a pydantic error's first problem."""
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "missing field"
    return tuple(err["loc"]), msg
