"""Container overhead of DockerRunner over bare pytest in the same image, side by side.

Three ways to run the same small pytest project, interleaved, N times each:

* bare:   pytest inside an already running container of the image (no container start at all);
* cli:    ``docker run --rm`` with the same hardening flags (the plain-Docker reference);
* runner: ``DockerRunner.run`` (create, start, stream logs, supervise, inspect, remove).

It also reports create -> first log line latency of the runner, for pytest and for a bare
``echo`` (the container part alone). Targets: overhead <= 1.5 s per run, latency p50 <= 400 ms.

Usage: .venv/bin/python bench/bench_docker.py [-n 7] [--image schedctl-test:bookworm] [--check]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runners.base import RunSpec  # noqa: E402
from runners.docker import DEFAULT_IMAGE, DockerRunner  # noqa: E402
from scheduler.kernel.outcome import Termination  # noqa: E402

OVERHEAD_TARGET_S = 1.5
LATENCY_TARGET_S = 0.4
PYTEST = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
TIMER = """
import json, subprocess, sys, time
out = []
for _ in range(int(sys.argv[1])):
    t = time.monotonic()
    subprocess.run(sys.argv[2:], cwd="/work/src", stdout=subprocess.DEVNULL, check=True)
    out.append(time.monotonic() - t)
print(json.dumps(out))
"""


def write_project(root: Path, n_tests: int = 30) -> Path:
    """A small project: a few modules of trivial tests, like a quick hourly tier."""
    root.mkdir(parents=True, exist_ok=True)
    for module in range(3):
        body = "".join(
            f"def test_{module}_{i}():\n    assert sum(range({i})) >= 0\n\n"
            for i in range(n_tests // 3)
        )
        (root / f"test_m{module}.py").write_text(body)
    return root


def bare_timings(client: docker.DockerClient, image: str, project: Path, n: int) -> list[float]:
    """pytest run n times inside one warm container of the image: the no-container baseline."""
    container = client.containers.run(
        image,
        ["sleep", "3600"],
        detach=True,
        read_only=True,
        tmpfs={"/tmp": "rw,exec,size=256m"},
        volumes={str(project): {"bind": "/work/src", "mode": "ro"}},
        network_mode="none",
        user="1000:1000",
    )
    try:
        code, output = container.exec_run(["python3", "-c", TIMER, str(n), *PYTEST])
        if code != 0:
            raise SystemExit(f"bare pytest failed in the container: {output.decode()}")
        return [float(t) for t in json.loads(output.decode().strip().splitlines()[-1])]
    finally:
        container.remove(force=True)


def cli_run(image: str, project: Path) -> float:
    """One plain ``docker run --rm`` with the runner's hardening flags."""
    argv = [
        "docker", "run", "--rm", "--init", "--network", "none", "--read-only",
        "--tmpfs", "/tmp:rw,exec,size=256m", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", "1000:1000",
        "-v", f"{project}:/work/src:ro", "-w", "/work/src", image, *PYTEST,
    ]  # fmt: skip
    began = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - began


def runner_run(
    runner: DockerRunner, project: Path, runs: Path, argv: Sequence[str]
) -> tuple[float, float]:
    """One DockerRunner run; returns (wall seconds, create -> first log line seconds)."""
    run_id = uuid.uuid4().hex[:10]
    spec = RunSpec(run_id, "bench", argv, project, runs / run_id, 120.0, memory="1g")
    began = time.monotonic()
    result = runner.run(spec)
    wall = time.monotonic() - began
    if result.termination is not Termination.EXITED or result.exit_code != 0:
        raise SystemExit(f"runner run failed: {result}\n{spec.log_path.read_text()}")
    return wall, float(result.provenance["first_output_s"])


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def report(n: int, bare: list[float], cli: list[float], ours: list[float]) -> float:
    base = p50(bare)
    print(f"\n{n} runs each, 30 tests, p50 (min..max) seconds")
    for name, values in (
        ("bare pytest (warm container)", bare),
        ("docker run --rm (CLI)", cli),
        ("DockerRunner.run", ours),
    ):
        line = f"  {name:30s} {p50(values):6.3f} ({min(values):.3f}..{max(values):.3f})"
        if values is not bare:
            line += f"  ratio {p50(values) / base:4.2f}x  overhead +{p50(values) - base:.3f}"
        print(line)
    return p50(ours) - base


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=7, help="repetitions per mode")
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    client = docker.from_env()
    runner = DockerRunner(client, default_image=args.image, instance="bench")
    with tempfile.TemporaryDirectory(prefix="schedctl-bench-") as tmp:
        project = write_project(Path(tmp) / "src")
        runs = Path(tmp) / "runs"
        runner_run(runner, project, runs, PYTEST)  # warm the page cache and the engine
        cli: list[float] = []
        ours: list[float] = []
        first_pytest: list[float] = []
        first_echo: list[float] = []
        for _ in range(args.n):
            cli.append(cli_run(args.image, project))
            wall, first = runner_run(runner, project, runs, PYTEST)
            ours.append(wall)
            first_pytest.append(first)
            first_echo.append(runner_run(runner, project, runs, ["echo", "ready"])[1])
        bare = bare_timings(client, args.image, project, args.n)

    overhead = report(args.n, bare, cli, ours)
    latency = p50(first_echo)
    print("  create -> first log line:")
    print(f"    echo    p50 {latency * 1000:5.0f} ms (target <= {LATENCY_TARGET_S * 1000:.0f} ms)")
    print(f"    pytest  p50 {p50(first_pytest) * 1000:5.0f} ms  (includes pytest start-up)")
    print(
        f"  runner overhead over bare pytest: +{overhead:.3f} s (target <= {OVERHEAD_TARGET_S} s)"
    )
    missed = overhead > OVERHEAD_TARGET_S or latency > LATENCY_TARGET_S
    print("  targets:", "MISSED" if missed else "met")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
