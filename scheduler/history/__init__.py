"""Test history: what schedctl learns from its own stored results.

- :mod:`.owners`: who owns a test (CODEOWNERS at the run's commit, GitHub precedence; or the
  config's ``owners`` map)
- :mod:`.flaky`: flaky verdicts with their evidence, from history alone (and a flip-rate baseline)
- :mod:`.stats`: per-test statistics for ``schedctl tests`` / ``schedctl test``
- :mod:`.quarantine`: quarantines (their expiry alerts: :mod:`scheduler.alerts.quarantine`)

Reruns themselves belong to the run: :mod:`scheduler.run.reruns`.

The store reads and writes the rows (:mod:`scheduler.store.history_queries`); the rules live here.
"""
