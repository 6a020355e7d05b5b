"""``schedctl markers audit | apply | review``: the categorization campaign (issue 14)."""

from __future__ import annotations

from pathlib import Path

import click

from scheduler.cli.app import AppContext

RUNNERS = click.Choice(["auto", "local", "docker", "slurm"])


@click.group("markers")
def markers_group() -> None:
    """Audit the suite's markers against history, apply a catalog, review it quarterly."""


def _since(value: str) -> float:
    from scheduler.config import parse_duration
    from scheduler.kernel.errors import UsageError

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None


def _catalog_path(app: AppContext) -> Path:
    from scheduler.kernel.errors import UsageError

    project = app.config.project.path
    if project is None:
        raise UsageError(
            f"{app.config.source_file}: project.path: the marker catalog is written into a "
            "local project; with project.repo, commit it in the repository"
        )
    return project / app.config.markers.catalog


@markers_group.command("audit")
@click.option("--ref", help="Commit, branch or tag to collect (default: the project's default).")
@click.option("--tier", help="Collect in this tier's runner and image (default: hourly).")
@click.option("--runner", type=RUNNERS, help="Override the tier's runner.")
@click.option(
    "--json", "as_json", is_flag=True, help="JSON (schema: scheduler/markers/audit.schema.json)."
)
@click.option("--markdown", "as_markdown", is_flag=True, help="The report as Markdown.")
@click.pass_obj
def audit_command(
    app: AppContext, ref: str | None, tier: str | None, runner: str | None, as_json: bool,
    as_markdown: bool,
) -> None:  # fmt: skip
    """Collect the suite at REF, print the marker distribution, tiers and recommendations."""
    from scheduler.cli.output import emit_json
    from scheduler.kernel.clock import utcnow
    from scheduler.kernel.errors import UsageError
    from scheduler.markers import report
    from scheduler.markers.review import save_latest, save_snapshot
    from scheduler.markers.service import audit_at

    if as_json and as_markdown:
        raise UsageError("--json and --markdown exclude each other: pick one")
    found, plan = audit_at(app.config, app.store, utcnow(), tier=tier, ref=ref, runner_name=runner)
    save_snapshot(app.config, found)
    save_latest(app.config, found, plan)
    if as_json:
        emit_json(report.to_json(found, plan))
    elif as_markdown:
        click.echo(report.markdown(found, plan))
    else:
        _print_text(found, plan)


def _print_text(found: object, plan: object) -> None:
    from rich.table import Table

    from scheduler.cli.output import console, line
    from scheduler.markers.audit import Audit
    from scheduler.markers.recommend import Plan
    from scheduler.markers.report import TIER_HEADER, distribution_rows, secs, tier_rows

    assert isinstance(found, Audit) and isinstance(plan, Plan)
    out = console()
    d = found.distribution
    c = found.collection
    out.print(line(
        f"collected {d.total} tests at ", c.ref or "the default ref", " (",
        (c.sha or "no commit")[:12], f") in tier {c.tier} ({c.runner})",
    ))  # fmt: skip
    out.print(line(
        (f"marked: {d.marked} ({d.marked_percent:.1f} %)", "bold"),
        f"   unmarked: {d.unmarked} ({d.unmarked_percent:.1f} %)   total: {d.total}",
    ))  # fmt: skip
    dist = Table("marker", "tests", "share", title="Distribution")
    for row in distribution_rows(d):
        dist.add_row(*(line(v) for v in row))
    out.print(dist)
    tiers = Table(*TIER_HEADER, title="Tiers (predicted = sum of p90; unknown = no history)")
    for row in tier_rows(plan.before, plan.after):
        tiers.add_row(*(line(v) for v in row))
    out.print(tiers)
    if plan.hourly_tier:
        out.print(
            line(f"hourly budget: {secs(plan.hourly_budget_s)} (tier ", plan.hourly_tier, ")")
        )
    shown = 30
    out.print(line((f"tests no tier runs: {len(found.unselected)}", "bold")))
    for n in found.unselected[:shown]:
        out.print(line("  ", n))
    if len(found.unselected) > shown:
        out.print(line(f"  ... and {len(found.unselected) - shown} more (--json lists all)"))
    out.print(line((f"tests several tiers run: {len(found.multi)}", "bold")))
    for n, tiers_of in list(found.multi.items())[:shown]:
        out.print(line("  ", n, "  ", ", ".join(tiers_of)))
    recs = Table("action", "test", "add", "remove", "evidence", title="Recommendations")
    for r in plan.recommendations:
        recs.add_row(
            line(r.action), line(r.nodeid), line(" ".join(r.add)), line(" ".join(r.remove)),
            line(r.evidence),
        )  # fmt: skip
    out.print(recs)
    counts = {a: len(plan.of(a)) for a in ("hourly", "daily", "slow", "demote")}
    out.print(line("recommended: ", ", ".join(f"{v} {k}" for k, v in counts.items())))


