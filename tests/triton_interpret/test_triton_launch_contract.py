"""The launch rules of the Triton kernels (deformgan_ops/triton/_common.py), checked in
the interpreter: 1-D grids, int64 program ids, no Python floats as kernel arguments (a
compiled kernel would take them as fp32 and break the float64 path), the device guard,
and the deterministic-algorithms alert of the backward passes that use atomics."""
import inspect
import os
import re
import sys
import warnings

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run these tests with TRITON_INTERPRET=1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import deformgan_ops as D  # noqa: E402
from helpers import warp_inputs  # noqa: E402

pytestmark = pytest.mark.skipif("triton" not in D.available_backends("cpu"), reason="triton is not installed")

import importlib  # noqa: E402

# the package re-exports the functions under the modules' names: import the modules
_common = importlib.import_module("deformgan_ops.triton._common")
TH = importlib.import_module("deformgan_ops.triton.keypoint_heatmaps")
TN = importlib.import_module("deformgan_ops.triton.nn_loss")
TW = importlib.import_module("deformgan_ops.triton.part_affine_warp")

MODULES = (TH, TN, TW)


class Recorder:
    """Stands in for a kernel object in its module: records each launch's grid and
    arguments, then launches the real kernel."""

    def __init__(self, name, kernel, log):
        self.name, self.kernel, self.log = name, kernel, log

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append((self.name, grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.fixture
def launches(monkeypatch):
    log = []
    for mod in MODULES:
        for name, obj in vars(mod).items():
            if name.endswith("_kernel") and hasattr(obj, "__getitem__"):
                monkeypatch.setattr(mod, name, Recorder(name, obj, log))
    return log


def run_every_kernel(dtype):
    feats, theta, masks, offsets = warp_inputs(N=2, C=2, H=5, W=6, P=3, dtype=dtype, offsets=True)
    for x in (feats, theta, masks, offsets):
        x.requires_grad_()
    D.part_affine_warp(feats, theta, masks, offsets, backend="triton").sum().backward()
    kp = (torch.rand(2, 18, 2, dtype=dtype) * 6).requires_grad_()
    D.keypoint_heatmaps(kp, 7, 5, 1.5, backend="triton").sum().backward()
    g = torch.randn(2, 3, 5, 4, dtype=dtype, requires_grad=True)
    t = torch.randn(2, 3, 5, 4, dtype=dtype, requires_grad=True)
    D.nn_loss(g, t, 3, backend="triton").backward()


def test_launches_use_1d_grids_and_no_float_arguments(launches):
    run_every_kernel(torch.float64)
    names = {name for name, *_ in launches}
    assert names == {"_part_affine_warp_forward_kernel", "_part_affine_warp_backward_kernel",
                     "_keypoint_heatmaps_forward_kernel", "_keypoint_heatmaps_backward_kernel",
                     "_nn_loss_forward_kernel", "_nn_loss_backward_kernel"}, names
    for name, grid, args, kwargs in launches:
        assert len(grid) == 1 and 0 < grid[0] <= _common.MAX_GRID_0, (name, grid)
        floats = [a for a in list(args) + list(kwargs.values()) if isinstance(a, float)]
        assert not floats, f"{name} takes Python floats {floats}: compiled Triton would make them fp32"


def test_sigma_reaches_the_float64_heatmaps_in_float64():
    # sigma with a long mantissa: an fp32 1/(2 sigma^2) would be off by ~1e-8 relative
    kp = torch.tensor([[[1.3, 2.7], [4.1, 0.2]]], dtype=torch.float64)
    sigma = 1.0 / 3.0
    out = D.keypoint_heatmaps(kp, 6, 5, sigma, backend="triton")
    ref = D.keypoint_heatmaps(kp, 6, 5, sigma, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-300)


def test_every_program_id_is_widened_to_int64():
    for mod in MODULES + (_common,):
        src = inspect.getsource(mod)
        for m in re.finditer(r"tl\.program_id\(\d\)", src):
            assert src[m.end():].startswith(".to(tl.int64)"), f"{mod.__name__}: {src[m.start():m.end() + 20]}"


def test_grid_limit_is_a_clear_error():
    assert _common.tiles(3, 1000) == (3 * 8,)
    with pytest.raises(RuntimeError, match="exceeds the grid limit"):
        _common.tiles(2 ** 24, 2 ** 14)


def test_device_guard_is_a_no_op_on_cpu():
    with _common.device_guard(torch.zeros(1)):
        pass


@pytest.mark.parametrize("op", ["part_affine_warp", "nn_loss_target", "nn_loss_generated_only", "heatmaps"])
def test_deterministic_mode_alerts_on_atomic_backward(op):
    feats, theta, masks, _ = warp_inputs(N=1, C=2, H=5, W=6, P=3, dtype=torch.float32, offsets=False)
    feats.requires_grad_()
    g = torch.randn(1, 2, 4, 4, requires_grad=True)
    t = torch.randn(1, 2, 4, 4, requires_grad=op == "nn_loss_target")
    kp = (torch.rand(1, 18, 2) * 4).requires_grad_()
    run = {"part_affine_warp": lambda: D.part_affine_warp(feats, theta, masks, backend="triton").sum(),
           "nn_loss_target": lambda: D.nn_loss(g, t, 3, backend="triton"),
           "nn_loss_generated_only": lambda: D.nn_loss(g, t, 3, backend="triton"),
           "heatmaps": lambda: D.keypoint_heatmaps(kp, 4, 4, 1.0, backend="triton").sum()}[op]
    atomics = op in ("part_affine_warp", "nn_loss_target")
    try:
        torch.use_deterministic_algorithms(True)
        if atomics:
            with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
                run().backward()
        else:
            run().backward()  # no atomics: no alert
        torch.use_deterministic_algorithms(True, warn_only=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run().backward()
        assert any("deterministic" in str(w.message) for w in caught) == atomics
    finally:
        torch.use_deterministic_algorithms(False)
