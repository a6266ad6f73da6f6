import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import deformgan_ops  # noqa: E402

CPU_KERNELS = deformgan_ops.has_compiled_kernel("part_affine_warp", "cpu")

# The Triton interpreter tests run in their own process (tests/test_triton_interpret.py).
collect_ignore = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["triton_interpret"]

requires_cpu_kernels = pytest.mark.skipif(
    not CPU_KERNELS, reason="deformgan_ops._C was not built with CPU kernels")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _float32_training(monkeypatch):
    """Training in the tests' own process is float32 whatever the CPU: bfloat16 autocast
    is the CPU default where it has native bf16 (deformgan.engine.cpu_has_native_bf16),
    and the figures the training tests compare are float32 ones. The tests of that
    choice patch the probe themselves; the probe's own test imports the real one."""
    import deformgan.engine

    monkeypatch.setattr(deformgan.engine, "cpu_has_native_bf16", lambda: False)
