"""The pages in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Each page loads with no console error (a CSP violation counts); the click path overview -> red
tier -> run -> failing test -> its history works; the ``<script>`` test id stays text; the log
page streams a running run's output. Screenshots of each page go to the directory printed at
the start (``$SCHEDCTL_TEST_ARTIFACTS``/web-screenshots, else the system temp dir).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from scheduler.kernel.outcome import Outcome
from scheduler.web.server import WebServer
from tests.conftest import require
from tests.scheduler.web.seed import BROKEN, EVIL, Seeded
from tests.waiting import wait_for

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 30_000
TEST_URL = re.compile(r".*/test\?id=.+")
SHOTS = Path(os.environ.get("SCHEDCTL_TEST_ARTIFACTS") or tempfile.gettempdir()) / "web-screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(CHROMIUM.exists(), f"no {CHROMIUM} (run scripts/ensure-chromium.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Playwright for Python is not installed (pip install -e '.[dev]')")
        raise
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nweb screenshots: {SHOTS}")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


class Tab:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, server: WebServer) -> None:
        self.base = server.url.rstrip("/")
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "assert"):
            self.errors.append(f"console {message.type}: {message.text}")

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path, wait_until="load")
        assert response is not None
        return response

    def shot(self, name: str) -> Path:
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5000  # a rendered page, not a blank one
        return path


@pytest.fixture
def tab(browser: Any, server: WebServer) -> Iterator[Tab]:
    t = Tab(browser, server)
    yield t
    t.context.close()


PAGES = {
    "overview": lambda s: "/",
    "runs": lambda s: "/runs",
    "runs-filtered": lambda s: "/runs?tier=hourly&outcome=failed",
    "run": lambda s: f"/runs/{s.red_run}",
    "run-log": lambda s: f"/runs/{s.red_run}/log",
    "live-log": lambda s: f"/runs/{s.live_run}/log",
    "test": lambda s: f"/test?id={quote(BROKEN)}",
    "flaky": lambda s: "/flaky",
    "markers": lambda s: "/markers",
    "not-found": lambda s: "/runs/999999",
}


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_loads_without_console_errors(tab: Tab, seeded: Seeded, name: str) -> None:
    response = tab.open(PAGES[name](seeded))
    assert response.status == (404 if name == "not-found" else 200)
    tab.page.wait_for_load_state("networkidle")
    tab.shot(name)
    # a 404 document logs "Failed to load resource" for itself; nothing else may
    expected = ["404"] if name == "not-found" else []
    assert [e for e in tab.errors if not any(x in e for x in expected)] == []


def test_click_path_from_a_red_tier_to_the_failing_tests_history(tab: Tab, seeded: Seeded) -> None:
    tab.open("/")
    red = tab.page.locator('tr.tier[data-tier="hourly"]')
    assert "failed" in red.inner_text()
    red.locator("a.last-run").click()
    tab.page.wait_for_url(f"**/runs/{seeded.red_run}")
    assert "assert 1 == 2" in tab.page.locator("#tests").inner_text()
    failing = tab.page.locator("#tests tr.bad a.test-link", has_text="test_breaks")
    failing.click()
    tab.page.wait_for_url(TEST_URL)
    assert tab.page.locator("#nodeid").inner_text() == BROKEN
    # its history: green cells, then the red ones since the breaking commit
    assert tab.page.locator("#strip rect.ok").count() == 7
    assert tab.page.locator("#strip rect.bad").count() == 3
    assert tab.page.locator("#attempts tr").count() == 11
    tab.shot("click-path-test-history")
    tab.page.locator("#strip a").last.click()  # a history cell leads back to its run
    tab.page.wait_for_url(f"**/runs/{seeded.red_run}")
    assert tab.errors == []


def test_the_script_test_id_is_inert_and_shown_as_text(tab: Tab, seeded: Seeded) -> None:
    tab.open(f"/runs/{seeded.red_run}")
    assert tab.page.evaluate("typeof window.__pwned") == "undefined"
    assert tab.page.get_by_text(EVIL, exact=True).count() == 1
    assert tab.page.locator("#tests img").count() == 0  # the message's <img onerror> is text
    tab.page.get_by_text(EVIL, exact=True).click()
    tab.page.wait_for_url(TEST_URL)
    assert tab.page.locator("#nodeid").inner_text() == EVIL
    assert tab.page.evaluate("typeof window.__pwned") == "undefined"
    assert tab.errors == []


def test_the_log_page_streams_a_running_runs_output(tab: Tab, seeded: Seeded) -> None:
    tab.open(f"/runs/{seeded.live_run}/log")
    log = tab.page.locator("#log")
    assert "collecting" in log.inner_text()
    with seeded.live_log.open("a") as fh:
        fh.write("tests/test_a.py::test_one PASSED\n<script>window.__pwned=3</script>\n")
    # Polled from here: the page's CSP forbids the eval that wait_for_function would need.
    wait_for(lambda: "test_one PASSED" in log.text_content(), 30, "the appended log line")
    assert tab.page.evaluate("typeof window.__pwned") == "undefined"
    with seeded.live_log.open("a") as fh:
        fh.write("1 passed in 0.01s\n")
    seeded.store.finish_run(seeded.live_run, outcome=Outcome.PASSED, duration_s=1.0)
    follow = tab.page.locator("#follow")
    wait_for(lambda: "finished" in follow.text_content(), 30, "the page to see the run finish")
    assert "1 passed in 0.01s" in log.inner_text()
    tab.shot("live-log-finished")
    assert tab.errors == []
