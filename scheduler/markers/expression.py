"""pytest's ``-m`` expression grammar, evaluated against a set of marker names.

    expr := and_expr ("or" and_expr)*      and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | "(" expr ")" | ident

The same grammar :func:`scheduler.config_validate.check_marker_expression` checks; an identifier
is true when the test carries a marker of that name (as pytest's ``-m`` matches).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from functools import lru_cache

_TOKEN_RE = re.compile(r"\s*(?:(\()|(\))|((?:\w|:|\+|-|\.|\[|\]|\\|/)+))")

Predicate = Callable[[Collection[str]], bool]


def tokens(text: str) -> list[str]:
    found: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            if not text[pos:].strip():
                break
            raise ValueError(f"invalid marker expression {text!r}: unexpected {text[pos]!r}")
        found.append(match.group(match.lastindex or 0))
        pos = match.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokens(text)
        self.pos = 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _fail(self, what: str) -> ValueError:
        return ValueError(f"invalid marker expression {self.text!r}: {what}")

    def parse(self) -> Predicate:
        pred = self._or()
        if self.pos != len(self.tokens):
            raise self._fail(f"unexpected {self.tokens[self.pos]!r}")
        return pred

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda m: any(p(m) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._peek() == "and":
            self.pos += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda m: all(p(m) for p in parts))

    def _not(self) -> Predicate:
        token = self._peek()
        if token is None:
            raise self._fail("ends too early")
        self.pos += 1
        if token == "not":
            inner = self._not()
            return lambda m: not inner(m)
        if token == "(":
            inner = self._or()
            if self._peek() != ")":
                raise self._fail("missing ')'")
            self.pos += 1
            return inner
        if token in (")", "and", "or"):
            raise self._fail(f"unexpected {token!r}")
        name = token
        return lambda m: name in m


@lru_cache(maxsize=64)
def compile_expression(text: str | None) -> Predicate:
    """A predicate on marker names; ``None`` (no ``-m``) selects everything."""
    if text is None:
        return lambda _m: True
    return _Parser(text).parse()
