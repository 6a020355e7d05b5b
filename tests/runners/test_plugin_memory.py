"""The results plugin's per-test peak memory and its node-id selection file, run for real."""

from __future__ import annotations

import json
import mmap
import re
import resource
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runners import pytest_plugin
from runners.pytest_plugin import PeakMemory, memory_fields
from scheduler.run.results import parse_jsonl

pytest_plugins = ["pytester"]

PLUGIN_SOURCE = Path(__file__).resolve().parents[2] / "runners" / "pytest_plugin.py"
MIB = 2**20
TIMES = re.compile(r'("(?:ts|duration_s)": )(-?[0-9]+\.[0-9]+)')

MEMORY_MODULE = """
import sys

def test_a_big():
    data = b"x" * (200 * 2**20)
    assert len(data)

def test_b_nothing():
    pass

def test_c_torch_never_imported():
    assert "torch" not in sys.modules
"""

FAKE_TORCH_CONFTEST = """
import sys, types

class FakeCuda:
    peak = 0
    def is_initialized(self):
        return True
    def reset_peak_memory_stats(self):
        FakeCuda.peak = 0
    def max_memory_allocated(self):
        return FakeCuda.peak

torch = types.ModuleType("torch")
torch.cuda = FakeCuda()
sys.modules["torch"] = torch
"""


