"""The prewarmed launcher: the test process of a local pytest run, started before its run exists.

Standard library only, and never imported by schedctl itself: :mod:`runners.prewarm` runs this
file's source under the *project's* interpreter as ``python -c <source> FD`` as soon as a tier's
interpreter, environment and account are known, while schedctl itself is still importing,
opening the store and writing the run row. Meanwhile this process pays what every pytest run
pays first: ``import pytest``, pytest's own plugin modules and the ``pytest11`` entry points
installed in site-packages (an editable install -- the project's own code -- is not imported).
Nothing is imported from the working directory or ``PYTHONPATH`` (they are off ``sys.path``
until "go"): no project code, no conftest, no test, no collection.

Then it blocks reading FD. schedctl writes one JSON object -- ``argv``, the run's full command
(``python -m pytest ...``), ``cwd`` and ``env``, which only exist once the run is recorded, and
``spawn_env``, the names of the variables the launcher was started with -- and closes the pipe
(in a prewarmed container, :mod:`runners.docker_prewarm`, FD is stdin and ``stamp`` is false:
the runner finds a container's processes by its cgroup, not by their environment).
The launcher applies them (directory, ``os.environ``, ``sys.path`` as ``python -m`` with that
``PYTHONPATH`` would have built it, ``sys.argv``) and runs pytest's ``__main__`` as ``-m`` does,
exiting with its code.

Before waiting it freezes what it has imported out of the garbage collector's passes
(:func:`settle`), so that the run does not walk that heap again: the one thing a test could see.

* EOF without a message (schedctl died, or chose not to use it): exit 0, having run nothing.
* Anything unexpected -- pytest not importable, a module imported here that the run's working
  directory or ``PYTHONPATH`` would shadow, a ``sys.path`` it cannot reproduce -- and the
  launcher ``exec``s the command itself, in the run's directory and environment: the run then
  behaves exactly as a plain start would (the same error message, the same exit code).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

ENTRY_POINT_GROUP = "pytest11"
NO_AUTOLOAD_ENV = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
LATER = ("_pytest._argcomplete", "tomllib", "pdb")
"""Modules of pytest and the standard library a session imports later (ini files, debugging)."""
PAD_ENV = "SCHEDCTL_LAUNCH_PAD"
STAMP_FIRST = ("SCHEDCTL_RUN", "SCHEDCTL_STACKS_DIR")
SAFE_PATH = bool(getattr(sys.flags, "safe_path", False))  # -P (Python >= 3.11): no path[0]


def pythonpath_entries(value: str, cwd: str) -> list[str]:
    """``sys.path`` entries the interpreter makes of ``PYTHONPATH``: a relative entry is joined
    to the working directory at start-up (an empty one is that directory), then normalised."""
    if not value:
        return []
    return [
        os.path.normpath(entry if os.path.isabs(entry) else cwd + os.sep + entry)
        for entry in value.split(os.pathsep)
    ]


class EnvironPad:
    """The ``SCHEDCTL_LAUNCH_PAD`` entry of this process's environment as it was started, which
    ``/proc/<pid>/environ`` shows: overwritten in place at "go" with the run's own variables, so
    that what finds a run's processes there (its tag, the stacks directory for hang evidence)
    finds this one too. Located at start-up, before anything changes ``os.environ``.

    Through ``/proc/self``, not ctypes (whose import no plain pytest start pays, on the way to
    the first test): ``/proc/self/environ`` is the memory from ``env_start`` (``stat`` field 50)
    on, where the entry lies; ``/proc/self/mem`` writes over it."""

    def __init__(self, proc: str = "/proc/self") -> None:
        self.address = 0
        self.size = 0
        self.proc = proc
        with open(f"{proc}/stat", "rb") as fh:
            stat = fh.read()
        start = int(stat[stat.rfind(b")") + 2 :].split()[47])
        with open(f"{proc}/environ", "rb") as fh:
            block = fh.read()
        prefix = (PAD_ENV + "=").encode()
        offset = 0
        for entry in block.split(b"\0"):
            if entry.startswith(prefix):
                self.address, self.size = start + offset, len(entry)
                return
            offset += len(entry) + 1

    def stamp(self, entries: list[str], needed: int) -> bool:
        """Write ``entries`` (``NAME=value``) over the pad, as many as fit; whether the first
        ``needed`` of them did."""
        filler = (PAD_ENV + "=").encode()
        data = b""
        for count, entry in enumerate(entries):
            more = entry.encode("utf-8", "surrogateescape") + b"\0"
            if b"\0" in more[:-1] or len(data) + len(more) + len(filler) > self.size:
                if count < needed:
                    return False
                break
            data += more
        if not self.address:
            return False
        data += filler + b"x" * (self.size - len(data) - len(filler))
        try:
            with open(f"{self.proc}/mem", "r+b", buffering=0) as mem:
                mem.seek(self.address)
                return mem.write(data) == self.size
        except (OSError, ValueError, OverflowError):
            return False


class Launcher:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ready = False
        self.tail: list[str] = []
        self.imported: set[str] = set()
        self.started_env = dict(os.environ)
        try:
            self.pad: EnvironPad | None = EnvironPad()
        except BaseException:
            self.pad = None

    def prewarm(self) -> None:
        """Import pytest and its plugins with nothing of the project on ``sys.path``."""
        head = 0 if SAFE_PATH else 1
        entries = pythonpath_entries(os.environ.get("PYTHONPATH", ""), os.getcwd())
        if sys.path[head : head + len(entries)] != entries:
            return  # a sys.path this launcher cannot rebuild: run the plain command at "go"
        self.tail = sys.path[head + len(entries) :]
        sys.path[:] = self.tail
        before = set(sys.modules)
        try:
            import pytest  # noqa: F401
        except BaseException:
            return
        self.ready = True
        try:
            from _pytest.config import default_plugins, essential_plugins

            names = list(essential_plugins) + list(default_plugins)
        except BaseException:
            names = []
        for name in names:
            self._try_import("_pytest." + name)
        for module in LATER:
            self._try_import(module)
        own: set[str] = set()
        if not os.environ.get(NO_AUTOLOAD_ENV):
            modules, own = installed_plugins()
            for module in modules:
                self._try_import(module)
        imported = {name.partition(".")[0] for name in set(sys.modules) - before}
        # The plugins' own modules are dropped again (their dependencies stay): pytest imports
        # them anew under its assertion rewriting, as it would without this launcher.
        for name in [n for n in set(sys.modules) - before if n.partition(".")[0] in own]:
            del sys.modules[name]
        self.imported = imported - own

    @staticmethod
    def _try_import(module: str) -> None:
        # On failure pytest imports it again, and reports the error itself, in the run.
        with contextlib.suppress(BaseException):
            importlib.import_module(module)

    def wait(self) -> dict[str, Any] | None:
        """The "go" message, or ``None`` at EOF without one."""
        chunks = []
        while True:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self.fd)
        data = b"".join(chunks)
        if not data:
            return None
        message: dict[str, Any] = json.loads(data.decode("utf-8"))
        return message

    def go(self, message: dict[str, Any]) -> NoReturn:
        argv = list(message["argv"])
        # What the interpreter itself added at start-up (PEP 538's LC_CTYPE coercion) stays: it
        # would add the same to the run's environment, whose start-up variables are the same.
        given = set(message["spawn_env"])
        env = {k: v for k, v in os.environ.items() if k not in given}
        env.update(message["env"])
        os.chdir(message["cwd"])
        os.environ.clear()
        os.environ.update(env)
        cwd = os.getcwd()
        leading = [] if SAFE_PATH else [cwd]
        leading += pythonpath_entries(env.get("PYTHONPATH", ""), cwd)
        if (
            not self.ready
            or argv[1:3] != ["-m", "pytest"]
            or self._shadowed(leading)
            or (message.get("stamp", True) and not self._stamp(env))
        ):
            sys.stdout.flush()
            os.execvpe(argv[0], argv, env)  # noqa: S606 -- exactly the plain start
        import runpy

        sys.path[:] = leading + self.tail
        sys.argv = ["-m", *argv[3:]]  # run_module puts the path of pytest/__main__.py first
        runpy.run_module("pytest", run_name="__main__", alter_sys=True)
        raise SystemExit(0)  # pytest's __main__ always raises SystemExit; this is not reached

    def _stamp(self, env: dict[str, str]) -> bool:
        """Show the run's own variables in ``/proc/<pid>/environ``: the run tag and the stacks
        directory first (without them this process would not be found as the run's), then the
        other variables that changed at "go", as many as fit."""
        if self.pad is None:
            return False
        changed = [k for k, v in env.items() if self.started_env.get(k) != v]
        first = [k for k in STAMP_FIRST if k in changed]
        rest = sorted(k for k in changed if k not in first)
        return self.pad.stamp([f"{k}={env[k]}" for k in first + rest], needed=len(first))

    def _shadowed(self, leading: list[str]) -> bool:
        """Whether a plain start would have found one of the modules imported here in the run's
        directory or ``PYTHONPATH`` (they come first on its ``sys.path``)."""
        from importlib.machinery import PathFinder

        for name in self.imported:
            if name in sys.builtin_module_names:
                continue
            try:
                spec = PathFinder.find_spec(name, leading)
            except BaseException:
                return True
            if spec is not None and spec.origin is not None:
                return True
        return False


def settle(collecting: bool) -> None:
    """Take what this process has made so far out of the cyclic collector's reach, then give
    the collector back as it was.

    Everything alive after :meth:`Launcher.prewarm` -- the interpreter's start-up, pytest, its
    plugins and their dependencies -- lives as long as the run: the same objects a plain start
    builds before its first test. No collection ran while they were made (``main`` disables it:
    there is nothing to reclaim in a tree of imports, only a heap to walk), and frozen
    (``gc.freeze``) none walks them again: neither the automatic full passes while tests run,
    nor the ``gc.collect()`` calls pytest itself makes at the end of a session (its
    unraisable-exception check: 36-42 ms for examples/suite, 3 ms frozen, profiled). What the
    run makes from "go" on is collected as in any process. The only difference a test could
    see: ``gc.get_objects()`` leaves out the frozen start-up objects (``gc.get_freeze_count()``
    counts them), and start-up garbage -- the plugins' own modules dropped above, which pytest
    imports again -- is never reclaimed (a few hundred kB, for the length of one run).
    """
    gc.freeze()
    if collecting:
        gc.enable()


def installed_plugins() -> tuple[list[str], set[str]]:
    """Modules of the ``pytest11`` entry points whose code lives in site-packages, and the
    top-level names of every plugin distribution's own modules (pytest rewrites their asserts)."""
    try:
        import site
        import sysconfig
        from importlib import metadata
        from importlib.util import find_spec
    except BaseException:
        return [], set()
    dirs = set(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    dirs.update(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    roots = tuple(os.path.join(os.path.realpath(root), "") for root in dirs if root)
    modules = []
    own: set[str] = set()
    for dist in metadata.distributions():
        entries = [entry for entry in dist.entry_points if entry.group == ENTRY_POINT_GROUP]
        if entries:
            own.update(top_level_names(dist.files or []))
        for entry in entries:
            module = entry.value.partition(":")[0].strip()
            spec = None
            with contextlib.suppress(BaseException):
                spec = find_spec(module.partition(".")[0])
            origin = spec.origin if spec is not None else None
            if origin and os.path.realpath(origin).startswith(roots):
                modules.append(module)
    return modules, own


def top_level_names(files: Iterable[Any]) -> set[str]:
    """Top-level module names of a distribution's files (``pkg/x.py`` -> ``pkg``)."""
    names = set()
    for path in files:
        parts = str(path).replace(os.sep, "/").split("/")
        if parts[0] in ("", "..", "__pycache__") or not parts[-1].endswith(".py"):
            continue
        names.add(parts[0][: -len(".py")] if len(parts) == 1 else parts[0])
    return names


def main() -> None:
    collecting = gc.isenabled()
    gc.disable()  # see settle()
    launcher = Launcher(int(sys.argv[1]))
    try:
        launcher.prewarm()
    except BaseException:
        launcher.ready = False
    settle(collecting)
    message = launcher.wait()
    if message is None:
        os._exit(0)
    launcher.go(message)


if __name__ == "__main__":
    main()
