"""The README's first screen gives the two commands CI runs; keep them in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_screen = text.split("---", 1)[0]
    return re.findall(r"```bash\n#[^\n]*\n([^\n]+)\n```", first_screen)


def test_readme_first_screen_has_exactly_two_commands() -> None:
    install_and_run, install_and_test = _readme_commands()
    assert "cabench run all" in install_and_run and "cabench report" in install_and_run
    assert "pytest" in install_and_test


def test_ci_runs_the_readme_test_command_as_written() -> None:
    _, test_command = _readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
