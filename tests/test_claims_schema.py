"""Claims are data: each suite's claims load, cite their source, and bad claims are one-line errors (exit 2)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cabench.cli import app
from cabench.suite import (
    SUITES_DIR,
    SuiteError,
    known_claim_files,
    known_suites,
    load_claim_file,
    load_suite,
    published_delta,
)

CLAIMS_PER_SUITE = {
    "table1": 5,
    "table2": 12,
    "table3": 3,
    "table4": 5,
    "table5": 1,
    "table6": 3,
    "table7": 5,
    "table8": 10,
    "table9": 3,
}


@pytest.mark.parametrize("suite_id", list(CLAIMS_PER_SUITE))
def test_every_suite_states_its_claims_with_their_source(suite_id: str) -> None:
    suite = load_suite(known_suites()[suite_id])
    assert len(suite.claims) == CLAIMS_PER_SUITE[suite_id]
    for c in suite.claims:
        assert c.source and ('"' in c.source), f"{suite_id}/{c.id} quotes no sentence"
        assert c.published is not None
        assert published_delta(c, {suite.id: suite}, suite.id) == c.published


def test_the_issue_claims_are_there() -> None:
    ids = {s: {c.id for c in load_suite(p).claims} for s, p in known_suites().items() if s in CLAIMS_PER_SUITE}
    assert {"x-equals-se", "y-equals-se", "ca-beats-se", "ca-beats-x", "ca-beats-y"} <= ids["table1"]
    for w in ("1.0", "0.75", "0.5"):
        assert {f"se-beats-baseline-w{w}", f"ca-beats-se-w{w}", f"ca-beats-cbam-w{w}"} <= ids["table2"]
        assert f"ca-beats-se-w{w}" in ids["table3"]
    assert {"ca-r16-beats-se-r12", "ca-r16-beats-cbam-r12", "ca-r16-beats-ca-r32", "se-r12-beats-se-r24"} <= ids[
        "table4"
    ]
    assert ids["table5"] == {"ca-beats-se"}
    for t in ("table6", "table7", "table9"):
        assert {"ca-beats-se", "ca-beats-cbam", "ca-beats-baseline"} <= ids[t]
    for os_ in ("16", "8"):
        assert {f"ca-beats-se-os{os_}", f"ca-beats-cbam-os{os_}", f"ca-beats-baseline-os{os_}"} <= ids["table8"]


def test_the_cross_suite_claims_compare_gains_across_tables() -> None:
    cross = load_claim_file(known_claim_files()["cross"])
    assert len(cross.claims) == 5
    first = cross.claims[0]
    assert (first.a.suite, first.a.metric, first.b.suite, first.b.metric) == ("table8", "miou", "table2", "top1")
    assert first.published == Decimal("0.83")  # (73.32 - 71.69) - (74.3 - 73.5)


def _suite_with(tmp_path: Path, claim: dict, suite: str = "table1") -> Path:
    data = yaml.safe_load((SUITES_DIR / f"{suite}.yaml").read_text())
    data["claims"] = [claim]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {"id": "ca-beats-se", "metric": "top1", "relation": "greater", "a": "ca", "b": "se", "source": "s"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"a": "cx"}, "claim 1 (ca-beats-se): a.row: unknown row id 'cx' in table1"),
        ({"b": {"row": "se", "minus": "nope"}}, "claim 1 (ca-beats-se): b.minus: unknown row id 'nope'"),
        ({"metric": "top2"}, "claim 1 (ca-beats-se): metric: unknown metric 'top2' for table1"),
        ({"metric": "params"}, "claim 1 (ca-beats-se): metric: unknown metric 'params'"),
        ({"relation": "better"}, "claim 1 (ca-beats-se): relation: Input should be 'greater' or 'equal'"),
        ({"relation": "equal"}, "claim 1 (ca-beats-se): margin: missing field (an 'equal' claim needs a margin)"),
        ({"margin": 0.3}, "claim 1 (ca-beats-se): margin: a margin applies to 'equal' claims only"),
        ({"published": 0.5}, "claim 1 (ca-beats-se): published: 0.5 but the rows' published values give 0.8"),
        ({"source": None}, "claim 1 (ca-beats-se): source:"),
        ({"colour": "red"}, "claim 1 (ca-beats-se): colour: unknown field"),
        ({"a": {"row": "ca", "suite": "table2"}}, "claim 1 (ca-beats-se): a.suite: a suite's claims compare its own"),
        # issue 22's outside cases: numbers out of any range, ids that are not names, a row against itself
        ({"relation": "equal", "margin": "1e400"}, "margin: 1E+400 is not a finite number within ±1,000,000"),
        ({"published": 1e30}, "published: 1.0E+30 is not a finite number within ±1,000,000"),
        ({"relation": "equal", "margin": "1e-400"}, "margin: 1E-400 is too small to tell from rounding"),
        ({"b": 1e-12}, "b: 1.0E-12 is too small to tell from rounding"),
        ({"id": "../../x"}, "claim id '../../x' is not a name"),
        ({"id": ""}, "claim id '' is not a name"),
        ({"b": "ca"}, "a and b are the same term"),
        ({"b": {"row": "se", "minus": "se"}}, "a gain of se over itself is always 0"),
    ],
)
def test_a_bad_claim_is_one_line_naming_suite_claim_and_field(tmp_path: Path, change: dict, expected: str) -> None:
    claim = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = _suite_with(tmp_path, claim)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and expected in msg and "\n" not in msg


def test_an_equal_claim_with_its_margin_loads(tmp_path: Path) -> None:
    path = _suite_with(tmp_path, {**GOOD, "relation": "equal", "margin": 0.3, "b": "x", "a": "y"})
    assert load_suite(path).claims[0].margin == Decimal("0.3")


def test_a_claim_on_a_cited_row_is_refused(tmp_path: Path) -> None:
    claim = {**GOOD, "a": "efficientnet-b0-ca", "b": "mnasnet-a3"}
    with pytest.raises(SuiteError, match=r"b.row: row 'mnasnet-a3' of table5 is cited"):
        load_suite(_suite_with(tmp_path, claim, "table5"))


def test_a_cross_claim_must_name_known_suites(tmp_path: Path) -> None:
    path = tmp_path / "cross.yaml"
    term = {"suite": "table2", "metric": "top1", "row": "mbv2-1.0-ca", "minus": "mbv2-1.0-se"}
    bad = {"id": "x", "source": "s", "relation": "greater", "a": {**term, "suite": "table99"}, "b": term}
    path.write_text(yaml.safe_dump({"id": "cross", "title": "t", "claims": [bad]}))
    with pytest.raises(SuiteError, match=r"claim 1 \(x\): a.suite: unknown suite 'table99'"):
        load_claim_file(path)
    bad["a"] = {"row": "mbv2-1.0-ca"}
    path.write_text(yaml.safe_dump({"id": "cross", "title": "t", "claims": [bad]}))
    with pytest.raises(SuiteError, match=r"claim 1 \(x\): a.suite: missing field"):
        load_claim_file(path)


def test_cli_refuses_a_bad_claim_with_exit_2(tmp_path: Path) -> None:
    path = _suite_with(tmp_path, {**GOOD, "relation": "equal"})
    result = CliRunner().invoke(app, ["show", str(path)])
    assert result.exit_code == 2
    out = result.output.strip()
    assert "claim 1 (ca-beats-se)" in out and "margin" in out and len(out.splitlines()) == 1
