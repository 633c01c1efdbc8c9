"""Reading the project's data files (suites, recipes, claims, annotations) with one-line errors.

Every reader here is bounded before it builds anything: a file must be a
regular file below a size limit and valid UTF-8; a YAML document may nest at
most :data:`MAX_DEPTH` levels and expand (aliases counted at their full size)
to at most :data:`MAX_NODES` nodes, so a deeply nested or alias-bomb file is
refused with one line instead of a ``RecursionError`` or ``MemoryError``.
YAML tags that do not fit their value (``!!float abc``) end in the same kind
of one line. :func:`shown` keeps user-written values short in messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cabench.registry import did_you_mean

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "StrictLoader",
    "first_validation_error",
    "read_json_file",
    "read_text_file",
    "read_yaml_mapping",
    "shown",
]

MAX_FILE_BYTES = 1 << 20  # a suite or recipe is a few kB
MAX_DEPTH = 32  # the real files nest 5 levels
MAX_NODES = 100_000  # after alias expansion
MAX_EXPANDED_CHARS = 4 * MAX_FILE_BYTES  # characters of scalar text once aliases are expanded

# A YAML constructor may raise nearly anything on a value that does not fit its tag
# (``!!timestamp no`` raises AttributeError inside PyYAML), so every Exception counts.
_CONSTRUCT_ERRORS = (Exception,)


# libyaml's parser (PyYAML's C binding) when PyYAML was built with it: the same events, several times faster than
# the pure-Python scanner, which made `cabench list` spend a second reading the suites. The constructor (and so
# every check below) is PyYAML's Python one either way.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


class StrictLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, refusing a mapping that repeats a key (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shown(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def shown(value: object, limit: int = 60) -> str:
    """``value`` for a one-line message: strings quoted and cut, other types by name."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 1] + "…"
        return repr(text)
    if isinstance(value, (int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return f"a {type(value).__name__}"


def read_text_file(path: Path, what: str, error: type[ValueError], max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file below ``max_bytes``; ``error`` (one line) otherwise."""
    where = str(path)
    try:
        if not path.is_file():
            kind = "a directory" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
            raise error(f"{where}: not a {what} file ({kind})")
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{where}: {what} file too large ({size:,} bytes; the limit is {max_bytes:,})")
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"{where}: cannot read {what} file ({e.strerror or type(e).__name__})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not a UTF-8 text file (byte {e.start})") from None


def _events(text: str, where: str, error: type[ValueError], loader: type[yaml.SafeLoader]) -> Any:
    """The document's parse events; libyaml's own nesting limit (1,000 flow levels, met while it scans ahead) is
    reported as what it is, a document nested deeper than MAX_DEPTH."""
    try:
        yield from yaml.parse(text, Loader=loader)
    except yaml.YAMLError as e:
        if "maximum nesting depth" not in str(getattr(e, "problem", "") or ""):
            raise
        mark = getattr(e, "problem_mark", None)
        raise error(f"{where}: nested deeper than {MAX_DEPTH} levels at line {mark.line + 1 if mark else 0}") from None


def _check_shape(text: str, where: str, error: type[ValueError], loader: type[yaml.SafeLoader]) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or expanding to more than MAX_NODES nodes."""
    # Per open collection: [anchor, expanded nodes, expanded characters]; an alias counts what its anchor holds.
    frames: list[list[Any]] = [[None, 0, 0]]
    sizes: dict[str, tuple[int, int]] = {}
    for event in _events(text, where, error, loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            frames.append([event.anchor, 1, 0])
            if len(frames) - 1 > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise error(f"{where}: nested deeper than {MAX_DEPTH} levels at line {line}")
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, n, chars = frames.pop()
            if anchor is not None:
                sizes[anchor] = (n, chars)
            frames[-1][1] += n
            frames[-1][2] += chars
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = (1, len(event.value))
            frames[-1][1] += 1
            frames[-1][2] += len(event.value)
        elif isinstance(event, yaml.AliasEvent):
            n, chars = sizes.get(event.anchor, (1, 0))
            frames[-1][1] += n
            frames[-1][2] += chars
        else:
            continue
        if sum(f[1] for f in frames) > MAX_NODES:
            raise error(f"{where}: too many values (over {MAX_NODES:,} once aliases are expanded)")
        if sum(f[2] for f in frames) > MAX_EXPANDED_CHARS:  # a long scalar aliased many times: no nesting needed
            raise error(f"{where}: too much text (over {MAX_EXPANDED_CHARS:,} characters once aliases are expanded)")


def _yaml_problem(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    if isinstance(e, yaml.YAMLError):
        problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
        kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
        return f"{kind}{at}: {problem}"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"a value does not fit its YAML tag ({shown(first, 80)})"


def read_yaml_mapping(
    path: Path, what: str, error: type[ValueError], loader: type[yaml.SafeLoader] = StrictLoader
) -> dict[str, Any]:
    """Parse ``path`` as a YAML mapping; raise ``error`` with one line naming the file (and line) otherwise."""
    where = str(path)
    text = read_text_file(path, what, error)
    try:
        _check_shape(text, where, error, loader)
        data = yaml.load(text, Loader=loader)
    except error:
        raise
    except _CONSTRUCT_ERRORS as e:
        raise error(f"{where}: {_yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise error(f"{where}: a {what} must be a YAML mapping")
    if not all(isinstance(k, str) for k in data):
        raise error(f"{where}: every top-level key of a {what} must be a string")
    return data


def read_json_file(path: Path, what: str, error: type[ValueError], max_bytes: int) -> Any:
    """Parse a JSON file below ``max_bytes``; ``error`` (one line naming the file) otherwise."""
    text = read_text_file(path, what, error, max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer with too many digits
        raise error(f"{path}: not valid JSON ({shown(str(e), 80)})") from None


def first_validation_error(e: ValidationError) -> tuple[tuple[Any, ...], str]:
    """The location and a short message of a pydantic error's first problem."""
    errors = e.errors(include_url=False, include_input=False)
    typo = _misspelt_field(errors)
    if typo is not None:
        return typo
    err = errors[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "missing field"
    msg = " ".join(msg.split())
    return tuple(err["loc"]), msg if len(msg) <= 200 else msg[:199] + "…"


def _misspelt_field(errors: list[Any]) -> tuple[tuple[Any, ...], str] | None:
    """An unknown field next to a missing one it resembles (``colums:`` for ``columns:``): the unknown field,
    with the suggestion, rather than "missing field" for the one the reader did write."""
    missing = [tuple(x["loc"]) for x in errors if x["type"] == "missing"]
    for x in errors:
        loc = tuple(x["loc"])
        if x["type"] != "extra_forbidden" or not loc:
            continue
        siblings = [str(m[-1]) for m in missing if m[:-1] == loc[:-1]]
        hint = did_you_mean(str(loc[-1]), siblings)
        if hint:
            return loc, "unknown field" + hint
    return None
