"""schedctl results plugin: one JSON line per test, in the file as the test ends.

This file is copied into a run's directory as ``schedctl_results_impl.py`` (with its bytecode)
and loaded through a ``schedctl_results.py`` shim (``runners.base.install_plugin``; pytest parses
and compiles a ``-p`` module itself, which for this file costs ~30 ms) with
``-p schedctl_results`` under whatever interpreter runs the tests (a project's venv, a container
with only python3 + pytest), so it imports nothing but the standard library and pytest, and works
on pytest 7, 8 and 9.

It does nothing unless ``SCHEDCTL_RESULTS`` names an output file. Each line is one JSON object with
``type`` and ``ts`` (epoch seconds, when the event happened)::

    {"type": "start", "pytest_version": str, "python": str, "pid": int,
     "results_io": "mmap" | "write"}
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

Each line is written as it happens -- nothing waits in memory, so there is no thread, nothing
to flush at exit or on ``SIGTERM``, and a tailing process sees a test's line when the test ends.
A test's ``test_start`` line is written before it runs, so a test that kills the interpreter
(``os._exit``, a segfault, ``SIGKILL``) or hangs, even holding the GIL, is named, with every
earlier line in the file.

Where it is sound (Linux, a regular file on a local filesystem: ext4, xfs, btrfs, tmpfs,
overlay...) the file is written through a ``MAP_SHARED`` mapping, a copy per line and no system
call (:class:`MappedSink`): the pages are the page cache, so they outlive the process as a
``write(2)``'s bytes do (neither outlives the host without ``fsync``). The file is allocated
ahead in 1 MiB steps and truncated to its lines at session end; a process that dies leaves zero
bytes after its last line, which readers skip (they stop at the first NUL while the file is
live). Elsewhere -- a pipe, NFS or another network filesystem, a disk too full to allocate, or
``SCHEDCTL_RESULTS_MMAP=0`` -- each line is one ``write(2)`` with ``O_APPEND``. The ``start``
line says which (``results_io``: ``mmap`` or ``write``). A forked child writes nothing: the
file is its parent's.

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
``VmHWM`` read before and after, so an earlier, larger test does not hide a small one; the reset
is skipped when the mark stands at most 64 KiB above the resident set, as it does after a test that
kept what it used),
``ru_maxrss`` (no clear_refs: the process-wide maximum before and after; the peak is ``null``
unless the test raised it) or ``none``. ``cuda_peak_bytes``
is torch's peak allocated CUDA memory, only when the tests already imported torch and initialised
CUDA (the plugin never imports torch). Under pytest-xdist the workers measure.

Per test, the plugin costs as few hook dispatches as it can: where pytest's own runner is the
only (non-wrapper) ``pytest_runtest_protocol`` of the session (pytest 7 to 9), the plugin runs the
test as that runner does, in its place (:class:`DirectProtocol`), and takes the phase reports from
``runtestprotocol``'s return value; a rerun plugin or a conftest with a protocol of its own gets a
hook wrapper around it and a report hook instead (:class:`WrappedProtocol`).

If ``SCHEDCTL_SELECT`` names a file of node ids (one per line), only those items run; the others
are deselected. Reruns of failed tests use it: node ids never reach the command line.

PYTEST_DONT_REWRITE -- the plugin has no asserts; pytest leaves them alone when it is loaded
directly (as the tests load it) with ``-p``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import mmap
import os
import signal
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import pytest

try:  # pytest's own test protocol, which :class:`DirectProtocol` runs (pytest 7 to 9)
    from _pytest import runner as _runner

    _runtestprotocol: Callable[..., list[pytest.TestReport]] | None = _runner.runtestprotocol
except (ImportError, AttributeError):  # pragma: no cover - another pytest
    _runner = None  # type: ignore[assignment]
    _runtestprotocol = None

if TYPE_CHECKING:
    from _pytest.nodes import Node

    Memory = tuple[int | None, int | None, str | None, int | None]
    """A memory read: peak RSS, RSS at the start, the method, the CUDA peak (see PeakMemory)."""

RESULTS_ENV = "SCHEDCTL_RESULTS"
STACKS_ENV = "SCHEDCTL_STACKS_DIR"
JUNIT_ENV = "SCHEDCTL_JUNIT"
NONCE_ENV = "SCHEDCTL_NONCE"
RECORDER_NAME = "schedctl-results-recorder"
TESTS_NAME = "schedctl-results-tests"
"""The per-test hooks: :class:`DirectProtocol`, :class:`WrappedProtocol` or :class:`ReportLog`."""
MARKERS_ATTR = "schedctl_markers"
MEMORY_ATTR = "schedctl_memory"
SELECT_ENV = "SCHEDCTL_SELECT"
MMAP_ENV = "SCHEDCTL_RESULTS_MMAP"
"""``0``: write the results with ``write(2)`` even where the file could be mapped."""
MAP_CHUNK = 1 << 20
"""The mapped results file is allocated (zero-filled) ahead of the lines by this much at a time."""
FOREIGN_MAX = 8 << 20
"""At most this much of what something else appended to the results file is kept."""
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "f2fs", "zfs", "bcachefs", "jfs"}
)
"""Filesystems whose shared mappings are the page cache of this host: the results file is mapped
only there (not on NFS, CIFS, FUSE..., where another host reads it)."""

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
    """Sorted names of the marks on ``item`` (own, class and module level) minus pytest's own.

    As ``item.iter_markers()``, with the names of the parents' marks kept on the parent: every
    test of a module would otherwise walk the same chain again.
    """
    parent = item.parent
    inherited: frozenset[str] = frozenset()
    if parent is not None:
        cached = parent.stash.get(PARENT_MARKS_KEY, None)
        if cached is None:
            cached = parent.stash[PARENT_MARKS_KEY] = parent_marks(parent)
        inherited, inherited_sorted, _ = cached
        if not item.own_markers:  # most tests: their module's and class's marks, sorted once
            return list(inherited_sorted)
    names = {mark.name for mark in item.own_markers} | inherited
    return sorted(names - BUILTIN_MARKS)


def parent_marks(parent: Node) -> tuple[frozenset[str], list[str], str]:
    """A parent's mark names: as a set, sorted, and sorted as the items of a JSON list."""
    inherited = frozenset(mark.name for mark in parent.iter_markers()) - BUILTIN_MARKS
    ordered = sorted(inherited)
    return inherited, ordered, ", ".join([_json_str(name) for name in ordered])


