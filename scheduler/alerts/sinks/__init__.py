"""Alert sinks, one module per channel; :mod:`.base` holds the contract, :mod:`.http` the
boundary to ``requests``."""

from __future__ import annotations

from scheduler.alerts.sinks.alertmanager import AlertmanagerSink
from scheduler.alerts.sinks.base import Delivery, Sink
from scheduler.alerts.sinks.github import GitHubSink
from scheduler.alerts.sinks.slack import SlackSink
from scheduler.alerts.sinks.webhook import WebhookSink

__all__ = ["AlertmanagerSink", "Delivery", "GitHubSink", "Sink", "SlackSink", "WebhookSink"]
