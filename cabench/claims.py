"""Statistics and verdicts: is a claim of the paper supported by the runs, contradicted, or neither?

Every statistic is scipy's; this module only chooses which and reads the answer.

A cell filled by n runs is summarised by :func:`summarize`: mean, sd, and the t-based 95% CI of the mean
(``scipy.stats.t.interval`` with ``scipy.stats.sem``). A claim ``a <relation> b`` compares two terms (a
row's metric, a gain ``row - minus``, or a constant for ``b``) and gets, from :func:`judge`:

* **n >= 2 per term** - ``greater``: Welch's one-sided t-test (``scipy.stats.ttest_ind(equal_var=False,
  alternative="greater")``) at alpha = 0.05: ``supported``; ``contradicted`` when the opposite one-sided test
  is significant; ``inconclusive`` otherwise. ``equal``: two one-sided tests (TOST) at the claim's margin,
  i.e. Welch's tests of ``a + margin > b`` and ``a - margin < b``; ``supported`` when both are significant
  (the same as: the 90% CI of Δ, kept as ``Verdict.tost_low``/``tost_high``, lies inside ±margin),
  ``contradicted`` when Δ lies significantly outside the margin. Against a constant the same with
  ``scipy.stats.ttest_1samp``. A gain's replicates pair the two rows' runs by seed.
* **n = 1 per term** - a bootstrap over the validation images (``scipy.stats.bootstrap``, percentile
  method, 2,000 resamples, fixed seed) of the headline metric recomputed from each run's per-image outcomes
  (:mod:`cabench.outcomes`); paired (one resample of image indices) for rows of the same suite, independent
  across suites. Its CI is *evaluation noise only*: it says nothing about training noise. The decision
  uses one-sided 95% bounds from the same bootstrap distribution (as the t-tests use one-sided tests).
  A metric without a per-image statistic (COCO AP) gets ``Δ only``.
* **missing runs** - ``pending``; one term with one run and another with several - ``inconclusive``.

Only runs of the profiles that fill accuracy cells (``paper``, ``eval``) count; ``smoke`` runs never do.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cabench import outcomes
from cabench.suite import Claim, Term
from cabench.tasks.base import statistic_for

__all__ = [
    "ALPHA",
    "LEVEL",
    "N_RESAMPLES",
    "VERDICTS",
    "RowRuns",
    "Summary",
    "Verdict",
    "judge",
    "summarize",
]

ALPHA = 0.05
LEVEL = 0.95
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
VERDICTS = ("supported", "contradicted", "inconclusive", "pending", "Δ only")
EVAL_NOISE = "paired bootstrap over images (evaluation noise only)"


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    sd: float | None
    ci_low: float | None
    ci_high: float | None


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sd (n - 1) and the t-based 95% CI of the mean; sd and CI are None for n < 2."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = float(np.mean(x))
    if n == 1:
        return Summary(1, mean, None, None, None)
    sem = float(stats.sem(x))
    if sem == 0.0:  # every run gave the same value: the interval is that value
        return Summary(n, mean, 0.0, mean, mean)
    lo, hi = stats.t.interval(LEVEL, df=n - 1, loc=mean, scale=sem)
    return Summary(n, mean, float(np.std(x, ddof=1)), float(lo), float(hi))


@dataclass(frozen=True)
class RowRuns:
    """The runs of one row that count for one metric: replicate (seed) -> value, and -> run directory."""

    values: dict[Hashable, float] = field(default_factory=dict)
    run_dirs: dict[Hashable, Path] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.values)


RunsOf = Callable[[Term], RowRuns]  # a qualified term's row (suite, metric, row) -> its runs


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    scope: str  # the suite id, or the claim file's id
    verdict: str
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    test: str = ""
    p: float | None = None
    n_a: int = 0
    n_b: int | None = None  # None: b is a constant
    published: Decimal | None = None
    note: str = ""
    # ``equal`` claims: the 90% interval of Δ (1 - 2 alpha) that the TOST decision reads; supported exactly when it
    # lies inside ±margin. ``ci_low``/``ci_high`` stay the 95% CI.
    tost_low: float | None = None
    tost_high: float | None = None


# --- the terms' replicates ------------------------------------------------------------------------------


def _term_runs(term: Term, runs_of: RunsOf) -> RowRuns:
    """A row's runs, or a gain's: ``row - minus`` per seed both ran (one pair if each has a single run)."""
    main = runs_of(term)
    if term.minus is None:
        return main
    other = runs_of(term.model_copy(update={"row": term.minus, "minus": None}))
    common = [k for k in main.values if k in other.values]
    if not common and main.n == 1 and other.n == 1:
        (ka, va), vb = next(iter(main.values.items())), next(iter(other.values.values()))
        return RowRuns({ka: va - vb}, {})
    return RowRuns({k: main.values[k] - other.values[k] for k in common}, {})


# --- tests on replicates (n >= 2) ------------------------------------------------------------------------


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a scipy test without its warnings about degenerate samples (the result says it: nan or inf)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _test(a: np.ndarray, b: np.ndarray | float, shift: float, alternative: str) -> Any:
    """Welch's t-test of ``a + shift`` against ``b`` (or the one-sample test against a constant)."""
    if isinstance(b, float):
        return _quiet(stats.ttest_1samp, a + shift, popmean=b, alternative=alternative)
    return _quiet(stats.ttest_ind, a + shift, b, equal_var=False, alternative=alternative)


