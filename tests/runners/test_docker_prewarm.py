"""Prewarmed containers (runners.docker_prewarm) and the stdlib engine client, on real dockerd."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runners.base import PLUGIN_MODULE, RunSpec, install_plugin
from runners.docker import LABEL_RUN_ID, DockerRunner
from runners.docker_engine import (
    EngineClient,
    _parse_response,
    create_body,
    parse_bytes,
    quote,
    socket_path_from_env,
)
from runners.docker_prewarm import (
    STAGING_PREFIX,
    DockerPlan,
    DockerPrewarm,
    remove_stale_staging,
)
from scheduler.kernel.errors import EngineDown, ImageMissing
from scheduler.kernel.outcome import Termination
from tests.waiting import wait_for

pytest.register_assert_rewrite("tests.runners.conftest_docker")
from tests.runners.conftest_docker import our_containers  # noqa: E402

pytest_plugins = ["tests.runners.conftest_docker"]

ROOT = Path(__file__).resolve().parents[2]
PASS = {"test_ok.py": "def test_ok():\n    assert True\n"}
FAIL = {"test_bad.py": "def test_bad():\n    assert 1 == 2\n"}
ENV_PROBE = {
    "test_env.py": (
        "import os, sys\n\n"
        "def test_env():\n"
        "    assert os.environ['SCHEDCTL_TIER'] == 'hourly'\n"
        "    assert os.environ['SCHEDCTL_RUN_ID'] == os.environ['SCHEDCTL_EXPECT_RUN_ID']\n"
        "    assert os.getcwd() == '/work/src'\n"
        "    assert '/work/plugin' in sys.path\n"
    )
}


def _run_spec(make_spec: Callable[..., RunSpec], project: Path, **overrides: Any) -> RunSpec:
    """A spec as the dispatcher makes it: the results plugin in the run dir's ``plugin``."""
    spec = make_spec(project, **overrides)
    plugin = install_plugin(spec.run_dir / "plugin")
    argv = [*spec.argv, "-p", PLUGIN_MODULE, f"--junitxml={spec.junit_path}"]
    env = {
        **spec.env,
        "SCHEDCTL_RESULTS": str(spec.results_path),
        "PYTHONPATH": str(plugin),
        "SCHEDCTL_EXPECT_RUN_ID": spec.run_id,
    }
    return dataclasses.replace(spec, argv=argv, env=env, plugin_dir=plugin)


def _plan(runner: DockerRunner, spec: RunSpec) -> DockerPlan:
    """The plan of ``spec``'s tier, as schedctl run remembers it (a round trip through JSON)."""
    socket_path = socket_path_from_env()
    assert socket_path is not None
    plan = DockerPlan(runner.template(spec), str(spec.run_dir.parent), socket_path)
    return DockerPlan.from_json(json.loads(json.dumps(plan.to_json())))


def _with_prewarm(runner: DockerRunner, prewarm: DockerPrewarm) -> DockerRunner:
    """A runner like ``runner`` (same engine, image, instance) given ``prewarm``."""
    return DockerRunner(
        runner.client, default_image=runner.default_image, instance=runner.instance, prewarm=prewarm
    )


def _outcomes(spec: RunSpec) -> dict[str, str]:
    lines = [json.loads(line) for line in spec.results_path.read_text().splitlines()]
    return {line["nodeid"]: line["outcome"] for line in lines if line["type"] == "test"}


def _staging_dirs(runs: Path) -> list[str]:
    return sorted(e for e in os.listdir(runs) if e.startswith(STAGING_PREFIX))


