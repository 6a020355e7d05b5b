"""GPU checks; each skips with a clear reason on a machine without an NVIDIA GPU."""

from __future__ import annotations

import os

import pytest

from tinyml.device import cuda_torch, nvidia_gpus
from tinyml.tensor import Tensor, allclose

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpus():
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        pytest.skip("no GPU is visible to this run (CUDA_VISIBLE_DEVICES is empty)")
    found = nvidia_gpus()
    if not found:
        pytest.skip("no NVIDIA GPU: nvidia-smi is absent or lists no GPU")
    return found


@pytest.fixture(scope="module")
def torch(gpus):
    module = cuda_torch()
    if module is None:
        pytest.skip("PyTorch with CUDA is not installed (or sees no CUDA device)")
    return module


@pytest.mark.hourly
def test_nvidia_smi_lists_the_visible_gpus(gpus):
    """nvidia-smi lists at least one GPU, and no more than CUDA_VISIBLE_DEVICES allows."""
    assert gpus
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        assert len(gpus) >= len(visible.split(","))


@pytest.mark.daily
def test_cuda_matmul_matches_tinyml(torch):
    """A matmul on the GPU agrees with tinyml's pure-Python one."""
    a, b = Tensor.randn((16, 8), seed=1), Tensor.randn((8, 4), seed=2)
    expected = (a @ b).data
    ta = torch.tensor(a.tolist(), dtype=torch.float64, device="cuda")
    tb = torch.tensor(b.tolist(), dtype=torch.float64, device="cuda")
    got = (ta @ tb).cpu().flatten().tolist()
    assert allclose(got, expected, tol=1e-9)


@pytest.mark.daily
def test_cuda_device_memory_is_usable(torch):
    """A 64 MiB allocation on the first visible device succeeds and is freed."""
    before = torch.cuda.memory_allocated(0)
    block = torch.empty(64 * 1024 * 1024, dtype=torch.uint8, device="cuda:0")
    assert torch.cuda.memory_allocated(0) >= before + block.numel()
    del block
    torch.cuda.empty_cache()
