"""The smaller views and their sources: GPU strip, markers hook, paging, and the daemon service."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.config import Config
from scheduler.daemon.assembly import build_dispatcher, build_services
from scheduler.gpu import FakeProbe, write_fake_gpus
from scheduler.kernel.errors import UsageError
from scheduler.store.engine import Store
from scheduler.web import Pages, Sources, WebApp, WebService
from scheduler.web.gpus import gpu_cells, gpu_source
from scheduler.web.markers import AUDIT_FILE, markers_view

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_gpu_strip_shows_free_leased_and_drained(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "gpus.json"
    write_fake_gpus(path, [{"index": i, "uuid": f"GPU-{i}", "memory_total_mib": 1024}
                           for i in range(3)])  # fmt: skip
    run_id = store.create_run(tier="weekly", trigger="cli")
    assert run_id is not None
    store.acquire_leases(run_id, "weekly", [(1, "GPU-1")])
    store.drain_gpu("GPU-2", 2, "xid", "Xid 79 <fell off the bus>", clears=False)
    cells = gpu_cells(FakeProbe(path), store)
    assert [(c.index, c.state) for c in cells] == [(0, "free"), (1, "leased"), (2, "drained")]
    assert f"run {run_id}" in cells[1].detail and "Xid 79" in cells[2].detail
    html = WebApp(Pages(Sources(store=store, gpus=lambda: cells))).handle("/").body.decode()
    assert 'class="gpu drained"' in html and "&lt;fell off the bus&gt;" in html


def test_no_gpu_tier_and_no_fake_file_means_no_strip_and_no_nvml(
    make_config: Callable[..., Config], store: Store
) -> None:
    assert gpu_source(make_config(), store, environ={}) is None
    html = WebApp(Pages(Sources(store=store))).handle("/").body.decode()
    assert "GPUs</h2>" not in html


class TestMarkersHook:
    def test_without_the_audit_package_the_page_says_so(self, tmp_path: Path) -> None:
        assert markers_view(tmp_path, installed=False).state == "not-installed"

    def test_before_the_audit_ran_the_page_says_so(self, tmp_path: Path) -> None:
        view = markers_view(tmp_path, installed=True)
        assert view.state == "not-run" and "has not been run" in view.detail

    def test_an_audit_file_shows_its_table_escaped(self, tmp_path: Path, store: Store) -> None:
        (tmp_path / AUDIT_FILE).write_text(json.dumps({
            "distribution": {"hourly": 12, "<b>slow</b>": 40, "bad": "x"},
            "recommendations": ["mark tests/test_io.py::test_big as slow <script>"],
        }))  # fmt: skip
        view = markers_view(tmp_path, installed=True)
        assert view.distribution == [("<b>slow</b>", 40), ("hourly", 12)]
        pages = Pages(Sources(store=store, state_dir=tmp_path, markers_installed=True))
        html = WebApp(pages).handle("/markers").body.decode()
        assert "&lt;b&gt;slow&lt;/b&gt;" in html and "&lt;script&gt;" in html

    def test_a_broken_audit_file_is_reported_not_raised(self, tmp_path: Path) -> None:
        (tmp_path / AUDIT_FILE).write_text("{nope")
        assert markers_view(tmp_path, installed=True).state == "unreadable"


def test_runs_are_paged_50_at_a_time_keeping_the_filters(store: Store) -> None:
    for n in range(120):
        run_id = store.create_run(tier="hourly" if n % 2 else "daily", trigger="schedule",
                                  queued_at=T0 + timedelta(minutes=n))  # fmt: skip
        assert run_id is not None
        store.finish_run(run_id, outcome="passed")
    pages = Pages(Sources(store=store))
    first = pages.runs({"tier": "hourly"}).context
    assert len(first["runs"]) == 50 and {r.tier for r in first["runs"]} == {"hourly"}
    assert first["older"] == {"tier": "hourly", "before": str(first["runs"][-1].id)}
    second = pages.runs(first["older"]).context
    assert len(second["runs"]) == 10 and second["older"] is None
    assert max(r.id for r in second["runs"]) < min(r.id for r in first["runs"])
    dated = pages.runs({"since": "2026-03-01", "until": "2026-03-01"}).context
    assert len(dated["runs"]) == 50  # every run was queued on 1 March


class _Daemon:
    def next_fire_times(self) -> dict[str, datetime | None]:
        return {"hourly": T0}


class TestWebService:
    def test_the_daemon_serves_the_pages_on_web_address(
        self, make_config: Callable[..., Config]
    ) -> None:
        config = make_config(daemon={"metrics_address": None, "web_address": "127.0.0.1:0"})
        store = Store(config.db_path)
        services = build_services(config, store, build_dispatcher(config, store))
        (web,) = [s for s in services if isinstance(s, WebService)]
        web.start(_Daemon())  # type: ignore[arg-type]
        try:
            assert web.server is not None
            conn = http.client.HTTPConnection("127.0.0.1", web.server.server_port, timeout=10)
            conn.request("GET", "/")
            body = conn.getresponse().read().decode()
            assert "2026-03-01 00:00" in body  # the scheduler's next fire time
        finally:
            web.stop()

    def test_web_address_null_serves_nothing(self, make_config: Callable[..., Config]) -> None:
        config = make_config(daemon={"metrics_address": None, "web_address": None})
        store = Store(config.db_path)
        services = build_services(config, store, build_dispatcher(config, store))
        assert not [s for s in services if isinstance(s, WebService)]

    def test_off_loopback_without_a_token_the_daemon_refuses_to_start(
        self, make_config: Callable[..., Config]
    ) -> None:
        config = make_config(daemon={"metrics_address": None, "web_address": "0.0.0.0:0"})
        web = WebService(config, Store(config.db_path), env={})
        with pytest.raises(UsageError, match=r"daemon\.web_address 0\.0\.0\.0:0 is not a loopback"):
            web.start(_Daemon())  # type: ignore[arg-type]
        assert web.server is None

    def test_the_pages_are_built_at_the_first_request_and_a_failed_build_retried(
        self, make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import scheduler.web

        built: list[str] = []
        real = scheduler.web.build_pages

        def build_pages(*args: object, **kwargs: object) -> Pages:
            built.append("try")
            if len(built) == 1:
                raise OSError("CODEOWNERS unreadable")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(scheduler.web, "build_pages", build_pages)
        config = make_config(daemon={"metrics_address": None, "web_address": "127.0.0.1:0"})
        web = WebService(config, Store(config.db_path))
        web.start(_Daemon())  # type: ignore[arg-type]
        try:
            assert web.server is not None and built == []  # listening, nothing built yet

            def get() -> tuple[int, str]:
                assert web.server is not None
                conn = http.client.HTTPConnection("127.0.0.1", web.server.server_port, timeout=10)
                conn.request("GET", "/")
                response = conn.getresponse()
                return response.status, response.read().decode()

            status, body = get()
            assert status == 500 and "cannot be built" in body and "CODEOWNERS" not in body
            status, body = get()
            assert status == 200 and "2026-03-01 00:00" in body
            assert get()[0] == 200 and built == ["try", "try"]  # built once, then kept
        finally:
            web.stop()

    def test_off_loopback_with_the_api_token_it_starts(
        self, make_config: Callable[..., Config]
    ) -> None:
        config = make_config(daemon={"metrics_address": None, "web_address": "0.0.0.0:0"})
        web = WebService(config, Store(config.db_path), env={"SCHEDCTL_API_TOKEN": "t0ken"})
        web.start(_Daemon())  # type: ignore[arg-type]
        try:
            assert web.server is not None and not web.server.loopback
        finally:
            web.stop()


def test_config_web_address_default_and_bad_value(make_config: Callable[..., Config]) -> None:
    from scheduler.kernel.errors import ConfigError

    assert make_config().daemon.web_address == "127.0.0.1:9465"
    with pytest.raises(ConfigError) as err:
        make_config(daemon={"web_address": "nowhere"})
    assert err.value.problems[0].startswith("daemon.web_address: expected host:port")
