"""The results plugin's cost on a suite of 1,000 trivial tests, as a user feels it: whole pytest
processes started exactly as schedctl starts them, with and without what a run adds for the
plugin.

Targets (issue 22): <= 0.2 ms added per test and <= 3 % of the suite's time.

**The two arms.** Both are ``scheduler.run.spec.build_pytest_command``'s argv and environment
for a local run (same interpreter, ``-p no:cacheprovider``, ``--junitxml``, ``-rfE``,
``PYTHONDONTWRITEBYTECODE``, ``PYTHONUNBUFFERED``), the plugin installed as runs install it
(``runners.base.install_plugin``: the shim and the impl module with the bytecode ``make bench``
compiles). The *plugin* arm is that command as a run executes it; the *bare* arm takes away
exactly what the run adds for the plugin: ``-p schedctl_results`` and ``SCHEDCTL_RESULTS``,
``SCHEDCTL_NONCE``, ``SCHEDCTL_STACKS_DIR``. (The JUnit XML is schedctl's, not the plugin's: it is
in both arms, as it is in every run; the share is therefore of the suite as a run runs it.)

**The clock.** User + system CPU seconds of each child, from ``wait4(2)``: what the process
itself spent, where wall time also holds the time other engineers' processes held the two cores.

**The judged estimator** (new): P pairs, the arms interleaved in ABBA order (a slow drift of the
machine's load then hits both alike); per pair the relative difference ``plugin / bare - 1``;
the share is their **median**, with a distribution-free 95 % confidence interval from the
order statistics of the sign test. Why this one: when the arms of a pair meet the same load, the
noise of their difference is the difference of two draws from the same distribution, so it is
symmetric about the true added share whatever shape the load gives each arm (a long right
tail: a run that lost its cache to a neighbour); the median of a symmetric distribution is its
centre, it ignores the tails, and the sign test's interval needs no assumption about their shape.
A pair is its own baseline (``/ bare`` of the same pair), so a pair run on a busier machine
weighs what a quiet one does. The added cost per test is the median paired difference (in CPU
seconds) divided by the number of tests: the plugin's fixed cost is spread over the tests, as a
user pays it, so the figure can only overstate the per-test part.

Printed beside it, not judged:

* **min-of-N per arm**: the cleanest process of each arm; sound only when both arms reach their
  clean floor, which on a loaded machine they do unequally.
* **the old estimator** (until this change, judged): one pytest process runs the suite's items
  through ``pytest_runtest_protocol`` in alternating blocks with the plugin's recorder
  registered and unregistered; per test = the difference of the two kinds' *cleanest* blocks;
  fixed = the difference of the best 1-test processes; share = (per test x tests + fixed) /
  the median bare process. A difference of two minima of noisy samples has no centre to
  converge to (each minimum is an extreme of its own draw: last session it said 12.46 % where
  callgrind counted 3.74 %), and it left the arms' imports, configure and terminal output out of
  the per-test part.

With ``--callgrind`` (minutes; not in ``make bench``), each arm's user-space instructions under
valgrind are printed too: free of the machine's load, blind to system time and to what an
instruction costs, so a cross-check of the judged figure's centre, not a replacement.

**The floor** (printed, not judged): a third arm, measured in the same rounds, runs the bare
command plus ``schedctl_bench_floor`` (:data:`FLOOR_PLUGIN`), the least any plugin that keeps
this contract can do per test, in stdlib Python: a ``test_start`` line into a mapped file before
the test (the crash-proof name), the resident set from ``statm`` before it and the mark from
``getrusage`` after it (the two reads an exact per-test peak needs), and the ``test`` line after
it -- no outcome other than passed, no marks, no fallbacks, no checks. Its share is what this host
charges for the contract itself: where it is at or above the target, no implementation of the
contract meets the target on this host; where it is just below, only one that adds next to
nothing to it.

Also printed: the wall-clock paired median (what a user waits, noisier on a shared host) and
the load average before and after.

    python bench/bench_plugin.py [--pairs 12] [--tests 1000] [--fixed-pairs 5] [--blocks 150]
        [--block-size 25] [--no-old] [--callgrind] [--strict]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import figure  # noqa: E402

TARGET_PER_TEST_MS = 0.2
TARGET_SHARE = 0.03
CONFIDENCE = 0.95
PLUGIN_ENV = ("SCHEDCTL_RESULTS", "SCHEDCTL_NONCE", "SCHEDCTL_STACKS_DIR")
"""What a run adds to the environment for the plugin (besides ``-p schedctl_results``)."""

# Loaded with -p into the measuring process of the old estimator: runs the items in blocks, with
# and without the recorder, and writes the blocks' CPU seconds per test to $BLOCKS_OUT.
BLOCK_LOOP = """
import json, os, time
import pytest

