"""The ``schedctl`` command line.

Exit codes: 0 success (a run that passed), 1 a run that did not pass or a runtime failure,
2 bad input (config, tier, run id, ref). Errors are one line per problem on stderr, no traceback.

Start-up is lazy: this module imports click and the kernel's error tree only. Each command's
module (and the heavy libraries it needs: SQLAlchemy, pydantic, docker, requests, APScheduler,
prometheus_client) is imported when that command runs; see :mod:`scheduler.cli.commands`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

import click

from scheduler import __version__
from scheduler.cli.commands import COMMANDS, OPTIONAL, SUMMARIES
from scheduler.kernel.errors import ConfigError, SchedctlError


class LazyGroup(click.Group):
    """A click group whose subcommands come from a name -> ``"module:attr"`` table."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.lazy, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = self.lazy.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if cmd_name in OPTIONAL:
                return None
            raise
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but from :data:`SUMMARIES`: listing the commands imports none of them."""
        rows: list[tuple[str, str]] = []
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        for name in names:
            summary = SUMMARIES.get(name) if name not in self.commands else None
            if summary is not None:
                rows.append((name, click.Command(name, help=summary).get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    from scheduler.cli.app import AppContext
    from scheduler.logs import configure_when_imported

    configure_when_imported(json_logs=False, level=log_level)
    ctx.obj = AppContext(config_path=config_path, force_new_db=force_new_db)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps schedctl errors to exit codes.

    With ``--json`` an error is also printed on stdout as ``{"error", "problems", "exit_code"}``,
    so scripts always get an object to parse. Once the command is done and its output flushed,
    the process ends without tearing the interpreter down (see :func:`_leave`).
    """
    args = sys.argv[1:] if argv is None else argv
    _leave(_run(args))


def _run(args: list[str]) -> int:
    try:
        cli.main(args=args, prog_name="schedctl", standalone_mode=False)
    except SystemExit as exc:  # a command's own exit code (``schedctl run``: 1 unless passed)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(str(exc.code), err=True)
        return 1
    except BrokenPipeError:
        # `schedctl history | head`: the reader left; say nothing more, and let Python's own
        # flush at exit not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return _json_error(args, exc.format_message(), [], exc.exit_code)
    except ConfigError as exc:
        problems = [f"{exc.path}: {problem}" for problem in exc.problems]
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        return _json_error(args, str(exc), problems, exc.exit_code)
    except SchedctlError as exc:
        click.echo(f"error: {exc}", err=True)
        return _json_error(args, str(exc), [], exc.exit_code)
    return 0


def _json_error(args: list[str], message: str, problems: list[str], code: int) -> int:
    if "--json" in args:
        click.echo(json.dumps({"error": message, "problems": problems, "exit_code": code}))
    return code


FULL_EXIT_ENV = "SCHEDCTL_FULL_EXIT"


def _leave(code: int) -> None:
    """Flush what was written and end the process with ``code``.

    Tearing down an interpreter that imported SQLAlchemy and pydantic costs about 0.1 s of CPU
    per command and does nothing a finished command needs: every run row is committed, every
    file closed, every thread done. So the process ends with ``os._exit`` after flushing stdio
    and the logging handlers; ``SCHEDCTL_FULL_EXIT=1`` asks for the ordinary exit (atexit
    handlers, e.g. coverage in a subprocess).
    """
    if os.environ.get(FULL_EXIT_ENV):
        sys.exit(code)
    logging = sys.modules.get("logging")  # a command that logged nothing never imported it
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            if code == 0:
                code = 141 if stream is sys.stdout else 1
    os._exit(code)


if __name__ == "__main__":
    main()
