"""CODEOWNERS parsing with GitHub's precedence, and the config map before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.history.owners import Owners, compile_pattern, parse_codeowners

CODEOWNERS = """
# Default owners
*                       @lab/all
*.py                    @lab/python      # trailing comment
/tests/                 @lab/qa
tests/env/**            @lab/env-team @alice
docs/*                  docs@example.org
apps/                   @lab/apps
/tests/env/test_free.py
"""


@pytest.fixture
def owners() -> Owners:
    return Owners(codeowners=parse_codeowners(CODEOWNERS))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("setup.cfg", ("@lab/all",)),
        ("src/pkg/mod.py", ("@lab/python",)),
        ("tests/test_a.py", ("@lab/qa",)),
        ("tests/env/test_gpu.py", ("@lab/env-team", "@alice")),
        ("tests/env/deep/test_x.py", ("@lab/env-team", "@alice")),
        ("docs/guide.md", ("docs@example.org",)),
        ("docs/deep/guide.md", ("@lab/all",)),
        ("src/apps/x/main.c", ("@lab/apps",)),
        ("tests/env/test_free.py", ()),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_last_matching_pattern_wins(owners: Owners, path: str, expected: tuple[str, ...]) -> None:
    """Each path gets the owners of the last line that matches it, as GitHub decides."""
    assert owners.of_path(path) == expected


def test_order_decides_not_specificity() -> None:
    """A broad pattern below a specific one wins, because it comes last."""
    rules = parse_codeowners("tests/env/**  @env\n*.py  @py\n")
    assert Owners(codeowners=rules).of_path("tests/env/test_x.py") == ("@py",)


def test_unsupported_syntax_never_matches() -> None:
    """Negation and brackets are not GitHub CODEOWNERS syntax: such lines match nothing."""
    assert compile_pattern("!tests/") is None
    assert compile_pattern("test_[ab].py") is None


def test_owner_tokens_are_filtered() -> None:
    """Only @user, @org/team and e-mail addresses are kept (they reach alert text)."""
    (rule,) = parse_codeowners("*.py @ok <script> [x](http://e) @org/team a@b.io\n")
    assert rule.owners == ("@ok", "@org/team", "a@b.io")


def test_config_map_first_then_codeowners_from_the_checkout(tmp_path: Path) -> None:
    """The config's owners map decides where it matches; CODEOWNERS (.github/) elsewhere."""
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "CODEOWNERS").write_text("*.py @from-codeowners\n")
    owners = Owners.load(tmp_path, {"tests/env/**": "@lab/env-team"})
    assert owners.of_test("tests/env/test_a.py::test_x[1]") == ("@lab/env-team",)
    assert owners.of_test("tests/io/test_b.py::TestY::test_z") == ("@from-codeowners",)
    assert Owners.load(tmp_path / "missing", {}).of_test("a.py::t") == ()
