"""The package boundaries the module map draws, checked on the source (imports parsed with ast).

- runners import only the kernel of schedctl;
- the kernel imports nothing else of schedctl at run time;
- the store imports neither the dispatcher nor the CLI;
- alerts and metrics import no runner;
- the web pages import neither the dispatcher, alerting nor the CLI;
- only the run ledger writes a run's outcome (create_run / finish_run / update_run(outcome=)).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def runtime_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Modules imported by ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                type_only.update(id(n) for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def violations(
    package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[str]:
    found = []
    for path in modules(package):
        for line, name in runtime_imports(path):
            if name.startswith(forbidden) and not name.startswith(allowed):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


@pytest.mark.parametrize(
    ("package", "forbidden", "allowed"),
    [
        ("runners", ("scheduler",), ("scheduler.kernel",)),
        ("scheduler/kernel", ("scheduler", "runners"), ("scheduler.kernel",)),
        ("scheduler/store", ("scheduler.run", "scheduler.cli", "scheduler.daemon", "runners"), ()),
        ("scheduler/alerts", ("runners",), ()),
        ("scheduler/metrics", ("runners",), ()),
        # the pages only read: no dispatcher, no alerting, no CLI
        ("scheduler/web", ("scheduler.run", "scheduler.alerts", "scheduler.cli"), ()),
    ],
)
def test_import_rules(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    assert violations(package, forbidden, allowed) == []


def test_the_rule_checker_sees_a_violation() -> None:
    """The checker itself can fail: the dispatcher does import runners."""
    assert violations("scheduler/run", ("runners",))


OUTCOME_WRITES = ("create_run", "finish_run")


def outcome_writes(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        keywords = {k.arg for k in node.keywords}
        if name in OUTCOME_WRITES or (name == "update_run" and "outcome" in keywords):
            yield f"{path.relative_to(ROOT)}:{node.lineno} calls {name}"


def test_only_the_ledger_writes_outcomes() -> None:
    ledger = ROOT / "scheduler/run/ledger.py"
    writers = [
        hit
        for package in ("scheduler", "runners")
        for path in modules(package)
        if path != ledger and not path.is_relative_to(ROOT / "scheduler/store")
        for hit in outcome_writes(path)
    ]
    assert writers == []
    assert list(outcome_writes(ledger))  # the check finds the ledger's own writes
