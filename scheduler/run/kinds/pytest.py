"""The pytest kind: one runner invocation of pytest with the results plugin."""

from __future__ import annotations

import threading

from runners.base import NONCE_ENV, RunSpec
from scheduler.kernel.outcome import RunEnding
from scheduler.run.kinds import Finished, Prepared, RunContext
from scheduler.run.ledger import Evidence
from scheduler.run.results import load_results
from scheduler.run.spec import build_pytest_spec

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
        )  # fmt: skip

        def execute(cancel: threading.Event) -> Finished:
            result = runner.run(spec, cancel)
            parsed = load_results(spec.results_path, spec.junit_path, spec.env.get(NONCE_ENV))
            ending = RunEnding(
                termination=result.termination,
                exit_code=result.exit_code,
                message=result.message,
                session=parsed.session(result.exit_code),
                log_lines=log_head(spec),
                interpreter=spec.argv[0],
            )
            return Finished(ending, Evidence(result, parsed))

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
