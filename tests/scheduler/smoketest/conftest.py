"""Helpers for the smoketest tests: torch is optional locally and mandatory under CI."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.conftest import require


def need_torch() -> ModuleType:
    """Import torch; skip without it on a developer machine, fail without it under CI=true."""
    require(importlib.util.find_spec("torch") is not None, "torch is not installed")
    torch: ModuleType = pytest.importorskip("torch")
    return torch