def _significant(result: Any) -> bool:
    return bool(np.isfinite(result.pvalue) and result.pvalue < ALPHA)


def _t_verdict(claim: Claim, a: np.ndarray, b: np.ndarray | float) -> dict[str, Any]:
    constant = isinstance(b, float)
    both = _test(a, b, 0.0, "two-sided")
    ci = _quiet(both.confidence_interval, LEVEL)
    shift = -b if constant else 0.0  # a one-sample CI is of a's mean; Δ = mean - constant
    out: dict[str, Any] = {"ci_low": float(ci.low) + shift, "ci_high": float(ci.high) + shift}
    name = "one-sample t-test" if constant else "Welch's t-test"
    if claim.relation == "greater":
        up, down = _test(a, b, 0.0, "greater"), _test(a, b, 0.0, "less")
        verdict = "supported" if _significant(up) else "contradicted" if _significant(down) else "inconclusive"
        return out | {"test": f"{name}, one-sided", "p": float(up.pvalue), "verdict": verdict}
    m = float(claim.margin or 0)
    tost = _quiet(both.confidence_interval, 1 - 2 * ALPHA)  # the interval TOST decides on: inside ±m or not
    out |= {"tost_low": float(tost.low) + shift, "tost_high": float(tost.high) + shift}
    above, below = _test(a, b, m, "greater"), _test(a, b, -m, "less")  # Δ > -m, Δ < +m
    outside_hi, outside_lo = _test(a, b, -m, "greater"), _test(a, b, m, "less")  # Δ > +m, Δ < -m
    p = max(float(above.pvalue), float(below.pvalue))
    if _significant(above) and _significant(below):
        verdict = "supported"
    elif _significant(outside_hi) or _significant(outside_lo):
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return out | {"test": f"TOST ({name}s) at ±{claim.margin}", "p": p, "verdict": verdict}


# --- bootstrap over images (n = 1) -----------------------------------------------------------------------


def _run_dir(term: Term, key: str, replicate: Hashable, runs_of: RunsOf) -> Path | None:
    runs = runs_of(term.model_copy(update={"row": key, "minus": None}))
    if replicate in runs.run_dirs:
        return runs.run_dirs[replicate]
    return next(iter(runs.run_dirs.values())) if len(runs.run_dirs) == 1 else None


def _resample_statistic(
    term: Term, replicate: Hashable, runs_of: RunsOf
) -> tuple[Callable[[np.ndarray], float], np.ndarray] | str:
    """The term's metric as a function of image weights, and its images; or why there is none."""
    loaded = []
    for key in term.rows():
        run_dir = _run_dir(term, key, replicate, runs_of)
        got = outcomes.load(run_dir) if run_dir is not None else None
        if got is None:
            return f"{term.suite}/{key} has no per-image outcomes"
        loaded.append(got)
    stat = statistic_for(loaded[0].kind, term.metric or "")
    if stat is None:
        return f"no per-image statistic for {term.metric}: the difference only"
    ids = loaded[0].image_ids
    if any(o.kind != loaded[0].kind or not np.array_equal(o.image_ids, ids) for o in loaded[1:]):
        return f"the runs of {term.suite} were not evaluated on the same images"
    if len(loaded) == 1:
        return (lambda w: stat(loaded[0], w)), ids
    return (lambda w: stat(loaded[0], w) - stat(loaded[1], w)), ids


