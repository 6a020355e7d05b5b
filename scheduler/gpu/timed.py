"""Polling in a worker thread with a deadline, and the choice of backend from the environment.

A hung NVML call (a wedged driver can block for minutes) must not block the scheduler: each poll
runs on a daemon worker thread and the caller gives up after ``timeout_s``. At most one poll is in
flight: concurrent callers share it, and while it stays hung later snapshots wait on that same
call instead of queueing new ones behind it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from scheduler.gpu.fake import ENV_VAR, FakeProbe
from scheduler.gpu.nvml import NvmlProbe
from scheduler.gpu.probe import GpuProbe, HostGpuInfo
from scheduler.kernel.errors import GpuError

__all__ = ["TimedProbe", "build_probe", "probe_from_env"]


class TimedProbe:
    """Wraps a probe so that :meth:`snapshot` returns or raises within ``timeout_s``."""

    def __init__(self, inner: GpuProbe, timeout_s: float) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._inflight: Future[HostGpuInfo] | None = None

    def snapshot(self) -> HostGpuInfo:
        with self._lock:
            future = self._inflight
            if future is None or future.done():
                future = self._start()
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            raise GpuError(
                f"NVML call timed out after {self.timeout_s:g}s (driver hung?)"
            ) from None

    def close(self) -> None:
        """Close the inner probe, unless a hung call still holds it (then it is abandoned)."""
        with self._lock:
            hung = self._inflight is not None and not self._inflight.done()
        if not hung:
            self.inner.close()

    def _start(self) -> Future[HostGpuInfo]:
        future: Future[HostGpuInfo] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self.inner.snapshot())
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)

        # A fresh daemon thread per poll: a thread stuck in a hung driver call is abandoned, and
        # being a daemon it cannot keep the process alive at exit.
        threading.Thread(target=work, name="gpu-probe", daemon=True).start()
        self._inflight = future
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
