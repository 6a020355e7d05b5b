"""One contract, every runner backend: exit codes, timeouts, silence, evidence before the kill,
bounded logs, which processes are the run's, and nothing left behind -- not even after a crash.

Each backend gets a harness (how to build it, which python to use, how to see a run's processes
from outside the runner, how to leave a crashed run's leftovers). Every runner takes the same
injectable clock, so deadline and silence are reached by moving the clock once the run is where
the test wants it, never by sleeping. The docker backend joins when its engine and image are
present; under CI=true it must be.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runners.base import PRE_STOP_MARK, PreStop, Runner, RunResult, RunSpec, StopRequest
from runners.fake import FakeBehaviour, FakeRunner
from runners.local import LocalRunner
from scheduler.kernel.outcome import Termination
from tests.conftest import ROOT, require
from tests.runners.helpers import Background, OffsetClock, text_of
from tests.waiting import wait_for

SCENARIOS = {
    "pass": "def test_ok():\n    assert True\n",
    "fail": "def test_bad():\n    assert 1 == 2\n",
    "hang": "import time\n\ndef test_hang():\n    time.sleep(600)\n",
    "chatty": "def test_chatty():\n    print('x' * 200_000)\n    assert False\n",
    # A child that dumps its stacks on SIGUSR1, says so, then falls silent (run with -s).
    "dump": textwrap.dedent('''
        import subprocess, sys

        CHILD = """
        import faulthandler, signal, time
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        print("ready", flush=True)
        def parked():
            time.sleep(600)
        parked()
        """

        def test_dump():
            subprocess.run([sys.executable, "-c", CHILD], check=False)
    '''),
}
SCENARIOS["orphan"] = SCENARIOS["hang"]
DUMP_HEADER = "(most recent call first)"

FAKE_BEHAVIOUR = {
    "pass": FakeBehaviour(exit_code=0, tests=[("test_s.py::test_ok", "passed")]),
    "fail": FakeBehaviour(exit_code=1, tests=[("test_s.py::test_bad", "failed")]),
    "hang": FakeBehaviour(duration_s=600),
    "chatty": FakeBehaviour(exit_code=1, log=b"x" * 200_000),
    "dump": FakeBehaviour(
        duration_s=6000,
        log=b"ready\n",
        pre_stop_log=b'Current thread 0x1 (most recent call first):\n  File "<string>" in parked\n',
    ),
    "orphan": FakeBehaviour(leaves_orphans=True),
}


@dataclass
class Harness:
    name: str
    runner: Runner
    python: str
    clock: OffsetClock
    pids: Callable[[RunSpec], set[int]]
    """Host pids of the run's processes, seen from outside the runner."""
    leftovers: Callable[[RunSpec], list[str]]
    """What of the run still exists (processes, containers)."""
    orphan: Callable[[RunSpec], None]
    """Start the run and leave it as a crash of its supervising process would."""
    restarted: Callable[[], Runner]
    """A runner of the same instance, as after a restart."""
    stranger: Callable[[], Runner]
    """A runner of another instance."""


def _marked_pids(spec: RunSpec) -> set[int]:
    """Live processes whose environment carries the test's own marker for ``spec``."""
    needle = f"SCHEDCTL_CONTRACT_RUN={spec.run_id}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.add(int(entry.name))
    return found


def _orphan_in_child(alias: str, instance: str, pids: Callable[[RunSpec], set[int]]) -> Any:
    """Run the spec in a child process and kill -9 it once the run's processes are up."""

    def orphan(spec: RunSpec) -> None:
        spec_file = spec.run_dir.parent / f"{spec.run_id}.spec"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_bytes(pickle.dumps(spec))
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.runners.orphan_child", alias, instance, str(spec_file)],
            cwd=ROOT,
        )
        try:
            wait_for(lambda: pids(spec) or child.poll() is not None, 120, "the run's processes")
            assert child.poll() is None, f"the supervising child exited {child.returncode}"
        finally:
            child.kill()
            child.wait()

    return orphan