def marker_json(item: pytest.Item) -> str:
    """:func:`marker_names` as the items of a JSON list (``"a", "b"``), from the parent's cache
    when the item has no marks of its own."""
    parent = item.parent
    if parent is not None and not item.own_markers:
        cached = parent.stash.get(PARENT_MARKS_KEY, None)
        if cached is None:
            cached = parent.stash[PARENT_MARKS_KEY] = parent_marks(parent)
        return cached[2]
    return ", ".join([_json_str(name) for name in marker_names(item)])


def project_markers(config: pytest.Config) -> list[str]:
    """The marker names the project registers in its own config file (not pytest's or plugins':
    pytest's in-memory ini list also holds theirs), read from the file itself."""
    import configparser  # only under --collect-only: not every run pays its import

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


try:
    import resource
except ImportError:  # not on POSIX
    resource = None  # type: ignore[assignment]
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
RESET_SLACK_BYTES = 64 << 10
"""A high-water mark at most this far above the resident set is left as it is before a test
(its peak then reads at most this much high); above it, the mark is reset."""


_pread = os.pread
if resource is not None:
    _getrusage = resource.getrusage
    _RUSAGE_SELF = resource.RUSAGE_SELF
    # Linux's RUSAGE_THREAD reports the same ``ru_maxrss`` as RUSAGE_SELF -- the larger of the
    # process's memory high-water mark and the signal struct's maximum -- without summing every
    # thread's CPU time under the run queue's lock: about half the cost of a read.
    _RUSAGE_MARK = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def _maxrss_bytes() -> int | None:
    if resource is None:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT


