"""The ``schedctl`` commands: a name -> ``"module:attr"`` table, imported only when used.

Add a command with one line here. ``SUMMARIES`` holds the one-line help ``schedctl --help``
prints, so that listing the commands imports none of them; a command missing from it is
imported to read its own help (slower ``--help``, still correct). A test checks that every
summary here matches the command's own short help.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "alerts": "scheduler.cli.alerts_cmd:alerts_group",
    "cancel": "scheduler.cli.daemon_cmd:cancel_command",
    "config": "scheduler.cli.config_cmd:config_group",
    "daemon": "scheduler.cli.serve_cmd:daemon_command",
    "gpus": "scheduler.cli.gpus:gpus_command",
    "image": "scheduler.cli.image_cmd:image_group",
    "logs": "scheduler.cli.history:logs_command",
    "markers": "scheduler.cli.markers_cmd:markers_group",
    "quarantine": "scheduler.cli.tests_cmd:quarantine_group",
    "run": "scheduler.cli.run_cmd:run_command",
    "runs": "scheduler.cli.history:runs_command",
    "schedule": "scheduler.cli.schedule_cmd:schedule_command",
    "show": "scheduler.cli.history:show_command",
    "status": "scheduler.cli.daemon_cmd:status_command",
    "store": "scheduler.cli.store_cmd:store_group",
    "test": "scheduler.cli.tests_cmd:test_command",
    "tests": "scheduler.cli.tests_cmd:tests_command",
    "web": "scheduler.cli.web_cmd:web_command",
}

# Commands whose module may fail to import on a host without their optional library: they are
# left out of the CLI there instead of breaking every other command.
OPTIONAL: frozenset[str] = frozenset({"gpus"})

SUMMARIES: dict[str, str] = {
    "alerts": "Recent alerts per tier and failure class, and deliveries not yet sent.",
    "cancel": "Cancel a run that the daemon is running (its row records the reason).",
    "config": "Validate the configuration or print its schema.",
    "daemon": (
        "Run the scheduler in the foreground until SIGTERM/SIGINT (systemd Type=notify aware)."
    ),
    "gpus": "Show each GPU, whether the policy finds it free, which run holds it, and drains.",
    "image": "The project's test images, built from its own dependencies.",
    "logs": "Print the captured output of a run.",
    "markers": "Audit the suite's markers against history, apply a catalog, review it quarterly.",
    "quarantine": (
        "Quarantined tests still run and are recorded; their failures do not fail the tier."
    ),
    "run": "Run TIER now and wait for the result (exit 0 only when passed).",
    "runs": "List recent runs, newest first.",
    "schedule": "Next fire times per tier, in UTC (ISO 8601).",
    "show": "Show one run: outcome, provenance and per-test results.",
    "status": "Daemon, tiers (last outcome, next fire), runs in progress, GPU leases.",
    "store": "The database: create or upgrade its schema, copy a box's history into it.",
    "test": "One test's history: outcome strip of its last runs with commits, duration and memory.",
    "tests": "Per-test history: runs, pass rate, flakiness, durations, peak memory, owner.",
    "web": "Serve the test-health pages (overview, runs, tests, flaky) until interrupted.",
}
