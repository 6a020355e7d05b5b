"""systemd's notify protocol in a few lines: READY, WATCHDOG, STOPPING and STATUS datagrams.

No dependency: a message is one datagram of ``KEY=value`` lines sent to ``$NOTIFY_SOCKET``
(a path, or an abstract socket written with a leading ``@``). Outside systemd the variable is
unset and every call is a no-op, so the daemon never needs to know how it was started.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("schedctl.sdnotify")


class Notifier:
    """Sends notify messages to one socket; silently does nothing when there is none."""

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if env is None else env).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram; ``False`` (logged once per call) when it could not be delivered."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), message=lines[0] if lines else "")
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, or ``None`` when systemd set no watchdog for us.

    ``$WATCHDOG_PID``, when present, must be our pid: the variables may have leaked from a parent.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class Watchdog:
    """Pings ``WATCHDOG=1`` every interval while ``healthy()`` holds.

    An unhealthy daemon simply stops pinging: systemd then kills it and ``Restart=on-failure``
    starts a fresh one, which is the recovery we want for a wedged scheduler thread or a store
    that can no longer be written.
    """

    def __init__(self, notifier: Notifier, interval_s: float, healthy: Callable[[], bool]) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.healthy = healthy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        warned = False
        while not self._stop.is_set():
            try:
                ok = self.healthy()
            except Exception:
                log.exception("watchdog_health_check_crashed")
                ok = False
            if ok:
                self.notifier.watchdog()
                warned = False
            elif not warned:
                log.error("watchdog_unhealthy", detail="not pinging systemd; expect a restart")
                warned = True
            self._stop.wait(self.interval_s)
