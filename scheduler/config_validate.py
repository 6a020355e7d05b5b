"""Value checks for configuration (and API) fields that pydantic's types cannot express.

Each function returns the value (normalised) or raises ``ValueError`` with a message that the
caller prefixes with the key path: ``tiers.gpu.memory: invalid size 'lots' ...``.
"""

from __future__ import annotations

import grp
import math
import posixpath
import pwd
import re
from datetime import timezone
from pathlib import Path

KIB = 1024
MIB = KIB * KIB
GIB = MIB * KIB
TIB = GIB * KIB
WEEK_S = 7 * 86400.0
MAX_DURATION_S = 366 * 86400.0
"""No duration in the file means more than a year (retention, alert TTLs); timeouts: a week."""

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}


def parse_size(value: object) -> int:
    """Bytes from ``1073741824``, ``"512m"``, ``"4g"``, ``"4GB"``; no fractions, no negatives."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"invalid size {value!r}: expected bytes or a number with k/m/g/t")
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = _SIZE_RE.match(value)
        if not match:
            raise ValueError(f"invalid size {value!r}: expected bytes or a number with k/m/g/t")
        number, unit = int(match.group(1)), match.group(2).lower()
    if number < 0:
        raise ValueError(f"size must not be negative, got {value!r}")
    return number * _SIZE_UNIT[unit]


def bounded_size(value: object, *, low: int, high: int, what: str) -> int:
    size = parse_size(value)
    if not low <= size <= high:
        raise ValueError(f"{what} {value!r} is out of range {_human(low)}..{_human(high)}")
    return size


def docker_size(size: int) -> str:
    """``size`` bytes as the Docker SDK spells it (it knows b/k/m/g, not t)."""
    for unit, factor in (("g", GIB), ("m", MIB), ("k", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}b"


def _human(size: int) -> str:
    return docker_size(size)


def check_duration(seconds: float, *, high: float, original: object) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"duration must be finite, got {original!r}")
    if seconds > high:
        limit = f"{high / 86400:g} days"
        raise ValueError(f"duration {original!r} is longer than the limit of {limit}")
    return seconds


# Paths a container's bind mount may not cover: schedctl's own mounts, the engine, the kernel.
_RESERVED_TARGETS = ("/work", "/proc", "/sys", "/dev")
_FORBIDDEN_SOURCES = ("/proc", "/sys", "/dev", "/var/run/docker.sock", "/run/docker.sock")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_mount(host: str, target: str) -> None:
    """A read-only bind ``host -> target`` that cannot shadow schedctl's or expose the engine."""
    if not (host.startswith("/") and target.startswith("/")):
        raise ValueError(f"mount {host!r}: {target!r}: both paths must be absolute")
    source, inside = posixpath.normpath(host), posixpath.normpath(target)
    if inside == "/" or any(_under(inside, root) for root in _RESERVED_TARGETS):
        raise ValueError(
            f"mount {host!r}: target {target!r} would shadow a reserved path "
            "(/, /work/*, /proc, /sys and /dev belong to schedctl or the kernel)"
        )
    if (
        source == "/"
        or any(_under(source, root) for root in _FORBIDDEN_SOURCES)
        or posixpath.basename(source) == "docker.sock"
    ):
        raise ValueError(
            f"mount {host!r}: the host's root, /proc, /sys, /dev and the docker socket "
            "never go into a test container"
        )


_VIRTUAL_FS = ("/proc", "/sys", "/dev")


def check_state_dir(path: Path) -> Path:
    """``state_dir`` must live on a real filesystem (the database and run dirs persist there)."""
    text = posixpath.normpath(str(path))
    if any(_under(text, root) for root in _VIRTUAL_FS):
        raise ValueError(f"{path} is on a kernel filesystem (/proc, /sys, /dev); pick a real one")
    return path


SOCKET_NAME_MAX = 80
"""``sun_path`` holds 107 bytes; a long directory is reached through ``/proc/self/fd/N/``, which
leaves this much for the socket's own name."""


def check_socket_path(path: Path) -> Path:
    name = len(path.name.encode())
    if name == 0 or name > SOCKET_NAME_MAX:
        raise ValueError(
            f"socket file name {path.name!r} is {name} bytes; at most {SOCKET_NAME_MAX} fit "
            "a unix socket address"
        )
    if len(str(path).encode()) > 4095 or any(len(p.encode()) > 255 for p in path.parts):
        raise ValueError(f"socket path is too long for this filesystem ({len(str(path))} chars)")
    return path


