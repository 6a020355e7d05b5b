"""The results plugin, run for real in pytest subprocesses (pytester)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runners.pytest_plugin import CUT_MARKER, LONGREPR_MAX_CHARS, LONGREPR_MAX_LINES
from scheduler.run.results import parse_jsonl
from tests.waiting import wait_for

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SOURCE = REPO / "runners" / "pytest_plugin.py"
EXAMPLE_SUITE = REPO / "examples" / "suite"
PLUGIN_ARGS = ("-p", "schedctl_results", "-p", "no:cacheprovider")

MARKERS_INI = """
[pytest]
addopts = --strict-markers
markers =
    hourly: h
    daily: d
    slow: s
    integration: i
    gpu: g
"""

OUTCOMES_MODULE = """
import pytest

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup boom")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown boom")

def test_pass():
    pass

def test_fail():
    assert 1 == 2

def test_setup_error(broken_setup):
    pass

def test_teardown_error(broken_teardown):
    pass

@pytest.mark.skip(reason="not today")
def test_skip_marker():
    pass

def test_skip_call():
    pytest.skip("skipped inside")

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

def test_xfail_imperative():
    pytest.xfail("imperative")

@pytest.mark.xfail(reason="fixed already")
def test_xpass():
    pass

@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpass_strict():
    pass
"""


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def of_type(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["type"] == kind]


def by_name(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["nodeid"].rsplit("::", 1)[-1]: line for line in of_type(lines, "test")}


def summary_counts(result: pytest.RunResult) -> dict[str, int]:
    """pytest's own final summary line, in the plugin's outcome names."""
    parsed = result.parseoutcomes()
    names = {"errors": "error", "error": "error"}
    counts = dict.fromkeys(("passed", "failed", "skipped", "error", "xfailed", "xpassed"), 0)
    for noun, n in parsed.items():
        key = names.get(noun, noun)
        if key in counts:
            counts[key] = n
    return counts


@pytest.fixture
def plugin_dir(pytester: pytest.Pytester) -> Path:
    """Install the plugin the way the runner does: copied in as ``schedctl_results.py``."""
    shutil.copyfile(PLUGIN_SOURCE, pytester.path / "schedctl_results.py")
    return pytester.path


@pytest.fixture
def results(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The results file, named through ``SCHEDCTL_RESULTS`` in a not-yet-existing directory."""
    path = plugin_dir / "run" / "results.jsonl"
    monkeypatch.setenv("SCHEDCTL_RESULTS", str(path))
    monkeypatch.delenv("SCHEDCTL_JUNIT", raising=False)
    return path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *args)


MODE_CONFTEST = """
def pytest_sessionfinish(session):
    hooks = session.config.pluginmanager.get_plugin("schedctl-results-tests")
    with open("mode.txt", "w") as fh:
        fh.write(type(hooks).__name__)
"""

OWN_PROTOCOL_CONFTEST = """
import pytest
from _pytest.runner import runtestprotocol

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    runtestprotocol(item, nextitem=nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
"""


@dataclass(frozen=True)
class Outcomes:
    result: pytest.RunResult
    lines: list[dict[str, Any]]


