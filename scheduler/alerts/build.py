"""Sinks, recorder and worker from the ``alerts`` config section.

An empty section builds nothing. A sink whose secret is missing is *disabled*, logged and
listed by ``schedctl alerts`` rather than stopping the daemon: the tests still run, and nobody
receives an unsigned webhook or an unauthenticated request by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import requests
import structlog

from scheduler.alerts.quarantine import QuarantineExpiry
from scheduler.alerts.recorder import AlertRecorder, ChangesFn
from scheduler.alerts.retry import Backoff
from scheduler.alerts.review import ReviewDelivery
from scheduler.alerts.rules import RulePolicy
from scheduler.alerts.secrets import Secret, load_secret
from scheduler.alerts.sinks.alertmanager import AlertmanagerSink
from scheduler.alerts.sinks.base import Sink
from scheduler.alerts.sinks.github import GitHubSink
from scheduler.alerts.sinks.http import HttpClient
from scheduler.alerts.sinks.slack import SlackSink
from scheduler.alerts.sinks.webhook import WebhookSink
from scheduler.alerts.worker import DeliveryWorker, WorkerSettings
from scheduler.config import AlertmanagerSink as AlertmanagerConfig
from scheduler.config import AlertsConfig, Config
from scheduler.config import GitHubSink as GitHubConfig
from scheduler.config import SlackSink as SlackConfig
from scheduler.config import WebhookSink as WebhookConfig
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import AlertError, ConfigError
from scheduler.store.engine import Store

log = structlog.get_logger("schedctl.alerts")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class SinkSet:
    """The enabled sinks, and why the others are off (``name -> reason``)."""

    sinks: list[Sink] = field(default_factory=list)
    disabled: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Sink | None:
        return next((s for s in self.sinks if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sinks] + list(self.disabled)


@dataclass
class Alerting:
    """What the daemon wires in: the listener and the service."""

    recorder: AlertRecorder
    worker: DeliveryWorker
    sinks: SinkSet
    expiry: QuarantineExpiry | None = None
    review: ReviewDelivery | None = None


def build_sinks(
    alerts: AlertsConfig,
    *,
    session: requests.Session,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
    github_write_interval_s: float = 1.0,
    source: str = "<config>",
) -> SinkSet:
    """Instantiate every configured sink; raises ``ConfigError`` on clashing sink names."""
    env = os.environ if env is None else env
    _check_names(alerts, source)
    out = SinkSet()
    entries: list[tuple[str, Callable[[], Sink]]] = []
    for hook in alerts.webhooks:
        entries.append((hook.name, partial(_webhook, hook, session, env, clock)))
    for slack in alerts.slack:
        entries.append((slack.name, partial(_slack, slack, session, env, clock)))
    for gh in alerts.github:
        entries.append(
            (gh.name, partial(_github, gh, session, env, clock, github_write_interval_s))
        )
    for am in alerts.alertmanager:
        entries.append((am.name, partial(_alertmanager, am, session, env, clock)))
    for name, make in entries:
        try:
            out.sinks.append(make())
        except AlertError as exc:
            out.disabled[name] = str(exc)
            log.error("alert_sink_disabled", sink=name, reason=str(exc))
    return out


def _check_names(alerts: AlertsConfig, source: str) -> None:
    problems, seen = [], set()
    groups: list[tuple[str, list[Any]]] = [
        ("webhooks", list(alerts.webhooks)),
        ("slack", list(alerts.slack)),
        ("github", list(alerts.github)),
        ("alertmanager", list(alerts.alertmanager)),
    ]
    for key, sinks in groups:
        for i, sink in enumerate(sinks):
            where = f"alerts.{key}[{i}].name"
            if not _NAME_RE.match(sink.name):
                problems.append(f"{where}: {sink.name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]*")
            elif sink.name in seen:
                problems.append(f"{where}: duplicate sink name {sink.name!r}; names must be unique")
            seen.add(sink.name)
    if problems:
        raise ConfigError(source, problems)


def _webhook(
    cfg: WebhookConfig,
    session: requests.Session,
    env: Mapping[str, str],
    clock: Callable[[], datetime],
) -> Sink:
    secret = load_secret(cfg.secret_env, cfg.secret_file, env=env)
    if secret is None and (cfg.secret_env or cfg.secret_file):
        raise AlertError(f"secret not set: ${cfg.secret_env} is empty and no secret file exists")
    url: str | Secret | None = cfg.url
    if url is None:
        url = load_secret(cfg.url_env, cfg.url_file, env=env)
        if url is None:
            raise AlertError(f"no webhook URL: set ${cfg.url_env} or url_file")
    http = HttpClient(session, f"webhook {cfg.name}", clock=clock)
    return WebhookSink(
        cfg.name, url, http, secret=secret, tiers=cfg.tiers, severities=cfg.severities
    )


def _slack(
    cfg: SlackConfig,
    session: requests.Session,
    env: Mapping[str, str],
    clock: Callable[[], datetime],
) -> Sink:
    url = load_secret(cfg.url_env, cfg.url_file, env=env)
    if url is None:
        raise AlertError(f"no webhook URL: set ${cfg.url_env} or url_file")
    http = HttpClient(session, "slack webhook", clock=clock)
    return SlackSink(cfg.name, url, http, tiers=cfg.tiers, severities=cfg.severities)


def _github(
    cfg: GitHubConfig,
    session: requests.Session,
    env: Mapping[str, str],
    clock: Callable[[], datetime],
    write_interval_s: float,
) -> Sink:
    token = load_secret(cfg.token_env, cfg.token_file, env=env)
    if token is None:
        raise AlertError(f"no token: set ${cfg.token_env} or token_file")
    http = HttpClient(session, f"github {cfg.repo}", clock=clock)
    return GitHubSink(
        cfg.name,
        cfg.repo,
        http,
        token=token,
        api_url=cfg.api_url,
        labels=cfg.labels,
        escalation_labels=cfg.escalation_labels,
        comment_min_interval_s=cfg.comment_min_interval,
        write_interval_s=write_interval_s,
        clock=clock,
        tiers=cfg.tiers,
        severities=cfg.severities,
    )


def _alertmanager(
    cfg: AlertmanagerConfig,
    session: requests.Session,
    env: Mapping[str, str],
    clock: Callable[[], datetime],
) -> Sink:
    http = HttpClient(session, f"alertmanager {cfg.name}", clock=clock)
    return AlertmanagerSink(
        cfg.name, cfg.url, http, clock=clock, tiers=cfg.tiers, severities=cfg.severities,
        firing_ttl=timedelta(seconds=cfg.firing_ttl),
    )  # fmt: skip


def has_sinks(alerts: AlertsConfig) -> bool:
    return bool(alerts.webhooks or alerts.slack or alerts.github or alerts.alertmanager)


def build_alerting(
    config: Config,
    store: Store,
    *,
    changes: ChangesFn | None = None,
    session: requests.Session | None = None,
    env: Mapping[str, str] | None = None,
    settings: WorkerSettings | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Alerting | None:
    """Recorder + worker for the daemon; ``None`` when no sink is configured."""
    alerts = config.alerts
    sinks = _configured_sinks(config, session, env, clock)
    if sinks is None:
        return None
    delivery = alerts.delivery
    settings = settings or WorkerSettings(
        lease_s=delivery.lease,
        backoff=Backoff(
            base_s=delivery.backoff_base,
            max_s=delivery.backoff_max,
            max_attempts=delivery.max_attempts,
        ),
    )
    worker = DeliveryWorker(store, sinks.sinks, settings=settings, clock=clock)
    recorder = AlertRecorder(
        store,
        sinks.sinks,
        policy=RulePolicy(
            escalate_after=alerts.escalation.after_consecutive_failures,
            resolve_after_green=alerts.resolve_after_green,
        ),
        public_url=alerts.public_url,
        changes=changes,
        clock=clock,
        on_enqueued=worker.wake,
    )
    expiry = QuarantineExpiry(
        store, sinks.sinks, public_url=alerts.public_url, clock=clock, on_enqueued=worker.wake
    )
    review = ReviewDelivery(
        store, sinks.sinks, public_url=alerts.public_url, clock=clock, on_enqueued=worker.wake
    )
    return Alerting(recorder=recorder, worker=worker, sinks=sinks, expiry=expiry, review=review)


def _configured_sinks(
    config: Config,
    session: requests.Session | None,
    env: Mapping[str, str] | None,
    clock: Callable[[], datetime],
) -> SinkSet | None:
    """The configured sinks, each with its secrets; ``None`` when the config names none."""
    if not has_sinks(config.alerts):
        return None
    return build_sinks(
        config.alerts,
        session=session or requests.Session(),
        env=env,
        clock=clock,
        source=str(config.source_file or "<config>"),
    )


def build_quarantine_expiry(
    config: Config,
    store: Store,
    *,
    session: requests.Session | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> QuarantineExpiry | None:
    """The expiry check alone, for ``schedctl run`` without a daemon; ``None`` without sinks.

    It claims and enqueues like the daemon's listener (one transaction each), so an expiry is
    queued once whoever notices first; the daemon's delivery worker sends what it queued.
    """
    alerts = config.alerts
    sinks = _configured_sinks(config, session, env, clock)
    if sinks is None:
        return None
    return QuarantineExpiry(store, sinks.sinks, public_url=alerts.public_url, clock=clock)
