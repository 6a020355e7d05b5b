"""The local torchrun supervisor, against a fake launcher with real processes (no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.procs import ProcessTree, read_proc_table
from scheduler.smoketest.supervise import TorchrunResult, rank_tails, read_summary, run_torchrun

FAKE = Path(__file__).with_name("fake_launcher.py")

Launch = Callable[..., TorchrunResult]


def survivors(sessions: frozenset[int]) -> list[int]:
    """Live processes left in any session the launch created."""
    return [
        pid
        for pid, info in read_proc_table().items()
        if info.sid in sessions and info.state not in ("Z", "X")
    ]


@pytest.fixture
def launch(tmp_path: Path) -> Launch:
    """Run the fake launcher in MODE under run_torchrun with short limits."""

    def run(mode: str, **kwargs: object) -> TorchrunResult:
        options: dict[str, object] = {
            "timeout_s": 30.0, "silence_timeout_s": 30.0, "cancel": threading.Event(),
            "grace_s": 2.0, "stack_wait_s": 1.0,
        }  # fmt: skip
        options.update(kwargs)
        return run_torchrun(
            [sys.executable, str(FAKE), mode], dict(os.environ), tmp_path,
            log_path=tmp_path / "output.log", **options,  # type: ignore[arg-type]
        )  # fmt: skip

    return run


@pytest.mark.slow
class TestRunTorchrun:
    def test_clean_exit(self, launch: Launch) -> None:
        """A launcher that ends by itself is EXITED with its code and leaves nothing."""
        result = launch("ok")
        assert (result.termination, result.exit_code) == (Termination.EXITED, 0)
        assert result.stacks == ""
        assert survivors(result.sessions) == []

    def test_silence_captures_stacks_then_kills_everything(self, launch: Launch) -> None:
        """No output for silence_timeout: ranks' stacks are captured, then no process is left."""
        result = launch("silent", silence_timeout_s=2.0)
        assert result.termination is Termination.TIMEOUT
        assert "silence timeout" in result.message
        assert result.stacks.count("in stuck_in_rank") == 2
        assert 'File "' in result.stacks
        assert len(result.sessions) == 3  # the launcher's own and one per rank
        assert survivors(result.sessions) == []
        assert result.duration_s < 15

    def test_timeout_escalates_to_sigkill(self, launch: Launch) -> None:
        """Ranks that ignore SIGTERM are SIGKILLed after the grace period at the deadline."""
        result = launch("chatty", timeout_s=3.0)
        assert result.termination is Termination.TIMEOUT
        assert result.message.startswith("timed out after 3 s")
        assert "still alive" in result.log_path.read_text()  # type: ignore[union-attr]
        assert survivors(result.sessions) == []

    def test_ranks_left_behind_are_swept(self, launch: Launch) -> None:
        """A launcher that exits 0 but leaves its ranks running does not leave them running."""
        result = launch("orphan")
        assert (result.termination, result.exit_code) == (Termination.EXITED, 0)
        assert len(result.sessions) == 3
        assert survivors(result.sessions) == []

    def test_cancel(self, launch: Launch) -> None:
        """Setting the cancel event stops the launch promptly, as CANCELLED, with no leftovers."""
        cancel = threading.Event()
        threading.Timer(2.0, cancel.set).start()
        started = time.monotonic()
        result = launch("silent", cancel=cancel)
        assert result.termination is Termination.CANCELLED
        assert time.monotonic() - started < 10
        assert survivors(result.sessions) == []

    def test_log_is_bounded(self, launch: Launch) -> None:
        """The console log stops at its limit with a marker."""
        result = launch("flood", timeout_s=3.0, log_limit_bytes=1000)
        assert result.log_truncated
        assert result.log_path is not None
        assert result.log_path.stat().st_size < 1200

    def test_missing_interpreter_is_infra_error(self, tmp_path: Path) -> None:
        """A launcher that cannot start at all raises InfraError, not a test failure."""
        with pytest.raises(InfraError, match="cannot start torchrun"):
            run_torchrun(
                [str(tmp_path / "no-python")], {}, tmp_path, 5, 5, tmp_path / "log",
                threading.Event(),
            )  # fmt: skip


class TestProcessTree:
    def test_names_with_spaces_and_parens(self) -> None:
        """/proc/<pid>/stat is parsed after the last ')' so odd process names are read right."""
        code = "open('/proc/self/comm','w').write('a) (b c'); import time; time.sleep(30)"
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                info = read_proc_table().get(child.pid)
                if info and (Path(f"/proc/{child.pid}/comm").read_text().strip() == "a) (b c"):
                    break
                time.sleep(0.05)
            assert info is not None
            assert (info.ppid, info.sid, info.pgid) == (os.getpid(), child.pid, child.pid)
            tree = ProcessTree(os.getpid())
            tree.refresh()
            assert child.pid in tree.sessions
        finally:
            child.kill()
            child.wait()


class TestEvidence:
    def test_read_summary_takes_last_summary(self, tmp_path: Path) -> None:
        """The last summary line wins; broken lines are skipped; a missing file gives None."""
        out = tmp_path / "m.jsonl"
        lines = [
            {"type": "step", "step": 0},
            {"type": "summary", "n": 1},
            {"type": "summary", "n": 2},
        ]
        out.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
        assert read_summary(out) == {"type": "summary", "n": 2}
        assert read_summary(tmp_path / "absent") is None

    def test_rank_tails(self, tmp_path: Path) -> None:
        """The last 20 lines of each rank's streams are kept, keyed by rank."""
        for rank in (0, 1):
            folder = tmp_path / "abc_1" / "attempt_0" / str(rank)
            folder.mkdir(parents=True)
            (folder / "stdout.log").write_text("".join(f"out {i}\n" for i in range(30)))
            (folder / "stderr.log").write_text(f"boom {rank}\n")
        tails = rank_tails(tmp_path)
        assert sorted(tails) == [0, 1]
        assert tails[1][0] == "[stdout] out 10"
        assert tails[1][-1] == "[stderr] boom 1"
        assert len(tails[0]) == 21
