"""The daily tier's coverage (recorded per test when markers.critical_modules is set) makes a
test covering a critical module worth more for hourly; without that report nothing changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from scheduler.config import Config
from scheduler.daemon.assembly import build_dispatcher
from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Outcome
from scheduler.markers.audit import Audit, audit
from scheduler.markers.collect import collect
from scheduler.markers.recommend import plan
from scheduler.markers.service import audit_at
from scheduler.run.dispatch import RunRequest
from scheduler.store import Store, TestResultRow

CORE = "tests/test_pkg.py::test_core"
OTHER = "tests/test_pkg.py::test_other"


def write_project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "core.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "pkg" / "other.py").write_text("def mul(a, b):\n    return a * b\n")
    (root / "tests" / "test_pkg.py").write_text(
        "from pkg.core import add\nfrom pkg.other import mul\n\n"
        "def test_core():\n    assert add(1, 2) == 3\n\n"
        "def test_other():\n    assert mul(2, 3) == 6\n"
    )
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    hourly: h\n    daily: d\n")
    return root


def history(store: Store) -> None:
    """test_other is a little faster than test_core: by speed alone it wins the budget."""
    for i in range(10):
        run_id = store.create_run(tier="manual", trigger="manual", kind="pytest")
        assert run_id is not None
        store.finish_run(
            run_id,
            [TestResultRow(CORE, "passed", 1.0), TestResultRow(OTHER, "passed", 0.9)],
            outcome=Outcome.PASSED, sha="c" * 40, finished_at=utcnow() - timedelta(hours=i + 1),
        )  # fmt: skip


def test_coverage_of_critical_modules_tips_the_hourly_choice(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    project = write_project(tmp_path / "project")
    config = make_config(
        project,
        tiers={
            "hourly": {"schedule": "15 * * * *", "timeout": 60, "markers": "hourly"},
            "daily": {
                "schedule": "30 2 * * *",
                "timeout": 600,
                "coverage": True,
                "coverage_source": ["pkg"],
                "env": {"PYTHONPATH": str(project)},
            },
        },
        markers={"hourly_budget": "1.5s", "critical_modules": ["pkg/core.py"]},
    )
    store = Store(config.db_path)
    history(store)

    found, before = audit_at(config, store, utcnow())
    assert found.coverage_run_id is None
    assert [r.nodeid for r in before.of("hourly")] == [OTHER], "speed alone: the faster test"

    daily = build_dispatcher(config, store).run(RunRequest("daily"))
    assert daily.outcome is Outcome.PASSED, daily.reason
    found, after = audit_at(config, store, utcnow())
    assert found.coverage_run_id == daily.id
    assert found.facts[CORE].covers == ("pkg/core.py",) and found.facts[OTHER].covers == ()
    chosen = after.of("hourly")
    assert [r.nodeid for r in chosen] == [CORE]
    assert "covers pkg/core.py" in chosen[0].evidence
    # The same collection without the critical modules: the report is only an extra signal.
    plain = config.model_copy(
        update={"markers": config.markers.model_copy(update={"critical_modules": []})}
    )
    assert [r.nodeid for r in plan(plain, _audit(plain, store)).of("hourly")] == [OTHER]


def _audit(config: Config, store: Store) -> Audit:
    return audit(config, store, collect(config, "hourly"), utcnow())
