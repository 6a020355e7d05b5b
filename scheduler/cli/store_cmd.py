"""``schedctl store migrate`` and ``schedctl store copy --from URL --to URL``."""

from __future__ import annotations

import click

from scheduler.cli.app import AppContext
from scheduler.cli.output import emit_json
from scheduler.kernel.errors import UsageError
from scheduler.store.connect import open_store, open_url
from scheduler.store.copy import copy_store


@click.group("store")
def store_group() -> None:
    """The database: create or upgrade its schema, copy a box's history into it."""


@store_group.command("migrate")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def store_migrate(app: AppContext, as_json: bool) -> None:
    """Create or upgrade the configured store's schema (explicit for PostgreSQL; a SQLite file
    is migrated whenever it is opened). Refuses a schema newer than this schedctl."""
    store = open_store(app.config, migrate=False)
    try:
        before, after = store.migrate()
        store.merge_staged()  # maintenance: staged results into test_results (store/staging.py)
    finally:
        store.close()
    if as_json:
        emit_json({"store": store.location, "before": before, "after": after})
    elif before == after:
        click.echo(f"{store.location}: schema {after}, up to date")
    else:
        click.echo(
            f"{store.location}: schema {before if before is not None else '(none)'} -> {after}"
        )


@store_group.command("copy")
@click.option("--from", "source", required=True, metavar="URL", help="sqlite:///PATH (or a URL)")
@click.option(
    "--to", "target", metavar="URL", help="postgresql://user@host/db (default: store.url)"
)
@click.option(
    "--host", default=None, help="Host of copied runs that recorded none (default: this host)"
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def store_copy(
    app: AppContext, source: str, target: str | None, host: str | None, as_json: bool
) -> None:
    """Copy a store's history (runs, results, alert state) into another, in one transaction.

    Run ids are shifted past the target's, so several boxes can be copied into one database.
    """
    config = app.config
    target = target or config.store.url
    if target is None:
        raise UsageError("store copy: no --to URL and no store.url in the config")
    if source == target:
        raise UsageError(f"store copy: --from and --to are the same store ({source})")
    if not source.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise UsageError(
            f"store copy --from: expected sqlite:///PATH or postgresql://..., got {source!r}"
        )
    if source.startswith("sqlite:///"):
        from pathlib import Path

        path = Path(source.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UsageError(f"store copy --from: {path} does not exist")
    # A SQLite file is migrated on open; a PostgreSQL target must have been migrated.
    dst = open_url(target, config.store)
    src = open_url(source, config.store)
    try:
        report = copy_store(src, dst, host=host or config.host_name)
    finally:
        src.close()
        dst.close()
    if as_json:
        emit_json(
            {
                "from": src.location,
                "to": dst.location,
                "rows": report.rows,
                "run_id_offset": report.run_id_offset,
                "renamed_keys": report.renamed_keys,
                "interrupted": report.interrupted,
            }
        )
        return
    click.echo(f"copied {src.location} -> {dst.location} (run ids +{report.run_id_offset})")
    for table, n in report.rows.items():
        click.echo(f"  {table}: {n}")
    if report.renamed_keys:
        click.echo(f"  {report.renamed_keys} slot keys already in the target got the host appended")
    if report.interrupted:
        click.echo(f"  {report.interrupted} runs active in the source were copied as interrupted")
