"""The -m evaluator against pytest's own -m on the same items."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.markers.expression import compile_expression

MARKS = {"t_none": [], "t_h": ["hourly"], "t_d": ["daily"], "t_hd": ["hourly", "daily"],
         "t_s": ["slow"], "t_ds": ["daily", "slow"]}  # fmt: skip
EXPRESSIONS = [
    "hourly", "not hourly", "daily or not hourly", "hourly and daily", "not (hourly or daily)",
    "daily and not slow", "(hourly or slow) and not daily", "not not slow",
]  # fmt: skip


def test_evaluator_selects_what_pytest_selects(tmp_path: Path) -> None:
    lines = ["import pytest"]
    for name, marks in MARKS.items():
        lines += [f"@pytest.mark.{m}" for m in marks] + [f"def test_{name}(): pass"]
    (tmp_path / "test_x.py").write_text("\n".join(lines) + "\n")
    for expression in EXPRESSIONS:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
             "-W", "ignore", "-m", expression, "test_x.py"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        theirs = {ln.split("::")[1][5:] for ln in proc.stdout.splitlines() if "::" in ln}
        ours = {n for n, m in MARKS.items() if compile_expression(expression)(frozenset(m))}
        assert ours == theirs, expression


@pytest.mark.parametrize("bad", ["hourly and", "(hourly", "or daily", "hourly )"])
def test_invalid_expressions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid marker expression"):
        compile_expression(bad)


def test_no_expression_selects_everything() -> None:
    assert compile_expression(None)(frozenset())