class TestOffline:
    def test_parse_bytes_as_the_sdk(self) -> None:
        from docker.utils import parse_bytes as sdk_parse_bytes

        for value in ("512m", "1g", "1024", "64k", "2gb", "1.5g", 4096):
            assert parse_bytes(value) == sdk_parse_bytes(value), value

    def test_the_run_path_imports_no_sdk(self) -> None:
        """Up to "go" a prewarmed run needs neither the docker SDK nor requests nor http.client:
        the runner module, the prewarm and the registry import none of them."""
        code = (
            "import sys, runners.docker, runners.docker_prewarm, runners.registry\n"
            "print(sorted(m for m in ('docker', 'requests', 'urllib3', 'http.client')"
            " if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
        assert out.strip() == "[]"

    def test_http_responses(self) -> None:
        chunked = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\n[1, \r\n2\r\n2]\r\n0\r\n\r\n"
        )
        assert _parse_response(chunked) == (
            200,
            {"content-type": "application/json", "transfer-encoding": "chunked"},
            b"[1, 2]",
        )
        sized = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}xx"
        assert _parse_response(sized) == (404, {"content-length": "2"}, b"{}")
        for bad in (b"", b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"):
            with pytest.raises(ValueError):
                _parse_response(bad)
        assert quote("reg.io/a b:1") == "reg.io%2Fa%20b%3A1"

    def test_create_body_refuses_what_it_cannot_map(self) -> None:
        with pytest.raises(ValueError, match="device_requests"):
            create_body({"image": "x", "command": ["true"], "device_requests": []})

    def test_socket_path_from_env(self) -> None:
        assert socket_path_from_env({}) == "/var/run/docker.sock"
        assert socket_path_from_env({"DOCKER_HOST": "unix:///run/d.sock"}) == "/run/d.sock"
        assert socket_path_from_env({"DOCKER_HOST": "tcp://10.0.0.1:2376"}) is None

    def test_engine_down_is_translated(self, tmp_path: Path) -> None:
        client = EngineClient(str(tmp_path / "no.sock"), timeout_s=2)
        with pytest.raises(EngineDown, match="no.sock"):
            client.ping()

    def test_bad_plan_json_is_refused(self) -> None:
        for bad in ({}, {"template": [], "runs_dir": "/r", "socket_path": "/s", "python": "p"}):
            with pytest.raises((TypeError, KeyError, ValueError)):
                DockerPlan.from_json(bad)

    def test_no_prewarm_without_engine(self, tmp_path: Path, make_spec: Any) -> None:
        """An engine that does not answer: no prewarm, and no staging dir left behind."""
        runner = DockerRunner(instance="offline")
        spec = make_spec(tmp_path)
        plan = DockerPlan(runner.template(spec), str(tmp_path / "runs2"), str(tmp_path / "x"))
        prewarm = plan.start()
        assert prewarm is not None
        assert not prewarm.ready()
        assert "not answering" in prewarm.failure
        assert prewarm.mismatch(plan.template, spec.argv).startswith("it could not be started")
        prewarm.discard()
        assert _staging_dirs(tmp_path / "runs2") == []

    def test_template_leaves_out_what_only_the_run_has(
        self, make_spec: Any, tmp_path: Path
    ) -> None:
        runner = DockerRunner(instance="offline")
        one = _run_spec(make_spec, tmp_path)
        two = _run_spec(make_spec, tmp_path)
        assert one.run_id != two.run_id
        assert runner.template(one) == runner.template(two)
        other = dataclasses.replace(two, memory="1g")
        assert runner.template(one) != runner.template(other)


@pytest.mark.docker
class TestEngineClient:
    def test_ping_and_missing_image(self, docker_client: Any) -> None:
        client = EngineClient()
        assert client.ping()
        body = create_body({"image": "schedctl-no-such-image:0", "command": ["true"]})
        with pytest.raises(ImageMissing):
            client.create(body, "schedctl-test-missing-image")

    def test_remove_of_a_gone_container_is_fine(self, docker_client: Any) -> None:
        EngineClient().remove("0" * 64)


@pytest.mark.docker
@pytest.mark.slow
class TestPrewarmedRuns:
    def test_results_and_exit_codes_match_the_plain_run(
        self, docker_runner: DockerRunner, make_spec: Any, tmp_path: Path
    ) -> None:
        """The same projects, with and without a prewarmed container: same exit code, same
        results, in the run's own dir (the bind mount followed the rename)."""
        for n, (files, code) in enumerate(((PASS, 0), ({**PASS, **FAIL}, 1), (ENV_PROBE, 0))):
            project = tmp_path / f"project{n}"
            project.mkdir()
            for name, text in files.items():
                (project / name).write_text(text)
            plain = _run_spec(make_spec, project)
            plain_result = docker_runner.run(plain)
            spec = _run_spec(make_spec, project)
            prewarm = _plan(docker_runner, _run_spec(make_spec, project)).start()
            assert prewarm is not None
            result = _with_prewarm(docker_runner, prewarm).run(spec)
            log = spec.log_path.read_text()
            assert result.provenance.get("prewarmed") is True, log
            assert "prewarmed" not in plain_result.provenance
            assert (plain_result.termination, plain_result.exit_code) == (Termination.EXITED, code)
            assert (result.termination, result.exit_code) == (Termination.EXITED, code), log
            assert _outcomes(spec) == _outcomes(plain)
            assert spec.junit_path.is_file()
            assert result.provenance["container_name"] == docker_runner.container_name(spec)
            assert _staging_dirs(spec.run_dir.parent) == []
        assert our_containers(docker_runner.client, docker_runner.instance or "") == []

    def test_hardening_is_the_plain_containers(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """Inspect both real containers: everything but the run's own parts is identical."""
        client = docker_runner.client
        project = make_project(PASS)
        spec = _run_spec(make_spec, project, memory="256m", shm_size="64m")
        image = client.images.get(spec.image or docker_runner.default_image)
        plain = client.containers.create(**docker_runner.create_kwargs(spec, image.id))
        prewarm = _plan(docker_runner, spec).start()
        assert prewarm is not None and prewarm.ready(), prewarm and prewarm.failure
        try:
            warm = client.containers.get(prewarm.container_id)
            plain.reload()
            a, b = plain.attrs, warm.attrs
            assert a["Image"] == b["Image"]
            host_a, host_b = dict(a["HostConfig"]), dict(b["HostConfig"])
            mounts_a, mounts_b = host_a.pop("Mounts"), host_b.pop("Mounts")
            assert host_a == host_b
            assert host_b["ReadonlyRootfs"] and host_b["CapDrop"] == ["ALL"]
            assert host_b["SecurityOpt"] == ["no-new-privileges"]
            assert host_b["NetworkMode"] == "none" and host_b["Memory"] == 256 << 20
            staging = Path(prewarm.staging or "")
            expected = {
                str(spec.run_dir): str(staging),
                str(spec.run_dir / "plugin"): str(staging / "plugin"),
            }
            assert [{**m, "Source": expected.get(m["Source"], m["Source"])} for m in mounts_a] == (
                mounts_b
            )
            for key in ("User", "WorkingDir", "Entrypoint"):
                assert a["Config"][key] == b["Config"][key], key
            labels_a = {k: v for k, v in a["Config"]["Labels"].items() if k != LABEL_RUN_ID}
            labels_b = {k: v for k, v in b["Config"]["Labels"].items() if k != LABEL_RUN_ID}
            assert labels_a == labels_b
            assert b["Config"]["Labels"][LABEL_RUN_ID] == prewarm.pending
            env_a = {e for e in a["Config"]["Env"] if not e.startswith("SCHEDCTL_")}
            assert env_a == set(b["Config"]["Env"])
        finally:
            plain.remove(force=True)
            prewarm.discard()
        assert _staging_dirs(spec.run_dir.parent) == []

    def test_the_runs_container_is_found_by_its_name(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """Renamed for its run at "go", a prewarmed container counts as the run's for a runner
        that never saw it (ownership: its label still has the pending id)."""
        spec = _run_spec(make_spec, make_project(PASS))
        prewarm = _plan(docker_runner, spec).start()
        assert prewarm is not None and prewarm.ready(), prewarm and prewarm.failure
        try:
            other = DockerRunner(docker_runner.client, instance=docker_runner.instance)
            assert prewarm.container_id not in other.container_ids(spec.run_id)
            prewarm.client.rename(prewarm.container_id, other.container_name(spec))
            assert prewarm.container_id in other.container_ids(spec.run_id)
            assert prewarm.container_id not in other.container_ids(spec.run_id + "0")
        finally:
            prewarm.discard()

    def test_a_spec_that_differs_falls_back(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """Another memory limit than the prewarmed container's: it is removed, and the run
        gets a plain container with the run's own limit."""
        project = make_project(PASS)
        prewarm = _plan(docker_runner, _run_spec(make_spec, project, memory="256m")).start()
        assert prewarm is not None
        spec = _run_spec(make_spec, project, memory="300m")
        result = _with_prewarm(docker_runner, prewarm).run(spec)
        assert result.exit_code == 0, spec.log_path.read_text()
        assert "prewarmed" not in result.provenance
        assert prewarm.used
        assert _staging_dirs(spec.run_dir.parent) == []
        with pytest.raises(Exception, match="404|No such container"):
            docker_runner.client.containers.get(prewarm.container_id)

    def test_a_discard_without_waiting_finishes_at_the_next_discard(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """``discard(wait=False)`` (a stale plan's container: schedctl goes on starting its run)
        takes the container out of use at once; the engine's removal finishes in the
        background, and a later ``discard()`` (the command's end) waits for it."""
        spec = _run_spec(make_spec, make_project(PASS))
        prewarm = _plan(docker_runner, spec).start()
        assert prewarm is not None  # not waited for: it may still be being made
        staging = Path(prewarm.staging or "")
        prewarm.discard(wait=False)
        assert prewarm.used and prewarm.mismatch({}, spec.argv) == "already used"
        prewarm.discard()
        assert prewarm.container_id, prewarm.failure  # it was made, then removed
        with pytest.raises(Exception, match="404|No such container"):
            docker_runner.client.containers.get(prewarm.container_id)
        assert not staging.exists()
        assert our_containers(docker_runner.client, docker_runner.instance or "") == []

    def test_sigkill_of_the_owner_mid_prewarm(
        self, docker_runner: DockerRunner, make_project: Any, make_spec: Any
    ) -> None:
        """schedctl killed before "go": the launcher reads EOF and exits 0 having run nothing;
        recovery leaves the container alone while its owner lives, reaps it once it is gone,
        and the next prewarm removes the dead owner's staging dir."""
        project = make_project({"test_never.py": "open('/work/out/ran', 'w')\n"})
        spec = _run_spec(make_spec, project)
        plan = _plan(docker_runner, spec)
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, json.dumps(plan.to_json())],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        try:
            assert owner.stdout is not None
            container_id = owner.stdout.readline().decode().strip()
            assert container_id, "the owner made no container"
            client = docker_runner.client
            container = client.containers.get(container_id)
            assert container.attrs["State"]["Running"]
            assert docker_runner.reap_orphans(set()) == []  # the owner lives
            os.kill(owner.pid, signal.SIGKILL)
            owner.wait()

            def exited() -> bool:
                container.reload()
                return not container.attrs["State"]["Running"]

            wait_for(exited, 60, "the launcher to read EOF and exit")
            assert container.attrs["State"]["ExitCode"] == 0
            assert container.attrs["State"]["OOMKilled"] is False
            reaped = docker_runner.reap_orphans(set())
            assert len(reaped) == 1 and reaped[0].startswith("launch-")
            assert our_containers(client, docker_runner.instance or "") == []
            runs = spec.run_dir.parent
            stale = _staging_dirs(runs)
            assert len(stale) == 1
            assert not (runs / stale[0] / "ran").exists()  # no project code ran
            assert remove_stale_staging(runs) == [runs / stale[0]]
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait()


OWNER = """
import json, sys
from runners.docker_prewarm import DockerPlan
prewarm = DockerPlan.from_json(json.loads(sys.argv[1])).start()
print(prewarm.container_id if prewarm and prewarm.ready() else "", flush=True)
sys.stdin.read()  # until killed
"""


def test_prewarm_type_is_exported() -> None:
    assert DockerPrewarm.runner == "docker"
