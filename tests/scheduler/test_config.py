"""Config loading and validation: key paths in errors, durations, env interpolation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from scheduler.config import Config, config_from_mapping, load_config, parse_duration
from scheduler.kernel.errors import ConfigError, UnknownTierError
from tests.conftest import tier

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal(**tier: object) -> dict[str, object]:
    return {
        "project": {"path": "."},
        "tiers": {"hourly": {"schedule": "15 * * * *", "timeout": "30m", **tier}},
    }


class TestReferenceConfig:
    def test_root_config_has_the_reference_tiers(self) -> None:
        """config.yaml at the root defines hourly/daily/weekly as in the reference deployment."""
        config = load_config(ROOT / "config.yaml", env={})
        assert config.timezone == "UTC"
        hourly, daily, weekly = (config.tiers[n] for n in ("hourly", "daily", "weekly"))
        assert (hourly.schedule, hourly.timeout, hourly.markers) == ("15 * * * *", 1800, "hourly")
        assert (daily.schedule, daily.timeout) == ("30 2 * * *", 5400)
        assert daily.markers == "daily or not hourly" and daily.coverage
        assert weekly.schedule == "0 3 * * 0"
        assert config.project.path == (ROOT / "examples" / "suite").resolve()

    def test_state_dir_default_and_env_override(self, tmp_path: Path) -> None:
        """${SCHEDCTL_STATE_DIR:-.schedctl} falls back to the default and honours the env."""
        default = load_config(ROOT / "config.yaml", env={})
        assert default.state_dir == ROOT / ".schedctl"
        custom = load_config(ROOT / "config.yaml", env={"SCHEDCTL_STATE_DIR": str(tmp_path)})
        assert custom.state_dir == tmp_path


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [(90, 90), ("90", 90), ("30m", 1800), ("90m", 5400), ("1.5h", 5400), ("7d", 604800)],
    )
    def test_valid(self, text: object, seconds: float) -> None:
        """Durations accept seconds and s/m/h/d suffixes."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", [-5, 0, "-3m", "soon", "5y", True])
    def test_invalid(self, text: object) -> None:
        """Negative, zero and malformed durations are rejected."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)


class TestErrorsNameTheKey:
    def test_negative_timeout(self, tmp_path: Path) -> None:
        """A negative timeout names tiers.hourly.timeout and the file."""
        path = write(tmp_path, minimal(timeout=-1))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert err.value.path == str(path)
        assert any(p.startswith("tiers.hourly.timeout:") for p in err.value.problems)

    def test_bad_cron(self, tmp_path: Path) -> None:
        """A cron with 4 fields names tiers.hourly.schedule."""
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, minimal(schedule="15 * * *")))
        assert err.value.problems == [
            "tiers.hourly.schedule: invalid cron '15 * * *': expected 5 fields "
            "(minute hour day month weekday), got 4"
        ]

    def test_cron_out_of_range(self, tmp_path: Path) -> None:
        """Minute 61 is rejected with the key path."""
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, minimal(schedule="61 * * * *")))
        assert err.value.problems[0].startswith("tiers.hourly.schedule: invalid cron")

    def test_unknown_keys_anywhere(self, tmp_path: Path) -> None:
        """Unknown keys at the top and inside a tier are each reported."""
        data = minimal(timout=5)
        data["colour"] = "blue"
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, data))
        assert sorted(err.value.problems) == [
            "colour: unknown key",
            "tiers.hourly.timout: unknown key",
        ]

    def test_missing_env_var(self, tmp_path: Path) -> None:
        """${VAR} without a default names the key that uses it."""
        data = minimal()
        data["state_dir"] = "${NOPE_NOT_SET}"
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, data), env={})
        assert err.value.problems == ["state_dir: environment variable NOPE_NOT_SET is not set"]

    def test_invalid_yaml_and_missing_file(self, tmp_path: Path) -> None:
        """Unparseable YAML and a missing file are config errors, not tracebacks."""
        bad = tmp_path / "bad.yaml"
        bad.write_text("tiers: [\n")
        with pytest.raises(ConfigError, match="invalid YAML"):
            load_config(bad)
        with pytest.raises(ConfigError, match="cannot read"):
            load_config(tmp_path / "missing.yaml")

    def test_project_needs_exactly_one_source(self, tmp_path: Path) -> None:
        """project.path and project.repo are mutually exclusive."""
        data = minimal()
        data["project"] = {"path": ".", "repo": "https://example.invalid/x.git"}
        with pytest.raises(ConfigError, match="exactly one of project.path or project.repo"):
            load_config(write(tmp_path, data))

    def test_unknown_tier_lookup(self, tmp_path: Path) -> None:
        """Config.tier() names the unknown tier and lists the known ones."""
        config = load_config(write(tmp_path, minimal()))
        with pytest.raises(
            UnknownTierError, match="unknown tier 'nightly'; configured tiers: hourly"
        ):
            config.tier("nightly")


@pytest.mark.parametrize("address", ["9464", "localhost:", "127.0.0.1:99999", ":9464"])
def test_bad_listen_address_names_the_key(tmp_path: Path, address: str) -> None:
    """daemon.metrics_address must be host:port; the error names the key."""
    data = minimal()
    data["daemon"] = {"metrics_address": address}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert err.value.problems[0].startswith("daemon.metrics_address: expected host:port")


def test_listen_address_may_be_off_or_ipv6(tmp_path: Path) -> None:
    """null disables the metrics listener; [::1]:9464 is accepted."""
    data = minimal()
    data["daemon"] = {"metrics_address": None, "web_address": None, "api": {"tcp": "[::1]:9464"}}
    config = load_config(write(tmp_path, data))
    assert config.daemon.metrics_address is None and config.daemon.api.tcp == "[::1]:9464"


def test_mounts_must_be_absolute(tmp_path: Path) -> None:
    """tiers.X.mounts takes absolute host and container paths only, naming the bad one."""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, minimal(mounts={"data": "/data"})))
    assert err.value.problems[0].startswith("tiers.hourly.mounts: mount 'data'")
    config = load_config(write(tmp_path, minimal(mounts={"/srv/data": "/data"})))
    assert config.tiers["hourly"].mounts == {"/srv/data": "/data"}


@pytest.mark.parametrize(
    ("torchrun", "gpus", "needle"),
    [
        ({"nproc": [0, "all"]}, 0, "tiers.hourly.torchrun.nproc: nproc[0] must be >= 1"),
        ({"nproc": []}, 0, "tiers.hourly.torchrun.nproc: nproc needs at least one entry"),
        ({"nproc": [1, 4]}, 2, "tiers.hourly: torchrun.nproc [4] exceeds gpus: 2"),
    ],
)
def test_torchrun_nproc_is_checked_at_load(
    tmp_path: Path, torchrun: dict[str, object], gpus: int, needle: str
) -> None:
    """A bad torchrun nproc fails config check naming the key, not the weekly run later."""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, minimal(kind="torchrun", gpus=gpus, torchrun=torchrun)))
    assert err.value.problems[0].startswith(needle), err.value.problems


def test_missing_project_path_is_named(tmp_path: Path) -> None:
    """A project.path that does not exist fails at load, naming the key and the path."""
    data = minimal()
    data["project"] = {"path": "no/such/dir"}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert err.value.problems == [f"project.path: {tmp_path / 'no/such/dir'} is not a directory"]


class TestRunnerFor:
    """Config.runner_for / python_for: which runner and interpreter a tier's run asks for."""

    @staticmethod
    def config(tmp_path: Path, python: str | None = None, **top: object) -> Config:
        project: dict[str, object] = {"path": str(tmp_path)}
        if python:
            project["python"] = python
        tiers = {"plain": {}, "auto": {"runner": "auto"}, "docker": {"runner": "docker"}}
        data = {"project": project, "tiers": tiers, **top}
        return config_from_mapping(data)

    def test_auto_with_project_python_is_local(self, tmp_path: Path) -> None:
        """runner: auto (global or per tier) with project.python set resolves to local."""
        config = self.config(tmp_path, python="/venv/bin/python", runner="auto")
        assert config.runner_for("plain") == "local"
        assert config.runner_for("auto") == "local"
        assert config.runner_for("plain", requested="auto") == "local"
        assert config.python_for("plain", "local") == "/venv/bin/python"

    def test_auto_without_project_python_is_left_to_the_probe(self, tmp_path: Path) -> None:
        """Without project.python, auto stays auto (the runner factory probes Docker later)."""
        config = self.config(tmp_path, runner="auto")
        assert config.runner_for("plain") == "auto"
        assert config.runner_for("auto") == "auto"
        assert config.runner_for("auto", requested="local") == "local"
        assert config.python_for("plain", "local").endswith("(schedctl's own)")

    def test_explicit_runners_are_kept(self, tmp_path: Path) -> None:
        """runner: docker stays docker with project.python (the image's python3 runs)."""
        config = self.config(tmp_path, python="/venv/bin/python", runner="local", image="img:1")
        assert config.runner_for("plain") == "local"
        assert config.runner_for("docker") == "docker"
        assert config.python_for("docker", "docker") == "python3 in image img:1"
        with pytest.raises(UnknownTierError):
            config.runner_for("nope")


def test_slurm_settings_merge_per_tier_and_refuse_gpus_all(
    make_config: Callable[..., Config],
) -> None:
    """A tier's slurm: keys override the top-level ones; `gpus: all` on Slurm names the tier."""
    config = make_config(
        runner="slurm",
        slurm={"partition": "cpu", "qos": "low", "shared_dir": "/shared"},
        tiers={"hourly": tier(gpus=1, slurm={"partition": "gpu", "nodes": 2})},
    )
    merged = config.slurm_for("hourly")
    assert (merged.partition, merged.qos, merged.nodes) == ("gpu", "low", 2)
    with pytest.raises(ConfigError, match=r"tiers\.hourly\.gpus: 'all' cannot be asked of Slurm"):
        make_config(runner="slurm", tiers={"hourly": tier(gpus="all")})
