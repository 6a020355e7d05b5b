"""schedctl results plugin: one JSON line per test, written live.

This file is copied into a run's directory as ``schedctl_results.py`` and loaded with
``-p schedctl_results`` under whatever interpreter runs the tests (a project's venv, a container
with only python3 + pytest), so it imports nothing but the standard library and pytest, and works
on pytest 7, 8 and 9.

It does nothing unless ``SCHEDCTL_RESULTS`` names an output file. Each line is one JSON object with
``type`` and ``ts`` (epoch seconds); the file is flushed after every line so a tailing process sees
progress live and a crash keeps what was written::

    {"type": "start", "pytest_version": str, "python": str, "pid": int}
    {"type": "collect_error", "nodeid": str, "longrepr": str}
    {"type": "collection", "collected": int, "selected": int, "deselected": int, "errors": int}
    {"type": "markers", "registered": [str]}                   (only under --collect-only)
    {"type": "item", "nodeid": str, "markers": [str]}          (only under --collect-only)
    {"type": "test_start", "nodeid": str}
    {"type": "test", "nodeid": str, "outcome": str, "when": "setup" | "call" | "teardown",
     "duration_s": float, "markers": [str], "longrepr": str | None, "message": str | None,
     "peak_rss_bytes": int | None, "start_rss_bytes": int | None, "rss_method": str | None,
     "cuda_peak_bytes": int | None}
    {"type": "session", "exitstatus": int, "counts": {outcome: int}, "collect_errors": int,
     "duration_s": float}

``markers`` (the names the project registers in its config file's ``markers``) and ``item`` lines
(one per selected item, before the ``collection`` line) are written only under
``--collect-only``, for ``schedctl markers audit``.

``outcome`` is one of passed, failed, skipped, error, xfailed, xpassed; there is exactly one
``test`` line per item, written when its last phase is reported. ``longrepr`` is an excerpt of
the failure text (at most 15 lines / ~2000 characters: its head and its last lines; for skips
and xfails, the reason); ``message`` is the one-line crash message. ``test_start`` lines name the
test now running, so a run killed on timeout still says which test hung.

``counts`` count items, one outcome each, where pytest's own summary counts phase reports: a test
that passes and then fails in teardown is ``1 passed, 1 error`` to pytest and one ``error`` here.
Collection errors are counted in ``collect_errors``, not in ``counts``.

If ``SCHEDCTL_JUNIT`` is set and the command line has no ``--junitxml``, JUnit XML is written there.

If ``SCHEDCTL_STACKS_DIR`` names a directory, every process that loads the plugin (xdist workers
included) registers :mod:`faulthandler` on ``SIGUSR1`` with ``stacks-<pid>.txt`` there: the
scheduler signals them before it kills a hung run, and the files name the frame each thread was
in (the hanging test's among them).

If ``SCHEDCTL_NONCE`` is set, every line carries ``"nonce": <it>`` and the variable is removed
from ``os.environ`` once read, so the tests (and what they start) do not inherit it: lines a
test appends to the file on its own lack it, and schedctl ignores (and counts) them.

Memory per test (setup, call and teardown together): ``peak_rss_bytes`` is the process's resident
high-water mark during the test and ``start_rss_bytes`` the mark when it started, so the test's
own peak is their difference. ``rss_method`` says how they were measured: ``vmhwm`` (Linux: the
mark is reset to the current resident set through ``/proc/self/clear_refs`` before the test and
``VmHWM`` read before and after, so an earlier, larger test does not hide a small one),
``ru_maxrss`` (no clear_refs: the process-wide maximum before and after; the peak is ``null``
unless the test raised it) or ``none``. ``cuda_peak_bytes``
is torch's peak allocated CUDA memory, only when the tests already imported torch and initialised
CUDA (the plugin never imports torch). Under pytest-xdist the workers measure.

If ``SCHEDCTL_SELECT`` names a file of node ids (one per line), only those items run; the others
are deselected. Reruns of failed tests use it: node ids never reach the command line.
"""

from __future__ import annotations

import configparser
import contextlib
import faulthandler
import json
import os
import signal
import sys
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

