"""Secrets for alert sinks (tokens, webhook secrets, Slack URLs): from env or files, never logged.

Lookup order for a secret named by an env var ``NAME`` and an optional file:

1. the environment variable ``NAME`` when it is set and not empty;
2. the configured file; a relative path resolves against ``$CREDENTIALS_DIRECTORY`` (systemd
   ``LoadCredential=``) when that is set, else against the working directory;
3. ``$CREDENTIALS_DIRECTORY/NAME`` (so ``LoadCredential=SCHEDCTL_GITHUB_TOKEN:/etc/...`` works
   without any file key in the config).

Values are wrapped in :class:`Secret`, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from scheduler.kernel.errors import AlertError

CREDENTIALS_ENV: Final = "CREDENTIALS_DIRECTORY"


class Secret:
    """A secret string that hides itself from ``repr``, ``str``, f-strings and log renderers."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plain value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def load_secret(
    env_name: str | None,
    file: str | None,
    *,
    env: Mapping[str, str],
) -> Secret | None:
    """The secret from ``env_name``, ``file`` or the credentials directory; ``None`` when unset.

    Raises:
        AlertError: a configured file cannot be read or is empty (permanent: a config problem).
    """
    if env_name and env.get(env_name):
        return Secret(env[env_name].strip())
    creds = env.get(CREDENTIALS_ENV)
    if file:
        path = Path(file).expanduser()
        if not path.is_absolute() and creds:
            path = Path(creds) / path
        return Secret(_read(path))
    if env_name and creds:
        candidate = Path(creds) / env_name
        if candidate.is_file():
            return Secret(_read(candidate))
    return None


def _read(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AlertError(
            f"cannot read secret file {path}: {exc.strerror or type(exc).__name__}",
            permanent=True,
        ) from None
    if not value:
        raise AlertError(f"secret file {path} is empty", permanent=True)
    return value
