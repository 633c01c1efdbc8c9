"""No silent typo: a name that matches nothing, or more than one thing, is one line naming it and the choices,
exit 2, before any work or directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from cabench.suite import SuiteError, check_row_selection, find_suite, load_suite


def test_a_rows_name_shared_by_two_rows_is_ambiguous() -> None:
    t4 = load_suite(find_suite("table4"))
    with pytest.raises(SuiteError, match=r"--rows '\+ SE' matches 2 rows of table4 \(se-r24, se-r12\): name one by id"):
        check_row_selection([t4], {"+ SE"})
    check_row_selection([t4], {"se-r24", "ca-r32"})  # ids are unique


def test_a_rows_name_that_matches_nothing_lists_the_rows() -> None:
    t4 = load_suite(find_suite("table4"))
    expected = r"--rows 'se-r42': no such row in table4 \(did you mean 'se-r\d+'\?\); rows: baseline, se-r24"
    with pytest.raises(SuiteError, match=expected):
        check_row_selection([t4], {"se-r42"})


def test_every_unknown_name_gets_the_same_case_blind_suggestion(tmp_path: Path) -> None:
    from cabench.models.blocks import ATTENTIONS

    assert "(did you mean 'ca'?)" in ATTENTIONS.unknown("CA")
    with pytest.raises(SuiteError, match=r"unknown suite 'tabel1' \(did you mean 'table1'\?\)"):
        find_suite("tabel1")
    with pytest.raises(SuiteError, match=r"no such row in table1 \(did you mean 'baseline'\?\)"):
        check_row_selection([load_suite(find_suite("table1"))], {"basline"})
    with pytest.raises(SuiteError, match="a folder, not a suite file"):
        find_suite(str(tmp_path))


def test_an_unknown_name_with_no_close_match_points_at_plugins() -> None:
    from cabench.models.blocks import ATTENTIONS

    assert "--plugin MODULE" in ATTENTIONS.unknown("gated-pool")  # a plugin's block, not loaded
    assert "--plugin" not in ATTENTIONS.unknown("CA")  # a typo gets the did-you-mean instead