def _local_harness() -> Harness:
    instance = f"c{uuid.uuid4().hex[:10]}"
    clock = OffsetClock()

    def leftovers(spec: RunSpec) -> list[str]:
        return [str(pid) for pid in sorted(_marked_pids(spec))]

    return Harness(
        "local",
        LocalRunner(instance=instance, clock=clock),
        sys.executable,
        clock,
        _marked_pids,
        leftovers,
        _orphan_in_child("local", instance, _marked_pids),
        lambda: LocalRunner(instance=instance),
        lambda: LocalRunner(instance=f"other{instance}"),
    )


def _fake_harness() -> Harness:
    clock = OffsetClock()

    def fake_pid(spec: RunSpec) -> int:
        return 4_000_000 + int(spec.run_id) % 1_000_000

    def behave(spec: RunSpec) -> FakeBehaviour:
        return dataclasses.replace(FAKE_BEHAVIOUR[spec.env["SCENARIO"]], pids=(fake_pid(spec),))

    runner = FakeRunner(behave, clock=clock)

    def pids(spec: RunSpec) -> set[int]:
        return {fake_pid(spec)} if runner.owns(fake_pid(spec), spec.run_id) else set()

    def orphan(spec: RunSpec) -> None:
        runner.run(spec)  # the "orphan" behaviour's pids outlive the run

    return Harness(
        "fake",
        runner,
        sys.executable,
        clock,
        pids,
        lambda _spec: [],
        orphan,
        lambda: runner,  # a fake's bookkeeping is the object: its "restart" is itself
        lambda: FakeRunner(behave),
    )


def _docker_harness() -> Harness:
    docker_mod = (
        pytest.importorskip("runners.docker")
        if not os.environ.get("CI")
        else __import__("runners.docker", fromlist=["DockerRunner"])
    )
    ok, reason = docker_mod.docker_available()
    require(ok, f"Docker engine not available: {reason}")
    instance = f"c{uuid.uuid4().hex[:10]}"
    clock = OffsetClock()
    runner = docker_mod.DockerRunner(instance=instance, clock=clock)
    image = "schedctl-test:bookworm"
    client = runner.client
    try:
        client.images.get(image)
    except Exception:
        require(False, f"image {image} missing (run `make image`)")

    def containers(spec: RunSpec) -> list[Any]:
        labels = [f"schedctl.run-id={spec.run_id}", f"schedctl.instance={instance}"]
        # A container removed between the listing and its inspection is gone, not an error.
        found = client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        return list(found)

    def pids(spec: RunSpec) -> set[int]:
        found = set()
        for container in containers(spec):
            try:
                top = container.top()
            except Exception:  # exited or removed meanwhile
                continue
            column = top["Titles"].index("PID")
            found.update(int(row[column]) for row in top["Processes"] or [])
        return found

    return Harness(
        "docker",
        runner,
        "python3",
        clock,
        pids,
        lambda spec: [c.name for c in containers(spec)],
        _orphan_in_child("docker", instance, pids),
        lambda: docker_mod.DockerRunner(instance=instance),
        lambda: docker_mod.DockerRunner(instance=f"other{instance}"),
    )


def _slurm_harness() -> Harness:
    from runners.slurm import SlurmRunner
    from runners.slurm_support import SlurmCli, slurm_available

    ok, reason = slurm_available()
    require(ok, f"Slurm cluster not available: {reason}")
    instance = f"c{uuid.uuid4().hex[:10]}"
    clock = OffsetClock()
    cli = SlurmCli()

    def leftovers(spec: RunSpec) -> list[str]:
        jobs = cli.jobs_named(f"schedctl-{instance}-{spec.run_id}")
        return [*jobs, *(str(pid) for pid in sorted(_marked_pids(spec)))]

    return Harness(
        "slurm",
        SlurmRunner(instance=instance, clock=clock, poll_s=0.1),
        sys.executable,
        clock,
        _marked_pids,
        leftovers,
        _orphan_in_child("slurm", instance, _marked_pids),
        lambda: SlurmRunner(instance=instance),
        lambda: SlurmRunner(instance=f"other{instance}"),
    )


HARNESSES = {
    "fake": _fake_harness,
    "local": _local_harness,
    "docker": _docker_harness,
    "slurm": _slurm_harness,
}


@pytest.fixture(
    params=[
        "fake",
        "local",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("slurm", marks=pytest.mark.slurm),
    ]
)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    build = HARNESSES
    h = build[request.param]()
    yield h
    h.restarted().reap_orphans(set())  # whatever a failed test left
    h.runner.close()