_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")


def check_image(value: str) -> str:
    """An image reference, or ``@recipe`` (a build of an ``images:`` recipe, checked later)."""
    if value.startswith("@") and re.fullmatch(r"@[a-z][a-z0-9_-]{0,31}", value):
        return value
    if not _IMAGE_RE.fullmatch(value):
        raise ValueError(
            f"invalid image reference {value!r}: expected NAME[:TAG][@DIGEST], no spaces"
        )
    return value


# pytest's -m grammar (src/_pytest/mark/expression.py): or/and/not, parentheses, identifiers.
_TOKEN_RE = re.compile(r"\s*(?:(\()|(\))|((?:\w|:|\+|-|\.|\[|\]|\\|/)+))")
MARKERS_MAX = 1000


def check_marker_expression(value: str) -> str:
    """``value`` if it is a pytest ``-m`` expression; never empty, never an option."""
    if not value.strip():
        raise ValueError("empty marker expression; omit the key to select every test")
    if len(value) > MARKERS_MAX:
        raise ValueError(f"marker expression longer than {MARKERS_MAX} characters")
    tokens: list[str] = []
    pos = 0
    while pos < len(value):
        match = _TOKEN_RE.match(value, pos)
        if not match or match.end() == pos:
            if not value[pos:].strip():
                break
            raise ValueError(f"invalid marker expression {value!r}: unexpected {value[pos]!r}")
        tokens.append(match.group(match.lastindex or 0))
        pos = match.end()
    parser = _MarkerParser(tokens, value)
    parser.expression()
    if parser.pos != len(tokens):
        raise ValueError(f"invalid marker expression {value!r}: unexpected {tokens[parser.pos]!r}")
    return value


class _MarkerParser:
    def __init__(self, tokens: list[str], text: str) -> None:
        self.tokens, self.text, self.pos, self.depth = tokens, text, 0, 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _fail(self, what: str) -> ValueError:
        return ValueError(f"invalid marker expression {self.text!r}: {what}")

    def expression(self) -> None:
        self.conjunction()
        while self._peek() == "or":
            self.pos += 1
            self.conjunction()

    def conjunction(self) -> None:
        self.negation()
        while self._peek() == "and":
            self.pos += 1
            self.negation()

    def negation(self) -> None:
        token = self._peek()
        if token is None:
            raise self._fail("ends too early")
        self.pos += 1
        if token == "not":
            self.negation()
        elif token == "(":
            self.depth += 1
            if self.depth > 32:
                raise self._fail("nested too deeply")
            self.expression()
            if self._peek() != ")":
                raise self._fail("missing ')'")
            self.pos += 1
            self.depth -= 1
        elif token in (")", "and", "or") or token.startswith("-"):
            raise self._fail(f"unexpected {token!r}")


LEAP_YEAR = 2028


def check_cron_fires(expr: str) -> str:
    """Refuse a valid cron expression that never fires (``0 0 31 2 *``).

    Checked per month of a leap year against the expression's own fields
    (:meth:`~scheduler.daemon.crontab.CrontabSchedule.has_a_date`): APScheduler itself would
    search up to year 9999 (seconds) before answering "never".
    """
    from scheduler.daemon.crontab import CrontabSchedule

    if not CrontabSchedule(expr, timezone.utc).has_a_date(LEAP_YEAR):
        raise ValueError(f"cron {expr!r} never fires (no such date)")
    return expr


def foreign_uid(uid: int) -> int:
    """A container uid must name no host account: files a container leaves behind (its run dir)
    would otherwise belong to that person, and a process escaping the container would be them."""
    try:
        account = pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid
    raise ValueError(
        f"uid {uid} is the host account {account!r}; containers must run as an id that no host "
        "account has (default 64000)"
    )


def foreign_gid(gid: int) -> int:
    """As :func:`foreign_uid`, for the container's gid against the host's groups."""
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        return gid
    raise ValueError(
        f"gid {gid} is the host group {group!r}; containers must run as a group id that no host "
        "group has (default 64000)"
    )


def local_user(name: str) -> str:
    """``local.user`` names an unprivileged account of this host."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ValueError(f"{name!r} is no account on this host") from None
    if uid == 0:
        raise ValueError(f"{name!r} is root: name an unprivileged account (e.g. nobody)")
    return name