RECORDER = "schedctl-results-tests"  # the per-test hooks (runners/pytest_plugin.py)


class BlockLoop:
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        manager = session.config.pluginmanager
        recorder = manager.get_plugin(RECORDER)
        if recorder is None:
            raise pytest.UsageError("the results plugin's per-test hooks are not registered")
        items, size = session.items, int(os.environ["BLOCK_SIZE"])
        blocks = int(os.environ["BLOCKS"])
        times = {"with": [], "without": []}
        for block in range(blocks):
            order = ("with", "without") if block % 2 else ("without", "with")
            for kind in order:
                registered = manager.get_plugin(RECORDER) is not None
                if kind == "with" and not registered:
                    manager.register(recorder, RECORDER)
                elif kind == "without" and registered:
                    manager.unregister(recorder)
                first = block * size % (len(items) - size + 1)
                chunk = items[first : first + size]
                start = time.process_time()
                for i, item in enumerate(chunk):
                    following = chunk[i + 1] if i + 1 < len(chunk) else None
                    item.ihook.pytest_runtest_protocol(item=item, nextitem=following)
                times[kind].append((time.process_time() - start) / len(chunk))
        if manager.get_plugin(RECORDER) is None:
            manager.register(recorder, RECORDER)
        with open(os.environ["BLOCKS_OUT"], "w") as fh:
            json.dump(times, fh)
        return True


def pytest_configure(config):
    config.pluginmanager.register(BlockLoop(), "schedctl-bench-blocks")
"""

FLOOR_PLUGIN = """
import json, mmap, os, resource, time
import pytest
from _pytest.runner import runtestprotocol

PAGE = os.sysconf("SC_PAGE_SIZE")
NONCE = "0" * 32


class Floor:
    def __init__(self, path, size):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        os.posix_fallocate(fd, 0, size)
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)
        self.statm = os.open("/proc/self/statm", os.O_RDONLY)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        nodeid = item.nodeid
        quoted = json.encoder.encode_basestring_ascii(nodeid)
        now = str(time.time_ns())
        self.map.write(
            f'{{"type": "test_start", "ts": {now[:-9]}.{now[-9:-3]}, "nodeid": {quoted}, '
            f'"nonce": "{NONCE}"}}\\n'.encode()
        )
        start = int(os.pread(self.statm, 128, 0).split(None, 2)[1]) * PAGE
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=nodeid, location=item.location)
        reports = runtestprotocol(item, nextitem=nextitem)
        peak = max(resource.getrusage(resource.RUSAGE_THREAD).ru_maxrss * 1024, start)
        duration = sum(report.duration for report in reports)
        now = str(time.time_ns())
        self.map.write(
            f'{{"type": "test", "ts": {now[:-9]}.{now[-9:-3]}, "nodeid": {quoted}, '
            f'"outcome": "passed", "when": "call", "duration_s": {"%.6f" % duration}, '
            f'"markers": [], "longrepr": null, "message": null, "peak_rss_bytes": {peak}, '
            f'"start_rss_bytes": {start}, "rss_method": "vmhwm", "cuda_peak_bytes": null, '
            f'"nonce": "{NONCE}"}}\\n'.encode()
        )
        ihook.pytest_runtest_logfinish(nodeid=nodeid, location=item.location)
        return True


def pytest_configure(config):
    size = int(os.environ["FLOOR_BYTES"])
    config.pluginmanager.register(Floor(os.environ["FLOOR_RESULTS"], size), "schedctl-floor")
