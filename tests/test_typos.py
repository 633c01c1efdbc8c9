"""No silent typo: a name that matches nothing, or more than one thing, is one line naming it and the choices,
exit 2, before any work or directory."""

from __future__ import annotations

import pytest

from cabench.suite import SuiteError, check_row_selection, find_suite, load_suite


def test_a_rows_name_shared_by_two_rows_is_ambiguous() -> None:
    t4 = load_suite(find_suite("table4"))
    with pytest.raises(SuiteError, match=r"--rows '\+ SE' matches 2 rows of table4 \(se-r24, se-r12\): name one by id"):
        check_row_selection([t4], {"+ SE"})
    check_row_selection([t4], {"se-r24", "ca-r32"})  # ids are unique


def test_a_rows_name_that_matches_nothing_lists_the_rows() -> None:
    t4 = load_suite(find_suite("table4"))
    with pytest.raises(SuiteError, match=r"--rows 'se-r42': no such row in table4; rows: baseline, se-r24"):
        check_row_selection([t4], {"se-r42"})
