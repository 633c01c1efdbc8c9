"""The ``latency`` profile: every row of a suite timed at batch 1, eval mode, rounds interleaved.

It records milliseconds and the ratio to the suite's baseline row (the paper's milliseconds are a
Pixel 4's, so only ratios compare); the baseline is always measured in the same run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cabench.columns import ColumnInfo, register_column
from cabench.measure.ratio import MIN_ROUNDS
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
        from cabench.measure.latency import measure_latency
        from cabench.measure.ratio import ratio_estimate
        from cabench.models.blocks import attention_provenance
        from cabench.models.registry import arch_info, build_model

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
        results = measure_latency(models, input_size=size, threads=threads, warmup=warmup, rounds=rounds)
        base = results[baseline.key] if baseline is not None else None
        records = []
        for row in selected:
            assert row.model is not None
            r = results[row.key]
            metrics: dict[str, Any] = {LATENCY.key: r.median_ms, **{f"latency_{k}": v for k, v in r.as_dict().items()}}
            if base is not None and rounds >= 2:
                est = ratio_estimate(r.samples_ms, base.samples_ms)
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


register_profile(LatencyProfile())
