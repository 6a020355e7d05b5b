"""The exception tree of schedctl.

Third-party exceptions (docker, pynvml, git, SQLAlchemy, requests) are translated into these at
one boundary each, so callers only ever catch what is drawn here::

    SchedctlError               exit_code 1 unless stated
    ├── UsageError              exit_code 2: bad input from a person
    │   ├── ConfigError         names the config file and every bad key path
    │   ├── UnknownTierError    a tier name that the config does not define
    │   ├── UnknownRunError     a run id that the store does not hold
    │   └── UnknownRefError     a git ref (branch, tag, SHA) that does not resolve
    ├── StoreError              the store (SQLite file or PostgreSQL) cannot be read or written
    │   └── StoreConnectError   exit_code 2: the configured database refuses the login or
    │                           cannot be reached (a config problem: URL, password, host)
    ├── SourceError             git could not fetch / check out the project (-> infra-error)
    ├── GpuError                NVML problems (-> gpu-unavailable)
    │   ├── NvmlUnavailable     no driver / library / device
    │   └── GpuLost             a GPU fell off the bus (Xid) or stopped answering
    ├── DaemonError             the daemon cannot start or cannot be reached
    │   └── DaemonLocked        another daemon holds the state dir
    ├── AlertError              an alert sink refused or could not be reached
    └── RunnerError             a runner could not run at all
        └── InfraError          the run could not happen (-> outcome infra-error)
            ├── ImageMissing    the configured image is not on the host (nothing is pulled)
            └── EngineDown      the container engine does not answer

This module is part of the kernel: runners import it, and it imports nothing of schedctl.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AlertError",
    "ConfigError",
    "DaemonError",
    "DaemonLocked",
    "EngineDown",
    "GpuError",
    "GpuLost",
    "ImageMissing",
    "InfraError",
    "NvmlUnavailable",
    "RunnerError",
    "SchedctlError",
    "SourceError",
    "StoreConnectError",
    "StoreError",
    "UnknownRefError",
    "UnknownRunError",
    "UnknownTierError",
    "UsageError",
]


class SchedctlError(Exception):
    """Base of every error schedctl raises on purpose."""

    exit_code: ClassVar[int] = 1


class UsageError(SchedctlError):
    """Bad input from a person: a config file, a tier name, a run id, a ref."""

    exit_code: ClassVar[int] = 2


class ConfigError(UsageError):
    """The configuration is invalid; ``problems`` holds one ``key.path: message`` per problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class UnknownTierError(UsageError):
    """A tier name that the configuration does not define."""

    def __init__(self, tier: str, known: list[str]) -> None:
        self.tier = tier
        super().__init__(f"unknown tier {tier!r}; configured tiers: {', '.join(known) or '(none)'}")


class UnknownRunError(UsageError):
    """A run id that the store does not hold."""


class UnknownRefError(UsageError):
    """A git ref (branch, tag or SHA) that does not resolve in the project's repository."""

    def __init__(self, ref: str, where: str) -> None:
        self.ref = ref
        super().__init__(f"unknown ref {ref!r} in {where}")


class StoreError(SchedctlError):
    """The SQLite state cannot be read or written."""


class StoreConnectError(StoreError):
    """The configured database refuses the login or cannot be reached (URL, password, host)."""

    exit_code: ClassVar[int] = 2


class SourceError(SchedctlError):
    """git could not fetch or check out the project under test."""


class GpuError(SchedctlError):
    """NVML could not tell which GPUs are free."""


class NvmlUnavailable(GpuError):
    """No NVIDIA driver, no NVML library, or no device."""


class GpuLost(GpuError):
    """A GPU fell off the bus (Xid) or stopped answering NVML."""


class DaemonError(SchedctlError):
    """The daemon cannot start or cannot be reached."""


class DaemonLocked(DaemonError):
    """Another daemon already runs on this state directory."""


class AlertError(SchedctlError):
    """An alert sink refused the delivery or could not be reached."""

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, permanent: bool = False
    ):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.permanent = permanent


class RunnerError(SchedctlError):
    """Base of runner errors."""


class InfraError(RunnerError):
    """The run could not be started or supervised."""


class ImageMissing(InfraError):
    """The configured container image is not present on the host."""


class EngineDown(InfraError):
    """The container engine does not answer."""
