"""The README is a test: every documented shell command runs, in the order a reader meets it, in one folder.

What the test changes before running a command is data (``tests/readme_substitutions.yaml``): each substitution
with its reason, the setup the documents presuppose, and the commands skipped by their exact text. A command whose
comment says ``(needs: ...)`` cannot run here (GPUs, a cluster, hours of CPU) and is skipped by that mark; one whose
comment says ``(exits N)`` must exit N. Any other non-zero exit fails the test, naming the command and its output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TABLE = yaml.safe_load((Path(__file__).parent / "readme_substitutions.yaml").read_text())
FENCE = re.compile(r"^(?P<indent>[ \t]*)```bash\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
NEEDS = re.compile(r"\(needs: ([^)]+)\)")
EXITS = re.compile(r"\(exits (\d+)\)")


@dataclass(frozen=True)
class DocumentedCommand:
    document: str
    line: int
    text: str  # as written, continuation lines joined

    @property
    def needs(self) -> str | None:
        found = NEEDS.search(self.text)
        return found.group(1) if found else None

    @property
    def expected_exit(self) -> int:
        found = EXITS.search(self.text)
        return int(found.group(1)) if found else 0


def documented_commands(document: str) -> list[DocumentedCommand]:
    """Every command of the document's ```bash blocks, continuation lines joined, comment-only lines dropped."""
    text = (ROOT / document).read_text()
    commands: list[DocumentedCommand] = []
    for block in FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start("body")) + 1
        pending, start = "", 0
        for offset, raw in enumerate(block.group("body").splitlines()):
            line = raw[len(block.group("indent")) :].rstrip()
            if not pending and (not line or line.lstrip().startswith("#")):
                continue
            start = start if pending else first_line + offset
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            commands.append(DocumentedCommand(document, start, pending + line.strip()))
            pending = ""
    return commands


def all_commands() -> list[DocumentedCommand]:
    return [command for document in TABLE["documents"] for command in documented_commands(document)]


def substituted(command: DocumentedCommand) -> tuple[str, list[int]]:
    """The command as the test runs it, and which substitutions (by index, applied in order) changed it."""
    text, used = command.text, []
    for index, row in enumerate(TABLE["substitutions"]):
        if row["readme"] in text:
            text, used = text.replace(row["readme"], row["ci"]), [*used, index]
    return text, used


def as_run(command: DocumentedCommand) -> str:
    return substituted(command)[0]


def skip_reason(command: DocumentedCommand) -> str | None:
    for row in TABLE["skip"]:
        if command.text == row["command"]:
            return row["why"]
    return command.needs


def _environment(work: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CABENCH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    config = work / "empty-config.toml"  # the reader's own config file (~/.config/cabench) must not leak in
    config.write_text("")
    env["CABENCH_CONFIG"] = str(config)
    env["CABENCH_LOG_DIR"] = str(work / "logs")
    return env


def _set_up(work: Path, env: dict[str, str]) -> None:
    for step in TABLE["setup"]:
        for name in step.get("copy", []):
            shutil.copy(ROOT / name, work)
        if "run" in step:
            subprocess.run(step["run"], shell=True, cwd=work, env=env, check=True, timeout=300)


def test_every_substitution_and_skip_is_used() -> None:
    commands = all_commands()
    texts = [command.text for command in commands]
    used = {index for command in commands for index in substituted(command)[1]}
    for index, row in enumerate(TABLE["substitutions"]):
        assert index in used, f"substitution no documented command uses: {row['readme']!r}"
        assert row["why"].strip()
    for row in TABLE["skip"]:
        assert row["command"] in texts, f"skipped command no longer in the README: {row['command']!r}"


def test_the_first_screen_commands_are_the_first_two_read() -> None:
    first, second = all_commands()[:2]
    assert "cabench run all" in first.text and "pytest" in second.text


@pytest.mark.slow
def test_every_documented_command_runs_in_order(tmp_path: Path) -> None:
    work = tmp_path / "reader"
    work.mkdir()
    env = _environment(work)
    _set_up(work, env)
    ran, skipped = [], []
    for command in all_commands():
        reason = skip_reason(command)
        if reason:
            skipped.append(f"{command.document}:{command.line}: {command.text}  [{reason}]")
            continue
        text = as_run(command)
        done = subprocess.run(
            text, shell=True, executable="/bin/bash", cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        where = f"{command.document}:{command.line}"
        assert done.returncode == command.expected_exit, (
            f"{where}: `{text}` exited {done.returncode}, expected {command.expected_exit}\n"
            f"--- stdout (tail)\n{done.stdout[-3000:]}\n--- stderr (tail)\n{done.stderr[-3000:]}"
        )
        ran.append(f"{where}: {text}")
    print("ran:", *ran, "skipped:", *skipped, sep="\n  ")
    assert ran and len(ran) >= len(skipped)