@pytest.fixture
def results(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copyfile(PLUGIN_SOURCE, pytester.path / "schedctl_results.py")
    path = pytester.path / "run" / "results.jsonl"
    monkeypatch.setenv("SCHEDCTL_RESULTS", str(path))
    return path


def records_by_name(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {x["nodeid"].rsplit("::", 1)[-1]: x for x in lines if x["type"] == "test"}


def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "schedctl_results", "-p", "no:cacheprovider")


def resident(size: int) -> bytearray:
    """``size`` bytes with every page written: resident, not just reserved."""
    memory = bytearray(size)
    memory[:: mmap.PAGESIZE] = b"r" * len(range(0, size, mmap.PAGESIZE))
    return memory


@pytest.fixture(params=["no floor", "under a 400 MiB floor"])
def floor(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tests' process started by a small parent, or by one holding 400 MiB (as a big daemon
    starts it): the kernel then keeps that size as the child's ``ru_maxrss`` floor, getrusage says
    only the floor, and the probe reads the mark from ``VmHWM`` after tests that faulted."""
    if request.param == "no floor":
        yield
        return
    ballast = resident(400 * MIB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 >= 400 * MIB
    yield
    del ballast


def test_peak_of_a_200_mb_test_and_of_a_test_after_it(
    pytester: pytest.Pytester, results: Path, floor: None
) -> None:
    """~200 MB allocated shows a peak within 10 %; the next test's peak is near zero, not the
    process's earlier maximum."""
    pytester.makepyfile(test_mem=MEMORY_MODULE)
    run(pytester).assert_outcomes(passed=3)
    rows = {r.nodeid.rsplit("::", 1)[-1]: r for r in parse_jsonl(results).tests}
    big, nothing = rows["test_a_big"], rows["test_b_nothing"]
    assert big.rss_method == nothing.rss_method == "vmhwm"
    assert big.peak_rss_bytes is not None and nothing.peak_rss_bytes is not None
    assert abs(big.peak_rss_bytes - 200 * MIB) <= 20 * MIB
    assert nothing.peak_rss_bytes < 5 * MIB
    raw = records_by_name(results)["test_b_nothing"]
    assert raw["start_rss_bytes"] < raw["peak_rss_bytes"] + 1 and raw["cuda_peak_bytes"] is None


def test_cuda_peak_read_only_when_torch_initialised_cuda(
    pytester: pytest.Pytester, results: Path
) -> None:
    """With torch imported and CUDA initialised, the peak is reset per test and read after."""
    pytester.makeconftest(FAKE_TORCH_CONFTEST)
    pytester.makepyfile(
        test_cuda="""
        import torch

        def test_gpu():
            torch.cuda.__class__.peak = 123456

        def test_cpu():
            pass
        """
    )
    run(pytester).assert_outcomes(passed=2)
    found = records_by_name(results)
    assert found["test_gpu"]["cuda_peak_bytes"] == 123456
    assert found["test_cpu"]["cuda_peak_bytes"] == 0


@pytest.mark.skipif(not hasattr(resource, "RUSAGE_THREAD"), reason="Linux's RUSAGE_THREAD")
def test_a_threads_maxrss_is_the_processs() -> None:
    """The probe reads the mark with RUSAGE_THREAD (cheaper): Linux reports the process's
    ``ru_maxrss`` there, whichever thread asks and after another thread raised it and exited."""

    def both() -> tuple[int, int]:
        return (
            resource.getrusage(resource.RUSAGE_THREAD).ru_maxrss,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )

    seen: list[tuple[int, int]] = []
    # The worker must raise the mark: above this process's resident set and above the maximum
    # the kernel kept from its exec (the parent's size), whatever ran in this process before.
    Path("/proc/self/clear_refs").write_text("5")
    resident_kib = int(Path("/proc/self/statm").read_text().split()[1]) * mmap.PAGESIZE // 1024
    floor_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = (max(0, floor_kib - resident_kib) + 65536) * 1024

    def allocate() -> None:
        kept = resident(size)
        seen.append(both())
        del kept

    before = both()
    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    after = both()
    for thread_view, process_view in (before, *seen, after):
        assert thread_view == process_view
    assert after[0] >= seen[0][0] >= before[0] + 60 * 1024  # KiB: the worker's pages counted


class FakeUsage:
    def __init__(self, maxrss_kib: int, faults: int) -> None:
        self.ru_maxrss, self.ru_minflt, self.ru_majflt = maxrss_kib, faults, 0


def test_under_the_floor_vmhwm_is_read_only_after_a_page_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """getrusage says only the floor: the peak of a test during which the process took no page
    fault is its start (the resident set cannot have grown), read from nothing but getrusage;
    after a fault, and at the first read, it is VmHWM's."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "clear_refs").write_text("")
    (proc / "statm").write_text("9000 250 10 1 0 100 0\n")  # 250 resident pages
    (proc / "status").write_text("Name:\tpython\nVmHWM:\t    5000 kB\nVmRSS:\t1000 kB\n")
    floor_kib = 10**9  # above anything: every read is under the floor
    faults = [100]
    monkeypatch.setattr(pytest_plugin, "_getrusage", lambda who: FakeUsage(floor_kib, faults[0]))
    monkeypatch.setattr(pytest_plugin, "_maxrss_bytes", lambda: floor_kib * 1024)
    probe = PeakMemory(proc_self=str(proc))
    start = 250 * probe._page
    peaks = []
    for fault in (0, 0, 0, 7, 0, 1):
        probe.reset()
        faults[0] += fault
        peak, started, method, _ = probe.read()
        assert (started, method) == (start, "vmhwm")
        peaks.append(peak)
    vmhwm = 5000 * 1024
    assert peaks == [vmhwm, start, start, vmhwm, start, vmhwm]
    assert (proc / "clear_refs").read_text().startswith("5")  # the mark was reset, as ever
    probe.close()


def test_a_peak_is_never_below_its_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """getrusage's mark may lag statm's count (the kernel's approximate per-CPU page counts): a
    mark read below the test's start gives the start as the peak; one above it is kept."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "clear_refs").write_text("")
    (proc / "statm").write_text("9000 2500 10 1 0 100 0\n")  # 2500 resident pages
    probe = PeakMemory(proc_self=str(proc))
    start = 2500 * probe._page
    mark_kib = [start // 1024 - 130]
    monkeypatch.setattr(pytest_plugin, "_getrusage", lambda who: FakeUsage(mark_kib[0], 0))
    monkeypatch.setattr(pytest_plugin, "_maxrss_bytes", lambda: mark_kib[0] * 1024)
    probe.reset()
    assert probe.read()[:2] == (start, start)
    mark_kib[0] = start // 1024 + 4096
    probe.reset()
    assert probe.read()[:2] == (mark_kib[0] * 1024, start)
    probe.close()


def test_without_clear_refs_falls_back_to_ru_maxrss(tmp_path: Path) -> None:
    """No /proc/self/clear_refs: the method says ru_maxrss, and the peak is only reported when
    the test raised the process maximum."""
    probe = PeakMemory(proc_self=str(tmp_path / "no-proc"))
    probe.reset()
    quiet = memory_fields(probe.read())
    assert quiet["rss_method"] == "ru_maxrss" and quiet["peak_rss_bytes"] is None
    probe.reset()
    data = b"y" * (64 * MIB)
    grown = memory_fields(probe.read())
    assert len(data) and grown["peak_rss_bytes"] > grown["start_rss_bytes"]


def test_select_file_runs_only_the_named_node_ids(
    pytester: pytest.Pytester, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCHEDCTL_SELECT keeps the listed items; the rest are deselected, not run."""
    pytester.makepyfile(
        test_sel="""
        import pytest

        @pytest.mark.parametrize("arg", ["--help", "x"])
        def test_p(arg):
            pass

        def test_other():
            pass
        """
    )
    select = pytester.path / "select.txt"
    select.write_text("test_sel.py::test_p[--help]\n")
    monkeypatch.setenv("SCHEDCTL_SELECT", str(select))
    result = run(pytester)
    result.assert_outcomes(passed=1, deselected=2)
    assert list(records_by_name(results)) == ["test_p[--help]"]


KEEP_AND_FREE_MODULE = """
KEPT = []

def test_a_keeps_100_mb():
    KEPT.append(b"k" * (100 * 2**20))

def test_b_nothing_while_kept():
    pass

def test_c_transient_50_mb_while_kept():
    data = b"t" * (50 * 2**20)
    assert len(data)

def test_d_frees():
    KEPT.clear()

def test_e_nothing_after_free():
    pass
"""


def test_peaks_when_tests_keep_and_free_memory(
    pytester: pytest.Pytester, results: Path, floor: None
) -> None:
    """The mark is reset only when it stands above the resident set: a test after one that kept
    its memory (no reset needed) and a test after one that freed it (reset) both read near zero;
    a transient allocation on top of kept memory reads as itself."""
    pytester.makepyfile(test_keep=KEEP_AND_FREE_MODULE)
    run(pytester).assert_outcomes(passed=5)
    rows = {r.nodeid.rsplit("::", 1)[-1]: r for r in parse_jsonl(results).tests}
    peak = {name: row.peak_rss_bytes for name, row in rows.items()}
    assert all(value is not None for value in peak.values()), peak
    assert abs(peak["test_a_keeps_100_mb"] - 100 * MIB) <= 10 * MIB, peak  # type: ignore[operator]
    assert peak["test_b_nothing_while_kept"] < 5 * MIB, peak  # type: ignore[operator]
    transient = peak["test_c_transient_50_mb_while_kept"]
    assert abs(transient - 50 * MIB) <= 5 * MIB, peak  # type: ignore[operator]
    assert peak["test_e_nothing_after_free"] < 5 * MIB, peak  # type: ignore[operator]


def test_every_line_is_what_json_dumps_writes(pytester: pytest.Pytester, results: Path) -> None:
    """Passing tests' and test_start lines are formatted by hand for speed: each must equal the
    standard encoder's output of its own parsed object, odd node ids and markers included, but
    for the times, which are written to the microsecond (``%.6f``, not the shortest repr)."""
    pytester.makepyfile(
        test_odd="""
        import pytest

        pytestmark = pytest.mark.module_mark

        @pytest.mark.parametrize("x", ['q"uote', "back\\\\slash", "é ✓", "new\\nline"])
        @pytest.mark.own_mark
        def test_p(x):
            pass

        def test_plain():
            pass

        def test_unicodé():
            pass

        def test_fails():
            assert "é" == "e"

        @pytest.mark.skip(reason="sk\\"ip")
        def test_skipped():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=6, failed=1, skipped=1)
    lines = results.read_text(encoding="utf-8").splitlines()
    tests = [json.loads(line) for line in lines if '"type": "test"' in line]
    assert len(tests) == 8
    for line in lines:
        spelled = TIMES.sub(lambda m: m[1] + repr(float(m[2])), line)  # as json.dumps spells them
        assert spelled == json.dumps(json.loads(line), default=str), line
    by_name = {t["nodeid"].split("::")[-1]: t for t in tests}
    assert by_name["test_plain"]["markers"] == ["module_mark"]
    assert by_name["test_unicodé"]["outcome"] == "passed"
    assert any('q"uote' in t["nodeid"] for t in tests)
    params = [t for t in tests if "test_p[" in t["nodeid"]]
    assert len(params) == 4 and all(t["markers"] == ["module_mark", "own_mark"] for t in params)


SHORT_PATH_MODULE = """
import pytest

pytestmark = pytest.mark.module_mark

class TestKind:
    pytestmark = pytest.mark.class_mark

    def test_in_class(self):
        pass

@pytest.mark.own_mark
def test_own():
    pass

@pytest.mark.parametrize("x", ['q"uote', "é"])
def test_param(x):
    pass

def test_plain():
    pass
"""


def test_short_path_lines_equal_the_general_paths(pytester: pytest.Pytester, results: Path) -> None:
    """A passed test's line is spelled directly where the probe reads vmhwm and torch is not
    imported; with a (CUDA-less) torch module imported, the same tests go through the general
    path. Both must write the same keys in the same order and the same values (but for times
    and memory figures)."""
    pytester.makepyfile(test_short=SHORT_PATH_MODULE)
    # The general path builds an ItemState: here it cannot, so each line is the short path's.
    pytester.makeconftest(
        "import schedctl_results\n\n"
        "def no_state(*args, **kwargs):\n"
        "    raise AssertionError('the general path ran')\n\n"
        "schedctl_results.ItemState = no_state\n"
    )
    run(pytester).assert_outcomes(passed=5)
    short = records_by_name(results)
    results.unlink()
    pytester.makeconftest("import sys, types\nsys.modules['torch'] = types.ModuleType('torch')\n")
    run(pytester).assert_outcomes(passed=5)
    general = records_by_name(results)
    assert sorted(short) == sorted(general) and len(short) == 5
    varying = {"ts", "duration_s", "peak_rss_bytes", "start_rss_bytes"}
    for name, line in short.items():
        assert list(line) == list(general[name]), name
        assert {k: v for k, v in line.items() if k not in varying} == {
            k: v for k, v in general[name].items() if k not in varying
        }, name
        assert line["rss_method"] == "vmhwm" and isinstance(line["peak_rss_bytes"], int)
        assert line["peak_rss_bytes"] >= line["start_rss_bytes"], name
        assert general[name]["peak_rss_bytes"] >= general[name]["start_rss_bytes"], name
    assert short["test_in_class"]["markers"] == ["class_mark", "module_mark"]
    assert short["test_own"]["markers"] == ["module_mark", "own_mark"]
