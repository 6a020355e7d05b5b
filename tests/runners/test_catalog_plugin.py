"""The marker catalog plugin under a real pytest: adds, hides (own, class and module marks, for
that test only), globs and path prefixes; a malformed catalog is one usage error naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runners.catalog_plugin import Entry, entry_matches, markers_for

TESTS = """\
import pytest

pytestmark = pytest.mark.hourly


def test_one():
    pass


def test_two():
    pass


class TestGroup:
    pytestmark = pytest.mark.daily

    def test_a(self):
        pass

    @pytest.mark.parametrize("x", ["a|b", "[c]"])
    def test_p(self, x):
        pass
"""


def project(tmp_path: Path, catalog: str) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_m.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    hourly: h\n    daily: d\n")
    (tmp_path / "tests" / "schedctl-markers.toml").write_text(catalog)
    return tmp_path


def collect(root: Path, expression: str) -> tuple[int, set[str], str]:
    plugin_dir = Path(__file__).parents[2] / "runners"
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "catalog_plugin", "--strict-markers",
         "-p", "no:cacheprovider", "--collect-only", "-q", "-m", expression],
        cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ids = {line for line in proc.stdout.splitlines() if "::" in line}
    return proc.returncode, ids, proc.stdout + proc.stderr


CATALOG = """\
version = 1

[[entry]]
match = "tests/test_m.py::test_two"
markers = ["slow"]
unmark = ["hourly"]
reason = "p90 grew"

[[entry]]
match = "tests/test_m.py::TestGroup::test_p*"
markers = ["gpu"]
unmark = ["daily"]
"""


def test_catalog_adds_and_hides_markers_for_the_matched_tests_only(tmp_path: Path) -> None:
    root = project(tmp_path, CATALOG)
    params = {"tests/test_m.py::TestGroup::test_p[a|b]", "tests/test_m.py::TestGroup::test_p[[c]]"}
    code, ids, out = collect(root, "hourly and not daily")
    assert code == 0, out
    assert ids == {"tests/test_m.py::test_one", *params}, "test_two lost hourly, test_p daily"
    code, ids, out = collect(root, "slow")
    assert ids == {"tests/test_m.py::test_two"}, out
    code, ids, out = collect(root, "gpu and hourly and not daily")
    assert ids == {
        "tests/test_m.py::TestGroup::test_p[a|b]",
        "tests/test_m.py::TestGroup::test_p[[c]]",
    }
    code, ids, out = collect(root, "daily")
    assert ids == {"tests/test_m.py::TestGroup::test_a"}, "the class mark stays on its siblings"


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        ("version = 2\n", "version: expected 1"),
        ('[[entry]]\nmatch = "x"\nmarkers = ["not a name"]\n', "entry[0].markers"),
        ("[[entry]\n", "invalid TOML"),
    ],
)
def test_malformed_catalog_is_a_usage_error_naming_the_file(
    tmp_path: Path, catalog: str, message: str
) -> None:
    code, _, out = collect(project(tmp_path, catalog), "hourly")
    assert code == 4, out
    assert "schedctl-markers.toml" in out and message in out


def test_matching_rules() -> None:
    assert entry_matches("tests/a.py::t[x]", "tests/a.py::t[x]")  # brackets are literal
    assert not entry_matches("tests/a.py::t[x]", "tests/a.py::tx")
    assert entry_matches("tests/a.py", "tests/a.py::t")
    assert entry_matches("tests/unit/", "tests/unit/b.py::t")
    assert not entry_matches("tests/a", "tests/ab.py::t")
    assert entry_matches("tests/*::test_io*", "tests/x.py::test_io_roundtrip")
    later_wins = [Entry("tests/a.py", ("hourly",)), Entry("tests/a.py::t", (), unmark=("hourly",))]
    assert markers_for(later_wins, "tests/a.py::t") == ([], {"hourly"})
    assert markers_for(later_wins, "tests/a.py::u") == (["hourly"], set())
