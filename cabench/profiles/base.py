"""What a profile is, what it is given and what it returns, and the registry of profiles.

A profile (count, latency, smoke, paper, eval, or a plugin's) declares the command-line options it
takes (:class:`Option`; ``cabench run`` builds its options from every registered profile's), which
column kinds it fills (the report fills a cell only from a profile that fills its kind), and runs a
:class:`Request`: the loaded suites, the store, the selected rows and seeds, its own option values,
and hooks through which the command line shows progress. It returns an :class:`Outcome`: the run
records and what to show of them. The command line knows no option, metric or task of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cabench.registry import Registry, RegistryError

if TYPE_CHECKING:
    from cabench.store import RunRecord, Store
    from cabench.suite import Row, Suite

__all__ = [
    "PROFILES",
    "Hooks",
    "Option",
    "Outcome",
    "Profile",
    "Request",
    "RowSeed",
    "profile_options",
    "register_profile",
]


@dataclass(frozen=True)
class Option:
    """A command-line option of ``cabench run``: ``--name-with-dashes`` (booleans also ``--no-...``)."""

    name: str  # a Python identifier
    type: Any  # int, float, str, bool, int | None, list[str] | None, ...
    default: Any
    help: str
    low: float | None = None  # numbers: the smallest value accepted (checked before any work)
    high: float | None = None  # numbers: the largest

    def check(self, value: Any) -> None:
        """ValueError (one line naming the option) for a number that is not finite or outside [low, high]."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        flag = "--" + self.name.replace("_", "-")
        if not math.isfinite(value):
            raise ValueError(f"{flag} {value}: expected a finite number")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            raise ValueError(f"{flag} {value}: expected a value in [{low}, {high}]")


@dataclass
class Hooks:
    """How a profile reports progress; every hook is optional (the command line fills them in)."""

    progress: Callable[[int, int, str], None] | None = None  # (done, total, what)
    row: Callable[[str, str, str], None] | None = None  # (suite id, row key, what happens)
    step: Callable[[dict[str, Any]], None] | None = None  # a training log event


@dataclass
class Request:
    suites: Sequence[Suite]
    store: Store
    rows: set[str] | None = None  # row keys or printed names; None: every row
    options: dict[str, Any] = field(default_factory=dict)  # this profile's options by name
    hooks: Hooks = field(default_factory=Hooks)
    all_suites: bool = False  # the user said `all` (a profile may skip suites it does not apply to)
    argv: tuple[str, ...] = ()  # the command line, for re-launching under torchrun
    skip_done: bool = False  # also skip row-seeds already done where the profile would rerun them (smoke)

    def selected(self, suite: Suite) -> list[Row]:
        """The rows of ``suite`` with a model to run (not cited) that ``rows`` selects."""
        rows = self.rows
        return [r for r in suite.rows if r.model is not None and not r.cited and (not rows or {r.key, r.name} & rows)]


@dataclass
class Outcome:
    records: list[RunRecord]
    columns: tuple[str, ...] = ()  # metrics to show per record in a table (none: no table)
    summary: str = ""  # one line after the table
    notes: tuple[str, ...] = ()  # lines after the summary
    exit_code: int = 0
    busy: tuple[str, ...] = ()  # selected work another process holds now (one "suite/row seed N: by ..." each)


@dataclass(frozen=True)
class RowSeed:
    """One unit of work a launcher submits as a job (:mod:`cabench.launch`): one row of one suite, one seed.

    ``resume_key`` is the key of its run's config: a complete run with that key means the unit is done."""

    suite: str  # suite id
    suite_path: str  # the suite file the job loads
    row: str  # row key
    profile: str
    seed: int
    resume_key: str

    @property
    def label(self) -> str:
        return f"{self.suite}/{self.row} seed {self.seed}"


class Profile:
    """Base class of profiles; subclasses set the class attributes and implement :meth:`run`."""

    name: str = ""
    description: str = ""
    fills: frozenset[str] = frozenset()  # column kinds it fills (see cabench.columns.ColumnInfo.kind)
    placeholder: str | None = None  # what an accuracy cell says when only this profile has run for its row
    options: tuple[Option, ...] = ()
    # Whether rows of a suite with ``backbone_from`` start from that suite's runs (so launchers order the suites).
    follows_backbones: bool = False

    def run(self, request: Request) -> Outcome:
        raise NotImplementedError

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse option values that need no model, data or torch to judge (``--seeds abc``, an unknown ``--data``
        key), before the command imports torch; :meth:`run` checks everything again. None by default."""

    def units(self, request: Request) -> list[RowSeed]:
        """The row-seeds :meth:`run` would train, each one job for a launcher; checked as :meth:`run` checks."""
        raise ValueError(
            f"profile {self.name!r} runs in this process only; --launcher applies to the training profiles "
            "(smoke, paper)"
        )

    def runs_without_a_job(self, request: Request) -> list[RunRecord]:
        """The runs of ``request`` too small to be a job (a suite's floors), done by the process that launches the
        jobs; none by default."""
        return []

    def replicate(self, run: RunRecord) -> Any:
        """What tells this profile's replicates of a cell apart (by default the seed)."""
        seed = run.config.get("seed")
        return seed if seed is not None else run.run_id

    def footnote(self, run: RunRecord) -> str | None:
        """What the report says under a cell this profile filled (None: the report's own provenance rules)."""
        return None


PROFILES = Registry[Profile]("profile", builtin_modules=("cabench.profiles.*",))


def register_profile(profile: Profile) -> Profile:
    PROFILES.register(profile.name, profile)
    return profile


def profile_options() -> dict[str, tuple[Option, list[str]]]:
    """Every registered profile's options by name, with the profiles that take each."""
    merged: dict[str, tuple[Option, list[str]]] = {}
    for name, profile in PROFILES.items():
        for option in profile.options:
            known = merged.get(option.name)
            if known is None:
                merged[option.name] = (option, [name])
            elif (known[0].type, known[0].default) != (option.type, option.default):
                raise RegistryError(f"option --{option.name} of profile {name!r} differs from {known[1][0]!r}'s")
            else:
                known[1].append(name)
    return merged
