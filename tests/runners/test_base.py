"""runners.base helpers outside the runner contract (that is tests/runners/test_contract.py)."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import runners.base
from runners.base import PLUGIN_IMPL_MODULE, PLUGIN_MODULE, install_plugin

SOURCE = Path(runners.base.__file__).with_name("pytest_plugin.py")


def _load_verbosely(plugin_dir: Path) -> str:
    """stderr of ``python -v`` importing the installed plugin as a run would (no .pyc writes)."""
    env = {**os.environ, "PYTHONPATH": str(plugin_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-v", "-c", f"import {PLUGIN_MODULE}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=plugin_dir,
        timeout=120,
        check=True,
    )
    return done.stderr


def test_installed_plugin_loads_from_the_package_bytecode(tmp_path: Path) -> None:
    """The copy keeps the source's mtime and brings the package's .pyc: no compile in the run."""
    cached = importlib.util.cache_from_source(str(SOURCE))
    py_compile.compile(str(SOURCE), cfile=cached, doraise=True)  # as `pip install` leaves it
    plugin_dir = install_plugin(tmp_path / "plugin")
    copy = plugin_dir / f"{PLUGIN_IMPL_MODULE}.py"
    assert copy.read_bytes() == SOURCE.read_bytes()
    assert copy.stat().st_mtime_ns == SOURCE.stat().st_mtime_ns
    pyc = Path(importlib.util.cache_from_source(str(copy)))
    assert pyc.is_file()
    assert f"code object from '{pyc}'" in _load_verbosely(plugin_dir)


def test_stale_bytecode_is_not_used(tmp_path: Path) -> None:
    """A .pyc that does not match the copied source is ignored: the plugin compiles as before."""
    plugin_dir = install_plugin(tmp_path / "plugin")
    copy = plugin_dir / f"{PLUGIN_IMPL_MODULE}.py"
    copy.write_text(copy.read_text() + "\nSTALE_CHECK = 1\n")
    pyc = Path(importlib.util.cache_from_source(str(copy)))
    assert f"code object from '{pyc}'" not in _load_verbosely(plugin_dir)
    env = {**os.environ, "PYTHONPATH": str(plugin_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", f"import {PLUGIN_IMPL_MODULE} as p; print(p.STALE_CHECK)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=plugin_dir,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "1"


def test_the_shim_registers_the_plugins_hook(tmp_path: Path) -> None:
    """``-p schedctl_results`` loads the shim, whose only hook is the plugin's own configure."""
    plugin_dir = install_plugin(tmp_path / "plugin")
    env = {**os.environ, "PYTHONPATH": str(plugin_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    code = (
        f"import {PLUGIN_MODULE} as shim, {PLUGIN_IMPL_MODULE} as impl; "
        "print(shim.pytest_configure is impl.pytest_configure, "
        "[n for n in dir(shim) if n.startswith('pytest_')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "True ['pytest_configure']"
