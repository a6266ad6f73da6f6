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
