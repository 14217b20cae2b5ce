"""The one writer of Markdown tables that every report uses."""

import pytest

from doll_core import markdown


def test_a_table_has_its_header_rule_and_rows() -> None:
    text = markdown.table(["a", "b ↑"], [["1", "x"], ["2", ""]])
    assert text == "| a | b ↑ |\n|---|---|\n| 1 | x |\n| 2 |  |\n"


def test_a_table_without_rows_is_its_header() -> None:
    assert markdown.table_lines(["only"], []) == ["| only |", "|---|"]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        markdown.table(["a", "b", "c"], [["1", "2"]])


def test_a_score_title_gives_the_score_direction() -> None:
    titles = (markdown.score_title("IoU", True), markdown.score_title("ROAD AOPC", False))
    assert titles == ("IoU ↑", "ROAD AOPC ↓")