def _bootstrap_data(
    sides: list[tuple[Callable[[np.ndarray], float], np.ndarray]], constant: float | None, paired: bool
) -> tuple[tuple[np.ndarray, ...], Callable[..., float]]:
    """The samples scipy resamples (image indices) and Δ as a function of the resampled indices."""
    sizes = [len(ids) for _, ids in sides]
    fa = sides[0][0]

    def w(idx: np.ndarray, n: int) -> np.ndarray:  # how often each image was drawn
        return np.bincount(idx, minlength=n).astype(np.float64)

    if constant is not None:
        return (np.arange(sizes[0]),), lambda i: fa(w(i, sizes[0])) - constant
    fb = sides[1][0]
    if paired:
        return (np.arange(sizes[0]),), lambda i: fa(w(i, sizes[0])) - fb(w(i, sizes[0]))
    return (np.arange(sizes[0]), np.arange(sizes[1])), lambda i, j: fa(w(i, sizes[0])) - fb(w(j, sizes[1]))


def _bootstrap_verdict(
    claim: Claim, a: Term, b: Term | float, replicates: list[Hashable], runs_of: RunsOf
) -> dict[str, Any]:
    terms = (a,) if isinstance(b, float) else (a, b)
    found = [_resample_statistic(t, r, runs_of) for t, r in zip(terms, replicates, strict=False)]
    why = next((s for s in found if isinstance(s, str)), None)
    if why is not None:
        return {"verdict": "Δ only", "test": "none", "note": why}
    sides = [s for s in found if not isinstance(s, str)]
    constant = b if isinstance(b, float) else None
    paired = constant is None and np.array_equal(sides[0][1], sides[1][1])
    data, statistic = _bootstrap_data(sides, constant, paired)
    common = {"vectorized": False, "method": "percentile", "confidence_level": LEVEL}
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    res = _quiet(stats.bootstrap, data, statistic, n_resamples=N_RESAMPLES, rng=rng, **common)

    def bound(alternative: str) -> Any:  # the same bootstrap distribution read one-sided, no new resampling
        again = {"n_resamples": 0, "bootstrap_result": res, "alternative": alternative}
        return _quiet(stats.bootstrap, data, statistic, **again, **common).confidence_interval

    low, high = float(bound("greater").low), float(bound("less").high)
    if claim.relation == "greater":
        verdict = "supported" if low > 0 else "contradicted" if high < 0 else "inconclusive"
    else:
        m = float(claim.margin or 0)
        inside, outside = -m < low and high < m, low > m or high < -m
        verdict = "supported" if inside else "contradicted" if outside else "inconclusive"
    test = EVAL_NOISE if constant is not None or paired else EVAL_NOISE.replace("paired", "independent")
    ci = res.confidence_interval
    out = {"verdict": verdict, "test": test, "ci_low": float(ci.low), "ci_high": float(ci.high)}
    if claim.relation == "equal":  # the two one-sided 95% bounds the decision read: a 90% interval
        out |= {"tost_low": low, "tost_high": high}
    return out


# --- the judge ---------------------------------------------------------------------------------------------


def judge(claim: Claim, runs_of: RunsOf, scope: str, published: Decimal | None = None) -> Verdict:
    """The verdict on ``claim`` from the runs ``runs_of`` finds (``scope``: the suite id, or a claim file's id)."""
    a_term, b_side = claim.qualified(scope)
    b_term = None if isinstance(b_side, Decimal) else b_side
    constant = float(b_side) if isinstance(b_side, Decimal) else None
    a = _term_runs(a_term, runs_of)
    b = _term_runs(b_term, runs_of) if b_term is not None else None
    n_b = b.n if b is not None else None
    base = {
        "claim": claim,
        "scope": scope,
        "n_a": a.n,
        "n_b": n_b,
        "published": published if claim.published is None else claim.published,
    }
    if a.n == 0 or (b is not None and b.n == 0):
        return Verdict(verdict="pending", note="no finished run" + (" of a row" if a.n or n_b else ""), **base)
    va = np.array(list(a.values.values()))
    vb = np.array(list(b.values.values())) if b is not None else None
    delta = float(np.mean(va) - (np.mean(vb) if vb is not None else constant))  # type: ignore[operator]
    base["delta"] = delta
    ns = [a.n] + ([b.n] if b is not None else [])
    if min(ns) >= 2:
        found = _t_verdict(claim, va, vb if vb is not None else constant)  # type: ignore[arg-type]
        return Verdict(**base, **found)
    if max(ns) == 1:
        replicates = [next(iter(a.values))] + ([next(iter(b.values))] if b is not None else [])
        other = b_term if b_term is not None else constant
        found = _bootstrap_verdict(claim, a_term, other, replicates, runs_of)  # type: ignore[arg-type]
        return Verdict(**base, **found)
    return Verdict(
        verdict="inconclusive", test="none", note="one term has a single run: Welch's test needs two per term", **base
    )
