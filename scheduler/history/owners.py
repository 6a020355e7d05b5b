"""Who owns a test: a CODEOWNERS file (GitHub syntax and precedence) or the config's map.

GitHub's rules, as documented for CODEOWNERS: one ``pattern owner...`` per line, ``#`` starts a
comment, and the *last* matching pattern wins (a matching line without owners means "no owner").
Patterns follow gitignore: a leading ``/`` or a ``/`` inside anchors the pattern at the
repository root, otherwise it matches at any depth; ``*`` stays within one path segment, ``**``
crosses them; a pattern naming a directory owns everything below it, while one whose last
segment has a wildcard (``docs/*``) matches only at that level. ``!`` and ``[...]`` are not
supported by GitHub, so such lines never match. The file is looked up in ``.github/``, the root
and ``docs/``, first found wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# @user, @org/team or an e-mail address; anything else is dropped (it would reach alert text).
OWNER_RE = re.compile(r"^(@[A-Za-z0-9][\w.-]*(/[\w.-]+)?|[\w.+-]+@[\w-]+(\.[\w-]+)+)$")
CODEOWNERS_LOCATIONS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")
MAX_CODEOWNERS_BYTES = 3 * 1024 * 1024  # GitHub ignores larger files too


@dataclass(frozen=True)
class Rule:
    pattern: str
    owners: tuple[str, ...]
    regex: re.Pattern[str] | None

    def matches(self, path: str) -> bool:
        return self.regex is not None and self.regex.match(path) is not None


def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """A gitignore-style CODEOWNERS pattern as a regex over repository-relative paths."""
    if not pattern or pattern.startswith("!") or "[" in pattern:
        return None
    anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
    dir_only = pattern.endswith("/")
    body = pattern.strip("/")
    out: list[str] = []
    i = 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("/**", i) and i + 3 == len(body):
            out.append("(?:/.*)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        elif body[i] == "\\" and i + 1 < len(body):
            out.append(re.escape(body[i + 1]))
            i += 2
        else:
            out.append(re.escape(body[i]))
            i += 1
    prefix = "^" if anchored else "^(?:.*/)?"
    last = body.rsplit("/", 1)[-1]
    if dir_only:
        suffix = "/.*$"
    elif "*" in last and last != "**":
        suffix = "$"  # GitHub: `docs/*` owns docs/a.md, not docs/deep/a.md
    else:
        suffix = "(?:/.*)?$"  # a name owns the directory of that name and everything below
    return re.compile(prefix + "".join(out) + suffix)


def parse_codeowners(text: str) -> list[Rule]:
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # An unescaped " #" starts a trailing comment.
        line = re.split(r"(?<!\\)\s#", line, maxsplit=1)[0]
        parts = line.split()
        pattern, owners = parts[0], tuple(p for p in parts[1:] if OWNER_RE.match(p))
        rules.append(Rule(pattern, owners, compile_pattern(pattern)))
    return rules


def file_of(nodeid: str) -> str:
    """The file part of a pytest node id, relative to the repository root."""
    path = nodeid.split("::", 1)[0]
    return path[2:] if path.startswith("./") else path


class Owners:
    """Owners of paths: the config map first, then CODEOWNERS; last match wins in each."""

    def __init__(self, config_rules: Sequence[Rule] = (), codeowners: Sequence[Rule] = ()) -> None:
        self.config_rules = list(config_rules)
        self.codeowners = list(codeowners)

    @classmethod
    def load(cls, workdir: Path | None, mapping: Mapping[str, str | list[str]]) -> Owners:
        """Rules from ``mapping`` (the config's ``owners``) and the checkout's CODEOWNERS."""
        config_rules = [
            Rule(p, tuple(x for x in ([o] if isinstance(o, str) else o) if OWNER_RE.match(x)),
                 compile_pattern(p))
            for p, o in mapping.items()
        ]  # fmt: skip
        return cls(config_rules, read_codeowners(workdir) if workdir is not None else [])

    def of_path(self, path: str) -> tuple[str, ...]:
        for rules in (self.config_rules, self.codeowners):
            found = _last_match(rules, path)
            if found is not None:
                return found.owners
        return ()

    def of_test(self, nodeid: str) -> tuple[str, ...]:
        return self.of_path(file_of(nodeid))


def _last_match(rules: Iterable[Rule], path: str) -> Rule | None:
    found = None
    for rule in rules:
        if rule.matches(path):
            found = rule
    return found


def read_codeowners(workdir: Path) -> list[Rule]:
    for location in CODEOWNERS_LOCATIONS:
        path = workdir / location
        try:
            if path.is_file() and path.stat().st_size <= MAX_CODEOWNERS_BYTES:
                return parse_codeowners(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return []
