"""Idle daemon memory: VmRSS of ``schedctl daemon`` once started, vs a bare interpreter.

The daemon runs as a user starts it (this tree's code, a two-tier local config, metrics on,
no alert sinks) until it answers on its socket, idles a few seconds, and its VmRSS is read from
/proc. Baseline: a bare ``python -c`` of the same interpreter. Target: <= 60 MB (MiB here).

    python bench/bench_daemon_rss.py [--idle 5]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import SCHEDCTL, figure, local_config, tree_env  # noqa: E402

TARGET_MIB = 60.0
METRICS_ON = "daemon:\n  metrics_address: 127.0.0.1:0\n"
RSS = (
    "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmRSS')][0])"
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    env = tree_env()
    bare = int(subprocess.run([sys.executable, "-c", RSS], capture_output=True, text=True,
                              check=True, env=env).stdout)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        config = Path(tmp) / "config.yaml"
        config.write_text(local_config(state, METRICS_ON))
        daemon = subprocess.Popen(
            [*SCHEDCTL, "--config", str(config), "daemon"],
            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert daemon.stderr is not None
        started = threading.Event()
        ended = threading.Event()
        tail: list[str] = []

        def watch() -> None:
            assert daemon.stderr is not None
            for line in daemon.stderr:
                tail[:] = [*tail[-9:], line.rstrip()[:300]]
                if "daemon_started" in line:
                    started.set()
            ended.set()  # the daemon closed its stderr: it exited

        threading.Thread(target=watch, daemon=True).start()
        try:
            deadline = time.monotonic() + 120
            while not started.wait(0.2):
                if ended.is_set() or time.monotonic() > deadline:
                    # e.g. the default web port 9465 held by another daemon on this machine
                    why = "exited" if ended.is_set() else "did not start within 120 s"
                    raise SystemExit(f"the daemon {why}; its last lines:\n" + "\n".join(tail))
            threading.Event().wait(args.idle)
            ours = rss_kib(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
    figure(
        "idle daemon VmRSS",
        f"{ours / 1024:.1f} MiB",
        f"{bare / 1024:.1f} MiB",
        f"<= {TARGET_MIB:.0f} MiB",
        ours / 1024 <= TARGET_MIB,
    )


if __name__ == "__main__":
    main()
