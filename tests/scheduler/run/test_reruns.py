"""Reruns of failed tests with the real local runner: flaky, deterministic, never-rerun cases."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runners.local import LocalRunner
from runners.registry import RunnerFactory
from scheduler.config import config_from_mapping
from scheduler.kernel.errors import ConfigError
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store import RunRecord, Store
from tests.conftest import tier

FLAKE_RATE = 0.3

# A test that fails with probability FLAKE_RATE, seeded per call: the n-th pytest process that runs
# it draws from Random(f"{SEED}-{n}"), n counted in a file beside the project.
FLAKY_TEST = """
import random
from pathlib import Path

COUNTER = Path(__file__).parent.parent / "calls.txt"


def test_sometimes():
    calls = int(COUNTER.read_text()) if COUNTER.exists() else 0
    COUNTER.write_text(str(calls + 1))
    assert random.Random(f"{SEED}-{calls}").random() >= {RATE}


def test_steady():
    pass
"""


def seed_failing_then_passing() -> int:
    """A seed whose first draw fails (< 30 %) and second passes: a flake that a rerun catches."""
    for seed in range(1000):
        first, second = (random.Random(f"{seed}-{n}").random() for n in (0, 1))
        if first < FLAKE_RATE <= second:
            return seed
    raise AssertionError("no seed")


def run_tier(tmp_path: Path, files: dict[str, str], **tier_kw: Any) -> tuple[RunRecord, Store]:
    root = tmp_path / "project"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    config = config_from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "runner": "local",
            "local": {"allow_root": True},  # not the nobody default: tmp dirs are 0700
            "project": {"path": str(root)},
            "tiers": {"hourly": tier(markers=None, **tier_kw)},
        },
        source=str(tmp_path / "config.yaml"),
        base_dir=tmp_path,
    )
    store = Store(config.db_path)
    dispatcher = Dispatcher(config, store, RunnerFactory({"local": LocalRunner()}))
    return dispatcher.run(RunRequest("hourly")), store


def test_seeded_flaky_test_passes_on_rerun_and_is_recorded_flaky(tmp_path: Path) -> None:
    """A 30 %-flaky test that fails once under reruns: 2 leaves the run passed, the test flaky,
    and both attempts stored."""
    source = FLAKY_TEST.replace("{SEED}", str(seed_failing_then_passing()))
    record, store = run_tier(
        tmp_path, {"tests/test_flaky.py": source.replace("{RATE}", str(FLAKE_RATE))}, reruns=2
    )
    assert record.outcome is Outcome.PASSED, record.reason
    assert "1 flaky" in record.reason
    attempts = store.test_results_for(record.id, attempts=True)
    sometimes = [a for a in attempts if a.nodeid.endswith("test_sometimes")]
    assert [(a.attempt, a.outcome, a.final) for a in sometimes] == [
        (0, "failed", False),
        (1, "flaky", True),
    ]
    assert record.counts["flaky"] == 1 and record.counts["passed"] == 1
    assert record.details["attempts"] == 2
    assert (tmp_path / "project" / "calls.txt").read_text() == "2"


def test_flaky_fails_tier_when_configured(tmp_path: Path) -> None:
    """With flaky_fails_tier: true the same flake fails the run, naming the test."""
    source = FLAKY_TEST.replace("{SEED}", str(seed_failing_then_passing()))
    record, _ = run_tier(
        tmp_path,
        {"tests/test_flaky.py": source.replace("{RATE}", str(FLAKE_RATE))},
        reruns=2,
        flaky_fails_tier=True,
    )
    assert record.outcome is Outcome.FAILED
    assert "flaky" in record.reason and "test_sometimes" in record.reason


def test_deterministic_failure_fails_after_three_attempts(tmp_path: Path) -> None:
    """A test that always fails under reruns: 2 is run three times and the run is failed."""
    files = {
        "tests/test_broken.py": """
            def test_broken():
                assert False, "always"

            def test_fine():
                pass
        """
    }
    record, store = run_tier(tmp_path, files, reruns=2)
    assert record.outcome is Outcome.FAILED
    attempts = store.test_results_for(record.id, attempts=True)
    broken = [a for a in attempts if a.nodeid.endswith("::test_broken")]
    assert [(a.attempt, a.outcome, a.final) for a in broken] == [
        (0, "failed", False),
        (1, "failed", False),
        (2, "failed", True),
    ]
    fine = [a for a in attempts if a.nodeid.endswith("::test_fine")]
    assert len(fine) == 1, "only the failed tests are rerun"
    assert sorted(store.test_results_for(record.id), key=lambda r: r.nodeid) == [
        broken[-1],
        fine[0],
    ]


def test_distributed_marker_is_never_rerun(tmp_path: Path) -> None:
    """A failing test marked distributed keeps its single attempt: its failure is evidence."""
    files = {
        "pytest.ini": "[pytest]\nmarkers =\n    distributed: multi-process\n",
        "tests/test_dist.py": """
            import pytest

            @pytest.mark.distributed
            def test_ranks():
                assert False, "rank 1 diverged"
        """,
    }
    record, store = run_tier(tmp_path, files, reruns=2)
    assert record.outcome is Outcome.FAILED
    assert [a.attempt for a in store.test_results_for(record.id, attempts=True)] == [0]
    assert not (Path(record.run_dir or "") / "attempt-1").exists()


def test_node_ids_reach_the_rerun_through_a_file_not_argv(tmp_path: Path) -> None:
    """A node id that looks like an option is selected from the file and never parsed as one."""
    files = {
        "tests/test_param.py": """
            import pytest

            @pytest.mark.parametrize("arg", ["--collect-only", "-p no:x"])
            def test_odd(arg):
                assert False
        """
    }
    record, store = run_tier(tmp_path, files, reruns=1)
    attempts = store.test_results_for(record.id, attempts=True)
    assert sorted((a.attempt, a.nodeid) for a in attempts if a.attempt == 1) == sorted(
        (1, a.nodeid) for a in attempts if a.attempt == 0
    )
    select = Path(record.run_dir or "") / "attempt-1" / "select.txt"
    assert "--collect-only" in select.read_text()


def test_torchrun_tier_rejects_reruns(tmp_path: Path) -> None:
    """reruns on a torchrun tier is a config error naming the key: it is never rerun."""
    with pytest.raises(ConfigError, match=r"tiers.weekly.*never rerun"):
        config_from_mapping(
            {
                "state_dir": str(tmp_path / "state"),
                "project": {"path": str(tmp_path)},
                "tiers": {"weekly": {"kind": "torchrun", "reruns": 1}},
            },
            source="config.yaml",
        )


@pytest.mark.docker
@pytest.mark.slow
def test_rerun_in_a_fresh_container_of_the_same_image(tmp_path: Path) -> None:
    """With the docker runner the rerun is a second container of the same image, selecting the
    failed test through the remapped select file; both attempts are stored."""
    import uuid

    import docker

    from runners.docker import DEFAULT_IMAGE, DockerRunner
    from tests.conftest import require

    try:
        client = docker.from_env(timeout=30)
        client.ping()
        client.images.get(DEFAULT_IMAGE)
    except Exception as exc:
        require(False, f"Docker engine or {DEFAULT_IMAGE} not available ({exc})")
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_c.py").write_text(
        "def test_broken():\n    assert False\n\ndef test_fine():\n    pass\n"
    )
    config = config_from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "runner": "docker",
            "project": {"path": str(root)},
            "tiers": {"hourly": tier(markers=None, reruns=1)},
        },
        source=str(tmp_path / "config.yaml"),
        base_dir=tmp_path,
    )
    runner = DockerRunner(client, instance=f"t{uuid.uuid4().hex[:8]}")
    store = Store(config.db_path)
    try:
        dispatcher = Dispatcher(config, store, RunnerFactory({"docker": runner}))
        record = dispatcher.run(RunRequest("hourly"))
    finally:
        runner.close()
    assert record.outcome is Outcome.FAILED, record.reason
    attempts = store.test_results_for(record.id, attempts=True)
    assert sorted((a.nodeid.rsplit("::", 1)[-1], a.attempt) for a in attempts) == [
        ("test_broken", 0),
        ("test_broken", 1),
        ("test_fine", 0),
    ]
    assert {a.rss_method for a in attempts} == {"vmhwm"}, "clear_refs works in the container"