@markers_group.command("apply")
@click.option("--write", is_flag=True, help="Write the catalog (without it: print the diff).")
@click.option(
    "--only", default="hourly,daily,slow,demote", show_default=True,
    help="Accepted recommendation kinds, comma separated.",
)  # fmt: skip
@click.option("--ref", help="Collect at this ref (default: the project's default).")
@click.option("--tier", help="Collect in this tier's runner and image (default: hourly).")
@click.option("--runner", type=RUNNERS, help="Override the tier's runner.")
@click.pass_obj
def apply_command(
    app: AppContext, write: bool, only: str, ref: str | None, tier: str | None,
    runner: str | None,
) -> None:  # fmt: skip
    """Turn accepted recommendations into the marker catalog; no test file is edited."""
    from scheduler.kernel.clock import utcnow
    from scheduler.kernel.errors import UsageError
    from scheduler.markers import catalog
    from scheduler.markers.service import audit_at

    kinds = {k.strip() for k in only.split(",") if k.strip()}
    unknown = kinds - {"hourly", "daily", "slow", "demote"}
    if unknown or not kinds:
        raise UsageError(f"--only: unknown kind(s) {', '.join(sorted(unknown)) or '(none)'}; "
                         "expected hourly, daily, slow, demote")  # fmt: skip
    path = _catalog_path(app)
    entries = catalog.read(path)
    _, plan = audit_at(app.config, app.store, utcnow(), tier=tier, ref=ref, runner_name=runner)
    accepted = [r for r in plan.recommendations if r.action in kinds]
    old_text = path.read_text(encoding="utf-8") if path.exists() else ""
    new_text = catalog.render(catalog.merge(entries, accepted))
    if not write:
        text = catalog.diff(path, old_text, new_text)
        click.echo(text if text else f"{path}: no change")
        return
    plugin = catalog.write(path, new_text)
    click.echo(f"wrote {path} ({len(accepted)} recommendation(s)) and {plugin}")
    click.echo(
        f"load it yourself with: PYTHONPATH={plugin.parent} python -m pytest -p "
        f"{plugin.stem} -m MARKERS"
    )


@markers_group.command("review")
@click.option("--since", default="90d", show_default=True, help="The review period.")
@click.option("--ref", help="Collect at this ref (default: the project's default).")
@click.option("--tier", help="Collect in this tier's runner and image (default: hourly).")
@click.option("--runner", type=RUNNERS, help="Override the tier's runner.")
@click.pass_obj
def review_command(
    app: AppContext, since: str, ref: str | None, tier: str | None, runner: str | None
) -> None:
    """The quarterly review as Markdown: drift, stale catalog entries, unowned tests."""
    from scheduler.kernel.clock import utcnow
    from scheduler.markers.review import for_period, review, save_snapshot
    from scheduler.markers.service import audit_at

    period = _since(since)
    config = for_period(app.config, period)
    found, _ = audit_at(config, app.store, utcnow(), tier=tier, ref=ref, runner_name=runner)
    project = config.project.path
    path = project / config.markers.catalog if project is not None else None
    result = review(config, found, period, path)
    save_snapshot(config, found)
    click.echo(result.markdown)
