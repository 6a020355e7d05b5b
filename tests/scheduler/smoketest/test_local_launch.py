"""The local torchrun launch through the local runner, against a fake launcher with real processes
(no torch): timeouts, silence, stacks before the kill, no leftovers -- the ranks found by the run
tag they inherit, although they live in sessions of their own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from runners.base import PRE_STOP_MARK
from runners.local import LocalRunner
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.evidence import (
    TorchrunResult,
    console_stacks,
    dumped_stacks,
    rank_tails,
    read_summary,
)
from scheduler.smoketest.launcher import LaunchPlan, RunnerLauncher, local_launcher
from tests.runners.helpers import Background, OffsetClock, alive, text_of
from tests.waiting import wait_for

FAKE = Path(__file__).with_name("fake_launcher.py")
RUN_ID = "7"


class FakeTorchrun:
    """Launches ``fake_launcher.py MODE`` as run 7 through a local runner with a movable clock."""

    def __init__(self, tmp_path: Path, **launcher: object) -> None:
        self.tmp_path = tmp_path
        self.clock = OffsetClock()
        self.runner = LocalRunner(instance=f"t{uuid.uuid4().hex[:10]}", clock=self.clock)
        self.launcher: RunnerLauncher = local_launcher(
            sys.executable, tmp_path, tmp_path / "run", runner=self.runner, run_id=RUN_ID,
            grace_s=2.0, **launcher,  # type: ignore[arg-type]
        )  # fmt: skip
        self.launcher.stack_wait_s = 1.0
        self.log = tmp_path / "n2" / "output.log"

    def plan(self, mode: str, timeout_s: float, silence_timeout_s: float) -> LaunchPlan:
        out = self.tmp_path / "n2"
        argv = [sys.executable, str(FAKE), mode]
        env = dict(os.environ)
        return LaunchPlan(
            2, argv, env, out, out / "metrics.jsonl", out / "ranks", timeout_s, silence_timeout_s
        )

    def start(
        self, mode: str, timeout_s: float = 3600.0, silence_timeout_s: float = 3600.0
    ) -> Background[TorchrunResult]:
        plan = self.plan(mode, timeout_s, silence_timeout_s)
        return Background(lambda cancel: self.launcher.launch(plan, cancel))

    def launched(self) -> list[int]:
        """The ranks' pids, as the launcher printed them."""
        found = re.search(r"launched \[(\d+), (\d+)\]", text_of(self.log))
        return [int(p) for p in found.groups()] if found else []

    def ranks_up(self) -> list[int]:
        """The ranks' pids, once both said they are up (their SIGUSR1 handler is in place)."""
        return self.launched() if text_of(self.log).count("rank up") == 2 else []

    def survivors(self, result: TorchrunResult, ranks: list[int]) -> list[int]:
        """Live processes of the launch: by the run tag, and the launcher and ranks by pid."""
        tagged = self.runner.processes().get(RUN_ID, set())
        return sorted(tagged | {p for p in [result.provenance["pid"], *ranks] if alive(p)})


@pytest.fixture
def torchrun(tmp_path: Path) -> FakeTorchrun:
    return FakeTorchrun(tmp_path)


