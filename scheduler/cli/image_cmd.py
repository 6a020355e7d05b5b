"""``schedctl image build NAME`` and ``schedctl image list [NAME]``: the project's test images.

A build is a run of the recipe's build tier (``image:NAME``): ``image build`` is ``schedctl run
image:NAME`` (through the daemon when one runs), so it is recorded, alerted and exits like one.
"""

from __future__ import annotations

import click

from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, fmt_time, line
from scheduler.cli.run_cmd import run_command
from scheduler.config import BUILD_TIER_PREFIX
from scheduler.kernel.errors import UsageError


def _recipe(app: AppContext, name: str) -> str:
    if name not in app.config.images:
        known = ", ".join(app.config.images) or "(none)"
        raise UsageError(f"unknown image recipe {name!r}; images: in the config: {known}")
    return name


@click.group("image")
def image_group() -> None:
    """The project's test images, built from its own dependencies."""


@image_group.command("build")
@click.argument("name")
@click.option("--ref", help="Branch, tag or SHA to build from (default: the configured branch).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option("--detach", is_flag=True, help="Submit to the daemon and print the run id.")
@click.pass_context
def build_command(
    ctx: click.Context, name: str, ref: str | None, as_json: bool, detach: bool
) -> None:
    """Build image recipe NAME now (exit 0 only when the build passed)."""
    recipe = _recipe(ctx.obj, name)
    ctx.invoke(
        run_command, tier=BUILD_TIER_PREFIX + recipe, ref=ref, markers=None, timeout_s=None,
        runner=None, as_json=as_json, detach=detach,
    )  # fmt: skip


@image_group.command("list")
@click.argument("name", required=False)
@click.option("--all", "show_removed", is_flag=True, help="Include images retention removed.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_command(app: AppContext, name: str | None, show_removed: bool, as_json: bool) -> None:
    """Successful builds per recipe, newest first; '@NAME' resolves to the first present one."""
    names = [_recipe(app, name)] if name else list(app.config.images)
    builds = {n: app.store.image_builds(n, present_only=not show_removed) for n in names}
    if as_json:
        emit_json(
            {
                n: [
                    {
                        "run_id": b.run_id, "image_id": b.image_id, "tag": b.tag,
                        "digest": b.digest, "sha": b.sha, "built_at": b.built_at.isoformat(),
                        "removed_at": b.removed_at.isoformat() if b.removed_at else None,
                    }
                    for b in found
                ]
                for n, found in builds.items()
            }
        )  # fmt: skip
        return
    out = console()
    for recipe, found in builds.items():
        out.print(line((f"@{recipe}", "bold"), f"  {len(found)} build(s)"))
        for b in found:
            removed = f"  removed {fmt_time(b.removed_at)}" if b.removed_at else ""
            out.print(
                line(
                    f"  run {b.run_id:<6} ", b.tag, "  ", b.image_id[:19], "  ",
                    (b.sha or "")[:12], "  ", fmt_time(b.built_at), removed,
                )
            )  # fmt: skip
