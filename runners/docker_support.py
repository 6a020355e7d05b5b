"""Docker plumbing for :mod:`runners.docker`: the one error-mapping boundary, engine address and
availability, host-to-container path rewriting, the wait and log threads, and a started container
as the runner's supervision loop drives it (stop, pre-stop).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The docker SDK and requests (~145 ms to import) are imported where a client is built: a run in
# a prewarmed container (runners.docker_prewarm) starts its tests before they are loaded, and an
# exception can only be one of theirs once they are.
if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

from runners.base import PRE_STOP_MARK, BoundedLog, PreStop
from scheduler.kernel.errors import EngineDown, ImageMissing, InfraError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"

# PreStop.signal inside the container, in POSIX sh (no procps needed): the command is the init's
# child (parent 1); its children get the signal, one by one. Exec sessions have parent 0.
_SIGNAL_CHILDREN = (
    'parent() { read -r st 2>/dev/null < "/proc/$1/stat" || return 1; rest="${st##*) }"; '
    'set -- $rest; echo "$2"; }; '
    'cmd=" "; for d in /proc/[0-9]*; do p="${d#/proc/}"; '
    '[ "$(parent "$p")" = 1 ] && cmd="$cmd$p "; done; '
    'for d in /proc/[0-9]*; do p="${d#/proc/}"; case "$cmd" in *" $(parent "$p") "*) '
    'kill -s "$SIG" "$p" 2>/dev/null && echo "$p"; '
    '[ "$STAGGER" = 0 ] || sleep "$STAGGER";; esac; done'
)

# Every class in docker.errors is named here on purpose: tests/runners/test_docker.py fails when
# docker-py grows one, so someone decides how it maps. ImageNotFound -> ImageMissing, the rest ->
# InfraError (or EngineDown when the engine cannot be reached).
# fmt: off
KNOWN_DOCKER_ERRORS = frozenset({
    "APIError", "BuildError", "ContainerError", "ContextAlreadyExists", "ContextException",
    "ContextNotFound", "DeprecatedMethod", "DockerException", "ImageLoadError", "ImageNotFound",
    "InvalidArgument", "InvalidConfigFile", "InvalidRepository", "InvalidVersion",
    "MissingContextParameter", "NotFound", "NullResource", "StreamParseError", "TLSParameterError",
})
# fmt: on


def _third_party() -> tuple[type[BaseException], ...]:
    """docker-py's and requests' exception bases, of those already imported (an exception can
    only be theirs once they are). StreamParseError derives from RuntimeError, not
    DockerException."""
    found: list[type[BaseException]] = []
    errors = sys.modules.get("docker.errors")
    if errors is not None:
        found += [errors.DockerException, errors.StreamParseError]
    web = sys.modules.get("requests.exceptions")
    if web is not None:
        found.append(web.RequestException)
    return tuple(found)


def _unreachable() -> tuple[type[BaseException], ...]:
    web = sys.modules.get("requests.exceptions")
    return (web.ConnectionError, web.Timeout) if web is not None else ()


def _is_engine_down(exc: BaseException) -> bool:
    """A connection/timeout error, or docker-py's wrapper of one (raised by ``from_env()``)."""
    unreachable = _unreachable()
    errors = sys.modules.get("docker.errors")
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, unreachable):
            return True
        if (
            errors is not None
            and isinstance(seen, errors.DockerException)
            and "server API version" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _map_docker_errors(address: str) -> Iterator[None]:
    """Translate docker-py and requests exceptions into the runner's :class:`InfraError` tree."""
    try:
        yield
    except InfraError:
        raise
    except Exception as exc:
        if not isinstance(exc, _third_party()):
            raise
        if _is_engine_down(exc):
            raise EngineDown(f"docker engine not answering at {address}: {exc}") from exc
        errors = sys.modules.get("docker.errors")
        if errors is not None and isinstance(exc, errors.ImageNotFound):
            raise ImageMissing(f"docker: {exc}") from exc
        raise InfraError(f"docker: {exc}") from exc


def engine_address(client: docker.DockerClient | None) -> str:
    """Where ``client`` (or ``docker.from_env()`` when None) talks to, for error messages."""
    if client is None:
        return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    socket_path = getattr(getattr(client.api, "_custom_adapter", None), "socket_path", None)
    return f"unix://{socket_path}" if socket_path else str(client.api.base_url)


def docker_available(
    client: docker.DockerClient | None = None, timeout_s: float = 3.0
) -> tuple[bool, str]:
    """Whether a Docker engine answers a ping, with a reason either way (for ``runner: auto``)."""
    address = engine_address(client)
    try:
        with _map_docker_errors(address):
            import docker

            probe = client or docker.from_env(timeout=max(1, math.ceil(timeout_s)))
            try:
                probe.ping()
                version = probe.version().get("Version", "?")
            finally:
                if client is None:
                    probe.close()
    except InfraError as exc:
        return False, str(exc)
    return True, f"docker engine {version} at {address}"


def _overlaps(path: str, other: str) -> bool:
    """Whether one of two absolute container paths is the other or lies below it."""
    a, b = path.rstrip("/") + "/", other.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


class PathMap:
    """Rewrites host paths to container paths inside argv elements and env values.

    A host prefix is replaced where it starts the string or follows ``=``, ``:`` or ``,`` (so
    ``--junitxml=/host/run/junit.xml``, ``--cov-report=xml:/host/run/cov.xml`` and
    ``PYTHONPATH=/host/plugin:/x`` work) and is followed by the end, ``/``, ``:`` or ``,``. The
    longest prefix wins, and replaced text is never rewritten again. Paths outside the mounts stay.
    """

    def __init__(self, pairs: Mapping[Path, str]) -> None:
        self._targets: dict[str, str] = {}
        for host, target in pairs.items():
            for form in {str(host), str(host.resolve())}:
                self._targets[form.rstrip("/") or "/"] = target
        alternatives = "|".join(re.escape(h) for h in sorted(self._targets, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![^=:,])({alternatives})(?=$|[/:,])")

    def __call__(self, value: str) -> str:
        return self._pattern.sub(lambda m: self._targets[m.group(1)], value)


def _wait_in_thread(container: Container) -> threading.Event:
    """Block on ``container.wait()`` in a thread; the event is set when it returns or fails."""
    done = threading.Event()

    def wait() -> None:
        # A failed wait only ends the wait: the supervisor reloads the state and sees what happened.
        try:
            with contextlib.suppress(Exception):
                container.wait()
        finally:
            done.set()

    threading.Thread(target=wait, name="docker-wait", daemon=True).start()
    return done


class _LogPump:
    """Copies the container's output into a :class:`BoundedLog` from a thread.

    It reads an attach stream opened *before* the container starts (as ``docker run`` does), so
    no output is lost to a race and the first line arrives without a logs round trip.
    """

    def __init__(self, stream: Any, log: BoundedLog, clock: Callable[[], float]) -> None:
        self._stream = stream
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self.first_output_at: float | None = None
        self.last_output_at = clock()
        self._thread = threading.Thread(target=self._run, name="docker-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # a broken stream must not kill the run
            for chunk in self._stream:
                with self._lock:
                    if self._closed:
                        return
                    self.last_output_at = self._clock()
                    if self.first_output_at is None:
                        self.first_output_at = self.last_output_at
                    self._log.write(chunk)

    def note(self, data: bytes) -> None:
        """Write the runner's own lines into the log between the container's chunks."""
        with self._lock:
            if not self._closed:
                self._log.write(data)

    def finish(self, timeout_s: float) -> None:
        """Let the stream drain (it ends when the container stops), then stop writing."""
        self._thread.join(timeout_s)
        with self._lock:
            self._closed = True
        with contextlib.suppress(Exception):
            self._stream.close()


class _ContainerRun:
    """One started container, as :meth:`Runner._supervise` drives it (:class:`Supervised`)."""

    def __init__(
        self,
        container: Container,
        exited: threading.Event,
        pump: _LogPump,
        address: str,
        *,
        stop: Callable[[float], None],
        remap: Callable[[str], str],
        bound_s: float,
    ) -> None:
        self.container = container
        self.bound_s = max(bound_s, 1.0)
        self.exited = exited
        self.pump = pump
        self.address = address
        self._stop = stop
        self._remap = remap

    @property
    def last_output_at(self) -> float:
        return self.pump.last_output_at

    def wait(self, timeout_s: float) -> bool:
        return self.exited.wait(timeout_s)

    def stop(self, grace_s: float) -> None:
        self._stop(grace_s)

    def pre_stop(self, pre_stop: PreStop) -> None:
        """The signal, then the command, each a ``docker exec`` bounded by ``bound_s``.

        ``exec_run`` has no timeout of its own, so each runs in a thread that the stop ends.
        """
        what = []
        if pre_stop.signal is not None:
            what.append(f"{pre_stop.signal.name} to the command's children")
        command: list[str] = []
        if pre_stop.command:
            command = [self._remap(arg) for arg in pre_stop.command]
            what.append(f"exec {command}")
        self.pump.note(f"\n{PRE_STOP_MARK} {', then '.join(what) or 'nothing'}]\n".encode())
        if pre_stop.signal is not None:
            env = {
                "SIG": pre_stop.signal.name.removeprefix("SIG"),
                "STAGGER": f"{pre_stop.stagger_s:g}",
            }
            self._exec(["sh", "-c", _SIGNAL_CHILDREN], env, "signalled pids:\n")
        if command:
            self._exec(command, {}, "")

    def _exec(self, command: list[str], env: dict[str, str], head: str) -> None:
        outcome: list[str] = []

        def run() -> None:
            try:
                with _map_docker_errors(self.address):
                    code, output = self.container.exec_run(
                        command, stdout=True, stderr=True, environment=env
                    )
                outcome.append(f"exit {code}")
                if output:
                    self.pump.note(head.encode() + bytes(output))
            except InfraError as exc:
                outcome.append(f"failed: {exc}")

        worker = threading.Thread(target=run, name="docker-pre-stop", daemon=True)
        worker.start()
        worker.join(self.bound_s)
        done = outcome[0] if outcome else "still running"
        self.pump.note(f"[schedctl: pre-stop exec {done}]\n".encode())
