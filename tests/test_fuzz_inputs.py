"""Fuzzing: the real suites, recipes and config file, mutated, through the commands that read them.

Every case ends in exit 0, or one line on stderr and exit 2 with nothing written (``check`` may also
exit 1 with its DRIFT lines) — never a traceback. Mutations: a value replaced by another type, NaN/inf,
a huge or negative number, a unicode or rich-markup string, a path; a key dropped; a row duplicated;
a YAML tag; an anchor/alias bomb; one long scalar aliased thousands of times; deep nesting; binary garbage; a
truncated or empty file; a directory instead of a file. Plugins: modules that raise, exit or register odd things.
``--hypothesis-profile=long`` runs thousands of cases (see tests/conftest.py).

Counting real models is not what is fuzzed here (the count tests pin it exactly), so ``run`` and
``check`` count with a stand-in that validates the spec like the real one and returns fixed numbers.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cabench.cli import app
from cabench.data.roots import resolve_data_root
from cabench.measure.complexity import Complexity
from cabench.models.registry import arch_info, validate_spec
from cabench.recipe import RecipeError, load_recipe
from cabench.suite import SUITES_DIR

runner = CliRunner()
SUITE_TEXTS = [p.read_text() for p in sorted(SUITES_DIR.glob("table*.yaml"))]
RECIPE_FILES = sorted((SUITES_DIR / "recipes").glob("*.yaml"))
LOCK = (SUITES_DIR / "counts.lock.json").read_bytes()
CONFIG = '[data]\nimagenet = "/datasets/imagenet"\ncoco = "coco"\n'

WEIRD_VALUES = st.one_of(
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            float("-inf"),
            1e308,
            -1.0,
            0,
            -1,
            10**30,
            2**63,
            "",
            "[/]",
            "[bold red]x[/]",
            "../../x",
            "/abs/path",
            "a\nb",
            "名前 ü",
            "\u202eevil",
            None,
            True,
            [],
            {},
            "nan",
            "1e400",
            "14-16",
            "16-14",
            "printed",
            "x" * 300,
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)

TAGS = ["!!float abc", "!!int x", "!!binary ~~~", "!!python/object/apply:os.system ['true']", "!!timestamp no", "!!set"]
BOMB = "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9 if p else ['x'] * 9)}]\n"
    for p, n in zip(["", "b1", "b2", "b3", "b4", "b5", "b6"], ["b1", "b2", "b3", "b4", "b5", "b6", "b7"], strict=True)
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a node of a parsed YAML document."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any, how: str) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "drop":
        del parent[last]
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(last, parent[last])
    else:
        parent[last] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, texts: list[str]) -> bytes | None:
    """A mutated file's bytes (None: a directory instead of a file)."""
    text = draw(st.sampled_from(texts))
    kind = draw(
        st.sampled_from(
            ["value"] * 6 + ["drop", "duplicate", "tag", "bomb", "aliases", "deep", "garbage", "cut", "empty", "dir"]
        )
    )
    if kind in ("value", "drop", "duplicate"):
        doc = yaml.safe_load(text)
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        doc = _set(doc, path, draw(WEIRD_VALUES), kind)
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()
    lines = text.splitlines()
    if kind == "tag":
        i = draw(st.integers(0, len(lines) - 1))
        if ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + draw(st.sampled_from(TAGS))
        return "\n".join(lines).encode()
    if kind == "bomb":
        where = draw(st.sampled_from(["name", "title", "zz"]))
        if where == "zz":
            return (BOMB + text + "\nzz: *b7\n").encode()
        return (BOMB + re.sub(rf"{where}: .*", f"{where}: *b7", text, count=1)).encode()
    if kind == "aliases":  # no nesting: one long scalar, referenced many times (404 KB grew to 4.7 GB RSS)
        size, refs = draw(st.sampled_from([(1_000, 50), (20_000, 2_000), (200_000, 20_000)]))
        anchor = f"zz_text: &s {'x' * size}\n"
        return (anchor + text + "\nzz_notes: [" + ", ".join(["*s"] * refs) + "]\n").encode()
    if kind == "deep":
        n = draw(st.sampled_from([5, 40, 3000]))
        return (text + "\nnotes: " + "[" * n + "]" * n + "\n").encode()
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=300))
    if kind == "cut":
        return text.encode()[: draw(st.integers(0, len(text)))]
    return b"" if kind == "empty" else None


