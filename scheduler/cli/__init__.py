"""The ``schedctl`` command line.

Exit codes: 0 success (a run that passed), 1 a run that did not pass or a runtime failure,
2 bad input (config, tier, run id, ref). Errors are one line per problem on stderr, no traceback.
"""

from __future__ import annotations

import json
import os
import sys

import click

from scheduler import __version__
from scheduler.cli.app import AppContext
from scheduler.kernel.errors import ConfigError, SchedctlError
from scheduler.logs import configure


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar=None,
    help="Config file (default: ./config.yaml, then $SCHEDCTL_CONFIG).",
)
@click.option(
    "--log-level", default="warning", show_default=True, help="Log level for this command."
)
@click.option(
    "--force",
    "force_new_db",
    is_flag=True,
    help="Start a new database even though runs/ holds an earlier one's run dirs (moved aside).",
)
@click.version_option(__version__, prog_name="schedctl")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, force_new_db: bool) -> None:
    """Run a Python project's pytest suite in tiers, on a schedule, on GPU machines."""
    configure(json_logs=False, level=log_level)
    ctx.obj = AppContext(config_path=config_path, force_new_db=force_new_db)


def _register() -> None:
    from scheduler.cli.alerts_cmd import alerts_group
    from scheduler.cli.daemon_cmd import cancel_command, daemon_command, status_command
    from scheduler.cli.history import logs_command, runs_command, show_command
    from scheduler.cli.image_cmd import image_group
    from scheduler.cli.markers_cmd import markers_group
    from scheduler.cli.run_cmd import run_command
    from scheduler.cli.schedule_cmd import config_group, schedule_command
    from scheduler.cli.store_cmd import store_group
    from scheduler.cli.tests_cmd import quarantine_group, test_command, tests_command
    from scheduler.cli.web_cmd import web_command

    for command in (
        run_command,
        runs_command,
        show_command,
        logs_command,
        schedule_command,
        config_group,
        daemon_command,
        status_command,
        alerts_group,
        cancel_command,
        image_group,
        tests_command,
        test_command,
        quarantine_group,
        web_command,
        markers_group,
        store_group,
    ):
        cli.add_command(command)
    try:
        from scheduler.cli.gpus import gpus_command
    except ImportError:
        return
    cli.add_command(gpus_command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps schedctl errors to exit codes.

    With ``--json`` an error is also printed on stdout as ``{"error", "problems", "exit_code"}``,
    so scripts always get an object to parse.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="schedctl", standalone_mode=False)
    except BrokenPipeError:
        # `schedctl history | head`: the reader left; say nothing more, and let Python's own
        # flush at exit not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        _json_error(args, exc.format_message(), [], exc.exit_code)
    except ConfigError as exc:
        problems = [f"{exc.path}: {problem}" for problem in exc.problems]
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        _json_error(args, str(exc), problems, exc.exit_code)
    except SchedctlError as exc:
        click.echo(f"error: {exc}", err=True)
        _json_error(args, str(exc), [], exc.exit_code)
    sys.exit(0)


def _json_error(args: list[str], message: str, problems: list[str], code: int) -> None:
    if "--json" in args:
        click.echo(json.dumps({"error": message, "problems": problems, "exit_code": code}))
    sys.exit(code)


if __name__ == "__main__":
    main()
