"""Counter and histogram tallies: cumulative buckets, label and name checks."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from scheduler.metrics.families import CounterTally, HistogramTally


class TestTallies:
    def test_histogram_buckets_are_cumulative_with_sum(self) -> None:
        """Observations land in the first bucket whose bound is >= the value; +Inf counts all."""
        hist = HistogramTally("x_seconds", "doc", ("tier",), [1, 10])
        for value in (0.5, 1.0, 5, 50):
            hist.observe(("a",), value)
        registry = CollectorRegistry()
        registry.register(type("C", (), {"collect": lambda self: [hist.family()]})())
        get = registry.get_sample_value
        assert get("x_seconds_bucket", {"tier": "a", "le": "1.0"}) == 2
        assert get("x_seconds_bucket", {"tier": "a", "le": "10.0"}) == 3
        assert get("x_seconds_bucket", {"tier": "a", "le": "+Inf"}) == 4
        assert get("x_seconds_count", {"tier": "a"}) == 4
        assert get("x_seconds_sum", {"tier": "a"}) == 56.5

    def test_counter_rejects_bad_names_labels_and_decrements(self) -> None:
        """Counters end in _total, take exactly their label names and never go down."""
        with pytest.raises(ValueError, match="_total"):
            CounterTally("runs", "doc", ())
        counter = CounterTally("runs_total", "doc", ("tier",))
        with pytest.raises(ValueError, match="expected labels"):
            counter.inc(("a", "b"))
        with pytest.raises(ValueError, match="only go up"):
            counter.inc(("a",), -1)
