"""The prewarmed launcher (runners/prewarm.py + runners/launcher.py), with real processes.

A launcher started before its run exists must, once it gets "go", be indistinguishable from the
plain ``python -m pytest`` spawn (sys.path, argv, cwd, environment, exit code, ownership), must
run nothing before "go" (a real SIGKILL of its owner leaves no trace), and must fall back to the
plain start wherever it cannot be exactly that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runners.base import RunSpec
from runners.local import LocalRunner
from runners.prewarm import (
    RUN_TAG_ENV,
    Prewarm,
    pending_id,
    pending_owner_alive,
)
from scheduler.kernel.outcome import Termination
from tests.conftest import ROOT
from tests.runners.helpers import Background, OffsetClock, alive
from tests.waiting import wait_for

PYTEST_ARGS = ["-p", "no:cacheprovider", "-q"]
PROBE_TEST = """
import json, os, sys

def test_probe():
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    out = {"path": sys.path, "argv0": sys.argv[0], "argv": sys.argv[1:], "cwd": os.getcwd(),
           "env": env, "main": getattr(sys.modules["__main__"], "__file__", None),
           "cmdline": open("/proc/self/cmdline").read().split(chr(0))[1]}
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump(out, fh)
"""


def project(root: Path, test: str = PROBE_TEST, conftest: str = "") -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_probe.py").write_text(test)
    if conftest:
        (root / "tests" / "conftest.py").write_text(conftest)
    return root


def base_env() -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


def spec_for(
    workdir: Path, run_dir: Path, run_id: str = "1", python: str = sys.executable, **env: str
) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        tier="t",
        argv=[python, "-m", "pytest", *PYTEST_ARGS, "tests"],
        workdir=workdir,
        run_dir=run_dir,
        timeout_s=120.0,
        env={k: v for k, v in {**base_env(), **env}.items() if k != "CUDA_VISIBLE_DEVICES"},
        grace_s=1.0,
    )


def start(runner: LocalRunner, python: str = sys.executable, **env: str) -> Prewarm:
    prewarm = Prewarm.start(
        python=python, cwd=Path("/"), env={**base_env(), **env}, instance=runner.instance
    )
    assert prewarm is not None
    return prewarm


def waiting_for_go(pid: int) -> bool:
    """Whether the launcher is blocked reading its "go" pipe (its imports are done)."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return "pipe" in wchan or (bool(syscall) and syscall[0] in ("0", "63"))  # read(2)


def test_a_prewarmed_run_is_the_plain_run(tmp_path: Path) -> None:
    """Same sys.path (PYTHONPATH entries included, relative ones against the run's directory),
    argv, cwd and environment as a plain spawn of the same spec; the launcher was really used."""
    work = project(tmp_path / "proj")
    (work / "src").mkdir()
    seen = {}
    for mode in ("plain", "prewarmed"):
        out = tmp_path / f"{mode}.json"
        runner = LocalRunner(instance="probe")
        if mode == "prewarmed":
            prewarm = start(runner, PYTHONPATH="src", PROBE_OUT=str(out))
            runner = LocalRunner(instance="probe", prewarm=prewarm)
        extra = f"{tmp_path / 'plugin'}{os.pathsep}src"
        spec = spec_for(work, tmp_path / mode, PYTHONPATH=extra, PROBE_OUT=str(out))
        result = runner.run(spec)
        assert (result.termination, result.exit_code) == (Termination.EXITED, 0), (
            spec.log_path.read_text()
        )
        assert ("prewarmed" in result.provenance) == (mode == "prewarmed")
        seen[mode] = json.loads(out.read_text())
        seen[mode]["env"].pop("PROBE_OUT")
    plain, warm = seen["plain"], seen["prewarmed"]
    # The launcher ran pytest itself (python -c ...), rather than exec'ing the plain command.
    assert (plain.pop("cmdline"), warm.pop("cmdline")) == ("-m", "-c")
    head = [str(work), str(tmp_path / "plugin"), str(work / "src")]
    assert warm["path"][1:4] == head  # [0]: pytest's rootdir-relative test dir
    differ = {
        k: (plain["env"].get(k), warm["env"].get(k))
        for k in set(plain["env"]) | set(warm["env"])
        if plain["env"].get(k) != warm["env"].get(k)
    }
    assert differ == {}
    assert warm == plain