@contextmanager
def _workspace(content: bytes | None, name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        yield path


def _fake_count(spec: Any, madds: bool = True, input_size: tuple[int, int] | None = None) -> Complexity:
    validate_spec(spec)
    size = input_size or arch_info(spec.arch).input_size
    return Complexity(params=1_000_000, madds=300_000_000 if madds else None, fvcore_total=1, input_size=size)


_FAKE_COUNT_CACHE = tempfile.mkdtemp(prefix="cabench-fuzz-count-cache-")


@pytest.fixture(autouse=True)
def _quick_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cabench.measure.complexity.count_model", _fake_count)
    # The stand-in's numbers go to a count cache of their own: in the session's cache they would be read back
    # as real counts by every later test that counts the same model.
    monkeypatch.setenv("CABENCH_CACHE_DIR", _FAKE_COUNT_CACHE)


def _assert_clean_outcome(result: Any, allow_drift: bool = False) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        return
    lines = result.stderr.strip().splitlines()
    if allow_drift and result.exit_code == 1:
        assert lines and all(ln.startswith(("DRIFT ", "note: ")) for ln in lines), result.stderr
        return
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("cabench: error: "), result.stderr
    assert len(lines[0]) < 600, lines[0]


OUTCOMES: dict[str, dict[int | str, int]] = {}
TALLY = os.environ.get("CABENCH_FUZZ_TALLY")  # a JSON file rewritten after every case (for long runs)


def _count(command: str, code: int | str) -> None:
    OUTCOMES.setdefault(command, {}).setdefault(code, 0)
    OUTCOMES[command][code] += 1
    if TALLY:
        Path(TALLY).write_text(json.dumps({c: {str(k): n for k, n in v.items()} for c, v in OUTCOMES.items()}))


def _count_result(command: str, result: Any) -> None:
    """Tally a CLI case before it is judged: its exit code, or "traceback" for an uncaught exception."""
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    _count(command, "traceback" if crashed or "Traceback" in result.output else result.exit_code)


@given(content=mutated(SUITE_TEXTS))
def test_fuzz_show(content: bytes | None) -> None:
    with _workspace(content, "suite.yaml") as path:
        result = runner.invoke(app, ["show", str(path)])
    _count_result("show", result)
    _assert_clean_outcome(result)


@given(content=mutated(SUITE_TEXTS))
def test_fuzz_check(content: bytes | None) -> None:
    with _workspace(content, "suite.yaml") as path:
        lock = path.parent / "lock.json"
        lock.write_bytes(LOCK)
        result = runner.invoke(app, ["check", str(path), "--lock", str(lock)])
        assert lock.read_bytes() == LOCK  # check never writes the lock unless asked
    _count_result("check", result)
    _assert_clean_outcome(result, allow_drift=True)


@given(content=mutated(SUITE_TEXTS))
def test_fuzz_run_count(content: bytes | None) -> None:
    with _workspace(content, "suite.yaml") as path:
        runs = path.parent / "runs"
        result = runner.invoke(app, ["run", str(path), "--runs-dir", str(runs)])
        _count_result("run", result)
        if result.exit_code != 0:
            assert not runs.exists(), "a refused input wrote run directories"
        else:
            written = [p for p in runs.rglob("*") if p.is_file()]
            assert all(p.resolve().is_relative_to(runs.resolve()) for p in written)
    _assert_clean_outcome(result)


@given(content=mutated([p.read_text() for p in RECIPE_FILES]), name=st.sampled_from([p.stem for p in RECIPE_FILES]))
def test_fuzz_recipe(content: bytes | None, name: str) -> None:
    with _workspace(content, f"{name}.yaml") as path:
        try:
            load_recipe(path)
            code = 0
        except RecipeError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            code = 2
        except Exception:
            _count("recipe", "traceback")
            raise
    _count("recipe", code)


TOML_VALUES = st.sampled_from(['"x"', "5", "nan", "inf", "[1, 2]", "{a = 1}", '""', '"../x"', "true", "[" * 2000])


@given(value=TOML_VALUES, garbage=st.one_of(st.none(), st.binary(max_size=100)))
def test_fuzz_config_file(value: str, garbage: bytes | None) -> None:
    content = garbage if garbage is not None else CONFIG.replace('"/datasets/imagenet"', value).encode()
    with _workspace(content, "config.toml") as path:
        old = os.environ.get("CABENCH_CONFIG")
        os.environ["CABENCH_CONFIG"] = str(path)
        try:
            resolve_data_root("imagenet", {})
            code = 0
        except ValueError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            code = 2
        except Exception:
            _count("config", "traceback")
            raise
        finally:
            if old is None:
                os.environ.pop("CABENCH_CONFIG", None)
            else:
                os.environ["CABENCH_CONFIG"] = old
    _count("config", code)


def test_fuzz_outcomes_cover_both_sides() -> None:
    """The fuzzers above must have produced accepted and refused cases (or they fuzz nothing)."""
    if not OUTCOMES:
        pytest.skip("run with the fuzz tests")
    for command in ("show", "check", "run"):
        codes = OUTCOMES.get(command, {})
        assert codes.get(2, 0) > 0, (command, codes)
    print("fuzz outcomes:", OUTCOMES)


# Plugins are untrusted code run on purpose: whatever a plugin module does at import (raise anything, exit,
# register odd names or objects), `list` ends in exit 0 or one line and exit 2, never a traceback or silence.
PLUGIN_FAULTS = st.one_of(
    st.sampled_from(
        [
            "raise ValueError('bad plugin')",
            "raise KeyError('k')",
            "raise ImportError('needs a package')",
            "raise MemoryError",
            "raise RecursionError('deep')",
            "raise KeyboardInterrupt",
            "raise GeneratorExit",
            "raise SystemExit",
            "raise SystemExit(0)",
            "raise SystemExit(64)",
            "raise SystemExit('a message')",
            "import sys\nsys.exit(0)",
            "class Odd(BaseException):\n    pass\n\n\nraise Odd('odd')",
            "import a_module_that_does_not_exist_anywhere",
            "def (:",
            "x = 1 / 0",
            "def f():\n    return f()\n\n\nf()",
        ]
    ),
    st.builds(
        "from cabench.models.blocks import register_attention\n\nregister_attention({!r})({})".format,
        st.one_of(
            st.sampled_from(["se", "ca", "", "a b", "../x", "名前", "x" * 300, "[bold]b[/]"]), st.text(max_size=8)
        ),
        st.sampled_from(["object", "None", "len", "lambda c, r=None: None", "42", "'text'", "print"]),
    ),
)


@pytest.mark.slow
@settings(max_examples=12)
@given(source=PLUGIN_FAULTS)
def test_fuzz_plugin(source: str) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "fuzzed_plugin.py").write_text(source + "\n")
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{root}"}
        cmd = [sys.executable, "-c", "import sys; from cabench.cli import main; sys.exit(main())", "list"]
        done = subprocess.run([*cmd, "--plugin", "fuzzed_plugin"], cwd=tmp, env=env, capture_output=True, text=True)
    _count("plugin", "traceback" if "Traceback" in done.stderr else done.returncode)
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode == 0:
        assert done.stdout.strip(), "exit 0 with nothing listed"
        return
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cabench: error: "), done.stderr
