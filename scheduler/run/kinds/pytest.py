"""The pytest kind: one runner invocation of pytest with the results plugin."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from runners.base import NONCE_ENV, RunSpec
from scheduler.kernel.outcome import RunEnding, Termination
from scheduler.run.hang import STACKS_DIR, gpu_snapshot_writer, hang_evidence, hang_pre_stop
from scheduler.run.kinds import Finished, Prepared, RunContext
from scheduler.run.ledger import Evidence
from scheduler.run.results import load_results
from scheduler.run.spec import batch_request, build_pytest_spec

LOG_HEAD_LINES = 200
LOG_HEAD_BYTES = 64 * 1024


class PytestKind:
    name = "pytest"

    def prepare(self, ctx: RunContext) -> Prepared:
        runner = ctx.runner
        spec = build_pytest_spec(
            ctx.config, ctx.tier, run_id=ctx.run_id, tier_name=ctx.tier_name,
            markers=ctx.markers, timeout_s=ctx.timeout_s, workdir=ctx.workdir,
            run_dir=ctx.run_dir, in_container=runner.in_container, devices=ctx.devices,
            host=ctx.host,
            batch=batch_request(ctx.config, ctx.tier_name) if runner.leases_gpus else None,
        )  # fmt: skip
        stacks = ctx.run_dir / STACKS_DIR
        stacks.mkdir(parents=True, exist_ok=True)
        spec = replace(
            spec,
            env={**spec.env, "SCHEDCTL_STACKS_DIR": str(stacks)},
            pre_stop=hang_pre_stop(
                spec.argv[0], stacks, gpu_snapshot_writer(ctx.gpu_snapshot, ctx.run_dir)
            ),
            silence_timeout_s=ctx.tier.silence_timeout,
        )

        def execute(cancel: threading.Event) -> Finished:
            result = runner.run(spec, cancel)
            details: dict[str, Any] = {}
            if result.termination is Termination.TIMEOUT:
                details["hang_evidence"] = hang_evidence(ctx.run_dir)
            parsed = load_results(spec.results_path, spec.junit_path, spec.env.get(NONCE_ENV))
            ending = RunEnding(
                termination=result.termination,
                exit_code=result.exit_code,
                message=result.message,
                session=parsed.session(result.exit_code),
                log_lines=log_head(spec),
                interpreter=spec.argv[0],
                scheduler_state=result.scheduler_state,
            )
            return Finished(ending, Evidence(result, parsed, details))

        provenance = {
            "runner": runner.alias,
            "argv": list(spec.argv),
            "image": spec.image if runner.in_container else None,
        }
        return Prepared(provenance, execute)


def log_head(spec: RunSpec) -> list[str]:
    """The first lines of the run's log (they say why pytest never began, when it did not)."""
    try:
        with spec.log_path.open("rb") as fh:
            head = fh.read(LOG_HEAD_BYTES)
    except OSError:
        return []
    return head.decode("utf-8", errors="replace").splitlines()[:LOG_HEAD_LINES]