GC_PROBE_TEST = """
import gc, json, os, sys, weakref

class Cycle:
    def __init__(self):
        self.me = self

def test_gc():
    before = gc.get_freeze_count()
    refs = [weakref.ref(Cycle()) for _ in range(1000)]
    gc.collect()
    out = {"enabled": gc.isenabled(), "frozen": before,
           "reclaimed": sum(ref() is None for ref in refs), "ctypes": "ctypes" in sys.modules,
           "still_frozen": gc.get_freeze_count() == before}
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump(out, fh)
"""


def test_a_prewarmed_run_collects_garbage_with_its_start_up_heap_frozen(tmp_path: Path) -> None:
    """The launcher's imports are frozen out of the collector's passes (runners/launcher.py
    settle()); the run's collector is on, as in a plain start, and reclaims what the run makes."""
    work = project(tmp_path / "proj", test=GC_PROBE_TEST)
    seen = {}
    for mode in ("plain", "prewarmed"):
        out = tmp_path / f"{mode}.json"
        runner = LocalRunner(instance="gc")
        if mode == "prewarmed":
            runner = LocalRunner(instance="gc", prewarm=start(runner, PROBE_OUT=str(out)))
        spec = spec_for(work, tmp_path / mode, PROBE_OUT=str(out))
        result = runner.run(spec)
        assert (result.termination, result.exit_code) == (Termination.EXITED, 0), (
            spec.log_path.read_text()
        )
        assert ("prewarmed" in result.provenance) == (mode == "prewarmed")
        seen[mode] = json.loads(out.read_text())
    plain, warm = seen["plain"], seen["prewarmed"]
    assert plain["enabled"] and warm["enabled"]
    assert plain["frozen"] == 0
    assert warm["frozen"] > 10_000  # pytest and its plugins, imported before "go"
    assert warm["still_frozen"] and plain["still_frozen"]
    assert warm["reclaimed"] == plain["reclaimed"] == 1000  # the test's own cycles
    # The pad is stamped through /proc/self/mem: the launcher imports no ctypes for it.
    assert warm["ctypes"] == plain["ctypes"] is False


@pytest.mark.parametrize("readable", [True, False])
def test_the_launcher_starts_from_its_file_or_else_from_the_source_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readable: bool
) -> None:
    """From runners/launcher.py (its bytecode, when compiled); from the source on its command
    line when that file cannot be read (another account): the run is prewarmed either way."""
    import runners.prewarm as prewarm_module

    real = prewarm_module.launcher_command

    def command(python: str, fd: int) -> list[str]:
        argv = real(python, fd)
        if not readable:
            argv[4] = str(tmp_path / "unreadable" / "launcher.py")
        return argv

    monkeypatch.setattr(prewarm_module, "launcher_command", command)
    work = project(tmp_path / "proj", test="def test_ok():\n    pass\n")
    runner = LocalRunner(instance="boot")
    prewarm = start(runner)
    assert Path(prewarm.proc.args[4]).is_file() == readable  # type: ignore[index]
    runner = LocalRunner(instance="boot", prewarm=prewarm)
    spec = spec_for(work, tmp_path / "run")
    result = runner.run(spec)
    assert (result.termination, result.exit_code) == (Termination.EXITED, 0), (
        spec.log_path.read_text()
    )
    assert "prewarmed" in result.provenance
    assert "1 passed" in spec.log_path.read_text()


