"""``schedctl run TIER``: run a tier with live progress, through the daemon when one runs.

With a daemon on the state dir the run is submitted over its API (so it shares the daemon's
overlap policy, GPU leases and alerts) and its progress is streamed back; without one it runs
in this process. Either way the exit code and the ``--json`` object are the same.
"""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scheduler.cli.app import AppContext
from scheduler.kernel.errors import DaemonError, SchedctlError, UsageError

# The daemon's HTTP client (http.client), the progress bar and the console (rich) are imported
# where they are used: a `schedctl run --json` without a daemon needs none of them. The run's
# own machinery (dispatcher, store, runners, structlog) is imported inside the command, once
# the run's test process is started (scheduler.run.spec.prewarm: it imports pytest while they
# load), and because click imports this module before the group's callback has set up
# logging: structlog imported then would be imported with rich (see :mod:`scheduler.logs`).
if TYPE_CHECKING:
    from runners.docker_prewarm import DockerPrewarm
    from runners.prewarm import Prewarm
    from scheduler.api.client import ApiClient
    from scheduler.cli.progress import ProgressView
    from scheduler.config import Config
    from scheduler.run.dispatch import RunRequest
    from scheduler.store.records import QuarantineRow, RunRecord

__all__ = ["run_command"]


@click.command("run")
@click.argument("tier")
@click.option("--ref", help="Branch, tag or SHA to test (default: the configured branch).")
@click.option("-m", "markers", help="pytest -m expression overriding the tier's markers.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Timeout in seconds for this run (> 0).",
)
@click.option(
    "--runner", type=click.Choice(["auto", "local", "docker", "slurm"]), help="Runner backend."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option(
    "--detach", is_flag=True, help="Submit to the daemon and print the run id without waiting."
)
@click.pass_obj
def run_command(
    app: AppContext,
    tier: str,
    ref: str | None,
    markers: str | None,
    timeout_s: float | None,
    runner: str | None,
    as_json: bool,
    detach: bool,
) -> None:
    """Run TIER now and wait for the result (exit 0 only when passed).

    Goes through the daemon when one runs on this state dir, else runs in this process.
    """
    launchers: list[Prewarm | DockerPrewarm] = []
    heap = _StartupHeap()
    try:
        early = None if detach else _early_launcher(app, tier, runner)
        if early is not None:
            launchers.append(early)
        config = app.run_config
        config.tier(tier)
        found = _daemon(config)
        if found is not None and early is not None:
            early.discard()  # the daemon runs it: a container must not wait for nothing meanwhile
        prewarmed = None
        if found is None and not detach:
            prewarmed = _launcher(app, tier, runner, early)
            if prewarmed is not None:
                launchers.append(prewarmed)
        _run_command(
            app, tier, ref, markers, timeout_s, runner, as_json, detach, found, prewarmed, heap
        )
    finally:
        for launcher in launchers:
            launcher.discard()  # a no-op for the one the run used
        heap.release()


class _StartupHeap:
    """The cyclic garbage collector, paused while the command prepares the run.

    Until the run is recorded, this process imports (config, store, dispatcher, runners: the
    bulk of its heap, alive until it exits) and collecting finds nothing to reclaim: each
    automatic pass only walks what the imports made, on the way to the test process's "go". So
    the collector is off until then; at :meth:`settle` (the run is recorded: ``RunQueued``) what
    was made is frozen (``gc.freeze``: never walked again, as
    :func:`scheduler.kernel.heap.freeze_heap` does for the daemon; otherwise the first pass after
    re-enabling would walk it all) and the collector is back for everything after -- a GPU
    lease that waits, the run's supervision, however long they last. A run submitted to a
    daemon gets it back before it is followed. :meth:`release` (the command is done) gives the
    collector back as it found it: a command run inside another process (a test's CliRunner)
    leaves that process's heap unfrozen.
    """

    def __init__(self) -> None:
        self.enabled = gc.isenabled()
        self.frozen_before = gc.get_freeze_count()
        self.froze = False
        self.settled = False
        gc.disable()

    def settle(self) -> None:
        if self.settled:
            return
        self.settled = True
        gc.freeze()
        self.froze = True
        if self.enabled:
            gc.enable()

    def release(self) -> None:
        if self.froze and self.frozen_before == 0:
            gc.unfreeze()
        self.froze = False
        self.settled = True
        if self.enabled:
            gc.enable()


def _early_launcher(
    app: AppContext, tier: str, runner: str | None
) -> Prewarm | DockerPrewarm | None:
    """The run's test process -- a local launcher, or a docker run's whole container -- started
    from the plan the last run of this tier remembered for this very config
    (:mod:`scheduler.run.launch_plans`), before the config is validated."""
    from scheduler.cli.app import find_config
    from scheduler.kernel.errors import ConfigError
    from scheduler.run.launch_plans import recall

    try:
        plan = recall(find_config(app.config_path), tier, runner)
    except ConfigError:
        return None  # loading the config reports it
    return plan.start() if plan is not None else None


def _launcher(
    app: AppContext, tier: str, runner: str | None, early: Prewarm | DockerPrewarm | None
) -> Prewarm | DockerPrewarm | None:
    """The launcher for this run: ``early`` when the validated config makes the same plan, else
    one started now (and the plan remembered for the next run)."""
    from scheduler.cli.app import find_config
    from scheduler.run.launch_plans import remember
    from scheduler.run.spec import launch_plan

    plan = launch_plan(app.config, tier, runner)
    if plan is not None:
        remember(find_config(app.config_path), tier, runner, plan)
    if early is not None and early.plan == plan:
        return early
    if early is not None:  # the remembered plan is stale (the config changed): it goes now
        _drop(early)
    return plan.start() if plan is not None else None


def _drop(early: Prewarm | DockerPrewarm) -> None:
    """End a launcher the run will not use: a local one at once (a kill), a container in the
    background (the engine removes it while the run starts; the command's end waits for that)."""
    from runners.docker_prewarm import DockerPrewarm

    if isinstance(early, DockerPrewarm):
        early.discard(wait=False)
    else:
        early.discard()


def _run_command(
    app: AppContext,
    tier: str,
    ref: str | None,
    markers: str | None,
    timeout_s: float | None,
    runner: str | None,
    as_json: bool,
    detach: bool,
    found: tuple[int, ApiClient] | None,
    prewarmed: Prewarm | DockerPrewarm | None,
    heap: _StartupHeap | None = None,
) -> None:
    from scheduler.run.dispatch import RunRequest

    config = app.config
    request = RunRequest(
        tier=tier, trigger="manual", ref=ref, markers=markers, timeout_s=timeout_s, runner=runner
    )
    if found is not None:
        pid, client = found
        if runner is not None:
            raise UsageError(
                f"--runner cannot be chosen for a run submitted to the daemon (pid {pid}): a "
                "tier runs on its configured runner; set tiers.<tier>.runner in the config"
            )
        if heap is not None:
            heap.release()  # the daemon runs it: this process only follows, however long
        _run_in_daemon(pid, client, request, as_json=as_json, detach=detach)
        return
    if detach:
        raise UsageError(
            f"--detach needs a running daemon; none runs on {config.state_dir} "
            "(start one with `schedctl daemon`, or drop --detach)"
        )
    _run_here(app, request, as_json, prewarmed, heap)


def _daemon(config: Config) -> tuple[int, ApiClient] | None:
    """The daemon on this state dir, if one runs; its HTTP client is imported only then."""
    from scheduler.api.address import socket_path
    from scheduler.daemon.lock import StateLock

    if StateLock.holder(config.state_dir) is None or not socket_path(config).exists():
        return None
    from scheduler.api.client import daemon_client

    return daemon_client(config)


def _run_here(
    app: AppContext,
    request: RunRequest,
    as_json: bool,
    prewarmed: Prewarm | DockerPrewarm | None = None,
    heap: _StartupHeap | None = None,
) -> None:
    from runners.base import StopRequest
    from scheduler.api.payloads import run_summary
    from scheduler.daemon.assembly import build_dispatcher
    from scheduler.kernel.events import Event, RunQueued, RunStarted

    config = app.config
    dispatcher = build_dispatcher(config, app.run_store, prewarm=prewarmed)
    dispatcher.validate(request)
    view = _progress_view(enabled=not as_json)
    started = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, RunQueued):
            if heap is not None:
                heap.settle()
            if view is not None:
                view.watch(event.run_dir, event.run_id, event.tier)
        elif isinstance(event, RunStarted):
            started.set()

    dispatcher.add_listener(on_event)
    cancel = StopRequest()
    outcome: dict[str, RunRecord] = {}

    def work() -> None:
        try:
            outcome["record"] = dispatcher.run(request, cancel)
        finally:
            started.set()

    worker = threading.Thread(target=work, name="run", daemon=True)
    worker.start()
    expired: list[QuarantineRow] | None = None
    try:
        while worker.is_alive():
            if expired is None and started.is_set():
                # While the tests run this thread has nothing to do: the expiry check (and the
                # alerting it imports) happens now, off the run's wall time, and so does the
                # checkpoint of what the WAL holds (earlier runs' pages): the run's finish then
                # writes its results into a checkpointed store, reading the pages it changes
                # from the mapped file, not out of a grown WAL (~2x the insert at 1M results).
                expired = _check_quarantines(app)
                _merge_staged(app)  # earlier runs' staged results (scheduler/store/staging.py)
                _checkpoint(app, min_wal_bytes=1)
            worker.join(0.1)
            if view is not None:
                view.refresh()
    except KeyboardInterrupt:
        _console_note("[yellow]interrupted: cancelling the run...[/yellow]")
        cancel.set()
        worker.join()
    finally:
        if view is not None:
            view.close()
    record = outcome.get("record")
    if record is None:
        raise click.ClickException("the run did not produce a record (see the log above)")
    for row in _check_quarantines(app) if expired is None else expired:
        click.echo(
            f"quarantine of {row.nodeid} expired: alert queued for "
            f"{row.owner or 'its sinks'} (the daemon delivers it)",
            err=True,
        )
    _checkpoint(app)
    _finish(run_summary(record), as_json)