class TestOutcomes:
    """One ``test`` line per item with the right outcome, phase and text."""

    @pytest.fixture(params=["DirectProtocol", "WrappedProtocol"])
    def run_outcomes(
        self, request: pytest.FixtureRequest, pytester: pytest.Pytester, results: Path
    ) -> Outcomes:
        """Both ways the plugin meets the test protocol: pytest's own runner alone (the plugin
        runs it), and a conftest with a protocol of its own (as a rerun plugin has)."""
        conftest = MODE_CONFTEST
        if request.param == "WrappedProtocol":
            conftest += OWN_PROTOCOL_CONFTEST
        pytester.makeconftest(conftest)
        pytester.makepyfile(test_outcomes=OUTCOMES_MODULE)
        result = run(pytester)
        assert (pytester.path / "mode.txt").read_text() == request.param
        return Outcomes(result, read_lines(results))

    @pytest.fixture
    def lines(self, run_outcomes: Outcomes) -> list[dict[str, Any]]:
        return run_outcomes.lines

    def test_every_outcome_kind_and_phase(self, lines: list[dict[str, Any]]) -> None:
        """Each kind of result maps to its outcome and the phase that decided it."""
        got = {name: (t["outcome"], t["when"]) for name, t in by_name(lines).items()}
        assert got == {
            "test_pass": ("passed", "call"),
            "test_fail": ("failed", "call"),
            "test_setup_error": ("error", "setup"),
            "test_teardown_error": ("error", "teardown"),
            "test_skip_marker": ("skipped", "setup"),
            "test_skip_call": ("skipped", "call"),
            "test_xfail": ("xfailed", "call"),
            "test_xfail_imperative": ("xfailed", "call"),
            "test_xpass": ("xpassed", "call"),
            "test_xpass_strict": ("failed", "call"),
        }

    def test_one_line_per_item(self, lines: list[dict[str, Any]]) -> None:
        """Three phases per item still give exactly one ``test`` line each."""
        nodeids = [t["nodeid"] for t in of_type(lines, "test")]
        assert len(nodeids) == len(set(nodeids)) == 10

    def test_failure_text_and_reasons(self, lines: list[dict[str, Any]]) -> None:
        """Failures carry the traceback and crash message; skips and xfails their reason."""
        tests = by_name(lines)
        assert "assert 1 == 2" in tests["test_fail"]["longrepr"]
        assert tests["test_fail"]["message"] == "assert 1 == 2"
        assert tests["test_setup_error"]["message"] == "RuntimeError: setup boom"
        assert "teardown boom" in tests["test_teardown_error"]["longrepr"]
        assert tests["test_skip_marker"]["longrepr"] == "not today"
        assert tests["test_skip_call"]["longrepr"] == "skipped inside"
        assert tests["test_xfail"]["longrepr"] == "known bug"
        assert tests["test_xfail_imperative"]["longrepr"] == "imperative"
        assert tests["test_xpass"]["longrepr"] == "fixed already"
        assert tests["test_xpass_strict"]["message"] == "[XPASS(strict)] must fail"
        assert tests["test_pass"]["longrepr"] is None
        assert tests["test_pass"]["message"] is None

    def test_line_envelope(self, lines: list[dict[str, Any]]) -> None:
        """Every line has a type and an epoch ts; start, collection and session frame the tests."""
        assert all(isinstance(line["ts"], float) and line["ts"] > 1.6e9 for line in lines)
        assert [line["type"] for line in lines][:2] == ["start", "collection"]
        assert lines[-1]["type"] == "session"
        start = lines[0]
        assert start["pytest_version"] == pytest.__version__
        assert start["python"] == sys.version.split()[0]
        assert isinstance(start["pid"], int)
        assert all(t["duration_s"] >= 0 for t in of_type(lines, "test"))

    def test_session_counts_and_exit_status(self, run_outcomes: Outcomes) -> None:
        """The session line counts items per outcome and carries pytest's exit status."""
        session = run_outcomes.lines[-1]
        assert session["exitstatus"] == run_outcomes.result.ret == 1
        assert session["counts"] == {
            "passed": 1,
            "failed": 2,
            "skipped": 2,
            "error": 2,
            "xfailed": 2,
            "xpassed": 1,
        }
        assert session["collect_errors"] == 0
        assert session["duration_s"] > 0

    def test_teardown_error_counts_once(self, run_outcomes: Outcomes) -> None:
        """pytest counts pass + teardown failure as passed + error; the plugin as one error."""
        assert summary_counts(run_outcomes.result)["passed"] == 2
        assert run_outcomes.lines[-1]["counts"]["passed"] == 1


def test_counts_equal_pytest_summary(pytester: pytest.Pytester, results: Path) -> None:
    """Without teardown failures, the session counts equal pytest's own summary line."""
    module = OUTCOMES_MODULE.replace("def test_teardown_error(broken_teardown):", "def _x(b):")
    pytester.makepyfile(test_outcomes=module)
    result = run(pytester)
    session = read_lines(results)[-1]
    assert session["counts"] == summary_counts(result)
    assert sum(session["counts"].values()) == 9


