"""Polling in a worker thread with a deadline, and the choice of backend from the environment.

A hung NVML call (a wedged driver can block for minutes) must not block the scheduler: each poll
runs on a daemon worker thread and the caller gives up after ``timeout_s``. At most one poll is in
flight: concurrent callers share it, and while it stays hung later snapshots wait on that same
call instead of queueing new ones behind it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from scheduler.gpu.fake import ENV_VAR, FakeProbe
from scheduler.gpu.nvml import NvmlProbe
from scheduler.gpu.probe import GpuHealth, GpuProbe, HostGpuInfo
from scheduler.kernel.errors import GpuError

__all__ = ["TimedProbe", "build_probe", "probe_from_env"]


class TimedProbe:
    """Wraps a probe so that :meth:`snapshot` (and :meth:`health`) return or raise within
    ``timeout_s``."""

    def __init__(self, inner: GpuProbe, timeout_s: float) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[Any]] = {}

    def snapshot(self) -> HostGpuInfo:
        result: HostGpuInfo = self._call("snapshot", self.inner.snapshot)
        return result

    def health(self) -> tuple[GpuHealth, ...]:
        """The inner probe's health read; a probe without one reports nothing."""
        read = getattr(self.inner, "health", None)
        if read is None:
            return ()
        result: tuple[GpuHealth, ...] = self._call("health", read)
        return result

    def close(self) -> None:
        """Close the inner probe, unless a hung call still holds it (then it is abandoned)."""
        with self._lock:
            hung = any(not f.done() for f in self._inflight.values())
        if not hung:
            self.inner.close()

    def _call(self, name: str, fn: Callable[[], Any]) -> Any:
        with self._lock:
            future = self._inflight.get(name)
            if future is None or future.done():
                future = self._start(fn)
                self._inflight[name] = future
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            raise GpuError(
                f"NVML call timed out after {self.timeout_s:g}s (driver hung?)"
            ) from None

    def _start(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)

        # A fresh daemon thread per poll: a thread stuck in a hung driver call is abandoned, and
        # being a daemon it cannot keep the process alive at exit.
        threading.Thread(target=work, name="gpu-probe", daemon=True).start()
        return future


def probe_from_env(environ: Mapping[str, str] | None = None) -> GpuProbe:
    """:class:`FakeProbe` when ``SCHEDCTL_FAKE_GPUS`` names a file, else :class:`NvmlProbe`."""
    environ = os.environ if environ is None else environ
    fake = environ.get(ENV_VAR)
    if fake:
        return FakeProbe(fake)
    return NvmlProbe()


def build_probe(timeout_s: float, environ: Mapping[str, str] | None = None) -> TimedProbe:
    """The probe the daemon and CLI use: chosen from the environment, bounded by ``timeout_s``."""
    return TimedProbe(probe_from_env(environ), timeout_s)
