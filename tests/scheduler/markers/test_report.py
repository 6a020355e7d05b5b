"""Markdown cells from hostile node ids: no markup, no HTML, no broken tables; parsed back."""

from __future__ import annotations

import pytest

from scheduler.markers.report import escape, parse_tables, table

HOSTILE = [
    "tests/a.py::test_x[a|b]",
    "tests/a.py::test_<script>alert(1)</script>",
    "tests/a.py::test_**bold**_`code`",
    "tests/a.py::test_back\\slash|",
    "tests/a.py::test_new\nline",
    "tests/a.py::test_[link](http://x)",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_cells_round_trip(value: str) -> None:
    text = "\n".join(["# t", "", *table(("test", "n"), [[value, 1]]), "", "after"])
    assert "<script>" not in text and "\n".join(table(("a",), [[value]])).count("\n") == 2
    rows = parse_tables(text)[0]
    assert rows == [["test", "n"], [value.replace("\n", " "), "1"]]


def test_escape_leaves_plain_text_alone() -> None:
    assert escape("plain text 1.5 s") == "plain text 1.5 s"