def test_markers_are_sorted_and_skip_pytest_builtins(
    pytester: pytest.Pytester, results: Path
) -> None:
    """Module, class and function marks are listed; parametrize/skipif/xfail & co. are not."""
    pytester.makeini(MARKERS_INI)
    pytester.makepyfile(
        test_marks="""
        import pytest
        pytestmark = pytest.mark.daily

        @pytest.mark.slow
        class TestGroup:
            @pytest.mark.integration
            @pytest.mark.parametrize("x", [1, 2])
            @pytest.mark.skipif(False, reason="never")
            @pytest.mark.usefixtures("tmp_path")
            @pytest.mark.filterwarnings("ignore")
            @pytest.mark.xfail(reason="no", strict=False)
            def test_marked(self, x):
                assert False

        def test_module_mark_only():
            pass
        """
    )
    run(pytester)
    markers = {t["nodeid"]: t["markers"] for t in of_type(read_lines(results), "test")}
    assert markers == {
        "test_marks.py::TestGroup::test_marked[1]": ["daily", "integration", "slow"],
        "test_marks.py::TestGroup::test_marked[2]": ["daily", "integration", "slow"],
        "test_marks.py::test_module_mark_only": ["daily"],
    }


def test_long_failure_text_is_cut_to_head_and_tail(
    pytester: pytest.Pytester, results: Path
) -> None:
    """A long traceback keeps its first lines and its final error, within the line/char caps."""
    body = "".join(f"    step_{i} = {i}\n" for i in range(60))
    source = (
        f"def test_long_body():\n{body}"
        '    assert step_59 == -1, "the last line says why"\n\n'
        "def test_huge_message():\n"
        '    assert False, "x" * 10000\n'
    )
    pytester.makepyfile(test_long=source)
    run(pytester)
    tests = by_name(read_lines(results))
    long_body = tests["test_long_body"]["longrepr"]
    assert long_body.startswith("def test_long_body():")
    assert CUT_MARKER in long_body
    assert "the last line says why" in long_body.split(CUT_MARKER)[1]
    assert len(long_body.splitlines()) <= LONGREPR_MAX_LINES + 1
    huge = tests["test_huge_message"]["longrepr"]
    assert len(huge) <= LONGREPR_MAX_CHARS + len(CUT_MARKER) + 2
    assert CUT_MARKER in huge


def test_collection_error_line(pytester: pytest.Pytester, results: Path) -> None:
    """A module that does not parse gives a collect_error line and counts in collection/session."""
    pytester.makepyfile(test_good="def test_ok():\n    pass\n", test_bad="def test_(:\n    pass\n")
    result = run(pytester)
    lines = read_lines(results)
    (error,) = of_type(lines, "collect_error")
    assert error["nodeid"] == "test_bad.py"
    assert "SyntaxError" in error["longrepr"]
    (collection,) = of_type(lines, "collection")
    assert collection["errors"] == 1
    assert lines[-1]["collect_errors"] == 1
    assert lines[-1]["exitstatus"] == result.ret == 2
    assert of_type(lines, "test") == []


def test_collection_counts_deselected(pytester: pytest.Pytester, results: Path) -> None:
    """``-m`` deselection is reported as collected = selected + deselected."""
    pytester.makeini(MARKERS_INI)
    pytester.makepyfile(
        test_sel="""
        import pytest

        @pytest.mark.hourly
        def test_a():
            pass

        def test_b():
            pass

        def test_c():
            pass
        """
    )
    run(pytester, "-m", "hourly")
    (collection,) = of_type(read_lines(results), "collection")
    assert (collection["collected"], collection["selected"], collection["deselected"]) == (3, 1, 2)


RESULTS_IO = ["mmap", "write"]


@pytest.fixture(params=RESULTS_IO)
def results_io(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using it runs with the file mapped and with ``write(2)`` (the fallback)."""
    io: str = request.param
    monkeypatch.setenv("SCHEDCTL_RESULTS_MMAP", "1" if io == "mmap" else "0")
    return io


def test_lines_reach_the_file_while_the_session_runs(
    pytester: pytest.Pytester, results: Path, results_io: str
) -> None:
    """A later test polls the file mid-session and sees the earlier test's line and its own start:
    each line is in the file when it is written, not at session end."""
    pytester.makepyfile(
        test_live="""
        import json, os

        def test_first():
            pass

        def test_second_sees_first():
            with open(os.environ["SCHEDCTL_RESULTS"], "rb") as fh:
                data = fh.read()
            lines = [json.loads(line) for line in data.split(b"\\0", 1)[0].splitlines()]
            kinds = [(l["type"], l.get("nodeid")) for l in lines]
            assert kinds[-3:] == [
                ("test_start", "test_live.py::test_first"),
                ("test", "test_live.py::test_first"),
                ("test_start", "test_live.py::test_second_sees_first"),
            ]
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2)
    lines = read_lines(results)
    assert lines[0]["results_io"] == results_io
    assert [line["type"] for line in lines].count("test") == 2