@pytest.mark.slow
class TestLocalLaunch:
    def test_clean_exit(self, torchrun: FakeTorchrun) -> None:
        """A launcher that ends by itself is EXITED with its code and leaves nothing."""
        result = torchrun.start("ok").result()
        assert (result.termination, result.exit_code) == (Termination.EXITED, 0)
        assert (result.message, result.stacks) == ("exited 0", "")
        assert result.provenance["run_tag"] == torchrun.runner.tag(RUN_ID)
        assert torchrun.survivors(result, []) == []

    def test_silence_captures_stacks_then_kills_everything(self, torchrun: FakeTorchrun) -> None:
        """No output for silence_timeout: the ranks' stacks are captured, then nothing is left."""
        launch = torchrun.start("silent", silence_timeout_s=60.0)
        ranks = wait_for(torchrun.ranks_up, 60, "both ranks up")
        owned = [torchrun.runner.owns(pid, RUN_ID) for pid in ranks]
        assert owned == [True, True], "ranks in sessions of their own still carry the tag"
        torchrun.clock.advance(120)
        result = launch.result()
        assert result.termination is Termination.TIMEOUT
        assert "silence timeout" in result.message and "Python stacks captured" in result.message
        assert result.stacks.count("in stuck_in_rank") == 2
        assert 'File "' in result.stacks
        assert f"SIGUSR1 to pids {sorted(ranks)}" in text_of(torchrun.log)  # not the launcher
        assert torchrun.survivors(result, ranks) == []

    def test_timeout_escalates_to_sigkill(self, torchrun: FakeTorchrun) -> None:
        """Ranks that ignore SIGTERM are SIGKILLed after the grace period at the deadline."""
        launch = torchrun.start("chatty", timeout_s=600.0)
        ranks = wait_for(torchrun.ranks_up, 60, "both ranks up")
        torchrun.clock.advance(700)
        result = launch.result()
        assert result.termination is Termination.TIMEOUT
        assert result.message.startswith("timed out after 600s")
        assert "still alive" in text_of(torchrun.log)
        assert torchrun.survivors(result, ranks) == []

    def test_ranks_left_behind_are_swept(self, torchrun: FakeTorchrun) -> None:
        """A launcher that exits 0 but leaves its ranks running does not leave them running."""
        result = torchrun.start("orphan").result()
        assert (result.termination, result.exit_code) == (Termination.EXITED, 0)
        ranks = torchrun.launched()
        assert len(ranks) == 2
        assert torchrun.survivors(result, ranks) == []

    def test_cancel(self, torchrun: FakeTorchrun) -> None:
        """Setting the cancel event stops the launch as CANCELLED, with no leftovers."""
        launch = torchrun.start("silent")
        ranks = wait_for(torchrun.ranks_up, 60, "both ranks up")
        launch.cancel.set()
        result = launch.result()
        assert result.termination is Termination.CANCELLED
        assert PRE_STOP_MARK not in text_of(torchrun.log)  # a cancel takes no evidence
        assert torchrun.survivors(result, ranks) == []

    def test_log_is_bounded(self, tmp_path: Path) -> None:
        """The console log stops at its limit with a marker."""
        torchrun = FakeTorchrun(tmp_path, log_limit_bytes=1000)
        launch = torchrun.start("flood")
        wait_for(lambda: "log truncated" in text_of(torchrun.log), 60, "the log limit")
        launch.cancel.set()
        result = launch.result()
        assert result.log_truncated
        assert torchrun.log.stat().st_size < 1200

    def test_missing_interpreter_is_infra_error(self, tmp_path: Path) -> None:
        """A launcher that cannot start at all raises InfraError, not a test failure."""
        torchrun = FakeTorchrun(tmp_path)
        plan = replace(torchrun.plan("ok", 5, 5), argv=[str(tmp_path / "no-python")])
        with pytest.raises(InfraError, match="cannot start"):
            torchrun.launcher.launch(plan, threading.Event())


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

    def test_console_stacks_are_those_after_the_pre_stop_line(self, tmp_path: Path) -> None:
        """Without rank logs the dumps come from the console, after the runner's pre-stop line
        and before its next note; a dump before that line is not this stop's evidence."""
        dump = 'Current thread 0x00007f01 (most recent call first):\n  File "x.py", line 3 in f\n'
        log = tmp_path / "output.log"
        log.write_text(
            f"old\n{dump.replace(' f', ' old')}"
            f"{PRE_STOP_MARK} SIGUSR1 to pids [5, 6]]\nnoise\n{dump}"
            "[schedctl: pre-stop command exit 0]\n"
        )
        assert console_stacks(log) == dump
        assert dumped_stacks(tmp_path / "no-ranks", log) == f"--- console after SIGUSR1 ---\n{dump}"
        log.write_text(f"{dump}no pre-stop\n")
        assert console_stacks(log) == ""


def test_sigusr1_is_what_the_ranks_get() -> None:
    """The launch's pre-stop is SIGUSR1, staggered, bounded by the launcher's stack wait."""
    launcher = local_launcher(sys.executable, Path("/"), Path("/run"))
    spec = launcher.spec(LaunchPlan(2, ["x"], {}, Path("/o"), Path("/o/m"), Path("/o/r"), 9, 8))
    assert spec.pre_stop is not None
    assert (spec.pre_stop.signal, spec.pre_stop.wait_s) == (signal.SIGUSR1, 2.0)
    assert spec.pre_stop.stagger_s > 0
    assert (spec.run_id, spec.run_dir, spec.timeout_s, spec.silence_timeout_s) == (
        "run", Path("/o"), 9, 8,
    )  # fmt: skip
