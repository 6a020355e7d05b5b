"""A stand-in for torchrun: spawns two "ranks" in new sessions, as torchrun does, then misbehaves.

Usage: python fake_launcher.py MODE, with MODE one of silent, chatty, orphan, flood, ok.
"""

from __future__ import annotations

import faulthandler
import signal
import subprocess
import sys
import time


def stuck_in_rank() -> None:
    while True:
        time.sleep(3600)


def rank(stubborn: bool) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("rank up", flush=True)
    stuck_in_rank()


def main(mode: str) -> int:
    if mode.startswith("rank"):
        rank(stubborn=mode == "rank-stubborn")
    role = "rank-stubborn" if mode == "chatty" else "rank"
    ranks = [
        subprocess.Popen([sys.executable, __file__, role], start_new_session=True) for _ in range(2)
    ]
    print(f"launched {[r.pid for r in ranks]}", flush=True)
    if mode == "ok":
        for r in ranks:
            r.kill()
            r.wait()
        return 0
    if mode == "orphan":
        time.sleep(2.5)  # long enough for the supervisor to have seen the ranks
        return 0
    if mode == "flood":
        sys.stdout.write("x" * 100_000 + "\n")
        sys.stdout.flush()
    while True:
        if mode == "chatty":
            print("still alive", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
