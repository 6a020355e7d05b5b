"""Alerts people trust: rules per fingerprint, a durable outbox, and sinks.

Data flow::

    RunFinished / SlotMissed
      -> AlertRecorder (listener): rules.evaluate -> alert_state + alerts_outbox, one transaction
      -> DeliveryWorker (daemon service): outbox -> sinks (webhook, slack, github, alertmanager)

Modules: :mod:`.rules` (when), :mod:`.payload` (what), :mod:`.recorder` (listener),
:mod:`.outbox` (durable rows), :mod:`.worker` (delivery), :mod:`.retry` (timing),
:mod:`.secrets`, :mod:`.build` (from config), :mod:`.sinks` (one module per channel).
"""

from __future__ import annotations

from scheduler.alerts.build import Alerting, SinkSet, build_alerting, build_sinks
from scheduler.alerts.outbox import Outbox, OutboxRow, OutboxState
from scheduler.alerts.payload import Alert
from scheduler.alerts.recorder import AlertRecorder
from scheduler.alerts.rules import Action, FailureClass, RulePolicy, Severity
from scheduler.alerts.worker import DeliveryWorker, WorkerSettings

__all__ = [
    "Action",
    "Alert",
    "AlertRecorder",
    "Alerting",
    "DeliveryWorker",
    "FailureClass",
    "Outbox",
    "OutboxRow",
    "OutboxState",
    "RulePolicy",
    "Severity",
    "SinkSet",
    "WorkerSettings",
    "build_alerting",
    "build_sinks",
]
