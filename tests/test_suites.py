"""The suites transcribe the paper's tables; loading them is strict and precise."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from cabench.suite import known_suites, load_suite

ROWS_PER_TABLE = {
    "table1": 5,
    "table2": 12,
    "table3": 9,
    "table4": 7,
    "table5": 9,
    "table6": 8,
    "table7": 4,
    "table8": 8,
    "table9": 4,
}


def test_there_is_one_suite_per_paper_table() -> None:
    paper_tables = [s for s in known_suites() if re.fullmatch(r"table\d+", s)]  # beside them: probe, budget, users'
    assert paper_tables == list(ROWS_PER_TABLE)


@pytest.mark.parametrize("suite_id", list(ROWS_PER_TABLE))
def test_every_suite_loads_with_every_row_of_its_table(suite_id: str) -> None:
    suite = load_suite(known_suites()[suite_id])
    assert suite.id == suite_id
    assert len(suite.rows) == ROWS_PER_TABLE[suite_id]
    for row in suite.rows:
        assert row.cited or row.model is not None
        assert row.published, f"{suite_id}/{row.key} has no published values"


def test_published_numbers_keep_their_printed_precision() -> None:
    t2 = load_suite(known_suites()["table2"])
    assert str(t2.row("mbv2-0.5").published["params"]) == "2.0"
    assert t2.tolerance("params", Decimal("3.89")) == Decimal("0.005")
    assert t2.tolerance("params", Decimal("2.0")) == Decimal("0.05")
    assert t2.tolerance("madds", Decimal("300")) == 5  # the table prints M-Adds to tens of millions


def test_table1_latency_is_the_printed_range() -> None:
    t1 = load_suite(known_suites()["table1"])
    assert t1.row("baseline").published["latency"] == (Decimal(14), Decimal(16))
    assert t1.row("ca").published["latency"] == (Decimal(17), Decimal(19))


def test_cited_rows_are_the_ones_quoting_other_papers() -> None:
    t5 = load_suite(known_suites()["table5"])
    assert [r.key for r in t5.rows if not r.cited] == ["efficientnet-b0-se", "efficientnet-b0-ca"]
    t6 = load_suite(known_suites()["table6"])
    assert [i + 1 for i, r in enumerate(t6.rows) if r.cited] == [1, 3, 4, 5]


def test_table4_restores_both_reduction_groups() -> None:
    t4 = load_suite(known_suites()["table4"])
    assert [(r.model.attention, r.model.reduction) for r in t4.rows if r.model] == [
        ("none", None),
        ("se", 24),
        ("cbam", 24),
        ("ca", 32),
        ("se", 12),
        ("cbam", 12),
        ("ca", 16),
    ]
    assert [str(r.published["top1"]) for r in t4.rows] == ["72.3", "73.5", "73.6", "74.3", "74.1", "74.1", "74.7"]


def test_ca_claims_are_in_the_transcription() -> None:
    """The paper's headline gains, read back from the suites: +2.0 top-1, +2.2 AP, +2.5 mIoU (VOC), +2.6 (CS)."""
    t2 = load_suite(known_suites()["table2"])
    assert t2.row("mbv2-1.0-ca").published["top1"] - t2.row("mbv2-1.0").published["top1"] == Decimal("2.0")
    t6 = load_suite(known_suites()["table6"])
    assert t6.row("ssdlite-mbv2-ca").published["ap"] - t6.row("ssdlite-mbv2").published["ap"] == Decimal("2.2")
    t8 = load_suite(known_suites()["table8"])
    assert t8.row("mbv2-os16-ca").published["miou"] - t8.row("mbv2-os16").published["miou"] == Decimal("2.48")
    t9 = load_suite(known_suites()["table9"])
    assert t9.row("mbv2-os8-ca").published["miou"] - t9.row("mbv2-os8").published["miou"] == Decimal("2.6")
