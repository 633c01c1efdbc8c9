"""The claims part of the report: verdicts per suite, ``reports/claims.csv`` and the summary in README.

Each claim is judged by :func:`cabench.claims.judge` from the replicates that fill its rows' accuracy
cells (:mod:`cabench.replicates`: ``paper`` and ``eval`` runs, one per seed; ``smoke`` never counts). A
cross-suite claim (``suites/claims/*.yaml``) is judged when every suite it names is in the report.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from decimal import Decimal

import pandas as pd

from cabench.claims import ALPHA, LEVEL, VERDICTS, RowRuns, Verdict, judge
from cabench.data.base import fills_cells
from cabench.data.identity import not_paper_text
from cabench.recipe import suite_dataset
from cabench.replicates import replicates, row_runs
from cabench.store import RunRecord, Store
from cabench.suite import Claim, ClaimFile, Suite, Term, published_delta

__all__ = [
    "CLAIM_CSV_COLUMNS",
    "VERDICT_MARKS",
    "claims_csv",
    "claims_frame",
    "judge_claims",
    "render_claims_section",
    "render_claims_summary",
]

VERDICT_MARKS = {"supported": "✅", "contradicted": "❌", "inconclusive": "❔", "pending": "⏳", "Δ only": "➖"}
CLAIM_CSV_COLUMNS = [
    "scope",
    "claim",
    "relation",
    "a",
    "b",
    "margin",
    "published_delta",
    "delta",
    "ci_low",
    "ci_high",
    "tost_ci90_low",
    "tost_ci90_high",
    "test",
    "p",
    "n_a",
    "n_b",
    "verdict",
    "note",
    "source",
]


class _Runs:
    """Replicates per (suite, row, metric), read from the store once each."""

    def __init__(self, store: Store, datasets: dict[str, str | None], used: list[RunRecord] | None = None) -> None:
        self.store = store
        self.datasets = datasets  # suite id -> its recipe's dataset, for runs whose config does not name theirs
        self.seen: dict[tuple[str, str, str], RowRuns] = {}
        self.used = used
        self.left_out: dict[tuple[str, str, str], str] = {}  # why a term's runs do not count, where none does

    def __call__(self, term: Term) -> RowRuns:
        key = (term.suite or "", term.row, term.metric or "")
        if key not in self.seen:
            found = replicates(self.store, *key)
            admitted = [r for r in found if fills_cells(r.config, self.datasets.get(key[0]))]
            if found and not admitted:
                self.left_out[key] = f"{term.row}: {not_paper_text(found[-1].config)}"
            if self.used is not None:
                self.used += admitted
            self.seen[key] = row_runs(admitted, key[2])
        return self.seen[key]

    def why_pending(self, verdict: Verdict) -> str:
        """The runs a pending verdict left out because their data is not the data the suite is about."""
        terms = [t for t in verdict.claim.qualified(verdict.scope) if isinstance(t, Term)]
        keys = [(t.suite or "", r, t.metric or "") for t in terms for r in (t.row, t.minus) if r]
        reasons = [self.left_out[k] for k in keys if k in self.left_out]
        return "; ".join(dict.fromkeys(reasons))


def judge_claims(
    suites: Sequence[Suite], store: Store, files: Sequence[ClaimFile] = (), used: list[RunRecord] | None = None
) -> list[Verdict]:
    """Every claim of ``suites``, then every cross-suite claim whose suites are all in ``suites``.

    ``used``, if given, receives every run a verdict was judged from (the report commits their records)."""
    by_id = {s.id: s for s in suites}
    runs = _Runs(store, {s.id: suite_dataset(s) for s in suites}, used)
    out = []
    for suite in suites:
        for claim in suite.claims:
            out.append(judge(claim, runs, suite.id, published_delta(claim, by_id, suite.id)))
    for f in files:
        for claim in f.claims:
            if all(t.suite in by_id for t in claim.terms()):
                out.append(judge(claim, runs, f.id, published_delta(claim, by_id)))
    return [_with_reason(v, runs.why_pending(v)) if v.verdict == "pending" else v for v in out]


def _with_reason(verdict: Verdict, reason: str) -> Verdict:
    if not reason:
        return verdict
    return dataclasses.replace(verdict, note=f"runs on other data do not count ({reason})")


def _side(claim: Claim, term: Term | Decimal, scope: str) -> str:
    if isinstance(term, Decimal):
        return str(term)
    where = f"{term.suite}:" if term.suite and term.suite != scope else ""
    metric = f" [{term.metric}]" if term.metric and term.metric != claim.metric else ""
    return f"{where}{term.row}" + (f" − {term.minus}" if term.minus else "") + metric


def _relation_text(v: Verdict) -> str:
    c = v.claim
    a, b = c.qualified(v.scope)
    op = ">" if c.relation == "greater" else f"≈ (±{c.margin})"
    metric = f" ({c.metric})" if c.metric else ""
    return f"{_side(c, a, v.scope)} {op} {_side(c, b, v.scope)}{metric}"


def _num(x: float | Decimal | None, digits: int = 2, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{float(x):+.{digits}f}" if sign else f"{float(x):.{digits}f}"


def _p(p: float | None) -> str:
    if p is None or p != p:
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _n(v: Verdict) -> str:
    return f"{v.n_a}" if v.n_b is None else f"{v.n_a} / {v.n_b}"


TOST_LEVEL = 1 - 2 * ALPHA  # the two-sided level of the interval a TOST at alpha decides on (90%)


def _interval(v: Verdict) -> tuple[float | None, float | None, float]:
    """The interval shown beside Δ and its level: the 90% interval TOST decides on for ``≈`` claims, the 95% CI
    for the others."""
    if v.claim.relation == "equal":
        return v.tost_low, v.tost_high, TOST_LEVEL
    return v.ci_low, v.ci_high, LEVEL


def _delta_text(v: Verdict) -> str:
    if v.delta is None:
        return "–"
    text = _num(v.delta)
    low, high, level = _interval(v)
    if low is not None and high is not None:
        text += f" [{_num(low)}, {_num(high)}] {level:.0%}"
    return text


def render_claims_section(verdicts: Sequence[Verdict]) -> list[str]:
    """The Claims section of a suite page (markdown lines); empty when the suite states no claim."""
    if not verdicts:
        return []
    marks = " ".join(f"{m} {k}" for k, m in VERDICT_MARKS.items())
    lines = [
        "",
        "## Claims",
        "",
        "What the paper concludes from this table, tested on the runs (smoke runs never count). "
        f"Δ = a − b in points with an interval, its level beside it: for `>` claims the {LEVEL:.0%} CI; for `≈` "
        f"claims the {TOST_LEVEL:.0%} CI that the two one-sided tests decide on (supported exactly when it lies "
        "inside ±margin). n ≥ 2 runs per row: Welch's one-sided t-test (`>`) or two one-sided "
        "tests at the margin (`≈`), α = 0.05. One run per row: a paired bootstrap over validation images, "
        f"whose CI is evaluation noise only (it says nothing about training noise). {marks}.",
        "",
        "| # | Claim | Published Δ | Reproduced Δ [CI] level | Test | p | n | Verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, v in enumerate(verdicts, 1):
        mark = f"{VERDICT_MARKS[v.verdict]} {v.verdict}"
        lines.append(
            f"| {i} | `{v.claim.id}`: {_relation_text(v)} | {_num(v.published)} | {_delta_text(v)} "
            f"| {v.test or '–'} | {_p(v.p)} | {_n(v)} | {mark} |"
        )
    lines += ["", "**Sources**", ""]
    for i, v in enumerate(verdicts, 1):
        extra = " ".join(x for x in (v.claim.note, v.note) if x)
        lines.append(f"{i}. {v.claim.source}" + (f" *{extra}*" if extra else ""))
    return lines


def render_claims_summary(verdicts: Sequence[Verdict], scopes: Sequence[tuple[str, str]]) -> list[str]:
    """One screen: verdict counts per suite (and claim file) and in total; ``scopes`` is (id, link)."""
    head = " | ".join(f"{VERDICT_MARKS[k]} {k}" for k in VERDICTS)
    lines = [
        "",
        "## Claims",
        "",
        "The paper's claims, judged on the runs (details on each table's page and in `claims.csv`).",
        "",
        f"| Scope | Claims | {head} |",
        "|---|---|" + "---|" * len(VERDICTS),
    ]
    total = dict.fromkeys(VERDICTS, 0)
    for scope, link in scopes:
        own = [v for v in verdicts if v.scope == scope]
        if not own:
            continue
        counts = {k: sum(v.verdict == k for v in own) for k in VERDICTS}
        for k, n in counts.items():
            total[k] += n
        lines.append(f"| {link} | {len(own)} | " + " | ".join(str(counts[k]) for k in VERDICTS) + " |")
    lines.append(f"| **all** | {len(verdicts)} | " + " | ".join(f"**{total[k]}**" for k in VERDICTS) + " |")
    return lines


def claims_frame(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per claim (the schema of ``claims.csv`` and of the claims figure)."""
    rows = []
    for v in verdicts:
        a, b = v.claim.qualified(v.scope)
        rows.append(
            {
                "scope": v.scope,
                "claim": v.claim.id,
                "relation": v.claim.relation,
                "a": _side(v.claim, a, ""),
                "b": _side(v.claim, b, ""),
                "margin": "" if v.claim.margin is None else str(v.claim.margin),
                "published_delta": "" if v.published is None else str(v.published),
                "delta": v.delta,
                "ci_low": v.ci_low,
                "ci_high": v.ci_high,
                "tost_ci90_low": v.tost_low,
                "tost_ci90_high": v.tost_high,
                "test": v.test,
                "p": v.p,
                "n_a": v.n_a,
                "n_b": "" if v.n_b is None else v.n_b,
                "verdict": v.verdict,
                "note": " ".join(x for x in (v.claim.note, v.note) if x),
                "source": " ".join(v.claim.source.split()),
            }
        )
    return pd.DataFrame(rows, columns=CLAIM_CSV_COLUMNS)


def claims_csv(verdicts: Sequence[Verdict]) -> str:
    buf = io.StringIO()
    frame = claims_frame(verdicts)
    for col in ("delta", "ci_low", "ci_high", "tost_ci90_low", "tost_ci90_high", "p"):
        frame[col] = [("" if x is None or x != x else f"{x:.6g}") for x in frame[col]]
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()