CHECKPOINT_ABOVE_BYTES = 16 << 20
"""A run in this process (no daemon, whose timer would) checkpoints the store's WAL when it has
grown past this: the inserts themselves never do, and without a daemon nothing else would."""


def _checkpoint(app: AppContext, min_wal_bytes: int = CHECKPOINT_ABOVE_BYTES) -> None:
    try:
        app.run_store.checkpoint(min_wal_bytes=min_wal_bytes)
    except SchedctlError as exc:  # the run's result stands; the next run tries again
        import structlog

        structlog.get_logger("schedctl.cli").warning("checkpoint_failed", error=str(exc))


def _merge_staged(app: AppContext) -> None:
    try:
        app.run_store.merge_staged()
    except SchedctlError as exc:  # the rows stay staged (readers see them); the next run merges
        import structlog

        structlog.get_logger("schedctl.cli").warning("merge_staged_failed", error=str(exc))


def _progress_view(enabled: bool) -> ProgressView | None:
    """The live progress bar; ``None`` with ``--json`` (nothing of rich is imported then)."""
    if not enabled:
        return None
    from scheduler.cli.progress import ProgressView

    return ProgressView(enabled=True)


def _console_note(markup: str) -> None:
    from scheduler.cli.output import console

    console(stderr=True).print(markup)