class PeakMemory:
    """The peak memory of this process during one test: RSS high-water mark, CUDA's when in use.

    Cheap per test (a few microseconds): ``clear_refs`` and ``statm`` stay open and are read with
    ``pread``; the mark is read through ``getrusage``, which reports the same high-water mark
    ``clear_refs`` resets. Where it does not (the kernel kept a larger maximum elsewhere: the
    parent's size at exec, say, under a big daemon), the mark is read from ``VmHWM`` in
    ``/proc/self/status`` instead (same meaning, several times the cost) -- but only after a test
    during which the process took a page fault: without one its resident set cannot have grown,
    so the test's peak is where it started.

    A peak is never below its test's start. getrusage's mark is computed from the kernel's
    approximate (per-CPU batched) page counts, which can lag the count ``statm`` reports: on a
    6.18 kernel the mark of every trivial test read about 130 KiB below its start. The start is
    part of the test, so the larger of the two is the better reading of its peak.
    """

    def __init__(self, proc_self: str = "/proc/self") -> None:
        self.method: str | None = None
        self._start: int | None = None
        self._status = proc_self + "/status"
        self._status_fd: int | None = None
        self._floor = 0
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._rusage_follows = True
        self._last_peak: int | None = None
        """The mark the last test left; None: reset it before the next."""
        self._faults = -1
        """The process's page faults at the last read under the floor."""
        try:
            if resource is None:
                raise OSError("no getrusage")
            self._clear_fd: int | None = os.open(proc_self + "/clear_refs", os.O_WRONLY)
            self._statm_fd: int | None = os.open(proc_self + "/statm", os.O_RDONLY)
            self.method = "vmhwm"
        except (OSError, AttributeError):
            self._clear_fd = self._statm_fd = None
            self.method = "ru_maxrss" if _maxrss_bytes() is not None else "none"

    def close(self) -> None:
        for fd in (self._clear_fd, self._statm_fd, self._status_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._clear_fd = self._statm_fd = self._status_fd = None

    def reset(self) -> None:
        """Note the resident set as the test's start, resetting the mark when it stands above it
        (one ``pread`` of ``statm``; the ``clear_refs`` write only when a test or pytest used
        more than it kept)."""
        if self.method == "vmhwm":
            try:
                rss = int(_pread(self._statm_fd, 128, 0).split(None, 2)[1]) * self._page  # type: ignore[arg-type]
                # The mark needs resetting only when it stands above the resident set now: a
                # test (or pytest between tests) used more than it kept. Most tests keep what
                # they use, and skip the write and the check.
                last = self._last_peak
                if last is None or last > rss + RESET_SLACK_BYTES:
                    self._reset_mark(rss)
                self._start = rss
            except (OSError, ValueError, IndexError):
                self.method = "ru_maxrss"
        if self.method == "ru_maxrss":
            self._start = _maxrss_bytes()
        if "torch" in _MODULES:
            cuda = _cuda_in_use()
            if cuda is not None:
                # A broken CUDA state must not fail the test; the read then says None.
                with contextlib.suppress(Exception):
                    cuda.reset_peak_memory_stats()

    def _reset_mark(self, rss: int) -> None:
        os.write(self._clear_fd, b"5")  # type: ignore[arg-type]  # VmHWM := RSS
        mark = _maxrss_bytes()
        # getrusage must now agree with the fresh mark, else read VmHWM itself: the kernel's
        # process-wide maximum (set at exec, raised when a thread exits) is above it, and
        # getrusage reports that ``floor`` until the test passes it.
        self._rusage_follows = mark is not None and mark <= rss + (1 << 20)
        self._floor = mark or 0

    def read(self) -> Memory:
        """``(peak_rss_bytes, start_rss_bytes, rss_method, cuda_peak_bytes)`` of the test since
        :meth:`reset` (:func:`memory_fields` names them)."""
        peak: int | None = None
        if self.method == "vmhwm":
            follows = self._rusage_follows
            try:
                usage: Any = _getrusage(_RUSAGE_MARK if follows else _RUSAGE_SELF)
                peak = usage.ru_maxrss * _MAXRSS_UNIT
            except OSError:
                usage = peak = None
            if not follows and (peak is None or peak <= self._floor):
                peak = self.under_floor(usage)
            start = self._start
            if peak is not None and start is not None and peak < start:
                peak = start  # the mark can lag statm: see PeakMemory
            self._last_peak = peak
        elif self.method == "ru_maxrss":
            after = _maxrss_bytes()
            peak = after if after is not None and after > (self._start or 0) else None
        if "torch" not in _MODULES:
            return (peak, self._start, self.method, None)
        cuda_peak: int | None = None
        cuda = _cuda_in_use()
        if cuda is not None:
            try:
                cuda_peak = int(cuda.max_memory_allocated())
            except Exception:
                cuda_peak = None
        return (peak, self._start, self.method, cuda_peak)

    def under_floor(self, usage: Any) -> int | None:
        """The test's peak where getrusage (``usage``: RUSAGE_SELF's, None where it failed) says
        only the floor: its start when the process took no page fault since the last such read
        (the resident set grows only by faults, its threads' or its own
        ``MAP_POPULATE``/``mlock``; the last read came before the test's start was read), else
        ``VmHWM``."""
        faults = -1 if usage is None else usage.ru_minflt + usage.ru_majflt
        unchanged = faults == self._faults >= 0
        self._faults = faults
        if unchanged and self._start is not None:
            return self._start
        return self._vmhwm()

    def _vmhwm(self) -> int | None:
        """``VmHWM`` from ``/proc/self/status``, kept open and read with ``pread``."""
        try:
            if self._status_fd is None:
                self._status_fd = os.open(self._status, os.O_RDONLY)
            data = os.pread(self._status_fd, 8192, 0)
            at = data.index(b"VmHWM:") + 6
            return int(data[at : data.index(b"kB", at)]) * 1024
        except (OSError, ValueError):
            return None


def memory_fields(memory: Memory | None) -> dict[str, Any]:
    """A memory read as the ``test`` line's fields."""
    peak, start, method, cuda = memory or _NO_MEMORY
    return {
        "peak_rss_bytes": peak,
        "start_rss_bytes": start,
        "rss_method": method,
        "cuda_peak_bytes": cuda,
    }


_MODULES = sys.modules
"""Where torch shows up once the tests import it: a membership test per read before the call."""


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


MARKERS_KEY = pytest.StashKey[list[str]]()
PARENT_MARKS_KEY = pytest.StashKey[tuple[frozenset[str], list[str], str]]()


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


_json_str: Callable[[str], str] = getattr(json.encoder, "encode_basestring_ascii", json.dumps)
"""A str as a JSON string, as ``json.dumps`` writes it (the C function, without the wrapper)."""


_NO_MEMORY: Memory = (None, None, None, None)
_time_ns = time.time_ns


def _fixed6(seconds: float) -> str:
    """``seconds`` to the microsecond, as ``f"{seconds:.6f}"`` spells it (the last digit may
    differ by one where that rounds the exact binary value otherwise), through an int: the
    float formatter's exact decimal conversion costs several times as much for an epoch time."""
    if not 0.0 <= seconds < 1e12:  # negative, huge or NaN: the formatter's own spelling
        return f"{seconds:.6f}"
    digits = str(int(seconds * 1e6 + 0.5))
    if len(digits) < 7:
        digits = "0" * (7 - len(digits)) + digits
    return f"{digits[:-6]}.{digits[-6:]}"


class ItemState:
    """The phase reports of one test item, folded into its single outcome."""

    __slots__ = (
        "decided_by", "item", "location", "memory", "nodeid", "outcome", "quoted", "reports", "ts"
    )  # fmt: skip

    def __init__(
        self,
        nodeid: str,
        item: pytest.Item | None = None,
        location: object = None,
        quoted: str | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.reports: dict[str, pytest.TestReport] = {}
        self.item = item
        """The item, when this process ran it (its marks are read from it); None under xdist."""
        self.location = location
        """The item's ``location`` when this process runs it (its reports carry the same)."""
        self.quoted = quoted
        """The node id as a JSON string, once its test_start line has been written."""
        self.memory: Memory | None = None
        self.ts = 0.0
        self.outcome = "error"
        self.decided_by: pytest.TestReport | None = None

    def add(self, report: pytest.TestReport) -> None:
        self.reports[report.when or "call"] = report

    def done(self) -> str:
        """Stamp the time and decide the outcome (the main thread counts it)."""
        self.ts = time.time()
        reports = self.reports
        call = reports.get("call")
        try:  # most tests: three phases passed, no xfail -- decided without :meth:`decisive`
            if (
                call is not None
                and call.outcome == "passed"
                and len(reports) == 3
                and reports["setup"].outcome == "passed"
                and reports["teardown"].outcome == "passed"
                and "wasxfail" not in call.__dict__
            ):
                self.outcome, self.decided_by = "passed", call
                return "passed"
        except (AttributeError, KeyError):
            pass
        self.outcome, self.decided_by = self.decisive()
        return self.outcome

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
        """The ``test`` line; after :meth:`done`."""
        outcome, report = self.outcome, self.decided_by
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
        if self.item is not None:  # this process ran it
            markers = marker_names(self.item)
            memory = memory_fields(self.memory)
        else:  # an xdist worker ran it and attached both to its reports
            markers, memory = [], {}
            for phase in self.reports.values():
                markers = list(getattr(phase, MARKERS_ATTR, markers))
                memory = dict(getattr(phase, MEMORY_ATTR, None) or memory)
        return {
            "type": "test",
            "ts": self.ts,
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

    def passed_line(self, nonce_tail: str) -> str | None:
        """The ``test`` line of a passed test this process ran, newline included, as
        ``json.dumps(record())`` writes it, built directly: several times as fast as building
        the record and encoding it, which every passing test pays. None for anything else (the
        caller then encodes :meth:`record`)."""
        item = self.item
        if self.outcome != "passed" or item is None or self.decided_by is None:
            return None
        peak, start, method, cuda = self.memory or _NO_MEMORY
        try:
            duration = 0.0
            for phase in self.reports.values():
                duration += phase.duration
            if type(duration) is not float or duration - duration != 0:  # nan/inf: not JSON
                return None
            # Times to the microsecond (``%.6f``: the shortest repr of a float costs ~3x more).
            return (
                f'{{"type": "test", "ts": {_fixed6(self.ts)}, '
                f'"nodeid": {self.quoted or _json_str(self.nodeid)}, "outcome": "passed", '
                f'"when": "call", "duration_s": {_fixed6(duration)}, '
                f'"markers": [{marker_json(item)}], "longrepr": null, "message": null, '
                f'"peak_rss_bytes": {"null" if peak is None else int.__repr__(peak)}, '
                f'"start_rss_bytes": {"null" if start is None else int.__repr__(start)}, '
                f'"rss_method": {"null" if method is None else _json_str(method)}, '
                f'"cuda_peak_bytes": {"null" if cuda is None else int.__repr__(cuda)}'
                f"{nonce_tail}}}\n"
            )
        except TypeError:  # a value of another kind than the probe and pytest produce
            return None


def json_encoder() -> Callable[[dict[str, Any]], str]:
    """``json.dumps(record, default=str)``, built once: CPython's C encoder when it is there and
    agrees with the pure one on a sample, else the standard encoder."""
    standard = json.JSONEncoder(default=str).encode
    with contextlib.suppress(Exception):  # no C accelerator, or another signature
        from json.encoder import (  # type: ignore[attr-defined]
            c_make_encoder,
            encode_basestring_ascii,
        )

        chunks = c_make_encoder(
            None, str, encode_basestring_ascii, None, ": ", ", ", False, False, True
        )

        def fast(record: dict[str, Any]) -> str:
            return "".join(chunks(record, 0))

        sample: dict[str, Any] = {"s": 'é\n"', "n": [1, 2.5, None, True], "o": {"x": object}}
        if fast(sample) == standard(sample):
            return fast
    return standard


class AppendSink:
    """Lines appended with ``write(2)`` on an ``O_APPEND`` descriptor: the results file where it
    is not mapped (a pipe, a network filesystem, ``SCHEDCTL_RESULTS_MMAP=0``, a full disk)."""

    kind = "write"

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError as exc:  # disk full: the run then lacks its later lines
                self.error = exc
                return
            view = view[written:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def data_end(fd: int, size: int) -> int:
    """The end of ``fd``'s data: its size less the zero padding a mapped session that died left."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start).rstrip(b"\0")
        if chunk:
            return start + len(chunk)
        end = start
    return 0


class MappedSink:
    """Lines copied into a ``MAP_SHARED`` mapping of the results file: no system call per line.

    The file is allocated ahead (``posix_fallocate``: zero-filled blocks that exist, so a full
    disk fails here, never as a ``SIGBUS`` inside a test) in ``chunk``-sized steps, and a window
    around the write position is mapped. The pages belong to the page cache: a process that dies
    (``os._exit``, ``SIGKILL``, a segfault) leaves every copied line in the file, and a reader
    sees each line as soon as it is copied -- what ``write(2)`` gives, without its cost. Readers
    stop at the first NUL (the allocated, not yet written rest); :meth:`close` truncates it.

    Bytes something else appended past the allocation (a test writing to the file) are moved
    below the written lines at the next growth and at close, so they are still read (and, lacking
    the nonce, ignored and counted). If growing fails, the sink truncates the padding away and
    appends with ``write(2)`` on ``append_fd`` from there on.
    """

    kind = "mmap"

    def __init__(
        self,
        fd: int,
        append_fd: int,
        chunk: int = MAP_CHUNK,
        allocate: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self._fd = fd
        self._append_fd = append_fd
        self._chunk = max(chunk, mmap.ALLOCATIONGRANULARITY)
        self._allocate = allocate or os.posix_fallocate
        self._map: mmap.mmap | None = None
        self._base = 0
        self._limit = 0  # the window's end; -1 once appending with write(2)
        self._fallback: AppendSink | None = None
        self.error: OSError | None = None
        self.fallback_reason: str | None = None
        size = os.fstat(fd).st_size
        self._alloc = size
        self._pos = data_end(fd, size)
        if self._pos and os.pread(fd, 1, self._pos - 1) != b"\n":
            self.write(b"\n")  # a line cut short by a crash: ours start on lines of their own

    def write(self, data: bytes) -> None:
        pos = self._pos
        end = pos + len(data)
        if end > self._limit:
            if self._fallback is None:
                try:
                    self._grow(len(data))
                except (OSError, ValueError, OverflowError) as exc:
                    self._switch(exc)
            if self._fallback is not None:
                self._fallback.write(data)
                self.error = self._fallback.error
                return
            pos = self._pos
            end = pos + len(data)
        # The mapping's own position stands at the write position (``_grow`` puts it there):
        # a copy with no slice to build.
        self._map.write(data)  # type: ignore[union-attr]
        self._pos = end

    def _foreign(self) -> tuple[bytes, int]:
        """What was appended past the allocation (at most ``FOREIGN_MAX``), and the file's size."""
        size = os.fstat(self._fd).st_size
        if size <= self._alloc:
            return b"", size
        extra = os.pread(self._fd, min(size - self._alloc, FOREIGN_MAX), self._alloc)
        extra = extra.rstrip(b"\0")  # allocated by a growth that failed after it
        return (extra if extra.endswith(b"\n") or not extra else extra + b"\n"), size

    def _grow(self, need: int) -> None:
        """Map a window from the write position that holds ``need`` more bytes, allocating the
        file further when the window passes its end."""
        extra, size = self._foreign()
        at = self._pos
        page = mmap.ALLOCATIONGRANULARITY
        base = at - at % page
        limit = max(base + self._chunk, at + len(extra) + need, size)
        limit += -limit % page
        if limit > size:
            self._allocate(self._fd, size, limit - size)
        old, self._map = self._map, None
        if old is not None:
            old.close()
        self._map = mmap.mmap(
            self._fd, limit - base, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=base
        )
        self._base, self._limit = base, limit
        if extra:  # zero them where they were, then take them in below the written lines
            self._map[self._alloc - base : size - base] = bytes(size - self._alloc)
            self._map[at - base : at - base + len(extra)] = extra
            self._pos = at + len(extra)
        self._map.seek(self._pos - base)
        self._alloc = max(limit, size)

    def _switch(self, exc: BaseException) -> None:
        """Append with ``write(2)`` from here on: the lines so far stay, the padding goes."""
        self.fallback_reason = f"{type(exc).__name__}: {exc}"
        self._settle()
        self._fallback = AppendSink(self._append_fd)
        self._limit = -1

    def _settle(self) -> None:
        """Unmap, truncate the padding after the lines, and put what something else appended
        past the allocation right after them (where ``write(2)`` appends from then on)."""
        extra = b""
        with contextlib.suppress(OSError):
            extra = self._foreign()[0]
        self._unmap()
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._pos)
        if extra:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, extra, self._pos)

    def _unmap(self) -> None:
        old, self._map = self._map, None
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()

    def close(self) -> None:
        """Truncate the padding and close; bytes appended past it are kept below the lines."""
        if self._fallback is not None:
            self._fallback.close()
        else:
            self._settle()
            with contextlib.suppress(OSError):
                os.close(self._append_fd)
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _unescape(field: bytes) -> bytes:
    """A mountinfo field with its octal escapes (``\\040`` for a space) decoded."""
    if b"\\" not in field:
        return field
    import re

    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8) & 0xFF]), field)


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem ``path`` lies on (its longest mount point, the last mounted
    when stacked), from ``mountinfo``; None when that cannot be read."""
    try:
        with open(mountinfo, "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    target = os.fsencode(os.path.realpath(path))
    best, found = -1, None
    for line in text.split(b"\n"):
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
        except ValueError:
            continue
        if len(fields) <= sep + 1:
            continue
        point = _unescape(fields[4])
        inside = point in (b"/", target) or target.startswith(point.rstrip(b"/") + b"/")
        if inside and len(point) >= best:
            best, found = len(point), fields[sep + 1]
    return found.decode("ascii", "replace") if found is not None else None


def open_sink(
    path: str, fd: int, mountinfo: str = "/proc/self/mountinfo"
) -> AppendSink | MappedSink:
    """The results file mapped where that is sound -- a regular file on a local filesystem, on
    Linux, unless ``SCHEDCTL_RESULTS_MMAP=0`` -- else ``write(2)`` on ``fd`` (``O_APPEND``).

    A mapping writer holds an exclusive ``flock`` on the file: a second session writing the same
    file meanwhile (a nested pytest that inherited the environment) appends with ``write(2)``
    past the first one's allocation, which keeps its bytes below its own lines at close.
    """
    try:
        if (
            os.environ.get(MMAP_ENV, "1").strip() == "0"
            or not sys.platform.startswith("linux")
            or not hasattr(os, "posix_fallocate")
            or not stat.S_ISREG(os.fstat(fd).st_mode)
            or filesystem_type(path, mountinfo) not in LOCAL_FILESYSTEMS
        ):
            return AppendSink(fd)
        rw = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return AppendSink(fd)
    try:
        first, second = os.fstat(fd), os.fstat(rw)
        if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
            import fcntl

            fcntl.flock(rw, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: mapped elsewhere
            return MappedSink(rw, fd)
    except (OSError, ValueError, ImportError):
        pass
    os.close(rw)
    return AppendSink(fd)


class LineWriter:
    """Turns records into JSON lines and hands each to the sink at once: nothing is held in
    memory, so there is nothing to flush at exit, on ``SIGTERM`` or before a crash. A forked
    child writes nothing: the file is its parent's."""

    def __init__(self, sink: AppendSink | MappedSink, nonce: str | None = None) -> None:
        self._sink = sink
        self._write = sink.write
        self.kind = sink.kind
        self._nonce = nonce
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._fork_hooks = False
        """True once fork hooks mark a child (``_in_child``): no ``getpid`` per line then."""
        self._in_child = False
        self._closed = False
        self.direct = False
        """True while lines may be written without the checks of :meth:`_put`: fork hooks
        mark a child, this is not one, and the writer is open (:class:`DirectProtocol`)."""
        self._encode = json_encoder()
        self._nonce_tail = f', "nonce": {json.dumps(nonce)}' if nonce else ""

    @property
    def write_error(self) -> OSError | None:
        return self._sink.error

    def _foreign(self) -> bool:
        """True in a forked child: the file is its parent's."""
        return self._in_child or (not self._fork_hooks and os.getpid() != self._pid)

    def _put(self, data: bytes) -> None:
        if self._in_child or (not self._fork_hooks and os.getpid() != self._pid):
            return
        with self._lock:
            if not self._closed:
                self._write(data)

    def test_start(self, nodeid: str, ts: float | None = None) -> str:
        """Write ``nodeid``'s test_start line; returns the node id as a JSON string."""
        quoted = _json_str(nodeid)
        self._put(
            f'{{"type": "test_start", "ts": {_fixed6(time.time() if ts is None else ts)}, '
            f'"nodeid": {quoted}{self._nonce_tail}}}\n'.encode("utf-8", "replace")
        )
        return quoted

    def test(self, state: ItemState) -> None:
        """Write a finished item's ``test`` line."""
        try:
            line = state.passed_line(self._nonce_tail)
            if line is not None:
                self._put(line.encode("utf-8", "replace"))
                return
            record = state.record()
        except Exception as exc:  # a report that cannot be read must not lose the others
            record = {
                "type": "test",
                "ts": state.ts,
                "nodeid": state.nodeid,
                "outcome": state.outcome,
                "longrepr": f"schedctl: unreadable: {exc!r}",
            }
        self.record(record)

    def record(self, record: dict[str, Any]) -> None:
        if self._nonce:
            record["nonce"] = self._nonce
        self._put((self._encode(record) + "\n").encode("utf-8", "replace"))

    def close(self) -> None:
        if self._foreign():
            return
        with self._lock:
            if not self._closed:
                self._closed = True
                self.direct = False
                self._sink.close()

    def register_fork_hooks(self) -> None:
        """Mark a forked child, which then writes nothing; weakly held."""
        if not hasattr(os, "register_at_fork"):
            return
        self._fork_hooks = True
        self.direct = not self._closed and not self._in_child and os.getpid() == self._pid
        ref = weakref.ref(self)

        def after_in_child() -> None:
            writer = ref()
            if writer is not None:
                writer._in_child = True
                writer.direct = False

        os.register_at_fork(after_in_child=after_in_child)


