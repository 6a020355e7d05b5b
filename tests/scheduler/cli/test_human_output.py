"""Human (non --json) output: text from tests, logs, reasons and commits is printed verbatim.

Rich reads ``[...]`` as markup, so a parametrize id like ``[/foo/bar.py-None]`` used to crash
``schedctl show`` with a MarkupError and ``[abc-def]`` or ``[bold]`` vanished from the table.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.alerts.outbox import Outbox
from scheduler.cli import cli
from scheduler.gpu import write_fake_gpus
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store, TestResultRow
from scheduler.store.outbox_queries import OutboxEntry
from tests.conftest import tier
from tests.scheduler.gpu.gpu_helpers import gpu
from tests.scheduler.source.conftest import git

WIDE = {"COLUMNS": "400"}  # no wrapping inside table cells, so ids can be matched whole

CRASHER = "tests/test_p.py::test_x[/foo/bar/example.py-None-example.py]"
DASHED = "tests/test_p.py::test_y[abc-def]"
BOLD = "tests/test_p.py::test_z[bold]"
EMOJI = "tests/test_p.py::test_e[:thumbs_up:]"
MESSAGE = "AssertionError: assert '[bold]' == '[/x]'\nE   [red]nope[/red] in C:\\temp\\"
REASON = f"1 failed: {CRASHER}"


def invoke(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], env=WIDE)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def finished_run(store: Store, outcome: Outcome, **values: object) -> int:
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id is not None
    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    store.finish_run(
        run_id,
        outcome=outcome,
        started_at=start,
        finished_at=start + timedelta(seconds=3),
        duration_s=3.0,
        **values,
    )
    return run_id


def test_show_prints_test_ids_messages_and_reason_verbatim(
    write_config: Callable[..., Path], store: Store
) -> None:
    """Ids with [/...], [abc-def], [bold] and :emoji:, a message full of brackets: all verbatim."""
    config = write_config()
    results = [
        TestResultRow(CRASHER, "failed", 0.5, "", MESSAGE),
        TestResultRow(DASHED, "passed", 0.1),
        TestResultRow(BOLD, "passed", 0.1),
        TestResultRow(EMOJI, "passed", 0.1),
    ]
    run_id = finished_run(
        store,
        Outcome.FAILED,
        results=results,
        reason=REASON,
        exit_code=1,
        runner="local",
        ref="feature/[wip]",
        markers="hourly and not [slow]",
        counts={"passed": 3, "failed": 1},
    )
    code, out = invoke(config, "show", str(run_id))
    assert code == 0, out
    for text in (CRASHER, DASHED, BOLD, EMOJI, MESSAGE, REASON, "feature/[wip]", "[slow]"):
        assert text in out
    code, out = invoke(config, "runs")
    assert code == 0 and "failed" in out


def test_show_prints_commit_subjects_verbatim(
    write_config: Callable[..., Path], store: Store, tmp_path: Path
) -> None:
    """'changes since last green run' lists commit subjects with brackets as written."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for subject in ("[bold] green", "Revert [/x] and [abc-def]"):
        (repo / "f.txt").write_text(subject)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", subject)
        shas.append(git(repo, "rev-parse", "HEAD"))
    config = write_config(project=repo)
    finished_run(store, Outcome.PASSED, sha=shas[0], source={"sha": shas[0]})
    source = {"sha": shas[1], "subject": "Revert [/x] and [abc-def]", "note": ""}
    run_id = finished_run(store, Outcome.FAILED, sha=shas[1], source=source, reason="[/x] broke")
    code, out = invoke(config, "show", str(run_id))
    assert code == 0, out
    assert f"{shas[1]} Revert [/x] and [abc-def]" in out
    assert f"{shas[1][:7]} Revert [/x] and [abc-def]" in out  # the change list
    assert "[/x] broke" in out


def test_alerts_print_delivery_errors_verbatim(
    write_config: Callable[..., Path], store: Store
) -> None:
    """A receiver's error body with brackets is shown as sent, not parsed."""
    config = write_config(alerts={"webhooks": [{"name": "hook", "url": "http://127.0.0.1:9/h"}]})
    outbox = Outbox(store)
    now = outbox.clock()
    store.outbox_enqueue(OutboxEntry("r1", "hook", "hourly/tests-failed", "firing", {}), now)
    claim = outbox.claim(outbox.rows(None, 1)[0])
    assert claim is not None
    error = 'HTTP 400: {"error": "[/bold] [abc-def] bad"}'
    assert outbox.retry(claim, 60, error)
    code, out = invoke(config, "alerts")
    assert code == 0, out
    assert error in out


@pytest.mark.slow
def test_run_result_line_names_failing_ids_verbatim(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """`schedctl run` (human output) prints the reason naming `test_x[/a/b.py]` as is."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    hourly: hourly\n")
    (project / "test_p.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.hourly\n"
        "@pytest.mark.parametrize('p', ['/foo/bar/example.py', '[bold]'])\n"
        "def test_x(p):\n"
        "    assert p == '[/nope]'\n"
    )
    config = write_config(project=project, tiers={"hourly": tier()})
    code, out = invoke(config, "run", "hourly")
    assert code == 1, out
    assert "test_p.py::test_x[/foo/bar/example.py]" in out
    code, out = invoke(config, "show", "1")
    assert code == 0, out
    assert "test_p.py::test_x[/foo/bar/example.py]" in out
    assert "test_p.py::test_x[[bold]]" in out
    assert "[/nope]" in out


def test_gpus_print_device_names_verbatim(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """A GPU name with brackets (it comes from the driver) is a table cell, not markup."""
    fake = tmp_path / "gpus.json"
    name = "NVIDIA [bold] H200 [/x]"
    write_fake_gpus(fake, [{**gpu(0), "name": name}])
    config = write_config()
    result = CliRunner().invoke(
        cli, ["--config", str(config), "gpus"], env={**WIDE, "SCHEDCTL_FAKE_GPUS": str(fake)}
    )
    assert result.exit_code == 0, result.output
    assert name in result.stdout and "free" in result.stdout


@pytest.mark.slow
def test_show_says_when_the_project_is_not_a_git_checkout(
    write_config: Callable[..., Path], store: Store, tmp_path: Path
) -> None:
    """A plain directory shows where it ran instead of `commit - None`; no field says None."""
    project = tmp_path / "plain"
    project.mkdir()
    (project / "test_ok.py").write_text("def test_ok():\n    pass\n")
    config = write_config(project=project, tiers={"hourly": tier(markers=None)})
    code, out = invoke(config, "run", "hourly")
    assert code == 0, out
    code, out = invoke(config, "show", "1")
    assert code == 0, out
    assert f"commit     (not a git checkout: {project})" in out
    assert "None" not in out
    queued = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    code, out = invoke(config, "show", str(queued))
    assert code == 0, out
    assert "commit     -" in out and "exit code  -" in out
    assert "None" not in out
