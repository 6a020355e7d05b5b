"""One contract, every runner backend: exit codes, timeouts, bounded logs, nothing left behind.

Each backend gets a harness (how to build it, which python to use, how to find leftovers).
The docker backend joins when its engine and image are present; under CI=true it must be.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runners.base import Runner, RunSpec
from runners.fake import FakeBehaviour, FakeRunner
from runners.local import TOKEN_ENV, LocalRunner
from scheduler.kernel.outcome import Termination
from tests.conftest import require

SCENARIOS = {
    "pass": "def test_ok():\n    assert True\n",
    "fail": "def test_bad():\n    assert 1 == 2\n",
    "hang": "import time\n\ndef test_hang():\n    time.sleep(600)\n",
    "chatty": "def test_chatty():\n    print('x' * 200_000)\n    assert False\n",
}

FAKE_BEHAVIOUR = {
    "pass": FakeBehaviour(exit_code=0, tests=[("test_s.py::test_ok", "passed")]),
    "fail": FakeBehaviour(exit_code=1, tests=[("test_s.py::test_bad", "failed")]),
    "hang": FakeBehaviour(duration_s=600),
    "chatty": FakeBehaviour(exit_code=1, log=b"x" * 200_000),
}


@dataclass
class Harness:
    runner: Runner
    python: str
    leftovers: Callable[[RunSpec], list[str]]


def _local_leftovers(spec: RunSpec) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if (
            f"SCHEDCTL_CONTRACT_RUN={spec.run_id}".encode() in environ
            and TOKEN_ENV.encode() in environ
        ):
            found.append(entry.name)
    return found


def _docker_harness() -> Harness:
    docker_mod = (
        pytest.importorskip("runners.docker")
        if not os.environ.get("CI")
        else __import__("runners.docker", fromlist=["DockerRunner"])
    )
    ok, reason = docker_mod.docker_available()
    require(ok, f"Docker engine not available: {reason}")
    runner = docker_mod.DockerRunner()
    image = "schedctl-test:bookworm"
    client = runner.client if hasattr(runner, "client") else None
    if client is not None:
        try:
            client.images.get(image)
        except Exception:
            require(False, f"image {image} missing (run `make image`)")

    def leftovers(spec: RunSpec) -> list[str]:
        assert client is not None
        containers = client.containers.list(
            all=True, filters={"label": f"schedctl.run-id={spec.run_id}"}
        )
        return [c.name for c in containers]

    return Harness(runner, "python3", leftovers)


@pytest.fixture(params=["fake", "local", pytest.param("docker", marks=pytest.mark.docker)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "fake":
        yield Harness(
            FakeRunner(lambda spec: FAKE_BEHAVIOUR[spec.env["SCENARIO"]]),
            sys.executable,
            lambda _spec: [],
        )
    elif request.param == "local":
        yield Harness(LocalRunner(), sys.executable, _local_leftovers)
    else:
        h = _docker_harness()
        yield h
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
    """Setting the cancel event ends a hanging run as CANCELLED."""
    import threading

    spec = make_spec(tmp_path, harness, "hang", timeout_s=120.0)
    cancel = threading.Event()
    threading.Timer(1.5, cancel.set).start()
    t0 = time.monotonic()
    result = harness.runner.run(spec, cancel)
    assert result.termination is Termination.CANCELLED
    assert time.monotonic() - t0 < 15
    assert harness.leftovers(spec) == []