try:  # pluggy >= 1.1: a new-style wrapper costs a plain generator, not a result object
    _WRAPPER = pytest.hookimpl(wrapper=True)
except TypeError:  # the pluggy of pytest 7 on older distributions
    _WRAPPER = pytest.hookimpl(hookwrapper=True)


class ResultsRecorder:
    """Turns pytest's reports into JSON lines on ``writer``; registered as a plugin object.

    ``probe`` is this process's memory probe when it runs the tests itself (no xdist); under
    xdist the workers measure and attach their reads and marks to the reports.
    """

    def __init__(self, writer: LineWriter, probe: PeakMemory | None = None) -> None:
        self._writer = writer
        self._probe = probe
        self._pending: dict[str, ItemState] = {}
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._collect_errors = 0
        self._deselected = 0
        self._collection_written = False
        self._current: ItemState | None = None
        """The item this process runs now (between its protocol's start and end)."""
        self._started = time.monotonic()

    def emit(self, record: dict[str, Any]) -> None:
        self._writer.record({"type": record.pop("type"), "ts": time.time(), **record})

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if session.config.pluginmanager.hasplugin("dsession"):
            # pytest-xdist: workers run the protocol; the controller learns of starts this way.
            session.config.pluginmanager.register(WorkerStarts(self._writer), "schedctl-starts")
            session.config.pluginmanager.register(ReportLog(self), TESTS_NAME)
        self.emit(
            {
                "type": "start",
                "pytest_version": pytest.__version__,
                "python": sys.version.split()[0],
                "pid": os.getpid(),
                "results_io": self._writer.kind,
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
        self.install_test_hooks(session.config)

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

    def begin(self, item: pytest.Item) -> ItemState:
        """Name the item on disk and reset the memory marks: just before it runs."""
        nodeid = item.nodeid
        # Written before the test runs, so a test that kills the interpreter (os._exit, a
        # segfault) or hangs is still named; the earlier tests' lines were written as they ended.
        state = ItemState(nodeid, item, item.location, self._writer.test_start(nodeid))
        probe = self._probe
        if probe is not None:
            probe.reset()
        self._current = state
        return state

    def end(self, state: ItemState, always: bool = False) -> None:
        """Read the memory marks and write the item's line (when it has reports, or ``always``)."""
        self._current = None
        if state.reports or always:
            probe = self._probe
            state.memory = probe.read() if probe is not None else None
            self._finish(state)

    def logreport(self, report: pytest.TestReport) -> None:
        current = self._current
        # The test this process runs: its reports carry its item's (cached) location tuple,
        # cheaper to compare than pytest 9's computed ``nodeid``.
        if current is not None and (
            report.location is current.location or report.nodeid == current.nodeid
        ):
            current.reports[report.when or "call"] = report
            return
        state = self._pending.get(report.nodeid)
        if state is None:
            state = self._pending[report.nodeid] = ItemState(report.nodeid)
        state.add(report)
        if report.when == "teardown" and current is None:
            self._finish(self._pending.pop(report.nodeid))  # xdist: a worker ran it

    def install_test_hooks(self, config: pytest.Config) -> None:
        """Register the per-test hooks: :class:`DirectProtocol` where pytest's own runner is the
        only implementation of the test protocol, else :class:`WrappedProtocol` (which costs
        a hook wrapper and a report hook per phase: three dispatches more a test)."""
        manager = config.pluginmanager
        if manager.get_plugin(TESTS_NAME) is not None:
            return
        run = direct_protocol(config)
        if run is not None:
            manager.register(DirectProtocol(self, run), TESTS_NAME)
        else:
            manager.register(WrappedProtocol(self), TESTS_NAME)

    def _finish(self, state: ItemState) -> None:
        self._counts[state.done()] += 1
        self._writer.test(state)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, exitstatus: int) -> None:
        current, self._current = self._current, None
        if current is not None and current.reports:  # the session ended inside a test
            self._finish(current)
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


def direct_protocol(config: pytest.Config) -> Callable[..., list[pytest.TestReport]] | None:
    """pytest's ``runtestprotocol`` when this session's only (non-wrapper) implementation of
    ``pytest_runtest_protocol`` is pytest's own runner (pytest 7 to 9, whose protocol
    :class:`DirectProtocol` repeats); None when a plugin or conftest has its own (reruns, say)."""
    if _runtestprotocol is None or pytest.__version__.split(".")[0] not in ("7", "8", "9"):
        return None
    try:
        impls = config.hook.pytest_runtest_protocol.get_hookimpls()
    except AttributeError:
        return None
    for impl in impls:
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue
        if impl.plugin is not _runner:
            return None
    return _runtestprotocol


class DirectProtocol:
    """Runs each test as pytest's own ``pytest_runtest_protocol`` does (tryfirst, so in its
    place; hook wrappers still wrap it), taking the reports from ``runtestprotocol``'s return
    value: no hook wrapper and no report hook of its own, so no dispatch per phase.

    Where the memory probe reads ``vmhwm`` and torch is not imported, a test is measured inline
    (:class:`PeakMemory`'s reset and read, spelled out) and a test that passed is written on a
    short path: its two lines spelled directly, no :class:`ItemState`. Anything else (another
    outcome, torch, another probe, a forked child, a closed writer) goes through the
    recorder's general path.
    """

    def __init__(
        self, recorder: ResultsRecorder, run: Callable[..., list[pytest.TestReport]]
    ) -> None:
        self._recorder = recorder
        self._run = run
        writer = recorder._writer
        self._writer = writer
        self._write = writer._write
        self._tail = writer._nonce_tail + "}\n"
        probe = recorder._probe
        self._probe = probe
        self._statm_fd = probe._statm_fd if probe is not None else None
        self._page = probe._page if probe is not None else 4096
        self._counts = recorder._counts
        self._parent: object = None
        self._parent_markers = ""
        self._peak: int | None = None
        self._peak_text = "null"
        self._start = -1
        self._start_text = ""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        probe = self._probe
        if (
            not self._writer.direct
            or probe is None
            or probe.method != "vmhwm"
            or "torch" in _MODULES
        ):
            return self._general(item, nextitem)
        # The memory probe's reset (PeakMemory.reset): the resident set now, from statm; the
        # mark is reset only when it stands above it.
        try:
            rss = int(_pread(self._statm_fd, 128, 0).split(None, 2)[1]) * self._page  # type: ignore[arg-type]
        except (OSError, ValueError, IndexError):
            probe.method = "ru_maxrss"
            return self._general(item, nextitem)
        last = probe._last_peak
        if last is None or last > rss + RESET_SLACK_BYTES:
            probe._reset_mark(rss)
        probe._start = rss
        nodeid = item.nodeid
        location = item.location
        quoted = _json_str(nodeid)
        # Written before the test runs, so a test that kills the interpreter (os._exit, a
        # segfault) or hangs is still named; the earlier tests' lines were written as they ended.
        now = str(_time_ns())
        self._write(
            f'{{"type": "test_start", "ts": {now[:-9]}.{now[-9:-3]}, '
            f'"nodeid": {quoted}{self._tail}'.encode()
        )
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        reports: list[pytest.TestReport] = []
        try:
            reports = self._run(item, nextitem=nextitem)
        finally:
            # The probe's read (PeakMemory.read).
            follows = probe._rusage_follows
            try:
                usage: Any = _getrusage(_RUSAGE_MARK if follows else _RUSAGE_SELF)
                peak: int | None = usage.ru_maxrss * _MAXRSS_UNIT
            except OSError:
                usage = peak = None
            if not follows and (peak is None or peak <= probe._floor):
                peak = probe.under_floor(usage)
            if peak is not None and peak < rss:
                peak = rss  # the mark can lag statm: see PeakMemory
            probe._last_peak = peak
            line = None
            if len(reports) == 3 and "torch" not in _MODULES:
                setup, call, teardown = reports
                try:
                    duration = setup.duration + call.duration + teardown.duration
                    if (
                        call.outcome == "passed"
                        and setup.outcome == "passed"
                        and teardown.outcome == "passed"
                        and call.when == "call"
                        and "wasxfail" not in call.__dict__
                        and 0.0 <= duration < 1e9  # not negative, nan or inf
                    ):
                        line = self._passed_line(item, quoted, duration, peak, rss)
                except (TypeError, ValueError, AttributeError):  # not what pytest produces
                    line = None
            if line is None:  # not passed, torch, or interrupted (no reports back: incomplete)
                state = ItemState(nodeid, item, location, quoted)
                for report in reports:
                    state.reports[report.when or "call"] = report
                state.memory = probe.read()
                self._recorder._finish(state)
            elif self._writer.direct:
                self._counts["passed"] += 1
                self._write(line.encode())
        ihook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
        return True

    def _passed_line(
        self, item: pytest.Item, quoted: str, duration: float, peak: int | None, start: int
    ) -> str:
        """The ``test`` line of a test whose three phases passed, as ``json.dumps(record())``
        writes it (times to the microsecond)."""
        parent = item.parent
        if item.own_markers or parent is not self._parent:
            markers = marker_json(item)
            if not item.own_markers:
                self._parent, self._parent_markers = parent, markers
        else:
            markers = self._parent_markers
        # peak and start are exact ints (getrusage's and statm's, times a page), spelled as
        # str() spells them; most tests leave them where the previous test did.
        if peak != self._peak:
            self._peak = peak
            self._peak_text = "null" if peak is None else str(peak)
        if start != self._start:
            self._start, self._start_text = start, str(start)
        spelled = "%.6f" % duration  # noqa: UP031 -- printf's path: no __format__ lookup
        now = str(_time_ns())
        return (
            f'{{"type": "test", "ts": {now[:-9]}.{now[-9:-3]}, "nodeid": {quoted}, '
            f'"outcome": "passed", "when": "call", "duration_s": {spelled}, '
            f'"markers": [{markers}], "longrepr": null, "message": null, '
            f'"peak_rss_bytes": {self._peak_text}, "start_rss_bytes": {self._start_text}, '
            f'"rss_method": "vmhwm", "cuda_peak_bytes": null{self._tail}'
        )

    def _general(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        recorder = self._recorder
        state = recorder.begin(item)
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=state.nodeid, location=state.location)
        try:
            for report in self._run(item, nextitem=nextitem):
                state.reports[report.when or "call"] = report
        finally:  # an interrupted test (no reports back) still gets its line, as incomplete
            recorder.end(state, always=True)
        ihook.pytest_runtest_logfinish(nodeid=state.nodeid, location=state.location)
        return True


class WrappedProtocol:
    """The per-test hooks where another plugin runs the protocol: a wrapper around it and the
    reports as they are logged."""

    def __init__(self, recorder: ResultsRecorder) -> None:
        self._recorder = recorder
        self.pytest_runtest_logreport = recorder.logreport

    @_WRAPPER
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, Any, Any]:
        """Name the item, measure its memory around all its phases, then write its line."""
        state = self._recorder.begin(item)
        try:
            result = yield
        finally:
            self._recorder.end(state)
        return result  # new-style: the protocol's result; old-style: ignored


