"""The lazy command group: start-up imports no heavy library, and the table stays honest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import scheduler
from scheduler.cli import LazyGroup, cli
from scheduler.cli.commands import COMMANDS, SUMMARIES
from tests.conftest import ROOT

HEAVY = ("sqlalchemy", "pydantic", "requests", "docker", "apscheduler", "prometheus_client")


def fresh_modules(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (this tree's code first)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(list(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def roots(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_import_scheduler_cli_imports_no_heavy_library() -> None:
    loaded = roots(fresh_modules("import scheduler.cli"))
    assert "click" in loaded  # the probe does see what was imported
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "importlib.metadata" not in fresh_modules("import scheduler")


def test_version_and_help_import_no_command_module() -> None:
    code = (
        "import sys\nfrom scheduler.cli import cli\n"
        "for args in (['--version'], ['--help']):\n"
        "    try:\n"
        "        cli.main(args=args, prog_name='schedctl', standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    loaded = fresh_modules(code)
    commands = {target.partition(":")[0] for target in COMMANDS.values()}
    assert not loaded & commands, sorted(loaded & commands)
    assert not roots(loaded) & {*HEAVY, "structlog", "rich"}


def test_static_version_matches_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert match is not None
    assert scheduler.__version__ == match.group(1)
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"schedctl, version {match.group(1)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_table_entry_resolves_to_its_command(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command)
    assert command.name == name


@pytest.mark.parametrize("name", sorted(SUMMARIES))
def test_summaries_match_the_commands_own_help(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    for limit in (40, 60, 69, 1000):
        summary = click.Command(name, help=SUMMARIES[name]).get_short_help_str(limit)
        assert summary == command.get_short_help_str(limit)


def test_help_lists_every_command_as_its_own_help_says() -> None:
    def group() -> LazyGroup:
        return LazyGroup(
            name="schedctl",
            lazy=COMMANDS,
            params=cli.params,
            help=cli.help,
            context_settings=cli.context_settings,
        )

    lazy = CliRunner().invoke(group(), ["--help"], prog_name="schedctl")
    loaded = group()
    for name in COMMANDS:  # every command imported: --help reads each one's own help
        loaded.get_command(click.Context(loaded), name)
    assert set(loaded.commands) == set(COMMANDS)
    expected = CliRunner().invoke(loaded, ["--help"], prog_name="schedctl")
    assert lazy.exit_code == expected.exit_code == 0
    assert lazy.stdout == expected.stdout
    for name in COMMANDS:
        assert re.search(rf"^  {name} ", lazy.stdout, re.MULTILINE), name


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


@pytest.mark.parametrize("full_exit", ["", "1"])
def test_output_is_flushed_and_exit_codes_kept_by_the_fast_exit(
    tmp_path: Path, full_exit: str
) -> None:
    """The process ends with os._exit after flushing: piped stdout still arrives whole."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEDCTL_FULL_EXIT": full_exit}
    schedctl = [sys.executable, "-m", "scheduler"]
    version = subprocess.run(
        [*schedctl, "--version"], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert (version.returncode, version.stdout) == (
        0,
        f"schedctl, version {scheduler.__version__}\n",
    )
    missing = tmp_path / "nope.yaml"
    bad = subprocess.run(
        [*schedctl, "--config", str(missing), "runs", "--json"],
        check=False, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["exit_code"] == 2
    assert str(missing) in bad.stderr


READ_ONLY = ("schedule", "runs", "show 1", "status", "runs --json", "show 1 --json")


def test_read_commands_import_neither_sqlalchemy_nor_structlog(tmp_path: Path) -> None:
    """``schedule``, ``runs``, ``show`` and ``status`` on a SQLite store: the standard sqlite3
    reader, a config snapshot from the first command on (its plain view: pydantic, PyYAML and
    APScheduler never imported), structlog never imported, rich only for tables."""
    from scheduler.kernel.outcome import Outcome
    from scheduler.store.engine import Store

    config = tmp_path / "config.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nproject:\n  path: {tmp_path}\n"
        "tiers:\n  hourly:\n    schedule: '15 * * * *'\n    timeout: 60\n    markers: hourly\n"
    )
    store = Store(tmp_path / "state" / "schedctl.db")
    run_id = store.create_run(tier="hourly", trigger="manual", kind="pytest")
    assert run_id == 1
    store.finish_run(run_id, outcome=Outcome.PASSED)
    store.close()
    code = (
        "import sys\nfrom scheduler.cli import _run\n"
        f"assert _run(['--config', {str(config)!r}, *sys.argv[1:]]) == 0\n"
    )
    for round_ in ("first", "snapshot"):
        for command in READ_ONLY:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            out = subprocess.run(
                [sys.executable, "-c", f"{code}import json; print(json.dumps(list(sys.modules)))",
                 *command.split()],
                capture_output=True, text=True, check=True, cwd=tmp_path, env=env, timeout=120,
            )  # fmt: skip
            loaded = roots(set(json.loads(out.stdout.splitlines()[-1])))
            assert "click" in loaded, command  # the probe sees imports
            assert ("rich" in loaded) == ("--json" not in command), command
            assert not loaded & {"sqlalchemy", "structlog", "requests", "docker"}, (command, round_)
            assert "apscheduler" not in loaded, (command, round_)  # validation included
            if round_ == "snapshot":
                # the snapshot's plain view: no pydantic, no YAML; fire times without APScheduler
                unwanted = {"yaml", "pydantic", "apscheduler", "tzlocal", "asyncio", "logging"}
                assert not loaded & unwanted, (command, sorted(loaded & unwanted))


def test_run_json_records_through_sqlite3_without_sqlalchemy_or_rich(tmp_path: Path) -> None:
    """``schedctl run --json`` on a current SQLite store writes its run through the standard
    sqlite3 writer: SQLAlchemy (and rich, which only a console would need) never imported, and
    the run, its results and rollups are in the store as the full store reads them. The second
    run takes the config snapshot the first one's full validation wrote (no YAML parsed); once
    the project directory is gone, the snapshot is not taken and the run is refused (exit 2)."""
    import shutil

    from scheduler.store.engine import Store
    from tests.conftest import SUITE

    project = tmp_path / "suite"
    shutil.copytree(SUITE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nrunner: local\nlocal:\n  allow_root: true\n"
        f"project:\n  path: {project}\n"
        "tiers:\n  hourly:\n    schedule: '15 * * * *'\n    timeout: 120\n    markers: hourly\n"
    )
    Store(tmp_path / "state" / "schedctl.db").close()  # a current store: the writer's case
    code = (
        "import sys, json\nfrom scheduler.cli import _run\n"
        f"code = _run(['--config', {str(config)!r}, 'run', 'hourly', '--json', "
        "'--runner', 'local'])\n"
        "print(json.dumps({'code': code, 'modules': list(sys.modules)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    summaries = []
    for round_ in ("validated", "snapshot"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True, text=True, check=True, cwd=tmp_path, env=env, timeout=300,
        )  # fmt: skip
        probe = json.loads(out.stdout.splitlines()[-1])
        summaries.append(json.loads("\n".join(out.stdout.splitlines()[:-1])))
        assert probe["code"] == 0, out.stderr
        loaded = roots(set(probe["modules"]))
        assert "scheduler.store.writer" in probe["modules"]  # the probe sees the run's imports
        assert not loaded & {"sqlalchemy", "rich", "requests", "docker"}, sorted(loaded)
        assert ("yaml" in loaded) == (round_ == "validated"), round_
    store = Store(tmp_path / "state" / "schedctl.db")
    try:
        for summary in summaries:
            record = store.get_run(summary["run_id"])
            assert record.outcome.value == summary["outcome"] == "passed"
            assert record.run_dir and record.started_at and record.finished_at
            results = store.test_results_for(record.id)
            assert len(results) == sum(summary["counts"].values()) > 0
        assert store.active_runs() == []
    finally:
        store.close()
    shutil.rmtree(project)
    refused = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert json.loads(refused.stdout.splitlines()[-1])["code"] == 2
    assert f"project.path: {project} is not a directory" in refused.stderr
