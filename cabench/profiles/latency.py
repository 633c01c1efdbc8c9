"""The ``latency`` profile: every row of a suite timed at batch 1, eval mode, rounds interleaved.

It records milliseconds and the ratio to the suite's baseline row (the paper's milliseconds are a
Pixel 4's, so only ratios compare); the baseline is always measured in the same run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cabench.columns import ColumnInfo, register_column
from cabench.measure.ratio import MIN_ROUNDS, ratio_estimate
from cabench.models.blocks import attention_provenance
from cabench.models.registry import arch_info, build_model
from cabench.profiles.base import Option, Outcome, Profile, Request, register_profile

if TYPE_CHECKING:
    from cabench.store import RunRecord
    from cabench.suite import Suite

__all__ = ["LatencyProfile"]

LATENCY = register_column(ColumnInfo("latency", "Latency", "ms", "latency", "batch-1 latency, median of rounds"))


class LatencyProfile(Profile):
    name = "latency"
    description = "batch-1 CPU latency of every row, interleaved; ratio to the baseline row"
    fills = frozenset({"latency"})
    options = (
        Option("threads", int, 1, "latency: CPU threads (pinned and recorded).", 1, 1024),
        Option(
            "rounds",
            int,
            40,
            f"latency: timed rounds, rows interleaved; the ratio's 95% CI is a bootstrap over them (at least "
            f"{MIN_ROUNDS} by default; fewer give a wide interval, read as inconclusive).",
            1,
            100_000,
        ),
    )

    def run(self, request: Request) -> Outcome:
        suites = request.suites
        if request.all_suites:
            suites = [s for s in suites if LATENCY.key in s.columns]
        records: list[RunRecord] = []
        for suite in suites:
            records += self._suite(suite, request)
        return Outcome(records, columns=(LATENCY.key, "latency_ratio"))

    def _suite(self, suite: Suite, request: Request) -> list[RunRecord]:
        if LATENCY.key not in suite.columns:
            raise ValueError(f"{suite.id}: the suite has no latency column")
        threads, rounds = request.options["threads"], request.options["rounds"]
        if rounds < 2:
            raise ValueError(f"--rounds {rounds}: a latency ratio and its confidence interval need at least 2 rounds")
        warmup = min(10, rounds)
        selected = request.selected(suite)
        baseline = next((r for r in suite.rows if r.key == suite.baseline), None)
        if baseline is not None and baseline not in selected:
            selected.insert(0, baseline)  # the ratio needs the baseline measured in the same run
        models = {r.key: build_model(r.model.spec()).eval() for r in selected if r.model is not None}
        size = arch_info(selected[0].model.spec().arch).input_size if selected and selected[0].model else (224, 224)
        samples_ms = _time_batch_one(models, size, threads, warmup, rounds)
        records = []
        for row in selected:
            assert row.model is not None
            metrics = _latency_metrics(samples_ms[row.key], threads)
            if baseline is not None:
                est = ratio_estimate(samples_ms[row.key], samples_ms[baseline.key])
                metrics.update({f"latency_ratio{'' if k == 'ratio' else '_' + k}": v for k, v in est.as_dict().items()})
            config = {
                "suite": suite.id,
                "row": row.key,
                "profile": self.name,
                "model": row.model.spec().as_dict(),
                "attention_block": attention_provenance(row.model.spec().attention),
                "input_size": list(size),
                "batch_size": 1,
                "threads": threads,
                "rounds": rounds,
                "warmup": warmup,
                "baseline": suite.baseline,
                "interleaved_with": sorted(models),
            }
            records.append(request.store.write_run(suite.id, row.key, self.name, config, metrics))
        return records


def _time_batch_one(
    models: dict[str, Any], size: tuple[int, int], threads: int, warmup: int, rounds: int
) -> dict[str, list[float]]:
    """Milliseconds per ``model(x)`` call in round order, batch 1, eval mode, ``inference_mode``, through the
    bench's timer (:func:`cabench.measure.bench.time_interleaved`)."""
    import functools

    import torch

    from cabench.measure.bench import pinned_threads, time_interleaved

    x = torch.randn(1, 3, *size)
    with pinned_threads(threads), torch.inference_mode():
        steps = {name: functools.partial(model, x) for name, model in models.items()}
        seconds = time_interleaved(steps, rounds=rounds, warmup=warmup)
    return {name: [1e3 * s for s in values] for name, values in seconds.items()}


def _latency_metrics(ms: list[float], threads: int) -> dict[str, Any]:
    """The latency cell and its spread, as the run record stores them."""
    import statistics

    from cabench.measure.bench import quantile

    median = statistics.median(ms)
    return {
        LATENCY.key: median,
        "latency_median_ms": median,
        "latency_p10_ms": quantile(ms, 0.1),
        "latency_p90_ms": quantile(ms, 0.9),
        "latency_rounds": len(ms),
        "latency_threads": threads,
    }


register_profile(LatencyProfile())
