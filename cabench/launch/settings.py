"""A launcher's settings: the command line over the ``[launcher]`` table of the config file over defaults.

The config file is the one that holds ``[data]`` (``$CABENCH_CONFIG``, else ``~/.config/cabench/config.toml``)::

    [launcher]
    partition = "gpu"
    gpus_per_job = 1
    cpus_per_gpu = 10
    time_limit = "3-00:00:00"     # minutes (4320) or [D-]HH:MM[:SS]
    mem = "64G"
    account = "vision"
    max_parallel = 32             # jobs running at once (SLURM array limit; local processes)

    [launcher.sbatch]             # any other sbatch option, --KEY=VALUE
    qos = "normal"
    constraint = "a100"

Every key is read or refused: an unknown key is an error naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cabench.data.roots import config_path, read_config

__all__ = ["DEFAULT_TIME_MIN", "LAUNCH_OPTIONS", "LaunchSettings", "launch_settings", "parse_time_limit"]

DEFAULT_TIME_MIN = 24 * 60  # a job's time limit when none is given: one day (preempted/timed-out jobs requeue)
# The launcher's options, declared once: `cabench run --NAME` (the CLI builds them from this) and [launcher] NAME.
LAUNCH_OPTIONS: tuple[tuple[str, Any, Any, str], ...] = (
    ("partition", str | None, None, "SLURM partition."),
    ("gpus_per_job", int | None, None, "GPUs per job (several: torchrun inside the job). Default 0."),
    ("cpus_per_gpu", int | None, None, "CPUs per GPU (per job without GPUs). Default 8."),
    ("time_limit", str | None, None, "Time limit per job: minutes or [D-]HH:MM[:SS]. Default 1 day; a job "
     "reaching it checkpoints and requeues."),
    ("mem", str | None, None, "Memory per job (SLURM), e.g. 64G."),
    ("account", str | None, None, "SLURM account."),
    ("sbatch", list[str] | None, None, "Any other sbatch option as NAME=VALUE (repeatable), e.g. qos=normal."),
    ("max_parallel", int | None, None, "Jobs running at once. SLURM: the array limit (default all); local: "
     "default one per CPU core, or one per GPU group with --gpus-per-job."),
)  # fmt: skip
_KEYS = tuple(name for name, *_ in LAUNCH_OPTIONS)
_TIME = re.compile(r"(?:(?P<d>\d+)-)?(?P<h>\d+):(?P<m>\d{1,2})(?::(?P<s>\d{1,2}))?")
_MEM = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class LaunchSettings:
    launcher: str
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_gpu: int = 8
    time_limit_min: int = DEFAULT_TIME_MIN
    mem: str | None = None
    account: str | None = None
    sbatch: dict[str, str] = field(default_factory=dict)
    max_parallel: int | None = None  # None: no limit


def parse_time_limit(value: Any, where: str) -> int:
    """Minutes from ``90``, ``"90"``, ``"1:30:00"`` or ``"2-00:00:00"``; ValueError naming ``where`` otherwise."""
    text = str(value).strip()
    if (isinstance(value, int) and not isinstance(value, bool)) or text.isdigit():
        minutes = int(text)
    elif m := _TIME.fullmatch(text):
        seconds = int(m["s"] or 0)
        minutes = int(m["d"] or 0) * 1440 + int(m["h"]) * 60 + int(m["m"]) + (seconds + 59) // 60
    else:
        raise ValueError(f"{where} {value!r}: expected minutes (90) or [D-]HH:MM[:SS] (2-00:00:00)")
    if minutes < 1:
        raise ValueError(f"{where} {value!r}: a time limit is at least one minute")
    return minutes


def _sbatch_items(items: dict[str, Any], where: str) -> dict[str, str]:
    out = {}
    for key, value in items.items():
        name = str(key).strip().removeprefix("--")
        if not _SBATCH_KEY.fullmatch(name) or isinstance(value, (dict, list)) or str(value).strip() == "":
            raise ValueError(f"{where} {key}={value!r}: expected an sbatch option NAME=VALUE, e.g. qos=normal")
        out[name] = "true" if value is True else str(value).strip()
    return out


def _from_config() -> tuple[dict[str, Any], str]:
    """The config file's [launcher] table (checked keys) and the file's name, or ({}, "")."""
    path = config_path()
    if path is None:
        return {}, ""
    table = read_config(path).get("launcher", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: 'launcher' must be a table, e.g. [launcher] partition = \"gpu\"")
    for key in table:
        if key not in _KEYS:
            raise ValueError(f"{path}: [launcher] {key}: unknown key; known: {', '.join(_KEYS)}")
    return table, f"{path}: [launcher]"


def _check(name: str, value: Any, where: str) -> Any:
    """One setting, checked; ``where`` names its source in the error."""
    flag = f"{where} {name}" if where.endswith("]") else f"--{name.replace('_', '-')}"
    if name in ("gpus_per_job", "cpus_per_gpu", "max_parallel"):
        low = 0 if name == "gpus_per_job" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100_000:
            raise ValueError(f"{flag} {value!r}: expected an integer from {low}")
        return value
    if name == "time_limit":
        return parse_time_limit(value, flag)
    if name == "sbatch":
        if not isinstance(value, dict):
            raise ValueError(f'{flag}: expected a table of sbatch options, e.g. [launcher.sbatch] qos = "normal"')
        return _sbatch_items(value, flag)
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueError(f"{flag} {value!r}: expected a word without spaces")
    if name == "mem" and not _MEM.fullmatch(value.strip()):
        raise ValueError(f"{flag} {value!r}: expected a SLURM memory size such as 64G or 64000M")
    return value.strip()


def launch_settings(launcher: str, given: dict[str, Any], takes: frozenset[str]) -> LaunchSettings:
    """The settings of ``launcher``: ``given`` (command-line values; None: not given) over the config file.

    A command-line option that ``launcher`` does not take (``takes``) is refused; the config file's keys are for
    every launcher that takes them (a lab's SLURM partition does not stop a local run)."""
    config, where = _from_config()
    values: dict[str, Any] = {}
    for name in _KEYS:
        cli = given.get(name)
        if cli is not None and cli != [] and name not in takes:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to --launcher {launcher}")
        if name not in takes:
            continue
        if name in config:
            values[name] = _check(name, config[name], where)
        if name == "sbatch" and cli:  # per option: the command line's over the config file's
            values[name] = {**values.get(name, {}), **_check(name, _sbatch_pairs(cli), "")}
        elif cli is not None:
            values[name] = _check(name, cli, "")
    if "time_limit" in values:
        values["time_limit_min"] = values.pop("time_limit")
    return LaunchSettings(launcher, **values)


def _sbatch_pairs(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--sbatch {item!r}: expected NAME=VALUE, e.g. --sbatch qos=normal")
        out[key.strip()] = value
    return out
