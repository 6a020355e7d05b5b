"""The pytest command line for a tier: markers, paths, args, coverage, and the results plugin."""

from __future__ import annotations

from pathlib import Path

from runners.base import JUNIT_FILE, PLUGIN_MODULE, RESULTS_FILE
from scheduler.config import TierConfig


def build_pytest_command(
    *, python: str, tier: TierConfig, markers: str | None, run_dir: Path, plugin_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """Return ``(argv, env)``; paths point at ``run_dir``/``plugin_dir`` on the host.

    Container runners map those host paths to their mount points.
    """
    argv = [
        python,
        "-m",
        "pytest",
        "-p",
        PLUGIN_MODULE,
        "-p",
        "no:cacheprovider",
        f"--junitxml={run_dir / JUNIT_FILE}",
        "-o",
        "junit_family=xunit2",
        "-rfE",
    ]
    expression = markers if markers is not None else tier.markers
    if expression:
        argv += ["-m", expression]
    if tier.coverage:
        sources = tier.coverage_source or ["."]
        argv += [f"--cov={s}" for s in sources]
        argv += [f"--cov-report=xml:{run_dir / 'coverage.xml'}", "--cov-report=term"]
    argv += list(tier.args)
    argv += list(tier.paths)
    env = {
        "SCHEDCTL_RESULTS": str(run_dir / RESULTS_FILE),
        "PYTHONPATH": str(plugin_dir),
        **tier.env,
    }
    if tier.coverage:
        env["COVERAGE_FILE"] = str(run_dir / ".coverage")
    return argv, env
