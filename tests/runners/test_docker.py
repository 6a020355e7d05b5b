"""DockerRunner: path mapping, error mapping and hardening offline; real containers on dockerd."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import docker.errors
import pytest
import requests

from runners.base import GpuDevice, PreStop, RunSpec, install_plugin
from runners.docker import (
    CONTAINER_OUT,
    CONTAINER_PLUGIN,
    CONTAINER_SRC,
    KNOWN_DOCKER_ERRORS,
    LABEL_INSTANCE,
    LABEL_RUN_ID,
    LABEL_TIER,
    DockerRunner,
    PathMap,
    _map_docker_errors,
    docker_available,
)
from runners.local import LocalRunner
from scheduler.kernel.errors import EngineDown, ImageMissing, InfraError
from scheduler.kernel.outcome import Termination

pytest.register_assert_rewrite("tests.runners.conftest_docker")
from tests.runners.conftest_docker import PYTEST_ARGV, our_containers  # noqa: E402

pytest_plugins = ["tests.runners.conftest_docker"]

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "examples" / "suite"
PASS = {"test_ok.py": "def test_ok():\n    assert True\n"}
FAIL = {"test_bad.py": "def test_bad():\n    assert 1 == 2\n"}
HANG = {"test_hang.py": "import time\n\ndef test_hang():\n    time.sleep(600)\n"}
CHATTY = {"test_chatty.py": "def test_chatty():\n    print('x' * 200_000)\n    assert False\n"}
SIGKILL = {"test_die.py": "import os\n\ndef test_die():\n    os.kill(os.getpid(), 9)\n"}
HOG = {
    "test_hog.py": "def test_hog():\n    k = []\n    while True:\n        k.append(b'x' * 2**24)\n"
}
COVERED_TEST = "from mod import f\n\ndef test_f():\n    assert f(1) == 2\n"
NO_SOCKET = "unix:///nonexistent.sock"

SANDBOX_TEST = """
import os

def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split()[1]

def test_no_capabilities():
    assert int(_status("CapEff"), 16) == 0

def test_no_new_privs():
    assert _status("NoNewPrivs") == "1"

def test_not_root():
    assert os.getuid() != 0 and os.geteuid() != 0

def test_root_fs_read_only():
    try:
        open("/escape", "w")
    except OSError:
        return
    raise AssertionError("wrote to /")

def test_source_read_only():
    try:
        open("/work/src/escape", "w")
    except OSError:
        return
    raise AssertionError("wrote into the source mount")

def test_output_and_tmp_writable():
    open("/work/out/probe", "w").write("ok")
    open("/tmp/probe", "w").write("ok")

def test_loopback_only():
    assert os.listdir("/sys/class/net") == ["lo"]
"""

ORPHAN_SCRIPT = """
import json, sys, threading
from pathlib import Path
from runners.base import RunSpec
from runners.docker import DockerRunner
a = json.loads(sys.argv[1])
spec = RunSpec(a["run_id"], "hourly", a["argv"], Path(a["workdir"]), Path(a["run_dir"]), 600.0)
DockerRunner(instance=a["instance"]).run(spec, threading.Event())
"""


def _log(spec: RunSpec) -> str:
    return spec.log_path.read_text(errors="replace")


def _spec(tmp_path: Path, **overrides: Any) -> RunSpec:
    fields: dict[str, Any] = {
        "run_id": "42",
        "tier": "hourly",
        "argv": ["python3", "-m", "pytest"],
        "workdir": tmp_path / "src",
        "run_dir": tmp_path / "run",
        "timeout_s": 60.0,
    }
    fields.update(overrides)
    return RunSpec(**fields)


class TestPathMap:
    """Host paths in argv and env become container paths."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("/h/run", "/work/out"),
            ("/h/run/results.jsonl", "/work/out/results.jsonl"),
            ("--junitxml=/h/run/junit.xml", "--junitxml=/work/out/junit.xml"),
            ("--cov-report=xml:/h/run/cov.xml", "--cov-report=xml:/work/out/cov.xml"),
            ("/h/plugin:/h/src/lib", "/work/plugin:/work/src/lib"),
            ("/h/src/run/x", "/work/src/run/x"),
            ("/h/running/x", "/h/running/x"),
            ("/other/h/run", "/other/h/run"),
            ("tests/test_a.py", "tests/test_a.py"),
            ("-m", "-m"),
        ],
        ids=[
            "exact", "below", "after-equals", "after-colon", "pathsep-list", "nested-prefix",
            "sibling-name", "not-a-prefix", "relative", "flag",
        ],
    )  # fmt: skip
    def test_rewrites(self, value: str, expected: str) -> None:
        """Only whole path prefixes at a value start or after = : , are rewritten."""
        remap = PathMap(
            {
                Path("/h/src"): CONTAINER_SRC,
                Path("/h/run"): CONTAINER_OUT,
                Path("/h/plugin"): CONTAINER_PLUGIN,
            }
        )
        assert remap(value) == expected

    def test_longest_prefix_wins(self) -> None:
        """A run dir inside the source dir maps to the output mount, not below the source mount."""
        remap = PathMap({Path("/h/src"): CONTAINER_SRC, Path("/h/src/.runs/7"): CONTAINER_OUT})
        assert remap("/h/src/.runs/7/junit.xml") == "/work/out/junit.xml"
        assert remap("/h/src/tests") == "/work/src/tests"

    def test_resolved_form_is_mapped(self, tmp_path: Path) -> None:
        """A path given through a symlink is also recognised by its resolved form."""
        real = tmp_path / "real"
        real.mkdir()
        (tmp_path / "link").symlink_to(real)
        remap = PathMap({tmp_path / "link": CONTAINER_OUT})
        assert remap(f"{real}/x") == "/work/out/x"
        assert remap(f"{tmp_path / 'link'}/x") == "/work/out/x"


