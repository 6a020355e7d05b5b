"""Building the torchrun command line and environment (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runners.base import GpuDevice
from scheduler.smoketest.launch import (
    build_torchrun_argv,
    resolve_backend,
    resolve_nproc,
    smoketest_env,
)

ROOT = Path(__file__).resolve().parents[3]


class TestResolveNproc:
    def test_all_is_leased_gpus(self) -> None:
        """'all' is the number of leased GPUs."""
        assert resolve_nproc([1, "all"], leased_gpus=4, cpu_procs=2) == [1, 4]

    def test_all_on_cpu_is_cpu_procs(self) -> None:
        """Without a GPU, 'all' is cpu_procs."""
        assert resolve_nproc([1, "all"], leased_gpus=0, cpu_procs=3) == [1, 3]

    def test_dedupes_keeping_order(self) -> None:
        """Repeats are dropped and the configured order is kept (one GPU: [1, all] is [1])."""
        assert resolve_nproc([1, "all"], leased_gpus=1, cpu_procs=2) == [1]
        assert resolve_nproc([2, 1, 2, "all"], leased_gpus=0, cpu_procs=2) == [2, 1]

    def test_more_than_leased_is_refused(self) -> None:
        """NCCL needs a GPU per rank: more processes than leased GPUs is an error."""
        with pytest.raises(ValueError, match="exceeds the 2 leased"):
            resolve_nproc([4], leased_gpus=2, cpu_procs=2)


class TestResolveBackend:
    def test_auto(self) -> None:
        """auto is nccl with GPUs and gloo without."""
        assert resolve_backend("auto", 2) == "nccl"
        assert resolve_backend("auto", 0) == "gloo"

    def test_nccl_without_gpu_refused(self) -> None:
        """Asking for nccl on a run without a GPU is refused up front."""
        with pytest.raises(ValueError, match="nccl"):
            resolve_backend("nccl", 0)


class TestArgv:
    def test_builtin(self, tmp_path: Path) -> None:
        """The built-in entry runs the package module under torch.distributed.run with flags."""
        out = tmp_path / "m.jsonl"
        argv = build_torchrun_argv(
            "/py", 2, "gloo", "builtin", 20, out, "desync", ["--seed", "7"],
            log_dir=tmp_path / "ranks", pg_timeout_s=180,
        )  # fmt: skip
        assert argv[:7] == [
            "/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "--max-restarts=0", "--monitor-interval=0.5",
        ]  # fmt: skip
        assert argv[7:11] == ["--log-dir", str(tmp_path / "ranks"), "--tee", "3"]
        assert argv[11:] == [
            "-m", "scheduler.smoketest", "--steps", "20", "--out", str(out),
            "--backend", "gloo", "--inject-fault", "desync", "--pg-timeout", "180",
            "--seed", "7",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("entry", "tail"),
        [
            ("-m pkg.train", ["-m", "pkg.train", "--x"]),
            ("pkg.train", ["-m", "pkg.train", "--x"]),
            ("scripts/train.py", ["scripts/train.py", "--x"]),
        ],
        ids=["dash-m", "dotted", "script"],
    )
    def test_custom_entries(self, entry: str, tail: list[str], tmp_path: Path) -> None:
        """Module and script entries get only the extra args; no fault flag leaks into them."""
        argv = build_torchrun_argv("/py", 1, "gloo", entry, 5, tmp_path / "o", "none", ["--x"])
        assert argv[-len(tail) :] == tail
        assert "--steps" not in argv

    def test_builtin_as_script_in_a_container(self, tmp_path: Path) -> None:
        """In a container: the program runs from its file and the rendezvous is on loopback."""
        script = tmp_path / "plugin" / "schedctl_smoketest.py"
        argv = build_torchrun_argv(
            "python3", 2, "gloo", "builtin", 5, tmp_path / "o", "none", [],
            builtin_script=script, local_addr="127.0.0.1",
        )  # fmt: skip
        assert "--local-addr=127.0.0.1" in argv[: argv.index(str(script))]
        assert argv[argv.index(str(script)) + 1 :][:2] == ["--steps", "5"]
        assert "scheduler.smoketest" not in argv

    def test_env_in_container(self, tmp_path: Path) -> None:
        """In a container the engine picks the GPUs; no schedctl path; collectives on lo."""
        env = smoketest_env(
            {"PYTHONPATH": "/opt/site"}, gpus=[GpuDevice(0, "GPU-a")], backend="nccl",
            steps=2, out=tmp_path, fault="none", in_container=True,
        )  # fmt: skip
        assert "CUDA_VISIBLE_DEVICES" not in env
        assert env["PYTHONPATH"] == "/opt/site"
        assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "lo"

    def test_env(self, tmp_path: Path) -> None:
        """Only the leased GPUs are visible; settings are passed as variables; PYTHONPATH kept."""
        env = smoketest_env(
            {"PYTHONPATH": "/x", "PATH": "/bin"},
            gpus=[GpuDevice(0, "GPU-a"), GpuDevice(3, "GPU-b")],
            backend="nccl", steps=9, out=tmp_path / "o", fault="hang",
        )  # fmt: skip
        assert env["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
        assert env["PYTHONPATH"] == f"{ROOT}:/x"
        assert env["SCHEDCTL_SMOKETEST_FAULT"] == "hang"
        assert env["SCHEDCTL_SMOKETEST_STEPS"] == "9"
        assert "OMP_NUM_THREADS" not in env

    def test_env_cpu_hides_gpus_and_pins_threads(self, tmp_path: Path) -> None:
        """Without a lease no GPU is visible and each rank gets one thread for a fair 1-vs-N."""
        env = smoketest_env({}, gpus=[], backend="gloo", steps=2, out=tmp_path, fault="none")
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["OMP_NUM_THREADS"] == "1"


def test_package_imports_without_torch() -> None:
    """scheduler.smoketest and its comparison import where torch is not installed."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import scheduler.smoketest as s\n"
        "assert s.compare({}, __import__('scheduler.config').config.Thresholds(), False)\n"
        "try:\n    import scheduler.smoketest.train\nexcept ImportError:\n    print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_single_world_size_says_nothing_was_compared() -> None:
    """A verdict over one world size passes but says no 1-vs-N comparison happened."""
    from scheduler.smoketest.compare import Verdict
    from scheduler.smoketest.launch import _message

    verdict = Verdict(
        "passed", [], [{"world_size": 1, "samples_per_s": 100.0, "efficiency": 1.0}], True, True
    )
    assert _message(verdict, {}) == (
        "passed; N=1: 100 samples/s; only one world size ran, so nothing was compared"
    )
