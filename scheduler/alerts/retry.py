"""Retry timing: exponential backoff with jitter, and the server's own ``Retry-After``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

MAX_SERVER_DELAY_S = 24 * 3600.0


@dataclass(frozen=True)
class Backoff:
    """``base * factor**(attempt-1)`` capped at ``max_s``, with "equal jitter" (half fixed, half
    random) so that many alerts failing together do not retry in lock-step."""

    base_s: float = 5.0
    factor: float = 2.0
    max_s: float = 900.0
    max_attempts: int = 20
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after_s is not None:
            # The server knows best; a little jitter only spreads a burst of retries.
            wait = min(max(retry_after_s, 0.0), MAX_SERVER_DELAY_S)
            return wait + self.rng.uniform(0.0, min(1.0, wait * 0.1))
        ceiling = min(self.max_s, self.base_s * self.factor ** max(attempt - 1, 0))
        return ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or HTTP date); ``None`` if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - now).total_seconds(), 0.0)


def parse_reset_epoch(value: str | None, now: datetime) -> float | None:
    """Seconds until GitHub's ``x-ratelimit-reset`` (epoch seconds); ``None`` if unusable."""
    if value is None:
        return None
    try:
        reset = float(value.strip())
    except ValueError:
        return None
    return max(reset - now.timestamp(), 0.0) + 1.0