_counter = iter(range(1_000_000))


def make_spec(tmp_path: Path, harness: Harness, scenario: str, **kw: object) -> RunSpec:
    project = tmp_path / f"proj-{scenario}"
    project.mkdir(exist_ok=True)
    (project / "test_s.py").write_text(SCENARIOS[scenario])
    run_id = f"{os.getpid()}{next(_counter)}"
    defaults: dict[str, object] = {
        "run_id": run_id,
        "tier": "contract",
        "argv": [harness.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_s.py"],
        "workdir": project,
        "run_dir": tmp_path / f"run-{run_id}",
        "timeout_s": 60.0,
        "env": {
            "SCENARIO": scenario,
            "SCHEDCTL_CONTRACT_RUN": run_id,
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        "grace_s": 2.0,
        "image": "schedctl-test:bookworm",
        "memory": "512m",
    }
    defaults.update(kw)
    return RunSpec(**defaults)  # type: ignore[arg-type]


def _log(spec: RunSpec) -> str:
    return text_of(spec.log_path)


def in_background(runner: Runner, spec: RunSpec) -> Background[RunResult]:
    return Background(lambda cancel: runner.run(spec, cancel))


def test_exit_zero_is_exited_zero(tmp_path: Path, harness: Harness) -> None:
    """A passing suite ends as EXITED with code 0 and a log file."""
    spec = make_spec(tmp_path, harness, "pass")
    result = harness.runner.run(spec)
    assert (result.termination, result.exit_code) == (Termination.EXITED, 0)
    assert spec.log_path.exists()
    assert harness.leftovers(spec) == []


def test_non_zero_exit_is_reported(tmp_path: Path, harness: Harness) -> None:
    """A failing suite ends as EXITED with pytest's exit code 1."""
    spec = make_spec(tmp_path, harness, "fail")
    result = harness.runner.run(spec)
    assert (result.termination, result.exit_code) == (Termination.EXITED, 1)


def test_timeout_kills_and_reports_timeout(tmp_path: Path, harness: Harness) -> None:
    """A hanging suite with a 3 s timeout is TIMEOUT within deadline + 5 s, nothing left."""
    spec = make_spec(tmp_path, harness, "hang", timeout_s=3.0)
    t0 = time.monotonic()
    result = harness.runner.run(spec)
    elapsed = time.monotonic() - t0
    assert result.termination is Termination.TIMEOUT
    assert elapsed < 3.0 + 5.0
    assert harness.leftovers(spec) == []


def test_log_is_bounded(tmp_path: Path, harness: Harness) -> None:
    """Output beyond log_limit_bytes is dropped and the result says so."""
    spec = make_spec(tmp_path, harness, "chatty", log_limit_bytes=4096)
    result = harness.runner.run(spec)
    assert result.log_truncated
    text = spec.log_path.read_bytes()
    assert len(text) < 4096 + 200
    assert b"log truncated at 4096 bytes" in text


def test_cancel_stops_the_run(tmp_path: Path, harness: Harness) -> None:
    """Setting the cancel event ends a hanging run as CANCELLED, with nothing left."""
    spec = make_spec(tmp_path, harness, "hang", timeout_s=120.0)
    run = in_background(harness.runner, spec)
    wait_for(lambda: harness.pids(spec), 60, "the run's processes")
    t0 = time.monotonic()
    run.cancel.set()
    result = run.result()
    assert result.termination is Termination.CANCELLED
    assert time.monotonic() - t0 < 15
    assert harness.leftovers(spec) == []


def test_silence_timeout_ends_a_quiet_run(tmp_path: Path, harness: Harness) -> None:
    """No output for silence_timeout_s ends the run as TIMEOUT long before timeout_s."""
    spec = make_spec(
        tmp_path, harness, "dump", timeout_s=10_000.0, silence_timeout_s=600.0,
        argv=[harness.python, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_s.py"],
    )  # fmt: skip
    run = in_background(harness.runner, spec)
    wait_for(lambda: "ready" in _log(spec), 60, "the run's last words")
    harness.clock.advance(1_000)  # past the silence, far from the deadline
    result = run.result()
    assert result.termination is Termination.TIMEOUT
    assert "silence timeout" in result.message and "no output for" in result.message
    assert PRE_STOP_MARK not in _log(spec)  # none was asked for
    assert harness.leftovers(spec) == []


def test_pre_stop_signal_keeps_stacks_before_the_kill(tmp_path: Path, harness: Harness) -> None:
    """At the deadline the run's processes get the pre-stop signal (here SIGUSR1: faulthandler
    dumps the stacks into the log), then the stop; the command itself is not signalled."""
    spec = make_spec(
        tmp_path, harness, "dump", timeout_s=600.0,
        pre_stop=PreStop(signal=signal.SIGUSR1, wait_s=2.0),
        argv=[harness.python, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_s.py"],
    )  # fmt: skip
    run = in_background(harness.runner, spec)
    wait_for(lambda: "ready" in _log(spec), 60, "the child's signal handler")
    harness.clock.advance(1_000)
    result = run.result()
    assert result.termination is Termination.TIMEOUT
    assert result.message.startswith("timed out after 600s")
    evidence = _log(spec).split(PRE_STOP_MARK, 1)[1]
    assert evidence.count(DUMP_HEADER) == 1, evidence  # the child dumped; pytest was spared
    assert "in parked" in evidence
    assert harness.leftovers(spec) == []


@pytest.mark.parametrize("evidence", [True, False], ids=["with-evidence", "plain"])
def test_cancel_asking_for_evidence_gets_the_pre_stop_first(
    tmp_path: Path, harness: Harness, evidence: bool
) -> None:
    """A cancel asking for evidence (a preemption) applies the pre-stop before the stop, as a
    timeout does, and still ends CANCELLED; a plain cancel of the same run stops it at once."""
    spec = make_spec(
        tmp_path, harness, "dump", timeout_s=600.0,
        pre_stop=PreStop(signal=signal.SIGUSR1, wait_s=2.0),
        argv=[harness.python, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_s.py"],
    )  # fmt: skip
    stop = StopRequest()
    run = Background(lambda cancel: harness.runner.run(spec, cancel), cancel=stop)
    wait_for(lambda: "ready" in _log(spec), 60, "the child's signal handler")
    stop.request(evidence=evidence)
    result = run.result()
    assert result.termination is Termination.CANCELLED
    if evidence:
        kept = _log(spec).split(PRE_STOP_MARK, 1)[1]
        assert kept.count(DUMP_HEADER) == 1, kept
        assert "in parked" in kept
    else:
        assert PRE_STOP_MARK not in _log(spec)
    assert harness.leftovers(spec) == []


def test_owns_tells_the_runs_processes_from_others(tmp_path: Path, harness: Harness) -> None:
    """While a run lives, its processes are its own, not another run's; ours are not its."""
    spec = make_spec(tmp_path, harness, "hang", timeout_s=600.0)
    run = in_background(harness.runner, spec)
    try:
        pids = wait_for(lambda: harness.pids(spec), 60, "the run's processes")
        assert all(harness.runner.owns(pid, spec.run_id) for pid in pids)
        assert not any(harness.runner.owns(pid, f"{spec.run_id}0") for pid in pids)
        assert not harness.runner.owns(os.getpid(), spec.run_id)
        assert not any(harness.stranger().owns(pid, spec.run_id) for pid in pids)
    finally:
        run.cancel.set()
    assert run.result().termination is Termination.CANCELLED


def test_reap_orphans_kills_what_dead_runs_left(tmp_path: Path, harness: Harness) -> None:
    """After a crash of the supervising process, a restarted runner of the same instance reaps
    the leftovers of runs that are not live -- and neither live runs' nor another instance's."""
    dead = make_spec(tmp_path, harness, "orphan", timeout_s=600.0)
    live = make_spec(tmp_path, harness, "orphan", timeout_s=600.0)
    harness.orphan(dead)
    harness.orphan(live)
    assert harness.pids(dead) and harness.pids(live)

    assert harness.stranger().reap_orphans(set()) == []
    restarted = harness.restarted()
    assert restarted.reap_orphans({live.run_id}) == [dead.run_id]
    wait_for(lambda: not harness.pids(dead), 30, "the dead run's processes to go")
    assert harness.leftovers(dead) == []
    assert harness.pids(live)

    assert restarted.reap_orphans(set()) == [live.run_id]
    wait_for(lambda: not harness.leftovers(live), 30, "the other run's leftovers to go")