RESULTS_ENV = "SCHEDCTL_RESULTS"
STACKS_ENV = "SCHEDCTL_STACKS_DIR"
JUNIT_ENV = "SCHEDCTL_JUNIT"
NONCE_ENV = "SCHEDCTL_NONCE"
RECORDER_NAME = "schedctl-results-recorder"
MARKERS_ATTR = "schedctl_markers"
MEMORY_ATTR = "schedctl_memory"
SELECT_ENV = "SCHEDCTL_SELECT"

OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")
LONGREPR_MAX_LINES = 15
LONGREPR_MAX_CHARS = 2000
LONGREPR_TAIL_LINES = 5
LONGREPR_TAIL_CHARS = 600
CUT_MARKER = "[... schedctl: cut ...]"
# Marks that steer pytest itself rather than describe the test.
BUILTIN_MARKS = frozenset(
    {"parametrize", "usefixtures", "filterwarnings", "skip", "skipif", "xfail"}
)


def excerpt(text: str) -> str:
    """``text`` when short; else its first lines, a cut marker and its last lines.

    The head shows where a failure happened; the tail keeps the ``E ...`` lines and exception
    message, which a long traceback (an import error, a deep stack) pushes to the very end.
    """
    lines = text.splitlines()
    if len(lines) <= LONGREPR_MAX_LINES and len(text) <= LONGREPR_MAX_CHARS:
        return text
    head_lines = LONGREPR_MAX_LINES - LONGREPR_TAIL_LINES
    head = "\n".join(lines[:head_lines])[: LONGREPR_MAX_CHARS - LONGREPR_TAIL_CHARS]
    tail = "\n".join(lines[head_lines:][-LONGREPR_TAIL_LINES:])[-LONGREPR_TAIL_CHARS:]
    return f"{head}\n{CUT_MARKER}\n{tail}"


def marker_names(item: pytest.Item) -> list[str]:
    """Sorted names of the marks on ``item`` (own, class and module level) minus pytest's own."""
    return sorted({mark.name for mark in item.iter_markers()} - BUILTIN_MARKS)


def project_markers(config: pytest.Config) -> list[str]:
    """The marker names the project registers in its own config file (not pytest's or plugins':
    pytest's in-memory ini list also holds theirs), read from the file itself."""
    path = getattr(config, "inipath", None)
    raw: Any = None
    try:
        if path is None:
            return []
        if str(path).endswith(".toml"):
            if sys.version_info < (3, 11):
                return []
            import importlib

            with open(path, "rb") as fh:
                data = importlib.import_module("tomllib").load(fh)
            tool = data.get("tool", {}).get("pytest", {})
            raw = tool.get("ini_options", {}).get("markers", tool.get("markers"))
        else:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(path, encoding="utf-8")
            for section in ("pytest", "tool:pytest"):
                if parser.has_option(section, "markers"):
                    raw = parser.get(section, "markers")
                    break
    except (OSError, ValueError, configparser.Error):
        return []
    lines = raw.splitlines() if isinstance(raw, str) else list(raw or [])
    names = {str(line).split(":")[0].split("(")[0].strip() for line in lines}
    return sorted(n for n in names if n)


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason of a skip, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    prefix = "Skipped: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


def xfail_reason(report: pytest.TestReport) -> str | None:
    """The xfail reason; pytest 7 prefixes an imperative ``pytest.xfail()``'s with ``reason: ``."""
    reason = str(getattr(report, "wasxfail", ""))
    prefix = "reason: "
    return (reason[len(prefix) :] if reason.startswith(prefix) else reason) or None


