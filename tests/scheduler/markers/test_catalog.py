"""The catalog file: merge keeps unrelated entries, render round-trips hostile node ids."""

from __future__ import annotations

from pathlib import Path

from runners.catalog_plugin import Entry
from scheduler.markers import catalog
from scheduler.markers.collect import parse_collection
from scheduler.markers.recommend import Recommendation


def test_merge_render_read_round_trip(tmp_path: Path) -> None:
    hostile = 'tests/a.py::test_x["\\n]\t\u00e9]'
    old = [Entry("tests/unit/", ("daily",), "all unit tests", "@lab/unit"),
           Entry(hostile, ("slow",), "measured", "")]  # fmt: skip
    recs = [
        Recommendation(hostile, "hourly", ("hourly",), (), 'p90 0.1 s "fast"', "@a"),
        Recommendation("tests/b.py::t", "demote", (), ("hourly",), "flaky", ""),
    ]
    merged = catalog.merge(old, recs)
    path = tmp_path / "tests" / "schedctl-markers.toml"
    catalog.write(path, catalog.render(merged))
    back = catalog.read(path)
    assert back == merged
    assert back[0] == old[0]
    assert back[1].markers == ("slow", "hourly") and back[1].owner == "@a"
    assert back[2].unmark == ("hourly",) and back[2].markers == ()
    assert (tmp_path / "tests" / "schedctl_catalog.py").is_file()
    assert catalog.stale(back, ["tests/unit/x.py::t"]) == back[1:]
    assert catalog.read(tmp_path / "missing.toml") == []


def test_parse_collection_ignores_foreign_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(
        '{"type": "item", "nodeid": "a::t", "markers": ["hourly", 3], "nonce": "N"}\n'
        '{"type": "item", "nodeid": "forged::t", "markers": []}\n'
        "not json\n"
        '{"type": "item", "nodeid": 7, "nonce": "N"}\n'
        '{"type": "markers", "registered": ["hourly", null], "nonce": "N"}\n'
        '{"type": "session", "exitstatus": 0, "nonce": "N"}\n'
    )
    found, status, errors = parse_collection(path, "N")
    assert found.items == {"a::t": frozenset({"hourly"})}
    assert found.registered == ("hourly",) and status == 0 and errors == []