def test_kill_before_go_runs_nothing(tmp_path: Path) -> None:
    """SIGKILL of the process that started a launcher, before "go": the launcher reads EOF and
    exits without a conftest or a test having run."""
    marker = tmp_path / "ran"
    work = project(
        tmp_path / "proj",
        test=f"def test_x():\n    open({str(marker)!r}, 'a').write('test')\n",
        conftest=f"open({str(marker)!r}, 'a').write('conftest')\n",
    )
    owner_code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from runners.prewarm import Prewarm
        prewarm = Prewarm.start(python=sys.executable, cwd=Path({str(work)!r}),
                                env={{"PATH": "/usr/bin:/bin"}}, instance="kill")
        print(prewarm.proc.pid, flush=True)
        time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    launcher = int(owner.stdout.readline())
    wait_for(lambda: waiting_for_go(launcher), 60, "the launcher to wait for go")
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    wait_for(lambda: not alive(launcher), 30, "the launcher to exit on EOF")
    assert not marker.exists()


def test_eof_exits_0_having_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    project(tmp_path / "proj", conftest=f"open({str(marker)!r}, 'a').write('conftest')\n")
    runner = LocalRunner(instance="eof")
    prewarm = start(runner)
    wait_for(lambda: waiting_for_go(prewarm.proc.pid), 60, "the launcher to wait for go")
    assert prewarm._go_fd is not None
    os.close(prewarm._go_fd)
    prewarm._go_fd = None
    assert prewarm.proc.wait(30) == 0
    assert prewarm.proc.stdout is not None
    assert prewarm.proc.stdout.read() == b""
    assert not marker.exists()


def test_an_interpreter_without_pytest_fails_as_a_plain_start_does(tmp_path: Path) -> None:
    """The launcher cannot import pytest: at "go" it execs the plain command, so the log and
    the exit code are those of a plain start."""
    python = tmp_path / "python-without-site"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    work = project(tmp_path / "proj")
    logs = {}
    for mode in ("plain", "prewarmed"):
        runner = LocalRunner(instance="nopytest")
        if mode == "prewarmed":
            runner = LocalRunner(instance="nopytest", prewarm=start(runner, python=str(python)))
        spec = spec_for(work, tmp_path / mode, python=str(python))
        result = runner.run(spec)
        assert ("prewarmed" in result.provenance) == (mode == "prewarmed")
        logs[mode] = (result.termination, result.exit_code, spec.log_path.read_text())
    assert logs["prewarmed"] == logs["plain"]
    assert logs["plain"][1] == 1 and "No module named pytest" in logs["plain"][2]


def test_a_module_the_workdir_shadows_means_a_plain_start(tmp_path: Path) -> None:
    """``shlex`` (imported while prewarming, by pytest) is also in the run's directory: plain
    `python -m pytest` imports the directory's; so does the run (the launcher execs it)."""
    marker = tmp_path / "shadow"
    test = "import shlex\n\ndef test_x():\n    assert shlex.MINE\n"
    test += "    assert open('/proc/self/cmdline').read().split(chr(0))[1:3] == ['-m', 'pytest']\n"
    work = project(tmp_path / "proj", test=test)
    (work / "shlex.py").write_text(
        "import os, sysconfig\n"
        f"open({str(marker)!r}, 'w').write('mine')\n"
        "_real = os.path.join(sysconfig.get_paths()['stdlib'], 'shlex.py')\n"
        "exec(compile(open(_real).read(), _real, 'exec'))\n"
        "MINE = True\n"
    )
    runner = LocalRunner(instance="shadow")
    runner = LocalRunner(instance="shadow", prewarm=start(runner))
    spec = spec_for(work, tmp_path / "run")
    result = runner.run(spec)
    assert (result.exit_code, "prewarmed" in result.provenance) == (0, True), (
        spec.log_path.read_text()
    )
    assert marker.read_text() == "mine"


