"""``schedctl runs``, ``schedctl show RUN`` and ``schedctl logs RUN``: what happened."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, fmt_duration, fmt_time, line, styled
from scheduler.kernel.errors import UnknownRunError
from scheduler.kernel.outcome import Outcome
from scheduler.store.records import RunRecord, change_range

FAILING = ("failed", "error", "xpassed")


@click.command("runs")
@click.option("--tier", help="Only runs of this tier.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def runs_command(app: AppContext, tier: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    if tier:
        app.read_view.tier(tier)
    if as_json:
        emit_json(app.reader.runs_json(tier=tier, limit=limit))
        return
    from rich.table import Table

    records = app.reader.list_runs(tier=tier, limit=limit)
    table = Table(
        "id", "tier", "trigger", "outcome", "started", "duration", "pass/fail", "sha", "host"
    )
    for r in records:
        counts = r.counts
        table.add_row(
            line(r.id),
            line(r.tier),
            line(r.trigger),
            styled(r.outcome),
            line(fmt_time(r.started_at or r.queued_at)),
            line(fmt_duration(r.duration_s)),
            line(f"{counts.get('passed', 0)}/{counts.get('failed', 0)}"),
            line((r.sha or "")[:10]),
            line(r.host or "-"),
        )
    console().print(table)


MAX_RUN_ID = 2**63 - 1


def _run_id(value: str) -> int:
    """ASCII digits that fit SQLite's integer (``²`` and 24-digit ids are no run ids)."""
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_RUN_ID:
        raise UnknownRunError(f"run id must be a positive integer, got {value[:40]!r}")
    return int(value)


def changes_since_green(app: AppContext, record: RunRecord, green: RunRecord | None) -> list[str]:
    """``git log --oneline`` from the tier's last green run ``green`` to this run."""
    span = change_range(green, record)
    if record.outcome is Outcome.PASSED or span is None:
        return []
    from scheduler.source import Source  # git: only for `show`

    config = app.read_config  # the full config (Source takes the project's settings)
    changes: list[str] = Source(config.project, config.state_dir).changes_between(*span)
    return changes


def show_payload(app: AppContext, record: RunRecord) -> dict[str, Any]:
    tests = app.reader.test_results_for(record.id, attempts=True)
    quarantined = {q.nodeid: q for q in app.reader.quarantine_list()}
    payload = record.to_json()
    payload["tests"] = [
        {
            "nodeid": t.nodeid,
            "outcome": t.outcome,
            "duration_s": t.duration_s,
            "markers": t.markers,
            "message": t.message,
            "attempt": t.attempt,
            "final": t.final,
            "peak_rss_bytes": t.peak_rss_bytes,
            "cuda_peak_bytes": t.cuda_peak_bytes,
            "owner": t.owner,
            "quarantined": t.nodeid in quarantined,
        }
        for t in tests
    ]
    payload["quarantine"] = [
        quarantined[n].to_json() for n in sorted({t.nodeid for t in tests} & set(quarantined))
    ]
    green = app.reader.last_green(record.tier, before_id=record.id)
    payload["last_green_run_id"] = green.id if green else None
    payload["changes_since_green"] = changes_since_green(app, record, green)
    return payload


