"""Thread-safe labelled counters and histograms that render as metric families.

prometheus_client's ``Counter``/``Histogram`` also export ``*_created`` series and register
themselves; these tallies do neither: a collector owns them and turns them into
``CounterMetricFamily``/``HistogramMetricFamily`` objects when scraped. A tally that did not change
since the last scrape returns the *same* family object, which lets the HTTP layer reuse its
rendered text (most series of a daemon are counters that rarely move).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # prometheus_client is imported at the first scrape
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

__all__ = ["CounterTally", "HistogramTally", "Labels"]

Labels = tuple[str, ...]


class CounterTally:
    """A monotonically increasing value per label set."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()
        self._version = 0
        self._cached: tuple[int, CounterMetricFamily] | None = None

    def declare(self, labels: Iterable[Labels]) -> None:
        """Export these label sets as 0 before their first increment, so ``increase()`` sees it."""
        with self._lock:
            for key in labels:
                self._values.setdefault(self._check(key), 0.0)
            self._version += 1

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        key = self._check(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount
            self._version += 1

    def value(self, labels: Labels) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def family(self) -> CounterMetricFamily:
        with self._lock:
            if self._cached is not None and self._cached[0] == self._version:
                return self._cached[1]
            version, items = self._version, sorted(self._values.items())
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in items:
            family.add_metric(list(key), value)
        with self._lock:
            self._cached = (version, family)
        return family

    def _check(self, labels: Labels) -> Labels:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
        return labels


class HistogramTally:
    """Cumulative bucket counts and a sum per label set."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct finite bounds")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(bounds)
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}
        self._lock = threading.Lock()
        self._version = 0
        self._cached: tuple[int, HistogramMetricFamily] | None = None

    def observe(self, labels: Labels, value: float) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
        # Index of the first bound >= value; len(bounds) is the +Inf bucket.
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            counts = self._counts.setdefault(labels, [0] * (len(self.bounds) + 1))
            counts[index] += 1
            self._sums[labels] = self._sums.get(labels, 0.0) + value
            self._version += 1

    def count(self, labels: Labels) -> int:
        with self._lock:
            return sum(self._counts.get(labels, ()))

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            if self._cached is not None and self._cached[0] == self._version:
                return self._cached[1]
            version = self._version
            items = sorted(
                (key, list(counts), self._sums[key]) for key, counts in self._counts.items()
            )
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [repr(b) for b in self.bounds] + ["+Inf"]
        for key, counts, total in items:
            cumulative: list[tuple[str, float]] = []
            running = 0
            for edge, count in zip(edges, counts, strict=True):
                running += count
                cumulative.append((edge, float(running)))
            family.add_metric(list(key), cumulative, total)
        with self._lock:
            self._cached = (version, family)
        return family