"""
"""Loaded with -p into the floor arm (see the module's docstring): the least a plugin that keeps
the results contract does per test."""


class Arms:
    """The commands of one suite directory: as a run starts pytest, without the plugin, and (see
    :meth:`floor_command`) without it but with the floor plugin."""

    def __init__(self, directory: Path) -> None:
        from runners.base import NONCE_ENV, PLUGIN_MODULE, install_plugin
        from scheduler.config import TierConfig
        from scheduler.run.spec import base_env, build_pytest_command

        self.directory = directory
        run_dir = directory / "run"
        plugin_dir = install_plugin(run_dir / "plugin")
        self.results = run_dir / "results.jsonl"
        argv, env = build_pytest_command(
            python=sys.executable, tier=TierConfig(), markers=None, run_dir=run_dir,
            plugin_dir=plugin_dir,
        )  # fmt: skip
        stacks = run_dir / "stacks"
        stacks.mkdir(parents=True, exist_ok=True)
        env = {**base_env(in_container=False), **env, NONCE_ENV: "0" * 32}
        env["SCHEDCTL_STACKS_DIR"] = str(stacks)  # as scheduler.run.kinds.pytest adds it
        # The old estimator's block loop is importable in both arms (a -p only it names).
        env["PYTHONPATH"] += os.pathsep + str(directory)
        missing = [name for name in PLUGIN_ENV if name not in env]
        at = [i for i in range(len(argv) - 1) if argv[i : i + 2] == ["-p", PLUGIN_MODULE]]
        if missing or len(at) != 1:
            raise SystemExit(f"a run's command changed: plugin env {missing} missing, -p at {at}")
        self.plugin_argv, self.plugin_env = argv, env
        self.bare_argv = argv[: at[0]] + argv[at[0] + 2 :]
        self.bare_env = {k: v for k, v in env.items() if k not in PLUGIN_ENV}

    def floor_command(self, module: str, tests: int) -> tuple[list[str], dict[str, str]]:
        """The bare arm plus the floor plugin (:data:`FLOOR_PLUGIN`) writing to its own file."""
        argv, env = self.command(False, module, "-p", "schedctl_bench_floor")
        env["FLOOR_RESULTS"] = str(self.results.with_name("floor.jsonl"))
        env["FLOOR_BYTES"] = str(max(1 << 20, 1024 * (tests + 8)))
        return argv, env

    def command(self, plugin: bool, module: str, *extra: str) -> tuple[list[str], dict[str, str]]:
        argv = self.plugin_argv if plugin else self.bare_argv
        return [*argv[:3], *extra, *argv[3:], module], dict(
            self.plugin_env if plugin else self.bare_env
        )

    def run(
        self,
        plugin: bool,
        module: str,
        *extra: str,
        env: dict[str, str] | None = None,
        command: tuple[list[str], dict[str, str]] | None = None,
    ) -> tuple[float, float]:
        """CPU seconds (user + system, from wait4) and wall seconds of one whole process
        (``command``: that one instead of an arm's)."""
        argv, environ = command or self.command(plugin, module, *extra)
        environ.update(env or {})
        if plugin:
            self.results.unlink(missing_ok=True)
        start = time.perf_counter()
        child = subprocess.Popen(
            argv, cwd=self.directory, env=environ, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            shown = subprocess.run(
                argv, check=False, cwd=self.directory, env=environ, capture_output=True
            )
            raise SystemExit(
                f"{' '.join(argv)} exited {child.returncode}:\n{shown.stdout.decode()[-2000:]}"
            )
        if plugin and not self._wrote_a_session():
            raise SystemExit("the plugin wrote no session line: the figure would measure nothing")
        return usage.ru_utime + usage.ru_stime, wall

    def _wrote_a_session(self) -> bool:
        try:
            text = self.results.read_text(errors="replace")
        except OSError:
            return False
        return '"type": "session"' in text


def instructions(arms: Arms, plugin: bool, module: str, empty: bool = False) -> int | None:
    """User-space instructions of one whole process under callgrind (``PYTHONHASHSEED=0``: the
    hash seed alone moves a pytest process by ~1 %); None without valgrind.

    ``empty``: the bare arm plus ``-p schedctl_results`` naming an empty module, which is what
    pytest itself spends on loading any ``-p`` plugin (pytest 9 scans every distribution's entry
    points again for its name): the part of the fixed cost the plugin's own code cannot remove.
    """
    import re
    import shutil

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    argv, env = arms.command(plugin or empty, module)
    if empty:
        from runners.base import PLUGIN_MODULE

        nothing = arms.directory / "empty-plugin"
        nothing.mkdir(exist_ok=True)
        (nothing / f"{PLUGIN_MODULE}.py").write_text('"""Nothing. PYTEST_DONT_REWRITE"""\n')
        env = {k: v for k, v in env.items() if k not in PLUGIN_ENV}
        env["PYTHONPATH"] = os.pathsep.join([str(nothing), env.get("PYTHONPATH", "")])
    env["PYTHONHASHSEED"] = "0"
    out = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        cwd=arms.directory, env=env, capture_output=True, check=True,
    )  # fmt: skip
    found = re.findall(rb"Collected : (\d+)", out.stderr)
    return int(found[-1]) if found else None


def write_suite(directory: Path, tests: int) -> None:
    body = "".join(f"def test_{i}():\n    pass\n\n" for i in range(tests))
    (directory / "test_trivial.py").write_text(body)
    (directory / "test_one.py").write_text("def test_one():\n    pass\n")
    (directory / "schedctl_bench_blocks.py").write_text(BLOCK_LOOP)
    (directory / "schedctl_bench_floor.py").write_text(FLOOR_PLUGIN)


def pairs(
    arms: Arms, module: str, n: int, floor: tuple[list[str], dict[str, str]] | None = None
) -> list[dict[str, float]]:
    """``n`` pairs, ABBA order: each pair's CPU and wall seconds of the bare and plugin arm (and
    of the ``floor`` command, when given, in the same rounds: ABC CBA ...)."""
    names = ["bare", "plugin", *(["floor"] if floor else [])]
    out = []
    for i in range(n):
        forward = i % 4 in (0, 3)
        measured = {
            name: arms.run(name == "plugin", module, command=floor if name == "floor" else None)
            for name in (names if forward else names[::-1])
        }
        row = {name: cpu for name, (cpu, _) in measured.items()}
        row.update({f"{name}_wall": wall for name, (_, wall) in measured.items()})
        out.append(row)
    return out


def sign_test_interval(
    values: list[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """A distribution-free interval for the median of ``values`` (the sign test's order
    statistics) and its actual confidence: the narrowest at ``confidence`` or above, or the
    whole range (at what confidence it has) when there are too few values for that."""
    ordered = sorted(values)
    n = len(ordered)
    below = 0.0  # P(Binomial(n, 1/2) < k)
    k = 0
    while k < n // 2:
        step = math.comb(n, k) / 2**n
        if 1 - 2 * (below + step) < confidence:
            break
        below += step
        k += 1
    if k == 0:
        return ordered[0], ordered[-1], 1 - 2 / 2**n
    return ordered[k - 1], ordered[n - k], 1 - 2 * below


def old_blocks(arms: Arms, size: int, count: int) -> dict[str, list[float]]:
    out = arms.directory / "blocks.json"
    arms.run(
        True, "test_trivial.py", "-p", "schedctl_bench_blocks",
        env={"BLOCK_SIZE": str(size), "BLOCKS": str(count), "BLOCKS_OUT": str(out)},
    )  # fmt: skip
    times: dict[str, list[float]] = json.loads(out.read_text())
    return times


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", "-n", type=int, default=12, help="pairs of whole processes")
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument(
        "--fixed-pairs", type=int, default=5, help="pairs of 1-test processes (old estimator)"
    )
    parser.add_argument("--blocks", type=int, default=150, help="old estimator: blocks of each")
    parser.add_argument("--block-size", type=int, default=25, help="old estimator: tests a block")
    parser.add_argument("--no-old", action="store_true", help="skip the old estimator's runs")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="also count instructions under callgrind (noise-free, minutes; not judged)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    load_before = load()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_suite(directory, args.tests)
        arms = Arms(directory)
        arms.run(True, "test_trivial.py")  # warm the page cache and pytest's .pyc
        arms.run(False, "test_trivial.py")
        floor = arms.floor_command("test_trivial.py", args.tests)
        arms.run(False, "test_trivial.py", command=floor)
        floor_lines = Path(floor[1]["FLOOR_RESULTS"]).read_bytes().count(b'{"type": "test", ')
        if floor_lines != args.tests:
            raise SystemExit(f"the floor plugin wrote {floor_lines} test lines, not {args.tests}")
        measured = pairs(arms, "test_trivial.py", args.pairs, floor)
        if not args.no_old:
            one = pairs(arms, "test_one.py", args.fixed_pairs)
            per_kind = old_blocks(arms, min(args.block_size, args.tests), args.blocks)
        counted: dict[tuple[str, bool], int] = {}
        empty_count: int | None = None
        if args.callgrind:
            for module in ("test_trivial.py", "test_one.py"):
                for plugin in (False, True):
                    count = instructions(arms, plugin, module)
                    if count is not None:
                        counted[module, plugin] = count
            empty_count = instructions(arms, False, "test_one.py", empty=True)
    load_after = load()

    bare = [p["bare"] for p in measured]
    added = [p["plugin"] - p["bare"] for p in measured]
    relative = [p["plugin"] / p["bare"] - 1 for p in measured]
    wall_relative = [p["plugin_wall"] / p["bare_wall"] - 1 for p in measured]
    share = statistics.median(relative)
    low, high, level = sign_test_interval(relative)
    per_test_ms = statistics.median(added) / args.tests * 1000
    added_low, added_high, _ = sign_test_interval(added)
    added_low, added_high = added_low / args.tests * 1000, added_high / args.tests * 1000
    base = statistics.median(bare)
    best_bare = min(bare)
    min_share = min(p["plugin"] for p in measured) / best_bare - 1
    pct = 100.0

    print(f"suite: {args.tests} trivial tests, pytest as a run starts it; load average "
          f"{load_before} before, {load_after} after")  # fmt: skip
    print(f"  whole processes, {args.pairs} ABBA pairs, CPU (user + system from wait4): bare "
          f"median {base * 1000:.0f} ms (best {best_bare * 1000:.0f}); added per pair: median "
          f"{statistics.median(added) * 1000:+.1f} ms, relative median {share * pct:+.2f} % "
          f"({level * pct:.0f} % CI {low * pct:+.2f} .. {high * pct:+.2f} %); min-of-N per arm "
          f"{min_share * pct:+.2f} %; wall: relative median "
          f"{statistics.median(wall_relative) * pct:+.2f} %")  # fmt: skip
    floor_relative = [p["floor"] / p["bare"] - 1 for p in measured]
    floor_low, floor_high, _ = sign_test_interval(floor_relative)
    over_floor = [p["plugin"] / p["floor"] - 1 for p in measured]
    over_low, over_high, _ = sign_test_interval(over_floor)
    print(f"  floor (not judged): the least a plugin keeping this contract adds (a start line, "
          f"statm, getrusage, a test line; no checks): relative median "
          f"{statistics.median(floor_relative) * pct:+.2f} % ({level * pct:.0f} % CI "
          f"{floor_low * pct:+.2f} .. {floor_high * pct:+.2f} %); the plugin over the floor "
          f"{statistics.median(over_floor) * pct:+.2f} % (CI {over_low * pct:+.2f} .. "
          f"{over_high * pct:+.2f} %)")  # fmt: skip
    if not args.no_old:
        per_old_s = min(per_kind["with"]) - min(per_kind["without"])
        one_bare = [p["bare"] for p in one]
        fixed_s = max(0.0, min(p["plugin"] for p in one) - min(one_bare))
        share_old = (per_old_s * args.tests + fixed_s) / base
        medians = " / ".join(
            f"{statistics.median(per_kind[k]) * 1e6:.0f}" for k in ("without", "with")
        )
        print(f"  old estimator (judged until now): {args.blocks} alternating in-process blocks "
              f"of {min(args.block_size, args.tests)} tests, cleanest blocks "
              f"{min(per_kind['without']) * 1e6:.0f} / {min(per_kind['with']) * 1e6:.0f} us a "
              f"test bare / with (medians {medians}); fixed {fixed_s * 1000:.1f} ms (best of "
              f"{args.fixed_pairs} 1-test pairs): per test {per_old_s * 1000:.3f} ms, share "
              f"{share_old * pct:.2f} %")  # fmt: skip
    if len(counted) == 4:
        bare_n, with_n = counted["test_trivial.py", False], counted["test_trivial.py", True]
        fixed_i = counted["test_one.py", True] - counted["test_one.py", False]
        per_i = (with_n - bare_n - fixed_i) / max(1, args.tests - 1)
        print(f"  callgrind (user-space instructions, not judged): bare {bare_n / 1e6:.0f}M, "
              f"with the plugin {with_n / 1e6:.0f}M: added {(with_n - bare_n) / bare_n * pct:.2f} %"
              f" = fixed {fixed_i / 1e6:.1f}M + {per_i / 1e3:.1f}k a test")  # fmt: skip
        if empty_count is not None:
            loading = empty_count - counted["test_one.py", False]
            own = fixed_i - loading
            print(f"    of the fixed part, pytest loading any -p module (an empty one): "
                  f"{loading / 1e6:.1f}M; the plugin's own: {own / 1e6:.1f}M")  # fmt: skip
    elif args.callgrind:
        print("  callgrind: valgrind not found")
    ok_per_test = per_test_ms <= TARGET_PER_TEST_MS
    ok_share = share <= TARGET_SHARE
    figure("plugin: added CPU per trivial test", f"{per_test_ms:.3f} ms", "bare pytest",
           f"<= {TARGET_PER_TEST_MS} ms", ok_per_test)  # fmt: skip
    print(f"  ({level * pct:.0f} % CI {added_low:.3f} .. {added_high:.3f} ms; fixed cost included)")
    figure(f"plugin: added share of a {args.tests}-test suite", f"{share * pct:.2f} %",
           f"{base * 1000:.0f} ms", f"<= {TARGET_SHARE * pct:.0f} %", ok_share)  # fmt: skip
    print(f"  ({level * pct:.0f} % CI {low * pct:.2f} .. {high * pct:.2f} %)")
    return 1 if args.strict and not (ok_per_test and ok_share) else 0


if __name__ == "__main__":
    sys.exit(main())