def crash_message(report: pytest.TestReport) -> str | None:
    """The one-line message pytest shows in its short summary, when there is one."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        message: object = longrepr
    else:
        try:
            message = longrepr.reprcrash.message  # type: ignore[union-attr]
        except AttributeError:
            message = report.longreprtext
    lines = str(message).splitlines()
    return lines[0] if lines else None


def _maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024


class PeakMemory:
    """The peak memory of this process during one test: RSS high-water mark, CUDA's when in use.

    Cheap per test (a few microseconds): ``clear_refs`` and ``statm`` stay open and are read with
    ``pread``; the mark is read through ``getrusage``, which reports the same high-water mark
    ``clear_refs`` resets. Where it does not (the kernel kept a larger maximum elsewhere), the
    mark is read from ``VmHWM`` in ``/proc/self/status`` instead (slower, same meaning).
    """

    def __init__(self, proc_self: str = "/proc/self") -> None:
        self.method: str | None = None
        self._start: int | None = None
        self._status = proc_self + "/status"
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._rusage_follows = True
        try:
            self._clear_fd: int | None = os.open(proc_self + "/clear_refs", os.O_WRONLY)
            self._statm_fd: int | None = os.open(proc_self + "/statm", os.O_RDONLY)
            self.method = "vmhwm"
        except (OSError, AttributeError):
            self._clear_fd = self._statm_fd = None
            self.method = "ru_maxrss" if _maxrss_bytes() is not None else "none"

    def close(self) -> None:
        for fd in (self._clear_fd, self._statm_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._clear_fd = self._statm_fd = None

    def reset(self) -> None:
        if self.method == "vmhwm":
            try:
                os.write(self._clear_fd, b"5")  # type: ignore[arg-type]  # reset VmHWM to RSS
                self._start = int(os.pread(self._statm_fd, 128, 0).split()[1]) * self._page  # type: ignore[arg-type]
            except (OSError, ValueError, IndexError):
                self.method = "ru_maxrss"
            else:
                mark = _maxrss_bytes()
                # getrusage must now agree with the fresh mark, else read VmHWM itself.
                self._rusage_follows = mark is not None and mark <= self._start + (1 << 20)
        if self.method == "ru_maxrss":
            self._start = _maxrss_bytes()
        cuda = _cuda_in_use()
        if cuda is not None:
            # A broken CUDA state must not fail the test; the read then says None.
            with contextlib.suppress(Exception):
                cuda.reset_peak_memory_stats()

    def read(self) -> dict[str, Any]:
        peak: int | None = None
        if self.method == "vmhwm":
            peak = _maxrss_bytes() if self._rusage_follows else self._vmhwm()
        elif self.method == "ru_maxrss":
            after = _maxrss_bytes()
            peak = after if after is not None and after > (self._start or 0) else None
        cuda_peak: int | None = None
        cuda = _cuda_in_use()
        if cuda is not None:
            try:
                cuda_peak = int(cuda.max_memory_allocated())
            except Exception:
                cuda_peak = None
        return {
            "peak_rss_bytes": peak,
            "start_rss_bytes": self._start,
            "rss_method": self.method,
            "cuda_peak_bytes": cuda_peak,
        }

    def _vmhwm(self) -> int | None:
        try:
            with open(self._status, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None


def _cuda_in_use() -> Any:
    """``torch.cuda`` when the tests imported torch and initialised CUDA; never imports torch."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None:
        return None
    try:
        return cuda if cuda.is_initialized() else None
    except Exception:
        return None


MEMORY_KEY = pytest.StashKey[PeakMemory]()
MARKERS_KEY = pytest.StashKey[list[str]]()


class Selection:
    """Keeps only the items named in the ``SCHEDCTL_SELECT`` file (reruns of failed tests)."""

    def __init__(self, nodeids: set[str]) -> None:
        self.nodeids = nodeids

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        keep = [item for item in items if item.nodeid in self.nodeids]
        dropped = [item for item in items if item.nodeid not in self.nodeids]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep


