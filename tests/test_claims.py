"""Claims: every statistic is scipy's, checked here against scipy called directly on hand-made samples."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cabench import outcomes
from cabench.claims import ALPHA, N_RESAMPLES, RowRuns, judge, summarize
from cabench.suite import Claim, Term


def claim(relation: str = "greater", margin: float | None = None, b: object = "b", **kw: object) -> Claim:
    data = {"id": "c", "source": "test", "relation": relation, "a": "a", "b": b, "metric": "top1", **kw}
    if margin is not None:
        data["margin"] = margin
    return Claim.model_validate(data)


def runs_of(table: dict[str, RowRuns]):  # type: ignore[no-untyped-def]
    return lambda term: table.get(term.row, RowRuns())


def seeds(*values: float) -> RowRuns:
    return RowRuns(dict(enumerate(values)))


# --- cells -------------------------------------------------------------------------------------------------


def test_summary_is_the_t_interval_of_the_mean() -> None:
    x = [74.1, 74.4, 73.9, 74.6]
    s = summarize(x)
    lo, hi = stats.t.interval(0.95, df=3, loc=np.mean(x), scale=stats.sem(x))
    assert s.n == 4 and s.mean == pytest.approx(np.mean(x)) and s.sd == pytest.approx(np.std(x, ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi))


def test_summary_of_one_run_has_no_spread_and_of_equal_runs_a_point() -> None:
    one = summarize([72.3])
    assert (one.n, one.mean, one.sd, one.ci_low, one.ci_high) == (1, 72.3, None, None, None)
    same = summarize([73.5, 73.5, 73.5])
    assert (same.sd, same.ci_low, same.ci_high) == (0.0, 73.5, 73.5)
    assert summarize([]).mean is None


# --- n >= 2: Welch, TOST, one-sample ---------------------------------------------------------------------------


def test_greater_is_welchs_one_sided_test_with_unequal_n() -> None:
    a, b = [74.3, 74.5, 74.2], [73.5, 73.6]
    v = judge(claim(), runs_of({"a": seeds(*a), "b": seeds(*b)}), "t")
    direct = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert v.verdict == "supported" and direct.pvalue < ALPHA
    assert v.p == pytest.approx(direct.pvalue)
    assert (v.ci_low, v.ci_high) == pytest.approx((ci.low, ci.high))
    assert v.delta == pytest.approx(np.mean(a) - np.mean(b))
    assert (v.n_a, v.n_b) == (3, 2)


def test_a_claim_the_runs_reverse_is_contradicted() -> None:
    a, b = [73.0, 73.1, 72.9], [73.8, 73.9, 74.0]
    v = judge(claim(), runs_of({"a": seeds(*a), "b": seeds(*b)}), "t")
    assert stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue < ALPHA
    assert v.verdict == "contradicted"
    assert v.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


def test_overlapping_runs_are_inconclusive() -> None:
    a, b = [73.6, 73.2, 74.0], [73.5, 73.9, 73.1]
    v = judge(claim(), runs_of({"a": seeds(*a), "b": seeds(*b)}), "t")
    assert v.verdict == "inconclusive"
    assert v.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


def test_equal_is_tost_at_the_margin() -> None:
    a, b, m = [73.50, 73.55, 73.45, 73.52], [73.48, 73.51, 73.47, 73.53], 0.3
    v = judge(claim("equal", m), runs_of({"a": seeds(*a), "b": seeds(*b)}), "t")
    lower = stats.ttest_ind(np.add(a, m), b, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(np.subtract(a, m), b, equal_var=False, alternative="less").pvalue
    assert max(lower, upper) < ALPHA
    assert v.verdict == "supported" and v.p == pytest.approx(max(lower, upper))


def test_tost_decides_on_the_90_percent_interval_which_the_verdict_carries() -> None:
    b, m = [73.5, 73.6, 73.4], 0.3
    for a in ([73.6, 73.7, 73.5], [73.6, 73.75, 73.5]):  # the 90% CI inside ±m, then reaching past +m
        v = judge(claim("equal", m), runs_of({"a": seeds(*a), "b": seeds(*b)}), "t")
        test = stats.ttest_ind(a, b, equal_var=False)
        ci90, ci95 = test.confidence_interval(0.90), test.confidence_interval(0.95)
        assert (v.tost_low, v.tost_high) == pytest.approx((ci90.low, ci90.high))
        assert (v.ci_low, v.ci_high) == pytest.approx((ci95.low, ci95.high))  # the 95% CI stays as it was
        assert ci95.high > m  # the 95% CI alone would never call these equal
        assert (v.verdict == "supported") == (-m < v.tost_low and v.tost_high < m)
    greater = judge(claim(), runs_of({"a": seeds(73.6, 73.7, 73.5), "b": seeds(*b)}), "t")
    assert greater.tost_low is None and greater.tost_high is None


def test_equal_outside_the_margin_is_contradicted() -> None:
    a, b, m = [74.3, 74.4, 74.2], [73.5, 73.4, 73.6], 0.3
    v = judge(claim("equal", m), runs_of({"a": seeds(*a), "b": seeds(*b)}), "t")
    assert stats.ttest_ind(np.subtract(a, m), b, equal_var=False, alternative="greater").pvalue < ALPHA
    assert v.verdict == "contradicted"


def test_zero_variance_is_scipys_answer() -> None:
    # Both arms constant and different: scipy's t is infinite, p = 0; identical: undefined -> inconclusive.
    a, b = [74.0, 74.0], [73.0, 73.0]
    v = judge(claim(), runs_of({"a": seeds(*a), "b": seeds(*b)}), "t")
    with np.errstate(all="ignore"):
        direct = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert v.p == direct.pvalue == 0.0 and v.verdict == "supported"
    same = judge(claim(), runs_of({"a": seeds(73.0, 73.0), "b": seeds(73.0, 73.0)}), "t")
    assert same.verdict == "inconclusive" and np.isnan(same.p)


def test_against_a_constant_is_the_one_sample_test() -> None:
    a = [72.6, 72.9, 72.7]
    v = judge(claim(b=72.3), runs_of({"a": seeds(*a)}), "t")
    direct = stats.ttest_1samp(a, popmean=72.3, alternative="greater")
    ci = stats.ttest_1samp(a, popmean=72.3).confidence_interval(0.95)
    assert v.p == pytest.approx(direct.pvalue) and v.verdict == "supported" and v.n_b is None
    assert (v.ci_low, v.ci_high) == pytest.approx((ci.low - 72.3, ci.high - 72.3))


def test_a_gain_pairs_the_rows_runs_by_seed() -> None:
    c = Claim.model_validate(
        {
            "id": "g",
            "source": "t",
            "relation": "greater",
            "a": {"row": "ca", "minus": "se", "suite": "dense", "metric": "miou"},
            "b": {"row": "ca", "minus": "se", "suite": "imnet", "metric": "top1"},
        }
    )
    table = {
        ("dense", "ca"): RowRuns({0: 73.3, 1: 73.0, 2: 73.6}),
        ("dense", "se"): RowRuns({0: 71.7, 1: 71.8, 2: 71.5, 3: 71.0}),  # seed 3 has no partner: left out
        ("imnet", "ca"): RowRuns({0: 74.3, 1: 74.1}),
        ("imnet", "se"): RowRuns({0: 73.5, 1: 73.6}),
    }
    v = judge(c, lambda t: table.get((t.suite, t.row), RowRuns()), "cross")
    gains_a, gains_b = [1.6, 1.2, 2.1], [0.8, 0.5]
    direct = stats.ttest_ind(gains_a, gains_b, equal_var=False, alternative="greater")
    assert (v.n_a, v.n_b) == (3, 2) and v.p == pytest.approx(direct.pvalue)


# --- pending, smoke, mixed n -----------------------------------------------------------------------------------


def test_missing_runs_are_pending_and_a_lone_run_against_several_is_inconclusive() -> None:
    assert judge(claim(), runs_of({"a": seeds(74.0, 74.2)}), "t").verdict == "pending"
    assert judge(claim(), runs_of({}), "t").verdict == "pending"
    v = judge(claim(), runs_of({"a": seeds(74.0), "b": seeds(73.0, 73.2)}), "t")
    assert v.verdict == "inconclusive" and "single run" in v.note


# --- n = 1: bootstrap over images -----------------------------------------------------------------------------


def _classification_run(tmp: Path, name: str, correct: np.ndarray) -> RowRuns:
    d = tmp / name
    d.mkdir()
    outcomes.Outcomes("classify", np.arange(len(correct)), {"correct1": correct, "correct5": correct}).save(d)
    return RowRuns({0: 100.0 * correct.mean()}, {0: d})


def test_one_run_per_row_is_a_paired_bootstrap_over_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ca = rng.random(400) < 0.76
    se = np.where(rng.random(400) < 0.9, ca, ~ca) & (rng.random(400) < 0.95)
    table = {"a": _classification_run(tmp_path, "a", ca), "b": _classification_run(tmp_path, "b", se)}
    v = judge(claim(), runs_of(table), "t")

    def diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return 100.0 * (np.mean(x, axis=axis) - np.mean(y, axis=axis))

    direct = stats.bootstrap(
        (ca.astype(float), se.astype(float)),
        diff,
        paired=True,
        n_resamples=N_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    assert v.test.endswith("(evaluation noise only)")
    assert v.delta == pytest.approx(diff(ca, se))
    # Same statistic, same seed: scipy resamples paired data as indices, so the intervals are identical.
    assert v.ci_low == pytest.approx(direct.confidence_interval.low)
    assert v.ci_high == pytest.approx(direct.confidence_interval.high)
    expected = "supported" if direct.confidence_interval.low > 0 else "inconclusive"
    assert v.verdict == expected


def test_bootstrap_contradicts_a_clearly_reversed_claim(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    worse = rng.random(2000) < 0.6
    better = worse | (rng.random(2000) < 0.3)
    table = {"a": _classification_run(tmp_path, "a", worse), "b": _classification_run(tmp_path, "b", better)}
    v = judge(claim(), runs_of(table), "t")
    assert v.verdict == "contradicted" and v.ci_high < 0


def test_an_equal_claim_on_one_run_per_row_carries_the_bootstraps_one_sided_bounds(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = rng.random(2000) < 0.7
    b = np.where(rng.random(2000) < 0.97, a, ~a)  # nearly the same images right
    table = {"a": _classification_run(tmp_path, "a", a), "b": _classification_run(tmp_path, "b", b)}
    v = judge(claim("equal", 2.2), runs_of(table), "t")
    assert v.ci_low < v.tost_low < v.delta < v.tost_high < v.ci_high  # 90% inside the 95% percentile interval
    assert v.verdict == "supported" and v.tost_low > -2.2 and v.tost_high < 2.2 < v.ci_high


def test_n1_without_outcomes_or_statistic_reports_the_difference_only(tmp_path: Path) -> None:
    table = {"a": RowRuns({0: 24.5}, {0: tmp_path}), "b": RowRuns({0: 23.7}, {0: tmp_path})}
    v = judge(claim(metric="ap"), runs_of(table), "t")
    assert v.verdict == "Δ only" and v.delta == pytest.approx(0.8) and v.p is None


def test_published_delta_is_carried() -> None:
    v = judge(claim(published=Decimal("0.8")), runs_of({}), "t")
    assert v.published == Decimal("0.8") and v.verdict == "pending"


def test_term_rows() -> None:
    assert Term(row="a", minus="b").rows() == ("a", "b")
