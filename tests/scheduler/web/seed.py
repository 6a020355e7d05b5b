"""A small store for the web tests: a red tier, a green tier, a running run with a live log,
a flaky test, a quarantined test, and test ids that try to inject markup and template code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store
from scheduler.store.history_queries import QuarantineRow
from scheduler.store.records import TestResultRow

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
EVIL = "tests/test_evil.py::test_x[<script>window.__pwned=1</script>]"
TEMPLATE = "tests/test_evil.py::test_y[{{ 7*7 }}]"
BROKEN = "tests/test_core.py::test_breaks"
FLAKY = "tests/test_net.py::test_sometimes"
QUARANTINED = "tests/test_gpu.py::test_quarantined"
STABLE = [f"tests/test_core.py::test_ok_{i}" for i in range(8)]


def _sha(k: int) -> str:
    return (f"{k:x}c0ffee" * 40)[:40]


@dataclass
class Seeded:
    store: Store
    red_run: int
    green_run: int
    live_run: int
    live_log: Path
    run_dirs: Path


def seed(store: Store, run_dirs: Path) -> Seeded:
    """Ten hourly runs (green, then red from run 8 at a new commit) and three daily runs."""
    last: dict[str, int] = {}
    for n in range(10):
        broken = n >= 7
        when = NOW - timedelta(hours=10 - n)
        run_dir = run_dirs / f"hourly-{n}"
        run_dir.mkdir(parents=True)
        (run_dir / "output.log").write_text(f"run {n}\n<b>not bold</b>\n")
        (run_dir / "junit.xml").write_text('<testsuite name="s"><script>x</script></testsuite>')
        run_id = store.create_run(tier="hourly", trigger="schedule", queued_at=when,
                                  run_dir=str(run_dir))  # fmt: skip
        assert run_id is not None
        rows = [TestResultRow(s, "passed", 0.01 * (i + 1), peak_rss_bytes=(i + 1) << 20)
                for i, s in enumerate(STABLE)]  # fmt: skip
        rows.append(TestResultRow(EVIL, "failed", 0.5, message="AssertionError: <img src=x "
                                  "onerror=window.__pwned=2> {{ 7*7 }}"))  # fmt: skip
        rows.append(TestResultRow(TEMPLATE, "passed", 0.2))
        if n % 3 == 1:
            rows.append(TestResultRow(FLAKY, "failed", 1.0, message="timeout", final=False))
            rows.append(TestResultRow(FLAKY, "flaky", 1.1, attempt=1))
        else:
            rows.append(TestResultRow(FLAKY, "passed", 1.0))
        rows.append(TestResultRow(BROKEN, "failed" if broken else "passed", 2.0 + n / 10,
                                  message="assert 1 == 2\n  where 1 = f()" if broken else None,
                                  peak_rss_bytes=(50 + n) << 20))  # fmt: skip
        rows.append(TestResultRow(QUARANTINED, "failed", 0.3, message="CUDA error"))
        outcome = Outcome.FAILED if broken else Outcome.PASSED
        store.finish_run(run_id, rows, outcome=outcome, sha=_sha(n // 2 + (5 if broken else 0)),
                         reason=f"{sum(r.outcome == 'failed' and r.final for r in rows)} tests "
                         "failed <i>really</i>", started_at=when,
                         finished_at=when + timedelta(minutes=5), duration_s=300.0 + n * 7,
                         runner="docker", host="gpu-box", image="schedctl-test:bookworm",
                         image_id="sha256:" + "ab" * 32, exit_code=1,
                         gpus=[{"index": 0, "name": "H100", "uuid": "GPU-0"}],
                         counts={"passed": 9, "failed": 3})  # fmt: skip
        last["hourly"] = run_id
    for n in range(3):
        when = NOW - timedelta(days=3 - n)
        run_id = store.create_run(tier="daily", trigger="schedule", queued_at=when)
        assert run_id is not None
        store.finish_run(run_id, [TestResultRow(s, "passed", 0.02) for s in STABLE],
                         outcome=Outcome.PASSED, sha=_sha(20 + n), started_at=when,
                         finished_at=when + timedelta(minutes=9), duration_s=540.0 + n,
                         counts={"passed": 8})  # fmt: skip
        last["daily"] = run_id
    store.quarantine_add(
        QuarantineRow(QUARANTINED, "GPU driver <b>bug</b>", NOW - timedelta(days=1),
                      owner="@lab/gpu", expires_at=NOW + timedelta(days=13))
    )  # fmt: skip
    live_dir = run_dirs / "weekly-live"
    live_dir.mkdir()
    live_log = live_dir / "output.log"
    live_log.write_text("collecting ...\n")
    live = store.create_run(tier="weekly", trigger="cli", queued_at=NOW, run_dir=str(live_dir))
    assert live is not None
    store.update_run(live, outcome="running", started_at=NOW)
    # The red tier's newest red run, and the newest green run of the green tier.
    return Seeded(store, last["hourly"], last["daily"], live, live_log, run_dirs)
