"""``schedctl markers audit | apply | review`` on a generated project shaped like the reference
(643 tests, 29 marked) with recorded history, collected for real by the local runner."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from scheduler.markers.report import audit_schema, parse_tables
from scheduler.store import Store
from tests.conftest import SCHEDCTL, tier
from tests.schedctl import invoke
from tests.scheduler.markers import reference

BUDGET_S = 60.0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return reference.write_project(tmp_path / "project")


@pytest.fixture
def config(project: Path, write_config: Callable[..., Path]) -> Path:
    path = write_config(
        project,
        tiers={
            "hourly": tier(markers="hourly", timeout="30m"),
            "daily": tier(schedule="30 2 * * *", markers="daily", timeout="90m"),
        },
        markers={
            "hourly_budget": f"{BUDGET_S:.0f}s",
            "critical_paths": [f"tests/test_area{reference.CRITICAL_FILE:02d}.py::*"],
        },
    )
    reference.record_history(Store(path.parent / "state" / "schedctl.db"))
    return path


def audit_json(config: Path) -> dict[str, Any]:
    code, out = invoke(config, "markers", "audit", "--json")
    assert code == 0, out
    data: dict[str, Any] = json.loads(out)
    return data


def test_audit_reports_the_reference_distribution_and_fits_the_hourly_budget(
    config: Path,
) -> None:
    """29 marked of 643 (4.5 %); hourly after fits its budget; no flaky test goes hourly; the
    flaky and the grown hourly tests are demoted; unmarked tests are listed as run by no tier."""
    data = audit_json(config)
    jsonschema.validate(data, audit_schema())
    d = data["distribution"]
    assert (d["total"], d["marked"], d["marked_percent"]) == (643, 29, 4.5)
    counts = {m["marker"]: m["count"] for m in d["markers"]}
    assert counts == {"hourly": 12, "daily": 14, "integration": 8, "slow": 4}

    recs = data["recommendations"]
    hourly_added = {r["nodeid"] for r in recs if r["action"] == "hourly"}
    flaky = {reference.nodeid(i) for i in reference.FLAKY}
    assert hourly_added, "an hourly set is recommended"
    assert not hourly_added & flaky, "a flaky test is never recommended for hourly"
    demoted = {r["nodeid"]: r["evidence"] for r in recs if r["action"] == "demote"}
    assert "flaky" in demoted[reference.nodeid(3)]
    assert "grew" in demoted[reference.nodeid(reference.GROWN)]
    assert set(demoted) == {reference.nodeid(3), reference.nodeid(reference.GROWN)}, (
        "the hourly tests people chose stay while they fit the budget"
    )
    daily_added = {r["nodeid"] for r in recs if r["action"] == "daily"}
    assert set(demoted) <= daily_added, "a demoted test goes to daily, not nowhere"
    after = data["predicted"]["after"]["hourly"]
    assert 0 < after["predicted_s"] <= BUDGET_S and after["unknown"] == 0
    assert data["predicted"]["before"]["hourly"]["selected"] == 12
    # Critical-path tests are worth more per second: the cheapest ones of that file got in.
    critical = {
        r for r in hourly_added if r.startswith(f"tests/test_area{reference.CRITICAL_FILE:02d}")
    }
    assert critical
    slow = {r["nodeid"] for r in recs if r["action"] == "slow"}
    assert slow == {reference.nodeid(i) for i in reference.SLOW_UNMARKED}
    unselected = set(data["unselected"])
    assert len(unselected) == 643 - 12 - 14
    assert reference.nodeid(500) in unselected and reference.nodeid(0) not in unselected

    # The web UI's Markers page reads the newest audit in short.
    latest = json.loads((config.parent / "state" / "markers-audit.json").read_text())
    assert latest["distribution"]["(marked)"] == 29 and latest["distribution"]["hourly"] == 12
    assert f"hourly: {sorted(hourly_added)[0]} (" in "\n".join(latest["recommendations"])

    code, out = invoke(config, "markers", "audit")
    assert code == 0, out
    assert "marked: 29 (4.5 %)" in out
    assert f"tests no tier runs: {643 - 26}" in out


def test_markdown_tables_parse_back(config: Path) -> None:
    code, out = invoke(config, "markers", "audit", "--markdown")
    assert code == 0, out
    tables = parse_tables(out)
    dist = {row[0]: row[1:] for row in tables[0][1:]}
    assert dist["(marked)"] == ["29", "4.5 %"] and dist["(total)"][0] == "643"
    assert dist["hourly"][0] == "12"
    tiers = {row[0]: row for row in tables[1][1:]}
    assert tiers["hourly"][3] == "12" and tiers["hourly"][-1] == "yes"
    recs = tables[-1]
    assert recs[0] == ["action", "test", "add", "remove", "evidence", "owner"]
    # Node ids with [ ] and _ come back exactly.
    assert any(row[1] == reference.nodeid(3) for row in recs[1:])


def test_apply_then_run_hourly_and_plain_pytest_select_the_same_tests(
    config: Path, project: Path
) -> None:
    """Without --write a diff; with it the catalog (and plugin) beside the tests, test files
    untouched; then `schedctl run hourly` runs exactly what `pytest -p schedctl_catalog -m hourly`
    collects."""
    before = {p: p.read_text() for p in (project / "tests").glob("test_*.py")}
    code, diff = invoke(config, "markers", "apply")
    assert code == 0, diff
    assert diff.startswith("--- a/schedctl-markers.toml") and '+markers = ["hourly"]' in diff
    assert not (project / "tests" / "schedctl-markers.toml").exists()
    code, out = invoke(config, "markers", "apply", "--write")
    assert code == 0, out
    assert (project / "tests" / "schedctl_catalog.py").is_file()
    assert {p: p.read_text() for p in (project / "tests").glob("test_*.py")} == before

    plain = reference.collect_ids(project, "-p", "schedctl_catalog", "-m", "hourly")
    data = audit_json(config)
    assert data["predicted"]["before"]["hourly"]["selected"] == len(plain)
    assert reference.nodeid(3) not in plain  # the flaky hourly test was demoted

    code, out = invoke(config, "run", "hourly", "--json")
    assert code == 0, out
    run_id = json.loads(out)["run_id"]
    store = Store(config.parent / "state" / "schedctl.db")
    ran = {t.nodeid for t in store.test_results_for(run_id)}
    assert ran == plain
    # The evaluator agrees with pytest's -m on the catalog's result, for other expressions too.
    for expression in ("daily and not integration", "not (hourly or daily)", "slow or integration"):
        from scheduler.markers.expression import compile_expression

        ours = {n for n, m in _items_after(config).items() if compile_expression(expression)(m)}
        assert ours == reference.collect_ids(project, "-p", "schedctl_catalog", "-m", expression), (
            expression
        )


def _items_after(config: Path) -> dict[str, frozenset[str]]:
    from scheduler.config import load_config
    from scheduler.markers.collect import collect

    return collect(load_config(config), "hourly").items


def test_collection_error_exits_non_zero_without_a_distribution(
    config: Path, project: Path
) -> None:
    """The whole `schedctl` process: exit 1, the error names the broken file, nothing else."""
    (project / "tests" / "test_broken.py").write_text("def test_x(:\n")
    for extra in ([], ["--json"]):
        proc = subprocess.run(
            [*SCHEDCTL, "--config", str(config), "markers", "audit", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "test_broken.py" in proc.stderr and "error" in proc.stderr
        assert "marked" not in proc.stdout and "Distribution" not in proc.stdout
        if extra:
            assert "distribution" not in json.loads(proc.stdout)


def test_review_reports_drift_stale_entries_unowned_and_distribution_then_vs_now(
    config: Path, project: Path
) -> None:
    assert invoke(config, "markers", "audit", "--json")[0] == 0  # the "then" snapshot
    catalog = project / "tests" / "schedctl-markers.toml"
    catalog.write_text(
        'version = 1\n[[entry]]\nmatch = "tests/test_gone.py::test_old"\nmarkers = ["hourly"]\n'
        'reason = "kept from 2025"\nowner = "@lab/old"\n'
    )
    code, out = invoke(config, "markers", "review", "--since", "90d")
    assert code == 0, out
    tables = parse_tables(out)
    drift = {row[0] for row in tables[0][1:]}
    assert reference.nodeid(reference.GROWN) in drift
    assert reference.nodeid(400) in drift
    stale = tables[1]
    assert stale[1][0] == "tests/test_gone.py::test_old"
    dist = {row[0]: row[1:] for row in tables[2][1:]}
    assert dist["(marked)"] == ["29", "29"] and dist["hourly"] == ["12", "12"]
    assert "## Unowned tests (643)" in out
    assert f"- {reference.nodeid(3)}".replace("_", "\\_") in out.split("### Flaky tests")[1]


def test_audit_at_a_ref_collects_that_commit(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    """--ref collects the commit (a worktree), not the working tree; an unknown ref is bad
    input (exit 2)."""
    project = tmp_path / "repo"
    (project / "tests").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    hourly: h\n")
    (project / "tests" / "test_a.py").write_text("def test_one():\n    pass\n")

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=project, check=True, capture_output=True,
        )  # fmt: skip

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-qm", "one test")
    git("tag", "v1")
    (project / "tests" / "test_b.py").write_text(
        "import pytest\n\n@pytest.mark.hourly\ndef test_two():\n    pass\n"
    )
    git("add", ".")
    git("commit", "-qm", "two tests")
    config = write_config(project)
    data = audit_json(config)
    assert data["distribution"]["total"] == 2 and data["ref"] is None
    code, out = invoke(config, "markers", "audit", "--ref", "v1", "--json")
    assert code == 0, out
    old = json.loads(out)
    assert (old["distribution"]["total"], old["distribution"]["marked"]) == (1, 0)
    assert old["ref"] == "v1" and old["tiers"][0]["tests"] == []
    assert data["tiers"][0]["tests"] == ["tests/test_b.py::test_two"]
    code, out = invoke(config, "markers", "audit", "--ref", "no-such-ref")
    assert code == 2


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "--json", "--markdown"),
        ("audit", "--tier", "nope"),
        ("apply", "--only", "hourly,bogus"),
        ("review", "--since", "soon"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: tuple[str, ...], write_config: Callable[..., Path]
) -> None:
    config = write_config()
    proc = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "markers", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "error" in proc.stderr.lower()
