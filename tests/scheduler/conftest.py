"""Fixtures shared by the scheduler's test packages: a dispatcher whose runs are scripted."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from runners.base import Runner
from runners.fake import FakeBehaviour, FakeRunner, always
from runners.registry import RunnerFactory
from scheduler.config import Config
from scheduler.kernel.events import Event
from scheduler.run.dispatch import Dispatcher
from scheduler.store.engine import Store

FakeDispatcher = Callable[..., Dispatcher]


@pytest.fixture
def fake_dispatcher() -> FakeDispatcher:
    """Build a real Dispatcher whose every runner alias (local, auto, docker) is one fake.

    ``fake_dispatcher(config, runner_or_behaviour=None, *, store=None, events=None,
    listeners=(), **dispatcher_kwargs)``: a :class:`FakeBehaviour` becomes
    ``FakeRunner(always(behaviour))``, ``None`` a passing ``FakeRunner()``; ``events`` (a list)
    collects every event; other keywords (``source``, ``gpu_pool``) go to the Dispatcher.
    """

    def make(
        config: Config,
        runner: Runner | FakeBehaviour | None = None,
        *,
        store: Store | None = None,
        events: list[Event] | None = None,
        listeners: Iterable[Callable[[Event], None]] = (),
        **kwargs: Any,
    ) -> Dispatcher:
        if runner is None:
            runner = FakeRunner()
        elif isinstance(runner, FakeBehaviour):
            runner = FakeRunner(always(runner))
        factory = RunnerFactory({alias: runner for alias in ("local", "auto", "docker")})
        all_listeners = [*listeners, *([events.append] if events is not None else [])]
        return Dispatcher(
            config, store or Store(config.db_path), factory, listeners=all_listeners, **kwargs
        )

    return make
