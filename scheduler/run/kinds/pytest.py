"""The pytest kind: pytest with the results plugin, then reruns of the failed tests.

With ``tiers.<t>.reruns: N`` the failed tests run again (only they, named in a file the plugin
reads, never on the command line) in a fresh process of the same runner and image, up to N
times, each attempt in its own directory under the run's; the run keeps every attempt. The
outcome still comes from :func:`~scheduler.kernel.outcome.decide`, told which tests turned out
flaky and which failing ones are quarantined.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from runners.base import NONCE_ENV, RunResult, RunSpec, install_plugin, wants_evidence
from scheduler.history.owners import Owners
from scheduler.kernel.outcome import RunEnding, Termination
from scheduler.run.hang import STACKS_DIR, gpu_snapshot_writer, hang_evidence, hang_pre_stop
from scheduler.run.kinds import Finished, Prepared, RunContext
from scheduler.run.ledger import Evidence
from scheduler.run.reruns import merge, rerunnable
from scheduler.run.results import ParsedResults, load_results
from scheduler.run.spec import batch_request, build_pytest_spec

LOG_HEAD_LINES = 200
LOG_HEAD_BYTES = 64 * 1024
SELECT_ENV = "SCHEDCTL_SELECT"
SELECT_FILE = "select.txt"
OWNED_OUTCOMES = ("failed", "error", "flaky")


class PytestKind:
    name = "pytest"

    def prepare(self, ctx: RunContext) -> Prepared:
        runner = ctx.runner
        # The files the process needs (the plugin's copy, the stacks dir) are written when it
        # starts, after the run is recorded running: they are off a cron fire's way to RunStarted.
        spec = self._spec(ctx, ctx.run_dir, install=False)

        def execute(cancel: threading.Event) -> Finished:
            started = time.monotonic()
            _install(spec)
            result = runner.run(spec, cancel)
            first = results_of(spec)
            reruns, last, last_dir = self._rerun(ctx, first, result, cancel, started)
            parsed = merge(first, reruns) if reruns else first
            quarantined = ctx.quarantined & {t.nodeid for t in parsed.failing}
            parsed = replace(owned(parsed, ctx), quarantined=quarantined)
            ending = RunEnding(
                termination=last.termination,
                exit_code=result.exit_code,
                message=last.message,
                session=parsed.session(result.exit_code),
                log_lines=log_head(spec),
                interpreter=spec.argv[0],
                scheduler_state=last.scheduler_state,
                flaky_fails=ctx.tier.flaky_fails_tier,
            )
            details: dict[str, Any] = {"attempts": 1 + len(reruns)} if reruns else {}
            # A preemption asks for the stacks before its stop, as a hang does.
            preempted = last.termination is Termination.CANCELLED and wants_evidence(cancel)
            if last.termination is Termination.TIMEOUT or preempted:
                details["hang_evidence"] = hang_evidence(last_dir)
            return Finished(ending, Evidence(result, parsed, details))

        provenance = {
            "runner": runner.alias,
            "argv": list(spec.argv),
            "image": spec.image if runner.in_container else None,
        }
        return Prepared(provenance, execute)

    def _spec(
        self, ctx: RunContext, run_dir: Path, timeout_s: float | None = None, install: bool = True
    ) -> RunSpec:
        """One attempt's spec: pytest + plugin, hang evidence (stacks, GPU snapshot) in its dir;
        ``install=False``: its files are written later, by :func:`_install`."""
        runner = ctx.runner
        spec = build_pytest_spec(
            ctx.config, ctx.tier, run_id=ctx.run_id, tier_name=ctx.tier_name,
            markers=ctx.markers, timeout_s=ctx.timeout_s if timeout_s is None else timeout_s,
            workdir=ctx.workdir, run_dir=run_dir, in_container=runner.in_container,
            devices=ctx.devices, host=ctx.host,
            batch=batch_request(ctx.config, ctx.tier_name) if runner.leases_gpus else None,
            install=install,
        )  # fmt: skip
        stacks = run_dir / STACKS_DIR
        if install:
            stacks.mkdir(parents=True, exist_ok=True)
        return replace(
            spec,
            env={**spec.env, "SCHEDCTL_STACKS_DIR": str(stacks)},
            pre_stop=hang_pre_stop(
                spec.argv[0], stacks, gpu_snapshot_writer(ctx.gpu_snapshot, run_dir)
            ),
            silence_timeout_s=ctx.tier.silence_timeout,
        )

    def _rerun(
        self,
        ctx: RunContext,
        first: ParsedResults,
        result: RunResult,
        cancel: threading.Event,
        started: float,
    ) -> tuple[list[ParsedResults], RunResult, Path]:
        """Rerun the failed tests while some fail and reruns are left; every attempt's results.

        Only a first process that pytest finished with "tests failed" is rerun; a rerun that
        does not end on its own (timeout, OOM, cancel) ends the run as it ended.
        """
        reruns: list[ParsedResults] = []
        last, last_dir = result, ctx.run_dir
        if (
            not ctx.tier.reruns
            or result.termination is not Termination.EXITED
            or first.exitstatus != 1
        ):
            return reruns, last, last_dir
        current = first
        for attempt in range(1, ctx.tier.reruns + 1):
            failing = rerunnable(merge(first, reruns) if reruns else current)
            remaining = ctx.effective_timeout_s - (time.monotonic() - started)
            if not failing or cancel.is_set() or remaining <= 1:
                break
            attempt_dir = ctx.run_dir / f"attempt-{attempt}"
            attempt_dir.mkdir(parents=True, exist_ok=True)
            select = attempt_dir / SELECT_FILE
            select.write_text("".join(f"{nodeid}\n" for nodeid in failing), encoding="utf-8")
            spec = self._spec(ctx, attempt_dir, remaining)
            spec = replace(spec, env={**spec.env, SELECT_ENV: str(select)})
            last, last_dir = ctx.runner.run(spec, cancel), attempt_dir
            current = results_of(spec)
            reruns.append(current)
            if last.termination is not Termination.EXITED:
                break
        return reruns, last, last_dir


def _install(spec: RunSpec) -> None:
    """Write what a spec built with ``install=False`` needs before its process starts."""
    if spec.plugin_dir is not None:
        install_plugin(spec.plugin_dir)
    (spec.run_dir / STACKS_DIR).mkdir(parents=True, exist_ok=True)


def results_of(spec: RunSpec) -> ParsedResults:
    """The attempt's results: only the lines carrying its nonce count."""
    return load_results(spec.results_path, spec.junit_path, spec.env.get(NONCE_ENV))


def owned(parsed: ParsedResults, ctx: RunContext) -> ParsedResults:
    """Name the owners of the failing and flaky tests (CODEOWNERS at the run's commit, config)."""
    targets = [t for t in parsed.tests if t.outcome in OWNED_OUTCOMES]
    if not targets and not parsed.collect_errors:
        return parsed
    owners = Owners.load(ctx.workdir, ctx.config.owners)

    tests = [
        replace(t, owner=" ".join(owners.of_test(t.nodeid)) or None)
        if t.outcome in OWNED_OUTCOMES
        else t
        for t in parsed.tests
    ]
    errors = [
        replace(t, owner=" ".join(owners.of_test(t.nodeid)) or None) for t in parsed.collect_errors
    ]
    return replace(parsed, tests=tests, collect_errors=errors)


def log_head(spec: RunSpec) -> list[str]:
    """The first lines of the run's log (they say why pytest never began, when it did not)."""
    try:
        with spec.log_path.open("rb") as fh:
            head = fh.read(LOG_HEAD_BYTES)
    except OSError:
        return []
    return head.decode("utf-8", errors="replace").splitlines()[:LOG_HEAD_LINES]
