"""Issue 16 end to end on the real engine: a generated image for a src/ layout project with a
third-party test dependency, a tier run in it with a plain venv's counts, a failing build that
alerts while the tier keeps the last good image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from pytest_httpserver import HTTPServer

from scheduler.alerts import build_alerting
from scheduler.config import config_from_mapping
from scheduler.daemon.assembly import build_dispatcher
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import RunRequest
from scheduler.store.engine import Store
from tests.conftest import FIXTURES, require

pytestmark = [pytest.mark.docker, pytest.mark.slow]
MISSING = "schedctl-issue16-no-such-package"


@pytest.fixture
def engine() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
        client.images.get("schedctl-base:bookworm")
    except Exception as exc:
        require(False, f"Docker engine or schedctl-base:bookworm missing ({exc})")
    return client


def venv_counts(project: Path, tmp_path: Path) -> dict[str, int]:
    """Plain pytest in a fresh venv with the project's test extra installed (editable)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, "pytest", "-e", f"{project}[test]"], check=True, timeout=300)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=project, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary) if word != "in"}


def test_generated_image_runs_a_src_layout_like_a_venv(
    engine: docker.DockerClient, tmp_path: Path, httpserver: HTTPServer
) -> None:
    """Build @ci from the project's test extra; the tier's counts equal a plain venv's. Then a
    dependency that does not exist fails the build with pip's line, alerts, and the tier keeps
    the first image and says so."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "srclayout", project)
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = config_from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "runner": "docker",
            "project": {"path": str(project)},
            "images": {"ci": {"keep": 1}},
            "tiers": {"unit": {"timeout": 120, "image": "@ci"}},
            "alerts": {"webhooks": [{"name": "ops", "url": httpserver.url_for("/hook")}]},
        },
        source=str(tmp_path / "config.yaml"),
    )
    store = Store(config.db_path)
    alerting = build_alerting(config, store)
    assert alerting is not None
    dispatcher = build_dispatcher(config, store, listeners=[alerting.recorder])
    built: list[str] = []
    try:
        good = dispatcher.run(RunRequest("image:ci"))
        assert good.outcome is Outcome.PASSED, (good.reason, _log_tail(good.run_dir))
        built.append(good.details["image_build"]["tag"])
        run = dispatcher.run(RunRequest("unit"))
        assert run.outcome is Outcome.PASSED, run.reason
        assert run.image_id == good.image_id
        in_image = {k: v for k, v in run.counts.items() if v}
        assert (
            in_image == venv_counts(project, tmp_path) == {"passed": 2, "skipped": 1, "xfailed": 1}
        )

        pyproject = project / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text().replace('"six>=1.16"', f'"six>=1.16", "{MISSING}"')
        )
        bad = dispatcher.run(RunRequest("image:ci"))
        assert bad.outcome is Outcome.FAILED
        pip_line = f"image build failed: ERROR: No matching distribution found for {MISSING}"
        assert bad.reason.startswith(pip_line)
        assert alerting.worker.run_once() >= 1
        (request, _response), *_ = httpserver.log
        alert = json.loads(request.get_data())
        assert alert["tier"] == "image:ci" and MISSING in json.dumps(alert)

        again = dispatcher.run(RunRequest("unit"))
        assert again.outcome is Outcome.PASSED and again.image_id == good.image_id
        assert f"(run {bad.id}) ended failed" in again.details["image_build"]["note"]
    finally:
        for tag in built:
            try:
                engine.images.remove(tag)
            except docker.errors.DockerException:
                pass


def _log_tail(run_dir: str | None) -> str:
    log = Path(run_dir or ".") / "output.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def test_engine_refuses_to_remove_an_image_a_container_uses(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    """The builder's remove keeps an image a container was created from, and removes it after."""
    import threading

    from runners.base import BoundedLog
    from runners.docker_build import DockerImageBuilder

    (tmp_path / "Dockerfile").write_text("FROM schedctl-base:bookworm\nLABEL schedctl.test=16\n")
    builder = DockerImageBuilder(engine)
    tag = f"schedctl-test16/retention:{tmp_path.name.lower()[-20:]}"
    with BoundedLog(tmp_path / "build.log", 1 << 20) as log:
        result = builder.build(
            context=tmp_path, dockerfile="Dockerfile", tag=tag, log=log,
            cancel=threading.Event(), timeout_s=120, network=False,
        )  # fmt: skip
    assert result.image_id is not None, result.error
    container = engine.containers.create(tag, ["true"])
    try:
        assert (builder.remove(tag) or "").startswith("kept:")
        assert builder.exists(tag)
    finally:
        container.remove(force=True)
    assert builder.remove(tag) is None and not builder.exists(result.image_id)