HANGING_MODULE = """
import os, pathlib, threading

def test_done():
    pass

def test_hangs():
    pathlib.Path(os.environ["HANG_MARK"]).write_text("hung")
    threading.Event().wait()
"""


class TestHangs:
    """A test that hangs is named in the file while it hangs; SIGKILL or SIGTERM loses nothing."""

    @pytest.fixture
    def hanging(
        self,
        pytester: pytest.Pytester,
        results: Path,
        results_io: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Iterator[subprocess.Popen[bytes]]:
        pytester.makepyfile(test_hang=HANGING_MODULE)
        monkeypatch.setenv("HANG_MARK", str(pytester.path / "hung.mark"))
        env = {**os.environ, "PYTHONPATH": str(pytester.path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", *PLUGIN_ARGS, "test_hang.py"],
            cwd=pytester.path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield proc
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)

    @staticmethod
    def wait_for_the_hang(results: Path) -> None:
        wait_for(
            lambda: results.exists() and parse_jsonl(results).running == "test_hang.py::test_hangs",
            60,
            "the hanging test's test_start line in the results file",
        )

    def test_sigkill_while_a_test_hangs_keeps_every_line(
        self, hanging: subprocess.Popen[bytes], results: Path
    ) -> None:
        """The hung test's start is in the file while it hangs; SIGKILL then keeps every line."""
        self.wait_for_the_hang(results)
        hanging.kill()
        assert hanging.wait(timeout=60) == -signal.SIGKILL
        parsed = parse_jsonl(results)
        assert parsed.started and parsed.exitstatus is None and parsed.ignored_lines == 0
        done = [(t.nodeid, t.outcome) for t in parsed.tests]
        assert done == [("test_hang.py::test_done", "passed")]
        assert parsed.running == "test_hang.py::test_hangs"

    def test_sigterm_while_a_test_hangs_dies_of_it_with_every_line(
        self, hanging: subprocess.Popen[bytes], results: Path
    ) -> None:
        """SIGTERM keeps its default action (the process dies of it); nothing was waiting in
        memory, so every line is in the file."""
        self.wait_for_the_hang(results)
        hanging.send_signal(signal.SIGTERM)
        assert hanging.wait(timeout=60) == -signal.SIGTERM
        parsed = parse_jsonl(results)
        assert parsed.started and parsed.collected == 2 and parsed.exitstatus is None
        assert [t.nodeid for t in parsed.tests] == ["test_hang.py::test_done"]
        assert parsed.running == "test_hang.py::test_hangs"


CRASHING_MODULE = """
import os, signal

def test_1():
    pass

def test_2_fails():
    assert False

def test_3_crashes():
    {crash}

def test_4_never_runs():
    pass
"""


@pytest.mark.parametrize(
    "crash", ["os._exit(3)", "os.kill(os.getpid(), signal.SIGKILL)"], ids=["os_exit", "sigkill"]
)
def test_a_test_that_kills_the_interpreter_is_named_with_every_earlier_result(
    pytester: pytest.Pytester, results: Path, results_io: str, crash: str
) -> None:
    """A real ``os._exit`` / ``SIGKILL`` mid-suite: the killed test is named as running, every
    earlier result is read. Mapped, the file keeps its zero padding (nobody truncated it)."""
    pytester.makepyfile(test_crash=CRASHING_MODULE.format(crash=crash))
    result = run(pytester)
    assert result.ret in (3, -signal.SIGKILL)
    parsed = parse_jsonl(results)
    assert parsed.started and parsed.exitstatus is None and parsed.ignored_lines == 0
    assert [(t.nodeid, t.outcome) for t in parsed.tests] == [
        ("test_crash.py::test_1", "passed"),
        ("test_crash.py::test_2_fails", "failed"),
    ]
    assert parsed.running == "test_crash.py::test_3_crashes"
    data = results.read_bytes()
    assert data.endswith(b"\0") == (results_io == "mmap")


def test_a_session_appends_after_a_crashed_ones_padding(
    pytester: pytest.Pytester, results: Path
) -> None:
    """A mapped session that died left zero bytes; the next session writes over them, so the
    file is whole lines again and both sessions read back."""
    pytester.makepyfile(test_crash=CRASHING_MODULE.format(crash="os._exit(3)"))
    run(pytester)
    assert results.read_bytes().endswith(b"\0")
    pytester.makepyfile(test_crash="def test_ok():\n    pass\n")
    assert run(pytester).ret == 0
    assert b"\0" not in results.read_bytes()
    lines = read_lines(results)
    assert [line["type"] for line in lines].count("start") == 2
    assert lines[-1]["type"] == "session" and lines[-1]["counts"]["passed"] == 1


def test_a_forked_child_writes_nothing(pytester: pytest.Pytester, results: Path) -> None:
    """A child forked by a test never writes into (or truncates) its parent's file, even when it
    goes through the writer, and the plugin runs no thread of its own."""
    pytester.makepyfile(
        test_fork="""
        import os, threading
        import pytest

        @pytest.fixture(scope="session", autouse=True)
        def fork_after_the_last_test(request):
            yield
            assert threading.active_count() == 1  # the plugin started no thread
            writer = request.config.pluginmanager.get_plugin("schedctl-results-recorder")._writer
            pid = os.fork()
            if pid == 0:
                writer.record({"type": "from-the-child"})
                writer.test_start("from-the-child")
                writer.close()
                os._exit(0)
            os.waitpid(pid, 0)

        def test_first():
            pass

        def test_second():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2)
    lines = read_lines(results)
    kinds = [line["type"] for line in lines]
    assert kinds.count("start") == 1 and kinds[-1] == "session"
    assert kinds.count("test_start") == kinds.count("test") == 2
    assert "from-the-child" not in results.read_text()


def test_session_cut_mid_test_reports_the_test(pytester: pytest.Pytester, results: Path) -> None:
    """A session interrupted inside a test still gives that test a line, as an error."""
    pytester.makepyfile(
        test_interrupt="""
        def test_interrupted():
            raise KeyboardInterrupt

        def test_never_runs():
            pass
        """
    )
    result = run(pytester)
    lines = read_lines(results)
    (test,) = of_type(lines, "test")
    assert (test["nodeid"], test["outcome"]) == ("test_interrupt.py::test_interrupted", "error")
    assert "incomplete" in test["longrepr"]
    assert lines[-1]["exitstatus"] == result.ret == 2


def test_appends_to_an_existing_file(pytester: pytest.Pytester, results: Path) -> None:
    """A second session appends below the first one's lines instead of truncating them."""
    pytester.makepyfile(test_one="def test_ok():\n    pass\n")
    run(pytester)
    run(pytester)
    assert [line["type"] for line in read_lines(results)].count("session") == 2


def test_inert_without_env(
    pytester: pytest.Pytester, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SCHEDCTL_RESULTS/SCHEDCTL_JUNIT the plugin loads and writes nothing."""
    monkeypatch.delenv("SCHEDCTL_RESULTS", raising=False)
    monkeypatch.delenv("SCHEDCTL_JUNIT", raising=False)
    pytester.makepyfile(test_one="def test_ok():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    written = [p for p in plugin_dir.rglob("*") if p.suffix in (".jsonl", ".xml")]
    assert written == []


def test_unwritable_results_path_is_a_usage_error(
    pytester: pytest.Pytester, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A results path that cannot be opened stops pytest with a usage error naming it."""
    monkeypatch.setenv("SCHEDCTL_RESULTS", str(plugin_dir))
    pytester.makepyfile(test_one="def test_ok():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*SCHEDCTL_RESULTS=*cannot open*"])


class TestJunit:
    """``SCHEDCTL_JUNIT`` makes pytest write JUnit XML unless ``--junitxml`` is given."""

    @pytest.fixture
    def junit(self, results: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        path = results.parent / "junit.xml"
        monkeypatch.setenv("SCHEDCTL_JUNIT", str(path))
        return path

    def test_env_writes_junit_xml(self, pytester: pytest.Pytester, junit: Path) -> None:
        """The XML lands at the env path and agrees with the run."""
        pytester.makepyfile(test_outcomes=OUTCOMES_MODULE)
        run(pytester)
        cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
        assert len(cases) == 10
        assert cases["test_fail"].find("failure") is not None
        assert cases["test_pass"].find("failure") is None

    def test_command_line_junitxml_wins(self, pytester: pytest.Pytester, junit: Path) -> None:
        """An explicit --junitxml is honoured and the env path is left alone."""
        pytester.makepyfile(test_one="def test_ok():\n    pass\n")
        explicit = pytester.path / "explicit.xml"
        run(pytester, f"--junitxml={explicit}")
        assert explicit.is_file()
        assert not junit.exists()


def test_example_suite_hourly_counts_match_pytest(
    pytester: pytest.Pytester, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On examples/suite with ``-m hourly`` the plugin's counts equal pytest's summary."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    result = run(pytester, "-m", "hourly", "--rootdir", str(EXAMPLE_SUITE), str(EXAMPLE_SUITE))
    lines = read_lines(results)
    session = lines[-1]
    assert session["exitstatus"] == result.ret == 0
    assert session["counts"] == summary_counts(result)
    assert session["counts"]["passed"] >= 10
    assert all("hourly" in t["markers"] for t in of_type(lines, "test"))


def test_xdist_controller_writes_every_test(pytester: pytest.Pytester, results: Path) -> None:
    """Under pytest-xdist the controller writes one line per test, markers included."""
    pytest.importorskip("xdist")
    pytester.makeini(MARKERS_INI)
    pytester.makepyfile(
        test_outcomes=OUTCOMES_MODULE + "\n@pytest.mark.slow\ndef test_m():\n  pass\n"
    )
    result = run(pytester, "-n", "2")
    lines = read_lines(results)
    assert len(of_type(lines, "start")) == 1
    assert of_type(lines, "collection")[0]["selected"] == 11
    assert len(of_type(lines, "test_start")) == 11  # the controller hears of every start
    tests = by_name(lines)
    assert len(tests) == 11
    assert tests["test_m"]["markers"] == ["slow"]
    assert tests["test_xpass_strict"]["outcome"] == "failed"
    assert lines[-1]["exitstatus"] == result.ret


@pytest.mark.parametrize(
    ("config_name", "config_text"),
    [
        ("pytest.ini", "[pytest]\nmarkers =\n    hourly: every hour\n    slow(reason): long\n"),
        (
            "pyproject.toml",
            '[tool.pytest.ini_options]\nmarkers = ["hourly: every hour", "slow(reason): long"]\n',
        ),
    ],
)
def test_collect_only_lists_items_and_the_projects_own_markers(
    pytester: pytest.Pytester, results: Path, config_name: str, config_text: str
) -> None:
    """Under --collect-only: one ``item`` line per selected test with its markers, and the
    markers the project's config file registers (not pytest's own); no ``test`` lines."""
    (pytester.path / config_name).write_text(config_text)
    pytester.makepyfile(
        test_m="import pytest\n\n@pytest.mark.hourly\n@pytest.mark.parametrize('x', [1])\n"
        "def test_a(x):\n    pass\n\ndef test_b():\n    pass\n"
    )
    result = run(pytester, "--collect-only", "-q", "-m", "hourly")
    assert result.ret == 0, result.stdout.str()
    lines = read_lines(results)
    assert of_type(lines, "markers")[0]["registered"] == ["hourly", "slow"]
    items = {r["nodeid"]: r["markers"] for r in of_type(lines, "item")}
    assert items == {"test_m.py::test_a[1]": ["hourly"]}
    assert not of_type(lines, "test")
    assert of_type(lines, "collection")[0]["deselected"] == 1


def test_a_normal_run_writes_no_item_lines(pytester: pytest.Pytester, results: Path) -> None:
    pytester.makepyfile(test_m="def test_a():\n    pass\n")
    assert run(pytester).ret == 0
    lines = read_lines(results)
    assert not of_type(lines, "item") and not of_type(lines, "markers")
