"""A run refused for low state disk alerts through the normal pipeline (issue 20, finding 3)."""

from __future__ import annotations

from collections.abc import Callable

from pytest_httpserver import HTTPServer

from runners.fake import FakeBehaviour, FakeRunner
from scheduler.alerts.build import build_alerting
from scheduler.config import Config
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import RunRequest
from scheduler.store.engine import Store
from tests.scheduler.alerts.conftest import WEBHOOK_SECRET, Recorder
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for


def test_run_refused_below_state_min_free_fires_an_infra_alert(
    httpserver: HTTPServer,
    make_config: Callable[..., Config],
    fake_dispatcher: FakeDispatcher,
) -> None:
    """state_min_free above the free space: the run is infra-error, never reaches the runner,
    and the webhook gets an infra alert whose reason names state_min_free."""
    receiver = Recorder()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(receiver)
    hook = {"name": "hook", "url": httpserver.url_for("/hook"), "secret_env": "HOOK_SECRET"}
    config = make_config(state_min_free="16t", alerts={"webhooks": [hook]})
    store = Store(config.db_path)
    alerting = build_alerting(config, store, env={"HOOK_SECRET": WEBHOOK_SECRET})
    assert alerting is not None
    started: list[object] = []

    def handler(spec: object) -> FakeBehaviour:
        started.append(spec)
        return FakeBehaviour(exit_code=0, tests=[("t.py::test_x", "passed")])

    dispatcher = fake_dispatcher(
        config, FakeRunner(handler), store=store, listeners=[alerting.recorder]
    )
    alerting.worker.start()
    try:
        record = dispatcher.run(RunRequest("hourly"))
        wait_for(lambda: len(receiver.requests) == 1, 10, "the infra alert at the hook")
    finally:
        alerting.worker.stop()
    assert record.outcome is Outcome.INFRA_ERROR and started == []
    (body,) = receiver.bodies()
    assert body["failure_class"] == "infra" and body["action"] == "fire"
    assert "state_min_free" in str(body)