@dataclass
class ItemState:
    """The phase reports of one test item, folded into its single outcome."""

    nodeid: str
    reports: dict[str, pytest.TestReport] = field(default_factory=dict)

    def add(self, report: pytest.TestReport) -> None:
        self.reports[report.when or "call"] = report

    def decisive(self) -> tuple[str, pytest.TestReport | None]:
        """The outcome and the report that decided it.

        A failure beats a skip and an earlier phase beats a later one, except that a failing
        teardown turns a passed/skipped/xfailed/xpassed test into an error.
        """
        setup = self.reports.get("setup")
        call = self.reports.get("call")
        teardown = self.reports.get("teardown")
        if setup is not None and setup.failed:
            return "error", setup
        if call is not None and call.failed:
            return "failed", call
        if teardown is not None and teardown.failed:
            return "error", teardown
        if setup is not None and setup.skipped:
            return ("xfailed" if hasattr(setup, "wasxfail") else "skipped"), setup
        if call is not None and call.skipped:
            return ("xfailed" if hasattr(call, "wasxfail") else "skipped"), call
        if call is not None:
            return ("xpassed" if hasattr(call, "wasxfail") else "passed"), call
        # No call phase and nothing failed: the run stopped mid-test (interrupt, -x elsewhere).
        return "error", setup

    def record(self) -> dict[str, Any]:
        outcome, report = self.decisive()
        longrepr: str | None = None
        message: str | None = None
        if report is not None:
            if outcome == "skipped":
                longrepr = message = skip_reason(report)
            elif outcome in ("xfailed", "xpassed"):
                longrepr = message = xfail_reason(report)
            elif outcome in ("failed", "error"):
                longrepr = excerpt(report.longreprtext)
                message = crash_message(report)
        if outcome == "error" and "call" not in self.reports and "teardown" not in self.reports:
            longrepr = longrepr or "incomplete: the session ended before this test finished"
        markers: list[str] = []
        memory: dict[str, Any] = {}
        for phase in self.reports.values():
            markers = list(getattr(phase, MARKERS_ATTR, markers))
            memory = dict(getattr(phase, MEMORY_ATTR, None) or memory)
        return {
            "type": "test",
            "nodeid": self.nodeid,
            "outcome": outcome,
            "when": report.when if report is not None else "setup",
            "duration_s": round(sum(r.duration for r in self.reports.values()), 6),
            "markers": markers,
            "longrepr": longrepr,
            "message": message,
            "peak_rss_bytes": memory.get("peak_rss_bytes"),
            "start_rss_bytes": memory.get("start_rss_bytes"),
            "rss_method": memory.get("rss_method"),
            "cuda_peak_bytes": memory.get("cuda_peak_bytes"),
        }