def test_an_interpreter_variable_that_differs_means_a_plain_spawn(tmp_path: Path) -> None:
    """PYTHONHASHSEED acts at interpreter start: a launcher started without the run's value is
    discarded (it exits) and the run spawns afresh, with it."""
    out = tmp_path / "probe.json"
    work = project(tmp_path / "proj")
    runner = LocalRunner(instance="differs")
    prewarm = start(runner, PROBE_OUT=str(out))
    runner = LocalRunner(instance="differs", prewarm=prewarm)
    spec = spec_for(work, tmp_path / "run", PYTHONHASHSEED="7", PROBE_OUT=str(out))
    with capture_logs() as logs:
        result = runner.run(spec)
    assert (result.exit_code, "prewarmed" in result.provenance) == (0, False)
    assert [e["reason"] for e in logs if e["event"] == "prewarm_unused"] == [
        "PYTHONHASHSEED differs, and the interpreter reads it at start-up"
    ]
    assert json.loads(out.read_text())["env"]["PYTHONHASHSEED"] == "7"
    assert prewarm.proc.returncode is not None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"argv": ["python3", "-m", "pytest"]}, "not"),
        ({"argv": [sys.executable, "script.py"]}, "not"),
        ({"env": {"LD_PRELOAD": "x.so"}}, "LD_PRELOAD"),
        ({"env": {"HOME": "/elsewhere"}}, "HOME"),
        ({"user": {"user": 65534}}, "account"),
        ({"env": {"SCHEDCTL_RESULTS": "r", "PYTHONPATH": "/p", "COVERAGE_FILE": "c"}}, ""),
    ],
)
def test_mismatch_names_what_the_launcher_cannot_be(change: dict[str, object], why: str) -> None:
    runner = LocalRunner(instance="mismatch")
    prewarm = start(runner, HOME="/root")
    try:
        argv = change.get("argv", [sys.executable, "-m", "pytest", "-q"])
        env = {**prewarm.env, **change.get("env", {})}  # type: ignore[dict-item]
        user = change.get("user", {})
        found = prewarm.mismatch(argv, env, user)  # type: ignore[arg-type]
        assert (why in found and bool(found)) if why else found == ""
    finally:
        prewarm.discard()
    assert prewarm.proc.returncode is not None


def test_a_prewarmed_run_is_found_and_stopped_as_a_plain_one(tmp_path: Path) -> None:
    """The launcher is the run's command: /proc shows it with the run's tag and stacks directory
    (written over its pad at "go"), so owns(), the hang-evidence script and recovery find it;
    a timeout kills it and its escaped children, as for a plain spawn."""
    pids = tmp_path / "pids"
    hanging = f"""
import os, subprocess, sys, time

def test_hang():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             start_new_session=True)
    open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(600)
"""
    work = project(tmp_path / "proj", test=hanging)
    clock = OffsetClock()
    runner = LocalRunner(instance="timeout")
    runner = LocalRunner(instance="timeout", prewarm=start(runner), clock=clock)
    stacks = tmp_path / "stacks"
    spec = spec_for(work, tmp_path / "run", run_id="7", SCHEDCTL_STACKS_DIR=str(stacks))
    run = Background(lambda cancel: runner.run(spec, cancel))
    wait_for(lambda: len(pids.read_text().split()) == 2 if pids.exists() else False, 60, "pids")
    launcher, child = (int(p) for p in pids.read_text().split())
    environ = Path(f"/proc/{launcher}/environ").read_bytes().split(b"\0")
    assert b"SCHEDCTL_RUN=timeout:7" in environ
    assert f"SCHEDCTL_STACKS_DIR={stacks}".encode() in environ
    assert runner.owns(launcher, "7") and runner.owns(child, "7")
    assert launcher in runner.processes()["7"]  # the run's tag comes first in its environment
    clock.advance(spec.timeout_s + 1)
    result = run.result()
    assert result.termination is Termination.TIMEOUT
    assert "prewarmed" in result.provenance and launcher == result.provenance["pid"]
    wait_for(lambda: not alive(launcher) and not alive(child), 10, "the run's processes to die")


