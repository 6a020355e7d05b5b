"""The smoketest's launches on Slurm: each launch one batch job, torchrun per node under srun.

A launch of world size N runs on one node when N is 1 (the baseline) and on the tier's
``slurm.nodes`` nodes otherwise, ``N / nodes`` processes per node. ``srun`` starts one torchrun
per node (``--ntasks-per-node=1``); on one node torchrun keeps its ``--standalone`` rendezvous,
on several they meet through torchrun's c10d rendezvous on the job's first node. The ranks carry
the run tag like the job's other processes, so the pre-stop ``SIGUSR1`` reaches them (the
children of each node's torchrun) and the run owns them.
"""

from __future__ import annotations

import dataclasses

from runners.base import BatchRequest, Runner, RunSpec
from scheduler.kernel.errors import InfraError
from scheduler.smoketest.launcher import LaunchPlan, RunnerLauncher

RDZV_PORT = 29500
_FIRST_NODE = 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'


def srun_torchrun(argv: list[str], nodes: int, per_node: int) -> list[str]:
    """``argv`` (a ``--standalone`` torchrun command) as one torchrun per node under srun."""
    srun = ["srun", "--export=ALL", f"--nodes={nodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1"]  # fmt: skip
    body = [a for a in argv if not a.startswith("--nproc-per-node=")]
    if nodes == 1:
        at = body.index("--standalone") + 1
        return [*srun, *body[:at], f"--nproc-per-node={per_node}", *body[at:]]
    body.remove("--standalone")
    at = body.index("torch.distributed.run") + 1
    flags = [
        f"--nnodes={nodes}", f"--nproc-per-node={per_node}", "--rdzv-backend=c10d",
        "--rdzv-id=$SLURM_JOB_ID", f"--rdzv-endpoint=$head:{RDZV_PORT}",
    ]  # fmt: skip
    # The first node is known only inside the job: a shell there fills it in.
    script = f'{_FIRST_NODE}; exec "$1" -m torch.distributed.run {" ".join(flags)} "${{@:2}}"'
    return [*srun, "bash", "-c", script, "srun-torchrun", body[0], *body[at:]]


class SlurmLauncher(RunnerLauncher):
    """Each :class:`LaunchPlan` as one job of the Slurm runner (see the module docstring)."""

    def __init__(self, runner: Runner, template: RunSpec, *, python: str, nodes: int) -> None:
        super().__init__(runner, template, python=python)
        self.nodes = nodes

    def spec(self, plan: LaunchPlan) -> RunSpec:
        spec = super().spec(plan)
        nodes = 1 if plan.nproc == 1 else self.nodes
        if plan.nproc % nodes:
            raise InfraError(f"nproc {plan.nproc} does not split over {nodes} Slurm nodes")
        per_node = plan.nproc // nodes
        # Slurm, not schedctl, says which GPUs a job sees.
        env = {k: v for k, v in plan.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        batch = dataclasses.replace(
            self.template.batch or BatchRequest(),
            nodes=nodes,
            cpus_per_task=(self.template.batch and self.template.batch.cpus_per_task) or per_node,
        )
        argv = srun_torchrun(list(plan.argv), nodes, per_node)
        return dataclasses.replace(spec, argv=argv, env=env, batch=batch)