class ReportLog:
    """Under pytest-xdist, in the controller: the reports the workers send."""

    def __init__(self, recorder: ResultsRecorder) -> None:
        self.pytest_runtest_logreport = recorder.logreport


class WorkerStarts:
    """Under pytest-xdist, in the controller: a test_start line when a worker starts a test."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._writer.test_start(nodeid)


class WorkerReports:
    """In a pytest-xdist worker: each report carries its item's marks, the teardown report the
    item's peak memory (xdist ships both to the controller, which writes the lines)."""

    def __init__(self, probe: PeakMemory) -> None:
        self._probe = probe

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Reset the memory high-water marks just before the test's setup."""
        self._probe.reset()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        markers = item.stash.get(MARKERS_KEY, None)
        if markers is None:
            markers = item.stash[MARKERS_KEY] = marker_names(item)
        setattr(report, MARKERS_ATTR, markers)
        if call.when == "teardown":
            setattr(report, MEMORY_ATTR, memory_fields(self._probe.read()))


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
    results = os.environ.get(RESULTS_ENV)
    if is_xdist_worker(config):
        if results:  # workers measure; the controller writes
            probe = PeakMemory()
            config.add_cleanup(probe.close)
            config.pluginmanager.register(WorkerReports(probe), "schedctl-worker-reports")
        return
    junit = os.environ.get(JUNIT_ENV)
    if junit and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = junit
    nonce = os.environ.pop(NONCE_ENV, None)
    if not results:
        return
    try:
        directory = os.path.dirname(os.path.abspath(results))
        os.makedirs(directory, exist_ok=True)
        # O_APPEND: below any earlier session's lines; written through when not mapped.
        fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise pytest.UsageError(f"{RESULTS_ENV}={results}: cannot open: {exc}") from exc
    writer = LineWriter(open_sink(results, fd), nonce)
    writer.register_fork_hooks()
    config.add_cleanup(writer.close)
    probe = PeakMemory()  # this process runs the tests (without xdist) and measures them
    config.add_cleanup(probe.close)
    config.pluginmanager.register(ResultsRecorder(writer, probe), RECORDER_NAME)