def _evidence_rows(details: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Hang evidence (stacks, GPU snapshot) and preemption links, from untrusted details."""
    rows: list[tuple[str, Any]] = []
    hang = details.get("hang_evidence")
    if isinstance(hang, dict):
        stacks = hang.get("stacks")
        for path in stacks if isinstance(stacks, list) else []:
            rows.append(("stacks", str(path)))
        if hang.get("gpu_snapshot"):
            rows.append(("gpu state", str(hang["gpu_snapshot"])))
    for key, label in (("requeued_as", "re-run as"), ("requeue_of", "re-run of")):
        if details.get(key) is not None:
            rows.append((label, f"run {details[key]}"))
    return rows


def image_build_rows(record: RunRecord) -> list[tuple[str, object]]:
    """Links a run to the build that made its image, and a build to the image it made."""
    build = record.details.get("image_build")
    if not isinstance(build, dict):
        return []
    if record.kind == "build":
        made = " ".join(str(build[k]) for k in ("tag", "digest") if build.get(k))
        return [("built", made or None)]
    sha = f" at {str(build.get('sha'))[:12]}" if build.get("sha") else ""
    rows: list[tuple[str, object]] = [
        ("image from", f"build run {build.get('build_run_id')} of @{build.get('recipe')}{sha}")
    ]
    if build.get("note"):
        rows.append(("image note", build["note"]))
    return rows


@click.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show_command(app: AppContext, run: str, as_json: bool) -> None:
    """Show one run: outcome, provenance and per-test results."""
    record = app.reader.get_run(_run_id(run))
    payload = show_payload(app, record)
    if as_json:
        emit_json(payload)
        return
    out = console()
    out.print(
        line((f"run {record.id}", "bold"), "  tier ", record.tier, "  ", styled(record.outcome))
    )
    slot = f" (slot {fmt_time(record.slot)})" if record.slot else ""
    rows = [
        ("reason", record.reason),
        ("trigger", record.trigger + slot),
        ("started", fmt_time(record.started_at)),
        ("duration", fmt_duration(record.duration_s)),
        ("exit code", record.exit_code),
        ("runner", record.runner),
        ("host", record.host),
        ("commit", commit_line(record)),
        ("ref", record.ref),
        ("image", " ".join(str(x) for x in (record.image, record.image_id) if x) or None),
        ("container", record.container_id),
        ("markers", record.markers),
        *image_build_rows(record),
    ]
    slurm = record.details.get("provenance", {}) if isinstance(record.details, dict) else {}
    if isinstance(slurm, dict) and slurm.get("slurm_job_id"):
        gpus = slurm.get("cuda_visible_devices") or slurm.get("slurm_gres")
        rows.append((
            "slurm job",
            f"{slurm['slurm_job_id']} on {slurm.get('slurm_nodes') or '-'} (partition "
            f"{slurm.get('slurm_partition') or '-'}" + (f", GPUs {gpus})" if gpus else ")"),
        ))  # fmt: skip
    if record.gpus:
        names = ", ".join(
            " ".join(str(g.get(k)) for k in ("index", "name", "uuid") if g.get(k) is not None)
            for g in record.gpus
        )
        rows.append(("gpus", names))
        rows.append(
            ("driver/cuda", f"{record.driver_version or '-'} / {record.cuda_version or '-'}")
        )
    rows += _evidence_rows(record.details)
    for key, value in rows:
        out.print(line(f"  {key:<10} ", value))
    counts = record.counts
    out.print(line("  counts     ", ", ".join(f"{k} {v}" for k, v in counts.items() if v)))
    for extra in ("comparison_table",):
        if record.details.get(extra):
            out.print(line(record.details[extra]))
    if payload["changes_since_green"]:
        out.print(line((f"changes since last green run {payload['last_green_run_id']}:", "bold")))
        for change in payload["changes_since_green"]:
            out.print(line("  ", change))
    tests = payload["tests"]
    if tests:
        from rich.table import Table

        table = Table("outcome", "duration", "test", "note")
        ordered = sorted(
            tests, key=lambda t: (t["outcome"] not in FAILING, t["nodeid"], t["attempt"])
        )
        for t in ordered:
            duration = f"{t['duration_s'] or 0:.2f}s"
            note = [f"attempt {t['attempt']}" if t["attempt"] or not t["final"] else ""]
            note += ["quarantined" if t["quarantined"] else "", t["owner"] or ""]
            table.add_row(
                line(t["outcome"]),
                line(duration),
                line(t["nodeid"]),
                line(" ".join(filter(None, note))),
            )
        out.print(table)
        for q in payload["quarantine"]:
            until = f" (owner {q['owner'] or '-'}, expires {q['expires_at'] or 'never'})"
            out.print(line("quarantined: ", (q["nodeid"], "yellow"), " — ", q["reason"], until))
        for t in ordered:
            if t["outcome"] in FAILING and t["message"] and t["final"]:
                out.print(line((t["nodeid"], "red"), "\n", t["message"], "\n"))


def commit_line(record: RunRecord) -> str | None:
    """The tested commit as ``SHA subject (note)``; for a plain directory, says so and where.

    ``None`` (printed as ``-``) when the run never got a tree (it ended before the checkout).
    """
    source = record.source or {}
    note = source.get("note") or ""
    sha = record.sha or source.get("sha")
    if sha:
        subject = source.get("subject")
        return " ".join(str(x) for x in (sha, subject, f"({note})" if note else None) if x)
    if not source:
        return None
    where = source.get("workdir") or source.get("origin") or "the project path"
    if not note or note.startswith("not a git repository"):
        return f"(not a git checkout: {where})"
    return f"(no commit: {note}: {where})"


@click.command("logs")
@click.argument("run")
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the run is active.")
@click.pass_obj
def logs_command(app: AppContext, run: str, follow: bool) -> None:
    """Print the captured output of a run."""
    from runners.base import LOG_FILE  # runners.base imports structlog: `logs` only

    record = app.store.get_run(_run_id(run))
    path = Path(record.run_dir or "") / LOG_FILE
    if not path.exists():
        if record.pruned_at:
            raise click.ClickException(f"the log of run {record.id} was pruned by retention")
        raise click.ClickException(f"run {record.id} has no log ({record.outcome.value})")
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not follow or app.store.get_run(record.id).outcome.is_final:
                break
            time.sleep(0.5)
