"""Run one pickled RunSpec through a runner in a process of its own, for a test to kill -9.

Usage: python -m tests.runners.orphan_child ALIAS INSTANCE SPEC_PICKLE. What the run started
outlives this process, as it outlives a daemon killed mid-run: the test then reaps it.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from runners.base import Runner, RunSpec


def main(alias: str, instance: str, spec_file: str) -> int:
    spec = pickle.loads(Path(spec_file).read_bytes())  # the test wrote it
    assert isinstance(spec, RunSpec)
    runner: Runner
    if alias == "local":
        from runners.local import LocalRunner

        runner = LocalRunner(instance=instance)
    elif alias == "slurm":
        from runners.slurm import SlurmRunner

        runner = SlurmRunner(instance=instance)
    else:
        from runners.docker import DockerRunner

        runner = DockerRunner(instance=instance)
    runner.run(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
