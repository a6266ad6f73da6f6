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


# ---------------------------------------------------------------- markers (pyproject.toml)
# gpu: needs a CUDA device (tests/test_cuda.py); kernels: the operators' own test modules;
# slow: the tests listed in tests/slow_tests.txt (measured with --durations; `make
# test-fast` runs everything else, `make test` everything).
HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_MODULES = {"test_part_affine_warp.py", "test_nn_loss.py", "test_keypoint_heatmaps.py",
                  "test_pose_geometry.py", "test_registry.py", "test_low_precision_cpu.py", "test_autocast.py",
                  "test_op_failure_behaviour.py", "test_op_arguments.py", "test_fuzz_ops.py", "test_shared_math.py",
                  "test_triton_interpret.py", "test_validate.py", "test_cuda.py", "test_backend.py"}


def _slow_tests():
    path = os.path.join(HERE, "slow_tests.txt")
    if not os.path.isfile(path):
        return ()
    with open(path) as fh:
        return tuple(line.split("#")[0].strip() for line in fh if line.split("#")[0].strip())


def pytest_collection_modifyitems(config, items):
    slow = _slow_tests()
    for item in items:
        module = os.path.basename(str(item.fspath))
        nodeid = item.nodeid  # tests/test_x.py::name[parameters], from the repository root
        if module == "test_cuda.py":
            item.add_marker(pytest.mark.gpu)
        if module in KERNEL_MODULES:
            item.add_marker(pytest.mark.kernels)
        if any(nodeid == s or nodeid.startswith(s + "[") or (s.endswith(".py") and nodeid.startswith(s + "::"))
               for s in slow):
            item.add_marker(pytest.mark.slow)