def _check_quarantines(app: AppContext) -> list[QuarantineRow]:
    """Queue the alert of every quarantine that has expired, as the daemon's listener does; the
    quarantines it queued (the caller names them once the run is over).

    Without a daemon nobody else looks after this run; the store's claim makes the alert go out
    once whichever process notices first, and the daemon's delivery worker sends it. Without
    alert sinks there is nothing to queue, and alerting is not even imported. A failure here is
    logged and does not change the run's exit code.
    """
    from scheduler.daemon.assembly import alert_sinks_configured

    if not alert_sinks_configured(app.config):
        return []
    import structlog

    from scheduler.alerts.build import build_quarantine_expiry

    try:
        expiry = build_quarantine_expiry(app.config, app.store)
        return expiry.check() if expiry is not None else []
    except Exception as exc:  # the run's result stands; the next run or the daemon retries
        structlog.get_logger("schedctl.cli").warning(
            "quarantine_expiry_check_failed", error=str(exc)
        )
        return []


def _run_in_daemon(
    pid: int, client: ApiClient, request: RunRequest, *, as_json: bool, detach: bool
) -> None:
    reply = client.submit(
        request.tier,
        ref=request.ref,
        markers=request.markers,
        timeout_s=request.timeout_s,
        trigger="manual",
    )
    run_id = int(reply["run_id"])
    click.echo(f"submitted to daemon pid {pid} as run {run_id}", err=True)
    if detach:
        if as_json:
            from scheduler.cli.output import emit_json

            emit_json({"run_id": run_id, "daemon_pid": pid, **reply})
        else:
            click.echo(str(run_id))
        raise SystemExit(0)
    from scheduler.cli.progress import ProgressView

    view = ProgressView(enabled=not as_json)
    summary: dict[str, Any] | None = None
    try:
        summary = _follow(client, run_id, request.tier, view)
    except KeyboardInterrupt:
        _console_note("[yellow]interrupted: cancelling the run...[/yellow]")
        client.cancel(run_id, "interrupted at the terminal (Ctrl-C)")
        summary = _follow(client, run_id, request.tier, view)
    finally:
        view.close()
    if summary is None:
        raise DaemonError(
            f"the daemon closed run {run_id}'s event stream before the run ended; "
            f"it may still be running: schedctl show {run_id}"
        )
    _finish(summary, as_json)