def _instantiate(cls: type[BaseException]) -> BaseException:
    params = [
        p
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    return cls(*(["boom"] * len(params)) or ["boom"])


DOCKER_ERRORS = sorted(
    (
        obj
        for obj in vars(docker.errors).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ),
    key=lambda cls: cls.__name__,
)


class TestErrorMapping:
    """Every docker-py and requests failure becomes an InfraError at one boundary."""

    def test_table_names_every_docker_error(self) -> None:
        """A new class in docker.errors fails here until someone decides how it maps."""
        assert {cls.__name__ for cls in DOCKER_ERRORS} == set(KNOWN_DOCKER_ERRORS)

    @pytest.mark.parametrize("cls", DOCKER_ERRORS, ids=lambda cls: cls.__name__)
    def test_each_docker_error_is_mapped(self, cls: type[BaseException]) -> None:
        """Any docker.errors class raised in the boundary becomes an InfraError chained to it."""
        original = _instantiate(cls)
        expected = ImageMissing if cls is docker.errors.ImageNotFound else InfraError
        with pytest.raises(expected) as caught, _map_docker_errors("unix:///s.sock"):
            raise original
        assert caught.value.__cause__ is original
        assert not isinstance(caught.value, EngineDown)

    @pytest.mark.parametrize(
        "exc",
        [
            requests.exceptions.ConnectionError("refused"),
            requests.exceptions.ReadTimeout("slow"),
            docker.errors.DockerException("Error while fetching server API version: refused"),
        ],
        ids=["connection", "timeout", "version-probe"],
    )
    def test_unreachable_engine_is_engine_down(self, exc: BaseException) -> None:
        """Connection failures and timeouts name the engine address."""
        with (
            pytest.raises(EngineDown, match=re.escape("unix:///s.sock")),
            _map_docker_errors("unix:///s.sock"),
        ):
            raise exc

    def test_other_exceptions_pass_through(self) -> None:
        """Bugs in our own code are not disguised as infra errors."""
        with pytest.raises(KeyError), _map_docker_errors("unix:///s.sock"):
            raise KeyError("bug")


class TestContainerConfig:
    """The create() arguments: hardening, mounts, limits, GPUs (no engine needed)."""

    def test_hardening_defaults(self, tmp_path: Path) -> None:
        """No caps, no-new-privileges, read-only root, non-root user, no network, limits set."""
        spec = _spec(tmp_path, memory="2g", shm_size="1g", pids_limit=512)
        kwargs = DockerRunner(instance="x").create_kwargs(spec, "sha256:abc")
        assert kwargs["cap_drop"] == ["ALL"]
        assert kwargs["security_opt"] == ["no-new-privileges"]
        assert kwargs["read_only"] is True
        assert kwargs["privileged"] is False
        assert kwargs["user"] == "64000:64000"
        assert kwargs["network_mode"] == "none"
        assert kwargs["pids_limit"] == 512
        assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "2g"
        assert kwargs["shm_size"] == "1g"
        assert "device_requests" not in kwargs
        assert kwargs["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
        assert kwargs["image"] == "sha256:abc"
        assert kwargs["name"] == "schedctl-x-hourly-42"
        assert kwargs["labels"] == {LABEL_RUN_ID: "42", LABEL_TIER: "hourly", LABEL_INSTANCE: "x"}
        assert not any("docker.sock" in str(m) for m in kwargs["mounts"])

    def test_mounts_and_remapped_env(self, tmp_path: Path) -> None:
        """Source read-only, output read-write, plugin read-only; env paths point inside."""
        plugin = tmp_path / "plugin"
        spec = _spec(
            tmp_path,
            plugin_dir=plugin,
            argv=["python3", "-m", "pytest", f"--junitxml={tmp_path / 'run' / 'junit.xml'}"],
            env={
                "SCHEDCTL_RESULTS": str(tmp_path / "run" / "results.jsonl"),
                "PYTHONPATH": str(plugin),
            },
        )
        kwargs = DockerRunner().create_kwargs(spec, "img")
        mounts = {m["Target"]: (m["Source"], m["ReadOnly"]) for m in kwargs["mounts"]}
        assert mounts == {
            CONTAINER_SRC: (str(tmp_path / "src"), True),
            CONTAINER_OUT: (str(tmp_path / "run"), False),
            CONTAINER_PLUGIN: (str(plugin), True),
        }
        assert kwargs["command"][-1] == "--junitxml=/work/out/junit.xml"
        assert kwargs["environment"]["SCHEDCTL_RESULTS"] == "/work/out/results.jsonl"
        assert kwargs["environment"]["PYTHONPATH"] == "/work/plugin"
        assert kwargs["environment"]["HOME"] == "/tmp"
        assert kwargs["working_dir"] == CONTAINER_SRC
        assert kwargs["name"] == "schedctl-hourly-42"

    def test_extra_mounts_are_read_only_and_remapped(self, tmp_path: Path) -> None:
        """spec.mounts bind read-only; env values naming the host path point at the target."""
        site = tmp_path / "site"
        site.mkdir()
        spec = _spec(tmp_path, mounts={site: "/opt/site"}, env={"PYTHONPATH": f"{site}:/x"})
        kwargs = DockerRunner().create_kwargs(spec, "img")
        mounts = {m["Target"]: (m["Source"], m["ReadOnly"]) for m in kwargs["mounts"]}
        assert mounts["/opt/site"] == (str(site), True)
        assert kwargs["environment"]["PYTHONPATH"] == "/opt/site:/x"

    @pytest.mark.parametrize(
        ("target", "match"),
        [
            ("opt/site", "not an absolute"),
            ("/work/out/site", "shadow"),
            ("/work", "shadow"),
            ("/tmp", "shadow"),
        ],
    )
    def test_bad_mount_targets_are_refused(self, tmp_path: Path, target: str, match: str) -> None:
        """A relative target or one over the runner's own paths is an infra error."""
        spec = _spec(tmp_path, mounts={tmp_path: target})
        with pytest.raises(InfraError, match=match):
            DockerRunner().create_kwargs(spec, "img")

    def test_missing_mount_source_is_refused(self, tmp_path: Path) -> None:
        """A host path that does not exist is named, not left to the engine's error."""
        spec = _spec(tmp_path, mounts={tmp_path / "absent": "/opt/x"})
        with pytest.raises(InfraError, match="absent"):
            DockerRunner().create_kwargs(spec, "img")

    def test_gpus_become_exact_device_requests(self, tmp_path: Path) -> None:
        """Exactly the leased GPUs are requested, by UUID."""
        gpus = (GpuDevice(1, "GPU-aaa"), GpuDevice(3, "GPU-bbb"))
        kwargs = DockerRunner().create_kwargs(_spec(tmp_path, gpus=gpus, network=True), "img")
        (request,) = kwargs["device_requests"]
        assert request["DeviceIDs"] == ["GPU-aaa", "GPU-bbb"]
        assert request["Capabilities"] == [["gpu"]]
        assert "NVIDIA_VISIBLE_DEVICES" not in kwargs["environment"]
        assert kwargs["network_mode"] == "bridge"


class TestEngineDown:
    """An engine that does not answer is an infra error naming where we looked."""

    def test_injected_client(self, tmp_path: Path) -> None:
        """A client on a missing socket gives INFRA naming the socket."""
        client = docker.DockerClient(base_url=NO_SOCKET, version="1.41")
        result = DockerRunner(client).run(_spec(tmp_path))
        assert result.termination is Termination.INFRA
        assert "/nonexistent.sock" in result.message

    def test_from_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an injected client, DOCKER_HOST is named."""
        monkeypatch.setenv("DOCKER_HOST", NO_SOCKET)
        result = DockerRunner().run(_spec(tmp_path))
        assert result.termination is Termination.INFRA
        assert NO_SOCKET in result.message

    def test_docker_available_says_why_not(self) -> None:
        """runner: auto gets False and the socket in the reason."""
        ok, reason = docker_available(docker.DockerClient(base_url=NO_SOCKET, version="1.41"))
        assert not ok
        assert "/nonexistent.sock" in reason

    def test_reap_orphans_raises_engine_down(self) -> None:
        """Reaping cannot silently succeed when the engine is unreachable."""
        runner = DockerRunner(docker.DockerClient(base_url=NO_SOCKET, version="1.41"))
        with pytest.raises(EngineDown):
            runner.reap_orphans(set())

    def test_owns_pids_in_the_runs_containers_cgroups(self, tmp_path: Path) -> None:
        """A host pid whose cgroup names one of the run's containers (labelled with its run id)
        is the run's; another run's, a pid without one, or a vanished pid is not."""
        proc_root = tmp_path / "proc"
        (proc_root / "4242").mkdir(parents=True)
        (proc_root / "4242" / "cgroup").write_text("12:memory:/docker/abc123def\n")
        (proc_root / "4343").mkdir()
        (proc_root / "4343" / "cgroup").write_text("12:memory:/user.slice\n")
        asked: list[Any] = []

        def listing(**kwargs: Any) -> list[Any]:
            asked.append(kwargs["filters"]["label"])
            run_id = kwargs["filters"]["label"][0].rpartition("=")[2]
            return [SimpleNamespace(id="abc123def")] if run_id == "1" else []

        client = SimpleNamespace(
            api=SimpleNamespace(base_url="stub"), containers=SimpleNamespace(list=listing)
        )
        runner = DockerRunner(client, instance="i1", proc_root=proc_root)  # type: ignore[arg-type]
        assert runner.owns(4242, "1")
        assert not runner.owns(4242, "2")
        assert not runner.owns(4343, "1")
        assert not runner.owns(9999, "1")
        assert ["schedctl.run-id=1", "schedctl.instance=i1"] in asked


@pytest.mark.docker
class TestRealContainers:
    """Real runs of the schedctl-test image on the local dockerd."""

    def test_passing_run(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """Exit 0, the log holds pytest's summary, provenance names image and container."""
        spec = make_spec(make_project(PASS))
        result = docker_runner.run(spec)
        assert (result.termination, result.exit_code) == (Termination.EXITED, 0), _log(spec)
        assert "1 passed" in _log(spec)
        prov = result.provenance
        assert prov["image"] == "schedctl-test:bookworm"
        assert prov["image_id"].startswith("sha256:")
        assert prov["container_name"] == docker_runner.container_name(spec)
        assert prov["container_id"] and prov["docker_version"]
        assert isinstance(prov["repo_digests"], list)

    def test_failing_run(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """A failing test exits 1 and is reported as EXITED, not as an infra problem."""
        spec = make_spec(make_project(FAIL))
        result = docker_runner.run(spec)
        assert (result.termination, result.exit_code) == (Termination.EXITED, 1)
        assert "1 failed" in _log(spec)

    def test_sandbox(self, docker_runner: DockerRunner, make_project: Any, make_spec: Any) -> None:
        """Inside: CapEff 0, NoNewPrivs 1, non-root, read-only / and source, loopback only."""
        spec = make_spec(make_project({"test_sandbox.py": SANDBOX_TEST}))
        result = docker_runner.run(spec)
        assert result.exit_code == 0, _log(spec)
        assert "7 passed" in _log(spec)

    @pytest.mark.slow
    def test_timeout(
        self,
        docker_runner: DockerRunner,
        docker_client: Any,
        instance: str,
        make_project: Any,
        make_spec: Any,
    ) -> None:
        """A hanging test ends as TIMEOUT within deadline + 5 s and leaves no container."""
        spec = make_spec(make_project(HANG), timeout_s=5.0)
        began = time.monotonic()
        result = docker_runner.run(spec)
        assert result.termination is Termination.TIMEOUT
        assert time.monotonic() - began <= spec.timeout_s + 5
        assert our_containers(docker_client, instance) == []

    @pytest.mark.slow
    def test_pre_stop_exec_runs_before_the_timeout_stop(
        self,
        docker_runner: DockerRunner,
        docker_client: Any,
        instance: str,
        make_project: Any,
        make_spec: Any,
    ) -> None:
        """On timeout the evidence command runs inside the live container, output in the log."""
        spec = make_spec(
            make_project(HANG),
            timeout_s=4.0,
            pre_stop=PreStop(command=["sh", "-c", "echo EVIDENCE; pgrep -c -x python3"]),
        )
        result = docker_runner.run(spec)
        assert result.termination is Termination.TIMEOUT
        log = _log(spec)
        assert re.search(r"EVIDENCE\n1\n", log), log[-2000:]
        assert "pre-stop exec exit 0" in log
        assert our_containers(docker_client, instance) == []

    def test_silence_timeout(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """No output for silence_timeout_s ends the run as a timeout long before timeout_s."""
        spec = make_spec(make_project(HANG), "-s", timeout_s=60.0, silence_timeout_s=3.0)
        result = docker_runner.run(spec)
        assert result.termination is Termination.TIMEOUT
        assert "silence" in result.message
        assert result.duration_s < 30

    def test_cancel(self, docker_runner: DockerRunner, make_project: Any, make_spec: Any) -> None:
        """Setting the cancel event stops the container and reports CANCELLED."""
        spec = make_spec(make_project(HANG))
        cancel = threading.Event()
        threading.Timer(1.5, cancel.set).start()
        result = docker_runner.run(spec, cancel)
        assert result.termination is Termination.CANCELLED
        assert result.duration_s < 15

    @pytest.mark.slow
    def test_oom(self, docker_runner: DockerRunner, make_project: Any, make_spec: Any) -> None:
        """Allocating past memory=128m is OOM, never a failed test."""
        spec = make_spec(make_project(HOG), memory="128m")
        result = docker_runner.run(spec)
        assert result.termination is Termination.OOM, _log(spec)
        assert result.exit_code == 137

    def test_sigkill_without_oom_is_exit_137(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """Exit 137 that was neither our kill nor the OOM killer stays EXITED 137."""
        result = docker_runner.run(make_spec(make_project(SIGKILL)))
        assert (result.termination, result.exit_code) == (Termination.EXITED, 137)

    def test_missing_image(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """An absent image is INFRA naming it; nothing is pulled."""
        spec = make_spec(make_project(PASS), image="schedctl-absent:nope")
        result = docker_runner.run(spec)
        assert result.termination is Termination.INFRA
        assert "schedctl-absent:nope" in result.message
        assert "make image" in result.message

    def test_log_is_bounded(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """Output past log_limit_bytes is cut with a marker and flagged."""
        spec = make_spec(make_project(CHATTY), log_limit_bytes=4096)
        result = docker_runner.run(spec)
        assert result.log_truncated
        assert "log truncated at 4096 bytes" in _log(spec)
        assert spec.log_path.stat().st_size < 4096 + 100

    def test_leftover_with_same_name_is_replaced(
        self,
        docker_runner: DockerRunner,
        docker_client: Any,
        docker_image: str,
        make_project: Any,
        make_spec: Any,
    ) -> None:
        """A stale container holding the deterministic name is removed before the run."""
        spec = make_spec(make_project(PASS))
        name = docker_runner.container_name(spec)
        docker_client.containers.create(docker_image, ["sleep", "600"], name=name)
        result = docker_runner.run(spec)
        assert result.exit_code == 0

    def test_results_plugin(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any, tmp_path: Path
    ) -> None:
        """With plugin_dir, -p schedctl_results and host-path env, results land in run_dir."""
        plugin = install_plugin(tmp_path / "plugin")
        spec = _with_plugin(make_spec(make_project({**PASS, **FAIL}), plugin_dir=plugin), "python3")
        result = docker_runner.run(spec)
        assert result.exit_code == 1, _log(spec)
        assert _outcomes(spec) == {
            "test_ok.py::test_ok": "passed",
            "test_bad.py::test_bad": "failed",
        }
        assert spec.junit_path.exists()

    def test_coverage_with_read_only_source(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """pytest-cov works on the read-only source when its files are pointed into run_dir."""
        project = make_project(
            {"mod.py": "def f(x):\n    return x + 1\n", "test_mod.py": COVERED_TEST}
        )
        spec = make_spec(project)
        spec = dataclasses.replace(
            spec,
            argv=[*spec.argv, "--cov=mod", f"--cov-report=xml:{spec.run_dir / 'coverage.xml'}"],
            env={"COVERAGE_FILE": str(spec.run_dir / ".coverage")},
        )
        result = docker_runner.run(spec)
        assert result.exit_code == 0, _log(spec)
        assert 'line-rate="1"' in (spec.run_dir / "coverage.xml").read_text()

    def test_docker_available(self, docker_client: Any) -> None:
        """A live engine is reported available with its version."""
        ok, reason = docker_available(docker_client)
        assert ok, reason
        assert "docker engine" in reason


def _with_plugin(spec: RunSpec, python: str, env: dict[str, str] | None = None) -> RunSpec:
    """The dispatcher's job, done by hand: load the results plugin with host paths in env."""
    assert spec.plugin_dir is not None
    argv = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "schedctl_results"]
    extra = list(spec.argv[len(PYTEST_ARGV) :])
    return dataclasses.replace(
        spec,
        argv=[*argv, *extra],
        env={
            **(env or {}),
            "SCHEDCTL_RESULTS": str(spec.results_path),
            "SCHEDCTL_JUNIT": str(spec.junit_path),
            "PYTHONPATH": str(spec.plugin_dir),
        },
    )


def _outcomes(spec: RunSpec) -> dict[str, str]:
    lines = [json.loads(line) for line in spec.results_path.read_text().splitlines()]
    return {line["nodeid"]: line["outcome"] for line in lines if line["type"] == "test"}


@pytest.mark.docker
@pytest.mark.slow
class TestOrphansAndParity:
    """Crash recovery and parity with the local runner."""

    def test_reap_orphans_after_kill_9(
        self,
        docker_client: Any,
        docker_image: str,
        instance: str,
        make_project: Any,
        tmp_path: Path,
    ) -> None:
        """A runner process killed mid-run leaves a container that reap_orphans removes."""
        args = {
            "run_id": "dead-1",
            "argv": list(PYTEST_ARGV),
            "workdir": str(make_project(HANG)),
            "run_dir": str(tmp_path / "run"),
            "instance": instance,
        }
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, json.dumps(args)], env=env)
        try:
            deadline = time.monotonic() + 30
            while not [c for c in our_containers(docker_client, instance) if c.status == "running"]:
                assert time.monotonic() < deadline, "the runner never started its container"
                assert proc.poll() is None, "the runner process exited early"
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        runner = DockerRunner(docker_client, instance=instance)
        assert runner.reap_orphans({"some-live-run"}) == ["dead-1"]
        assert our_containers(docker_client, instance) == []

    def test_reap_spares_live_runs_and_other_instances(
        self, docker_client: Any, docker_image: str, instance: str
    ) -> None:
        """Containers of live runs and of other scheduler instances are left alone."""
        made = []
        for run_id, owner in (
            ("live-1", instance),
            ("dead-2", instance),
            ("dead-3", f"{instance}-x"),
        ):
            labels = {LABEL_RUN_ID: run_id, LABEL_TIER: "hourly", LABEL_INSTANCE: owner}
            made.append(
                docker_client.containers.create(docker_image, ["sleep", "600"], labels=labels)
            )
        try:
            assert DockerRunner(docker_client, instance=instance).reap_orphans({"live-1"}) == [
                "dead-2"
            ]
            remaining = {c.labels[LABEL_RUN_ID] for c in our_containers(docker_client, instance)}
            assert remaining == {"live-1"}
            made[2].reload()  # still there: another instance's container
        finally:
            for container in made:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)

    def test_suite_hourly_matches_local(
        self, docker_runner: DockerRunner, make_spec: Callable[..., RunSpec], tmp_path: Path
    ) -> None:
        """examples/suite -m hourly gives the same per-test outcomes in docker as locally."""
        plugin = install_plugin(tmp_path / "plugin")
        docker_spec = _with_plugin(make_spec(SUITE, "-m", "hourly", plugin_dir=plugin), "python3")
        local_spec = _with_plugin(
            make_spec(SUITE, "-m", "hourly", plugin_dir=plugin), sys.executable, dict(os.environ)
        )
        assert docker_runner.run(docker_spec).termination is Termination.EXITED, _log(docker_spec)
        assert LocalRunner().run(local_spec).termination is Termination.EXITED, _log(local_spec)
        in_docker = _outcomes(docker_spec)
        assert in_docker
        assert in_docker == _outcomes(local_spec)
