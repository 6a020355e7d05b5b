"""Crash recovery: runs whose owner died become ``interrupted``; their leftovers are reaped.

Runs at daemon start-up, on the daemon's timer, and before a run when the store holds a stale
active row (a run's row is written before anything is started, so a crash always leaves one):
a killed CLI or daemon leaves nothing behind for long, and a fire does not pay for asking every
runner's engine when nothing died. What dead runs left is reaped by the runners that started
it (:meth:`Runner.reap_orphans`: containers by label, local processes -- pytest, torchrun
launchers and ranks alike -- by the run tag in their environment), and GPU leases of dead runs
are freed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from runners.registry import RunnerFactory
from scheduler.kernel.outcome import Stop, decide
from scheduler.run.ledger import RunLedger

if TYPE_CHECKING:
    from scheduler.run.protocols import RunStore
    from scheduler.store.records import RunRecord

log = structlog.get_logger("schedctl.recovery")


def process_identity(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """``<boot id>:<start time>`` of a process: unlike its pid, never reused."""
    try:
        boot = (proc_root / "sys/kernel/random/boot_id").read_text().strip()
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def owner_alive(record: RunRecord, proc_root: Path = Path("/proc")) -> bool:
    """Whether the process that owns ``record`` still runs (same pid AND same process)."""
    if not pid_alive(record.owner_pid):
        return False
    if record.owner_identity is None or record.owner_pid is None:
        return True
    return process_identity(record.owner_pid, proc_root) == record.owner_identity


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_runs(
    store: RunStore,
    runners: RunnerFactory,
    ledger: RunLedger,
    *,
    host: str,
    runner_names: set[str],
    proc_root: Path = Path("/proc"),
) -> list[int]:
    """Mark runs whose owning process is gone as interrupted; reap leftovers; free leases."""
    interrupted = []
    runners.prepare(runner_names)
    for record in store.active_runs():
        if record.host == host and owner_alive(record, proc_root):
            continue
        if record.host not in (None, host):
            continue
        reason = (
            f"schedctl process {record.owner_pid} died while the run was {record.outcome.value}"
        )
        ledger.finish(record.id, decide(Stop.INTERRUPTED, reason))
        interrupted.append(record.id)
    live = {str(r.id) for r in store.active_runs()}
    reaped = runners.reap_orphans(live)
    if reaped:
        log.warning("orphans_reaped", run_ids=reaped)
    for run_id in reaped:
        if run_id.isdigit() and int(run_id) not in interrupted:
            record = store.get_run(int(run_id))
            if not record.outcome.is_final:
                ledger.finish(
                    record.id, decide(Stop.INTERRUPTED, "its orphaned processes were reaped")
                )
                interrupted.append(record.id)
    store.release_dead_leases()
    if interrupted:
        log.warning("runs_interrupted", run_ids=interrupted)
    return interrupted