def test_recovery_spares_a_live_owners_launcher_and_reaps_a_dead_owners(tmp_path: Path) -> None:
    mine = pending_id()
    assert pending_owner_alive(mine) is True
    assert pending_owner_alive("12") is None
    assert pending_owner_alive("launch-999999999-1-ab") is False
    runner = LocalRunner(instance="reap")
    prewarm = start(runner)
    try:
        wait_for(lambda: prewarm.pending in runner.processes(), 30, "the launcher's tag")
        assert runner.reap_orphans(set()) == []
        assert prewarm.proc.poll() is None
    finally:
        prewarm.discard()
    env = {**base_env(), RUN_TAG_ENV: f"{runner.instance}:launch-999999999-1-ab"}
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True
    )
    wait_for(lambda: orphan.pid in runner.run_pids("launch-999999999-1-ab"), 30, "the tag")
    assert runner.reap_orphans(set()) == ["launch-999999999-1-ab"]
    assert orphan.wait(30) == -signal.SIGKILL


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root daemon (CI runs as root)")
def test_the_launcher_runs_as_the_runs_account(tmp_path: Path) -> None:
    """local.user: the launcher is started as the account the run would be started as (uid, gid,
    no supplementary groups), and a run of another account does not use it."""
    from runners.local_user import RunAs

    python = Path("/usr/bin/python3")  # the venv's may live where nobody cannot enter
    if not python.is_file():
        pytest.skip(f"{python} missing")
    user = RunAs.named("nobody").popen_kwargs()
    prewarm = Prewarm.start(
        python=str(python), cwd=Path("/"), env=base_env(), instance="nobody", user=user
    )
    assert prewarm is not None
    try:
        wait_for(lambda: waiting_for_go(prewarm.proc.pid), 60, "the launcher to wait for go")
        status = Path(f"/proc/{prewarm.proc.pid}/status").read_text().splitlines()
        fields = {line.split(":")[0]: line.split(":")[1].split() for line in status}
        assert fields["Uid"][:2] == ["65534", "65534"]
        assert fields["Gid"][:2] == ["65534", "65534"]
        assert fields["Groups"] == []
        argv = [str(python), "-m", "pytest"]
        assert prewarm.mismatch(argv, prewarm.env, user) == ""
        assert prewarm.mismatch(argv, prewarm.env, {}) == "another account"
    finally:
        prewarm.discard()


def test_a_go_message_larger_than_a_pipe_means_a_plain_spawn(tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    work = project(tmp_path / "proj")
    runner = LocalRunner(instance="large")
    prewarm = start(runner, PROBE_OUT=str(out))
    runner = LocalRunner(instance="large", prewarm=prewarm)
    spec = spec_for(work, tmp_path / "run", PROBE_OUT=str(out), SCHEDCTL_BIG="x" * 70_000)
    result = runner.run(spec)
    assert (result.exit_code, "prewarmed" in result.provenance) == (0, False)
    assert len(json.loads(out.read_text())["env"]["SCHEDCTL_BIG"]) == 70_000
    assert prewarm.proc.returncode is not None


def test_a_hung_prewarmed_run_leaves_the_stacks_of_its_launcher(tmp_path: Path) -> None:
    """Through the dispatcher with the config's own launch plan: the timeout's pre-stop finds
    the launcher (pytest's own process) by the stacks directory in its /proc environment, and
    its stacks name the hanging test."""
    from runners.registry import RunnerFactory
    from scheduler.config import config_from_mapping
    from scheduler.kernel.outcome import Outcome
    from scheduler.run.dispatch import Dispatcher, RunRequest
    from scheduler.run.spec import launch_plan
    from scheduler.store import Store
    from tests.conftest import tier

    hanging = "import time\n\ndef test_hangs_forever():\n    while True:\n        time.sleep(0.1)\n"
    root = project(tmp_path / "project", test=hanging)
    config = config_from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "runner": "local",
            "local": {"allow_root": True},
            "project": {"path": str(root)},
            "tiers": {"hourly": tier(markers=None, timeout=8)},
            "daemon": {"grace": 2},
        }
    )
    plan = launch_plan(config, "hourly")
    assert plan is not None
    runner = LocalRunner(instance=plan.instance, prewarm=plan.start())
    dispatcher = Dispatcher(config, Store(config.db_path), RunnerFactory({"local": runner}))
    record = dispatcher.run(RunRequest("hourly"))
    assert record.outcome is Outcome.TIMEOUT, record.reason
    assert record.details["provenance"]["prewarmed"].startswith(f"{plan.instance}:launch-")
    [stacks] = record.details["hang_evidence"]["stacks"]
    assert str(record.details["provenance"]["pid"]) in Path(stacks).name
    assert "in test_hangs_forever" in Path(stacks).read_text()
