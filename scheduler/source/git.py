"""The one boundary between schedctl and the git CLI (and the files git leaves behind).

Every git call goes through :class:`Git`: argument lists, never a shell; a scrubbed environment
(no prompts, C locale, no ``GIT_DIR`` inherited from a hook); a timeout that kills git's whole
process group, so a hung ``git-remote-https`` or ``ssh`` cannot keep the pipes open. Subprocess
and filesystem errors become :class:`~scheduler.kernel.errors.SourceError` in :func:`boundary` only.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from scheduler.kernel.errors import SourceError

__all__ = [
    "Credentials",
    "Git",
    "GitResult",
    "RepoLock",
    "boundary",
    "redact_url",
    "remove_tree",
    "split_credentials",
]

# Variables that would point git at some other repository (set inside git hooks, for instance).
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


def redact_url(url: str) -> str:
    """``https://user:token@host/x`` -> ``https://***@host/x``; anything else unchanged."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc.rsplit("@", 1)[0], "***", 1)


@dataclass(frozen=True)
class Credentials:
    """A user name and password taken out of a repository URL; they never reach the disk."""

    username: str
    password: str = field(repr=False)


_USER_ENV = "SCHEDCTL_GIT_USERNAME"
_PASSWORD_ENV = "SCHEDCTL_GIT_PASSWORD"
# A credential helper inline in the git process's environment (GIT_CONFIG_*, as `-c` would, but
# off the command line that `ps` shows): it answers `get` from two variables of that same
# environment. The empty helper first drops any helper of the host's git config.
_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_USER_ENV}" "${_PASSWORD_ENV}"; }}; f'
)


def split_credentials(url: str) -> tuple[str, Credentials | None]:
    """``https://user:token@host/x`` -> ``("https://host/x", Credentials("user", "token"))``.

    Only http(s) URLs with a password are split; any other URL comes back as it is. The clean URL
    is what git stores (``remote.origin.url``, ``FETCH_HEAD``); the credentials go to git only
    through :func:`credential_env`.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return url, None
    host = parts.netloc.rsplit("@", 1)[1]
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, Credentials(unquote(parts.username or ""), unquote(parts.password))


def credential_env(credentials: Credentials) -> dict[str, str]:
    """Environment entries that make git answer its credential prompt with ``credentials``."""
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": _HELPER,
        _USER_ENV: credentials.username,
        _PASSWORD_ENV: credentials.password,
    }


def git_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment every git call runs with: never prompt, never localise, own repo only."""
    env = {k: v for k, v in base.items() if k not in _REPO_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GCM_INTERACTIVE="never")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


@contextmanager
def boundary(what: str, secret_url: str | None = None) -> Iterator[None]:
    """Turn subprocess and OS errors raised inside into :class:`SourceError` naming ``what``."""
    try:
        yield
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"{what}: timed out after {exc.timeout:g} s") from exc
    except subprocess.CalledProcessError as exc:
        raise SourceError(f"{what}: exit {exc.returncode}") from exc
    except OSError as exc:
        message = str(exc)
        if secret_url:
            message = message.replace(secret_url, redact_url(secret_url))
        raise SourceError(f"{what}: {message}") from exc


@dataclass(frozen=True)
class GitResult:
    """What one git call printed, and how it exited."""

    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def reason(self) -> str:
        """The last non-empty line of stderr (git puts the cause there), or the exit code."""
        lines = [line.strip() for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit {self.code}"


class Git:
    """Runs the git CLI with a timeout on every call; see the module docstring."""

    def __init__(
        self,
        executable: str = "git",
        *,
        secret_url: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self._executable = executable
        self._secret_url = secret_url
        self._password = credentials.password if credentials else ""
        self._env = git_env(os.environ)
        if credentials is not None:
            self._env.update(credential_env(credentials))

    def run(
        self, args: Sequence[str], *, timeout: float, what: str, check: bool = True
    ) -> GitResult:
        """Run ``git ARGS``; with ``check`` a non-zero exit raises SourceError with git's reason."""
        with boundary(what, self._secret_url):
            result = self._invoke(args, timeout)
        result = GitResult(result.code, result.out, self._redact(result.err))
        if check and not result.ok:
            raise SourceError(f"{what}: {result.reason()}")
        return result

    def run_together(
        self, calls: Sequence[Sequence[str]], *, timeout: float, what: str
    ) -> list[GitResult]:
        """Run several read-only git calls at once (one process each) and wait for them all;
        their results in order, exit codes unchecked. Two short reads take as long as one."""
        with boundary(what, self._secret_url):
            procs = [self._start(args) for args in calls]
            try:
                results = [self._collect(proc, timeout) for proc in procs]
            finally:
                for proc in procs:
                    if proc.returncode is None:
                        self._kill(proc)
        return [GitResult(r.code, r.out, self._redact(r.err)) for r in results]

    def _redact(self, text: str) -> str:
        if self._secret_url:
            text = text.replace(self._secret_url, redact_url(self._secret_url))
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _invoke(self, args: Sequence[str], timeout: float) -> GitResult:
        return self._collect(self._start(args), timeout)

    def _start(self, args: Sequence[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self._executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )

    @staticmethod
    def _collect(proc: subprocess.Popen[str], timeout: float) -> GitResult:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            Git._kill(proc)
            raise
        return GitResult(proc.returncode, out, err)

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        """Kill the group: git's helpers (ssh, remote-https) would otherwise hold the pipes."""
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


class RepoLock:
    """Serialises git metadata changes: a thread lock plus ``flock`` for other processes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread_lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            with boundary(f"lock {self._path}"):
                self._path.parent.mkdir(parents=True, exist_ok=True)
                handle = self._path.open("a")
            try:
                with boundary(f"lock {self._path}"):
                    fcntl.flock(handle, fcntl.LOCK_EX)
                yield
            finally:
                handle.close()  # closing the descriptor releases the flock


def remove_tree(path: Path) -> None:
    """Delete ``path`` recursively, even where a test run left read-only directories behind."""
    with boundary(f"remove {path}"):
        if path.is_symlink() or path.is_file():
            path.unlink()
            return
        if not path.exists():
            return
        try:
            shutil.rmtree(path)
        except PermissionError:
            for dirpath, _dirs, _files in os.walk(path):
                os.chmod(dirpath, 0o700)
            shutil.rmtree(path)
