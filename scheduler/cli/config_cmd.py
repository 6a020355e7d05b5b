"""``schedctl config check|schema``: validate the configuration in full, print its schema."""

from __future__ import annotations

import json

import click

from scheduler.cli.app import AppContext, find_config
from scheduler.config import Config, json_schema, load_config
from scheduler.kernel.errors import ConfigError


@click.group("config")
def config_group() -> None:
    """Validate the configuration or print its schema."""


@config_group.command("check")
@click.argument("path", required=False)
@click.pass_obj
def config_check(app: AppContext, path: str | None) -> None:
    """Exit 0 when the config is valid; else exit 2 with one line per problem.

    A valid config also gets one line per tier: the runner it will use (``auto`` probes Docker
    now) and the interpreter that runs its tests; doubtful combinations are warnings on stderr.
    """
    target = find_config(path or app.config_path)
    config = load_config(target)
    click.echo(f"{target}: ok ({len(config.tiers)} tiers: {', '.join(config.tiers)})")
    if config.store.is_postgres:
        from scheduler.store.connect import open_store

        # A wrong password or an unreachable host is exit 2 here (StoreConnectError).
        store = open_store(config)
        try:
            click.echo(
                f"  store: {store.location} (schema {store.schema_version()}; "
                f"this daemon is host {config.host_name})"
            )
        finally:
            store.close()
    lines, warnings = tier_runners(config)
    for text in lines:
        click.echo(f"  {text}")
    for name, tier in config.tiers.items():
        if tier.schedule and not config.fires_here(name):
            warnings.append(
                f"tier {name}: pinned to hosts {', '.join(tier.hosts)}; this daemon (host "
                f"{config.host_name}) does not fire it"
            )
    for text in warnings:
        click.echo(f"warning: {text}", err=True)


def tier_runners(config: Config) -> tuple[list[str], list[str]]:
    """Per tier ``NAME  runner=... (why)  python=...``, and warnings about runner choices.

    The runner comes from :meth:`Config.runner_for`; ``auto`` is resolved by
    :meth:`RunnerFactory.resolve` as the dispatcher would, with Docker probed at most once.
    """
    from runners import registry  # the runner backends: `config check` only

    probed: list[tuple[bool, str]] = []

    def probe() -> tuple[bool, str]:
        if not probed:
            probed.append(registry.docker_probe())
        return probed[0]

    factory = registry.RunnerFactory(probe=probe)
    resolved: dict[str, str] = {}
    width = max(len(name) for name in config.tiers)
    lines: list[str] = []
    warnings: list[str] = []
    python = config.project.python
    for name, tier in config.tiers.items():
        configured = config.runner_for(name)
        if configured not in resolved:
            resolved[configured] = factory.resolve(configured)
        backend = resolved[configured]
        why = ""
        if configured == "auto":
            ok, reason = probe()
            why = f" (auto: {reason})" if ok else f" (auto: no Docker engine: {reason})"
        elif python and (tier.runner or config.runner) == "auto":
            why = " (auto: project.python is set, a host interpreter)"
        lines.append(
            f"{name:<{width}}  runner={backend}{why}  python={config.python_for(name, backend)}"
        )
        if configured == "docker" and python:
            warnings.append(
                f"tier {name}: runner: docker runs the tests with the image's python3; "
                f"project.python ({python}) is ignored (use runner: local or auto to use it)"
            )
    return lines, warnings


@config_group.command("schema")
def config_schema() -> None:
    """Print the JSON schema of config.yaml."""
    click.echo(json.dumps(json_schema(), indent=2))


__all__ = ["ConfigError", "config_group", "tier_runners"]
