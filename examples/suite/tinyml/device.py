"""Accelerator discovery that never fails on a machine without one."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any, List, Optional


def nvidia_gpus(timeout: float = 10.0) -> List[str]:
    """GPU names from ``nvidia-smi -L``; empty when the tool or driver is absent."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return (
        [line for line in out.stdout.splitlines() if line.startswith("GPU ")] if out.returncode == 0 else []
    )


def cuda_torch() -> Optional[Any]:
    """The ``torch`` module when it is installed and sees a CUDA device, else None."""
    if not nvidia_gpus():
        return None  # don't pay for importing torch on a machine without GPUs
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None