def _follow(client: ApiClient, run_id: int, tier: str, view: ProgressView) -> dict[str, Any] | None:
    """Feed the daemon's event stream into the progress view; the final summary, if it came."""
    from scheduler.cli.progress import FedTail

    fed = FedTail()
    for event in client.events(run_id):
        kind = event.get("type")
        if kind == "run":
            if view.tail is None:
                view.watch(Path(event["run"].get("run_dir") or "."), run_id, tier)
            view.tail = fed
        elif kind == "finished":
            summary: dict[str, Any] = event["run"]
            return summary
        else:
            fed.feed(event)
        view.refresh()
    return None


def _finish(summary: dict[str, Any], as_json: bool) -> None:
    from scheduler.kernel.outcome import Outcome

    if as_json:
        # As scheduler.cli.output.emit_json prints it, without importing that module's rich.
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        _print_result(summary)
    raise SystemExit(0 if summary["outcome"] == Outcome.PASSED.value else 1)


def _print_result(summary: dict[str, Any]) -> None:
    from scheduler.cli.output import console, fmt_duration, line, styled
    from scheduler.kernel.outcome import Outcome

    out = console()
    counts = summary["counts"]
    parts = [f"{counts.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped")]
    if counts.get("flaky"):
        parts.append(f"{counts['flaky']} flaky")
    run_id = summary["run_id"]
    out.print(
        line(
            f"run {run_id} ({summary['tier']}): ",
            styled(Outcome(summary["outcome"])),
            f" in {fmt_duration(summary['duration_s'])} - {', '.join(parts)}",
        )
    )
    if summary["reason"]:
        out.print(line("  ", summary["reason"]))
    out.print(line(f"  details: schedctl show {run_id}   log: schedctl logs {run_id}"))