class _Utf8:
    """Text in, one ``write(2)`` of UTF-8 bytes out (no buffer to flush)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        return self._raw.write(text.encode("utf-8", "replace")) or 0

    def flush(self) -> None:
        """Nothing is buffered."""


class ResultsRecorder:
    """Turns pytest's reports into JSON lines on ``stream``; registered as a plugin object."""

    def __init__(self, stream: IO[str] | _Utf8, nonce: str | None = None) -> None:
        self._stream = stream
        self._nonce = nonce
        self._pending: dict[str, ItemState] = {}
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._collect_errors = 0
        self._deselected = 0
        self._collection_written = False
        self._started = time.monotonic()

    def emit(self, record: dict[str, Any]) -> None:
        line = {"type": record.pop("type"), "ts": time.time(), **record}
        # One unbuffered write per line: a tailing process sees it at once, a crash keeps it.
        if self._nonce:
            line["nonce"] = self._nonce
        self._stream.write(json.dumps(line, default=str) + "\n")

    def pytest_sessionstart(self) -> None:
        self.emit(
            {
                "type": "start",
                "pytest_version": pytest.__version__,
                "python": sys.version.split()[0],
                "pid": os.getpid(),
            }
        )

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._collect_errors += 1
            self.emit(
                {
                    "type": "collect_error",
                    "nodeid": report.nodeid,
                    "longrepr": excerpt(report.longreprtext),
                }
            )

    def pytest_deselected(self, items: Iterable[pytest.Item]) -> None:
        self._deselected += len(list(items))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.config.option.collectonly:
            # ``schedctl markers audit``: the registered markers, every selected item's markers.
            registered = project_markers(session.config)
            self.emit({"type": "markers", "registered": registered})
            for item in session.items:
                self.emit({"type": "item", "nodeid": item.nodeid, "markers": marker_names(item)})
        self._write_collection(len(session.items))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        """Under pytest-xdist the controller never collects; every worker reports the same ids."""
        self._write_collection(len(ids))

    def _write_collection(self, selected: int) -> None:
        if self._collection_written:
            return
        self._collection_written = True
        self.emit(
            {
                "type": "collection",
                "collected": selected + self._deselected,
                "selected": selected,
                "deselected": self._deselected,
                "errors": self._collect_errors,
            }
        )

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.emit({"type": "test_start", "nodeid": nodeid})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self._pending.setdefault(report.nodeid, ItemState(report.nodeid))
        state.add(report)
        if report.when == "teardown":
            self._finish(self._pending.pop(report.nodeid))

    def _finish(self, state: ItemState) -> None:
        record = state.record()
        self._counts[record["outcome"]] += 1
        self.emit(record)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, exitstatus: int) -> None:
        for nodeid in list(self._pending):
            self._finish(self._pending.pop(nodeid))
        self.emit(
            {
                "type": "session",
                "exitstatus": int(exitstatus),
                "counts": dict(self._counts),
                "collect_errors": self._collect_errors,
                "duration_s": round(time.monotonic() - self._started, 6),
            }
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Reset the memory high-water marks just before the test's setup."""
    probe = item.config.stash.get(MEMORY_KEY, None)
    if probe is not None:
        probe.reset()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Attach the item's marker names to each report and its peak memory to the teardown report
    (pytest-xdist ships both to the controller)."""
    outcome = yield
    report = outcome.get_result()
    markers = item.stash.get(MARKERS_KEY, None)
    if markers is None:
        markers = item.stash[MARKERS_KEY] = marker_names(item)
    setattr(report, MARKERS_ATTR, markers)
    probe = item.config.stash.get(MEMORY_KEY, None)
    if probe is not None and call.when == "teardown":
        setattr(report, MEMORY_ATTR, probe.read())


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def register_stacks(config: pytest.Config) -> None:
    """Dump every thread's stack to ``$SCHEDCTL_STACKS_DIR/stacks-<pid>.txt`` on SIGUSR1."""
    directory = os.environ.get(STACKS_ENV)
    usr1 = getattr(signal, "SIGUSR1", None)
    if not directory or usr1 is None:
        return
    try:
        os.makedirs(directory, exist_ok=True)
        stream = open(  # noqa: SIM115 -- open for the whole session, closed at cleanup
            os.path.join(directory, f"stacks-{os.getpid()}.txt"), "a", encoding="utf-8"
        )
    except OSError:
        return  # evidence is best effort; the tests must still run
    faulthandler.register(usr1, file=stream, all_threads=True, chain=False)

    def cleanup() -> None:
        faulthandler.unregister(usr1)
        stream.close()

    config.add_cleanup(cleanup)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Open the results file and wire JUnit XML; must run before junitxml's own configure."""
    register_stacks(config)
    select = os.environ.get(SELECT_ENV)
    if select:
        try:
            with open(select, encoding="utf-8") as fh:
                nodeids = {line.rstrip("\n") for line in fh if line.strip()}
        except OSError as exc:
            raise pytest.UsageError(f"{SELECT_ENV}={select}: cannot read: {exc}") from exc
        config.pluginmanager.register(Selection(nodeids), "schedctl-select")
    if os.environ.get(RESULTS_ENV):
        probe = PeakMemory()  # workers measure; the controller writes
        config.stash[MEMORY_KEY] = probe
        config.add_cleanup(probe.close)
    if is_xdist_worker(config):
        return  # the controller writes; workers only forward their reports
    junit = os.environ.get(JUNIT_ENV)
    if junit and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = junit
    results = os.environ.get(RESULTS_ENV)
    nonce = os.environ.pop(NONCE_ENV, None)
    if not results:
        return
    try:
        directory = os.path.dirname(os.path.abspath(results))
        os.makedirs(directory, exist_ok=True)
        # O_APPEND, unbuffered: each line is one write(2), so lines from a crash stay whole.
        stream = open(results, "ab", buffering=0)  # noqa: SIM115
    except OSError as exc:
        raise pytest.UsageError(f"{RESULTS_ENV}={results}: cannot open: {exc}") from exc
    config.pluginmanager.register(ResultsRecorder(_Utf8(stream), nonce), RECORDER_NAME)
    config.add_cleanup(stream.close)
