"""Latency as a measurement: per-round ratios, a bootstrap 95% CI, and a status from the CI (not a coin toss)."""

from __future__ import annotations

import random

import pytest

from cabench.measure.ratio import MIN_ROUNDS, ratio_estimate, ratio_status


def _rounds(n: int, ratio: float, noise: float, seed: int = 0) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    base, row = [], []
    for _ in range(n):
        load = rng.uniform(1.0, 1.6)  # a slow phase of the machine hits both models of a round alike
        base.append(10.0 * load * rng.uniform(1 - noise, 1 + noise))
        row.append(10.0 * ratio * load * rng.uniform(1 - noise, 1 + noise))
    return row, base


def test_the_interval_covers_the_true_ratio_and_narrows_with_rounds() -> None:
    row, base = _rounds(MIN_ROUNDS, 1.10, 0.03)
    est = ratio_estimate(row, base)
    assert est.ci_low <= 1.10 <= est.ci_high and est.ci_low < est.ratio < est.ci_high
    assert est.rounds == MIN_ROUNDS and est.spread > 0
    few = ratio_estimate(*_rounds(5, 1.10, 0.03))
    many = ratio_estimate(*_rounds(200, 1.10, 0.03))
    assert (many.ci_high - many.ci_low) < (few.ci_high - few.ci_low)


def test_same_timings_give_the_same_interval() -> None:
    row, base = _rounds(40, 1.2, 0.05)
    assert ratio_estimate(row, base) == ratio_estimate(row, base)


def test_status_comes_from_the_interval() -> None:
    assert ratio_status(1.05, 1.10, 1.0, 1.2) == "match"
    assert ratio_status(1.25, 1.30, 1.0, 1.2) == "drift"
    assert ratio_status(1.15, 1.25, 1.0, 1.2) == "inconclusive"  # straddles the upper edge
    assert ratio_status(0.95, 1.05, 1.0, 1.2) == "inconclusive"


def test_rounds_must_pair_up() -> None:
    with pytest.raises(ValueError, match="not the same rounds"):
        ratio_estimate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2 rounds"):
        ratio_estimate([1.0], [1.0])
