import warnings

import pytest
import torch

import deformgan_ops as D
from deformgan_ops import backend as B
from conftest import requires_cpu_kernels


def small_inputs():
    f = torch.randn(2, 3, 8, 6)
    theta = torch.eye(2, 3).expand(2, 2, 2, 3).contiguous()
    masks = torch.ones(2, 2, 8, 6)
    return f, theta, masks


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        D.nn_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), backend="fast")
    with pytest.raises(ValueError, match="backend must be one of"):
        D.set_backend("gpu")


@requires_cpu_kernels
def test_auto_uses_the_cpu_kernel():
    assert B.resolve("part_affine_warp", torch.device("cpu"), "auto") == "cpu"
    assert "cpu" in D.available_backends("cpu")


def test_auto_falls_back_to_the_reference_with_one_warning(monkeypatch):
    monkeypatch.setattr(B, "has_compiled_kernel", lambda op, dev: False)
    monkeypatch.setattr(B, "_warned", set())
    f, theta, masks = small_inputs()
    with pytest.warns(RuntimeWarning, match="slow pure-PyTorch reference"):
        out = D.part_affine_warp(f, theta, masks, backend="auto")
    torch.testing.assert_close(out, D.reference.part_affine_warp(f, theta, masks))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        D.part_affine_warp(f, theta, masks, backend="auto")


def test_explicit_unavailable_backends_raise(monkeypatch):
    f, theta, masks = small_inputs()
    with pytest.raises(RuntimeError, match="backend 'cuda' needs cuda tensors"):
        D.part_affine_warp(f, theta, masks, backend="cuda")
    monkeypatch.setattr(B, "has_compiled_kernel", lambda op, dev: False)
    with pytest.raises(RuntimeError, match="backend 'cpu' is not available"):
        D.part_affine_warp(f, theta, masks, backend="cpu")
    monkeypatch.setattr(B, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="backend 'triton' is not available"):
        D.nn_loss(f, f, backend="triton")


def test_set_backend_and_use_backend():
    assert D.get_backend() == "auto"
    with D.use_backend("reference"):
        assert D.get_backend() == "reference"
        assert B.resolve("nn_loss", torch.device("cpu"), None) == "reference"
    assert D.get_backend() == "auto"
    D.set_backend("reference")
    try:
        assert B.resolve("nn_loss", torch.device("cpu"), None) == "reference"
    finally:
        D.set_backend("auto")


@requires_cpu_kernels
def test_ops_work_under_torch_compile():
    def f(feat, theta, masks, kp, gen, target):
        a = D.part_affine_warp(feat, theta, masks, backend="cpu")
        h = D.keypoint_heatmaps(kp, 8, 6, 2.0, backend="cpu")
        return a.square().sum() + h.sum() + D.nn_loss(gen, target, 3, backend="cpu")

    feat, theta, masks = small_inputs()
    kp = torch.rand(2, 4, 2) * 5
    gen, target = torch.randn(2, 3, 8, 6), torch.randn(2, 3, 8, 6)
    leaves = [t.clone().requires_grad_() for t in (feat, kp, gen)]
    eager = f(leaves[0], theta, masks, leaves[1], leaves[2], target)
    eager_grads = torch.autograd.grad(eager, leaves)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    leaves2 = [t.clone().requires_grad_() for t in (feat, kp, gen)]
    out = compiled(leaves2[0], theta, masks, leaves2[1], leaves2[2], target)
    grads = torch.autograd.grad(out, leaves2)
    torch.testing.assert_close(out, eager)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b)


def test_a_bad_environment_variable_is_named_at_the_first_operator_call():
    """DEFORMGAN_OPS_BACKEND=bogus: the first call says which variable holds what."""
    import subprocess
    import sys
    code = ("import torch, deformgan_ops as D\n"
            "try:\n    D.keypoint_heatmaps(torch.zeros(1, 1, 2), 2, 2)\n"
            "except ValueError as e:\n    print(e)\n"
            "D.set_backend('reference')\nprint(D.keypoint_heatmaps(torch.zeros(1, 1, 2), 2, 2).shape)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(__import__("os").environ, DEFORMGAN_OPS_BACKEND="bogus"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "the environment variable DEFORMGAN_OPS_BACKEND must be one of ('auto', 'reference', 'cpu', 'cuda', "
        "'triton'), got 'bogus'", "torch.Size([1, 1, 2, 2])"]
