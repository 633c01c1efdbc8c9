"""A latency ratio as a measurement: median over interleaved rounds, with a bootstrap 95% confidence interval.

Rows are timed interleaved (:func:`cabench.measure.bench.time_interleaved`): in round ``k`` every model runs once,
so the machine's slow and fast phases hit a row and its baseline alike. The ratio of round ``k`` is
``row_k / baseline_k``; the reported ratio is the median of those per-round ratios, and its 95% confidence interval
is a bootstrap over rounds (``scipy.stats.bootstrap``, percentile method, 2,000 resamples, a fixed seed so the same
timings give the same interval).

The status against a published range ``[lo, hi]`` comes from the interval, not from the point: ``match`` when the
whole interval lies inside, ``drift`` when it lies wholly outside, ``inconclusive`` when it straddles an edge (more
rounds or a quieter machine would decide). At least :data:`MIN_ROUNDS` rounds are the default of the latency
profile; fewer give a wide interval, which then reads as inconclusive rather than as a coin toss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["MIN_ROUNDS", "RatioEstimate", "ratio_estimate", "ratio_status"]

MIN_ROUNDS = 30
CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float  # median of the per-round ratios
    ci_low: float
    ci_high: float
    rounds: int
    spread: float  # (p90 - p10) / median of the per-round ratios: how noisy the rounds were

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def ratio_estimate(row_ms: Sequence[float], base_ms: Sequence[float], seed: int = 0) -> RatioEstimate:
    """Median per-round ratio ``row / base`` and its bootstrap 95% CI; both sequences are in round order."""
    import numpy as np
    from scipy.stats import bootstrap

    if len(row_ms) != len(base_ms):
        raise ValueError(f"{len(row_ms)} row timings but {len(base_ms)} baseline timings: not the same rounds")
    if len(row_ms) < 2:
        raise ValueError("a confidence interval needs at least 2 rounds")
    ratios = np.asarray(row_ms, dtype=float) / np.asarray(base_ms, dtype=float)
    median = float(np.median(ratios))
    if np.ptp(ratios) == 0:
        low = high = median  # every round agrees: the bootstrap distribution is a point
    else:
        res = bootstrap(
            (ratios,),
            np.median,
            confidence_level=CONFIDENCE,
            n_resamples=RESAMPLES,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    p10, p90 = (float(q) for q in np.quantile(ratios, [0.1, 0.9]))
    return RatioEstimate(median, low, high, len(ratios), (p90 - p10) / median if median else float("nan"))


def ratio_status(low: float, high: float, lo: float, hi: float) -> str:
    """``match`` (CI inside ``[lo, hi]``), ``drift`` (CI wholly outside) or ``inconclusive`` (CI straddles an edge)."""
    if lo <= low and high <= hi:
        return "match"
    if high < lo or low > hi:
        return "drift"
    return "inconclusive"
