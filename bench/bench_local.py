"""`schedctl run hourly` end to end, as a user types it, vs the bare pytest it wraps.

Whole processes, interleaved, medians: ``schedctl run hourly --runner local --json`` on
examples/suite vs bare ``python -m pytest -m hourly`` there; and, when a Docker engine and the
test image are here, ``schedctl run hourly --runner docker --json`` vs a bare ``docker run --rm``
of the same pytest command in the same image with the same hardening flags. The schedctl
process pays everything: imports, config, store, the crash-recovery check, git, the results.
Targets: <= +0.3 s (local), <= +0.5 s (docker).

    python bench/bench_local.py [-n 5] [--image schedctl-test:bookworm]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import SCHEDCTL, SUITE, figure, interleaved, local_config, timed  # noqa: E402

PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "hourly"]
TARGETS_S = {"local": 0.3, "docker": 0.5}


def docker_ready(image: str) -> bool:
    try:
        probe = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def bare_docker(image: str) -> list[str]:
    return [
        "docker", "run", "--rm", "--init", "--network", "none", "--read-only",
        "--tmpfs", "/tmp:rw,exec,size=256m", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", "65534:65534",
        "-v", f"{SUITE}:/work/src:ro", "-w", "/work/src", image, "python3", *PYTEST,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("--image", default="schedctl-test:bookworm")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(local_config(Path(tmp) / "state", f"image: {args.image}\n"))
        schedctl = [*SCHEDCTL, "--config", str(config), "run", "hourly", "--json", "--runner"]
        runs = {
            "bare local": partial(timed, [sys.executable, *PYTEST], cwd=SUITE, env=env),
            "local": partial(timed, [*schedctl, "local"], cwd=tmp, env=env),
        }
        has_docker = docker_ready(args.image)
        if has_docker:
            runs["bare docker"] = partial(timed, bare_docker(args.image), env=env)
            runs["docker"] = partial(timed, [*schedctl, "docker"], cwd=tmp, env=env)
        medians = interleaved(runs, args.n)
    for kind, target in TARGETS_S.items():
        name = f"schedctl run hourly --runner {kind} (median of {args.n})"
        if kind not in medians:
            print(f"{name:<44} skipped: no Docker engine or no image {args.image}")
            continue
        base = medians[f"bare {kind}"]
        added = medians[kind] - base
        figure(
            name,
            f"{medians[kind]:.3f} s",
            f"{base:.3f} s",
            f"+{target:.2f} s (+{added:.3f})",
            added <= target,
        )


if __name__ == "__main__":
    main()
