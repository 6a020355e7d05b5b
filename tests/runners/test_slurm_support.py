"""Without a cluster: reading scontrol's job line, sbatch sizes, Slurm states into outcomes, and
the multi-node torchrun command line."""

from __future__ import annotations

import pytest

from runners.slurm import slurm_memory
from runners.slurm_support import parse_job
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Outcome, PytestSession, RunEnding, Termination, decide
from scheduler.smoketest.slurm import srun_torchrun

RUNNING = (
    "JobId=12 JobName=schedctl-ab12-7 UserId=root(0) JobState=RUNNING Reason=None "
    "ExitCode=0:0 Partition=debug NodeList=n[1-2] BatchHost=n1 JOB_GRES=gpu:2   Nodes=n1 "
    "CPU_IDs=0 Mem=0 GRES=gpu:2(IDX:0-1) MinCPUsNode=1 Command=/x/slurm-job.sh a=b JobState=X"
)


def test_parse_job_reads_state_gpus_and_ignores_the_command() -> None:
    """State, exit, nodes and the gres indices come from the fields before Command=."""
    job = parse_job(RUNNING)
    assert job is not None
    assert (job.job_id, job.state, job.nodes, job.partition) == ("12", "RUNNING", "n[1-2]", "debug")
    assert job.gpu_indices == (0, 1) and not job.final
    ended = parse_job("JobId=3 JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0 Command=x")
    assert ended is not None and ended.final and (ended.exit_code, ended.signal) == (1, 0)


@pytest.mark.parametrize("text", ["", "garbage", "JobId=x JobState=RUNNING", "JobId=3"])
def test_parse_job_refuses_what_it_cannot_read(text: str) -> None:
    """A line without a numeric job id and a state is unknown, never a guess."""
    assert parse_job(text) is None


@pytest.mark.parametrize(
    ("size", "mem"), [("512m", "512M"), ("4g", "4096M"), ("100M", "100M"), ("1048576", "1M")]
)
def test_memory_sizes_become_sbatch_megabytes(size: str, mem: str) -> None:
    """Docker-style sizes (no unit: bytes) become sbatch's --mem in MB."""
    assert slurm_memory(size) == mem


def test_a_bad_memory_size_is_an_infra_error() -> None:
    """A size Slurm cannot take names the value."""
    with pytest.raises(InfraError, match="lots"):
        slurm_memory("lots")


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("TIMEOUT", Outcome.TIMEOUT),
        ("OUT_OF_MEMORY", Outcome.OOM),
        ("NODE_FAIL", Outcome.INFRA_ERROR),
        ("BOOT_FAIL", Outcome.INFRA_ERROR),
        ("LAUNCH_FAILED", Outcome.INFRA_ERROR),
        ("CANCELLED", Outcome.INFRA_ERROR),
        ("PREEMPTED", Outcome.PREEMPTED),
        ("PENDING", Outcome.GPU_UNAVAILABLE),
        ("SOMETHING_NEW", Outcome.INFRA_ERROR),
    ],
)
def test_slurm_states_map_to_outcomes_in_decide(state: str, outcome: Outcome) -> None:
    """A job Slurm ended is decided by its state, whatever pytest's record says."""
    ending = RunEnding(
        Termination.SCHEDULER, 0, "by uid 1000", PytestSession(True, 0), scheduler_state=state
    )
    decision = decide(ending)
    assert decision.outcome is outcome
    assert "by uid 1000" in decision.reason


def test_multi_node_torchrun_meets_on_the_first_node() -> None:
    """Two nodes: one torchrun per node under srun, c10d rendezvous at the job's first node."""
    argv = ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4",
            "--max-restarts=0", "-m", "prog", "--steps", "3"]  # fmt: skip
    one = srun_torchrun(argv, 1, 4)
    assert one[:5] == ["srun", "--export=ALL", "--nodes=1", "--ntasks-per-node=1",
                       "--kill-on-bad-exit=1"]  # fmt: skip
    assert "--standalone" in one and "--nproc-per-node=4" in one
    two = srun_torchrun(argv, 2, 2)
    script = two[two.index("-c") + 1]
    assert "--nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d" in script
    assert "scontrol show hostnames" in script and "--standalone" not in two
    assert two[-5:] == ["--max-restarts=0", "-m", "prog", "--steps", "3"]
    assert two[two.index("srun-torchrun") + 1] == "/py"
