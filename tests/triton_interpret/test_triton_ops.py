"""Triton kernels under TRITON_INTERPRET=1 on CPU tensors, against the reference.

Run by tests/test_triton_interpret.py in a separate process that sets
TRITON_INTERPRET=1 before anything imports triton (the interpreter is chosen
when the kernels are defined)."""
import os
import sys

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run these tests with TRITON_INTERPRET=1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import deformgan_ops as D  # noqa: E402
from helpers import (DropGradient, assert_close_scaled, assert_fake_strides_match, grads_of,  # noqa: E402
                     ops_run_by_backward, warp_inputs)

pytestmark = pytest.mark.skipif("triton" not in D.available_backends("cpu"),
                                reason="triton is not installed")
DTYPES = [torch.float32, torch.float64]


def tol(dtype):
    return 1e-4 if dtype == torch.float32 else 1e-10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    dict(N=2, C=1, H=7, W=5, P=3),
    dict(N=1, C=3, H=6, W=9, P=10, Ho=5, Wo=4),
    dict(N=2, C=2, H=5, W=6, P=4, far=True),
    dict(N=1, C=2, H=1, W=5, P=2),
    dict(N=2, C=11, H=4, W=5, P=3),  # two channel chunks of the forward, the second partial
], ids=["small", "resize-P10", "far-outside", "H1", "C11"])
@pytest.mark.parametrize("offsets", [True, False])
def test_part_affine_warp(dtype, case, offsets):
    inputs = warp_inputs(**case, dtype=dtype, offsets=offsets)
    N, C = inputs[0].shape[:2]
    Ho, Wo = inputs[2].shape[2:]
    grad_out = torch.randn(N, C, Ho, Wo, dtype=dtype)
    out_t, g_t = grads_of(lambda *a: D.part_affine_warp(*a, backend="triton"), inputs, grad_out)
    out_r, g_r = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), inputs, grad_out)
    assert_close_scaled(out_t, out_r, what="output")
    for name, a, b in zip(["features", "theta", "masks", "offsets"], g_t, g_r):
        if b is None:
            assert a is None
        else:
            assert_close_scaled(a, b, rtol=tol(dtype), what=f"grad {name}")


def test_part_affine_warp_float16_features_with_float32_geometry():
    """Float16 features with float32 theta, masks and offsets (float32
    arithmetic; bfloat16 is not run by the interpreter). The oracle: the float32
    reference on the same values; each gradient comes back in its input's dtype."""
    f, theta, masks, off = warp_inputs(N=2, C=3, H=7, W=5, P=3, offsets=True)
    f = f.half()
    grad_out = torch.randn(2, 3, 7, 5).half()
    out_t, g_t = grads_of(lambda *a: D.part_affine_warp(*a, backend="triton"), [f, theta, masks, off], grad_out)
    out_r, g_r = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), [f.float(), theta, masks, off],
                          grad_out.float())
    assert out_t.dtype == torch.float16 and [g.dtype for g in g_t] == [torch.float16] + [torch.float32] * 3
    assert_close_scaled(out_t.float(), out_r.half().float(), rtol=1e-3, what="output")
    for name, a, b in zip(["features", "theta", "masks", "offsets"], g_t, g_r):
        assert_close_scaled(a.float(), b.to(a.dtype).float(), rtol=1e-3 if a.dtype == torch.float16 else 1e-4,
                            what=f"grad {name}")


def test_part_affine_warp_nan_locations_and_empty_batch():
    f, theta, masks, off = warp_inputs(N=2, C=2, H=5, W=4, P=2, dtype=torch.float64)
    off[0, 0, 1, 1] = float("nan")
    out = D.part_affine_warp(f, theta, masks, off, backend="triton")
    assert out[0, :, 1, 1].abs().max().item() == 0.0
    assert_close_scaled(out, D.part_affine_warp(f, theta, masks, off, backend="reference"))
    e = D.part_affine_warp(f[:0], theta[:0], masks[:0], off[:0], backend="triton")
    assert e.shape == (0, 2, 5, 4)


def test_part_affine_warp_non_finite_mask_where_no_corner_is_inside():
    """A NaN or inf mask at a location with no corner inside wins with a NaN
    candidate; its sample is 0 whatever the location, so its theta and offset
    gradients are exactly 0 (the reference's), not NaN."""
    f, theta, masks, off = warp_inputs(N=2, C=3, H=6, W=5, P=3, dtype=torch.float64, far=True)
    masks[0, 2, 1, 3] = float("nan")  # part 2 samples far outside the image
    masks[1, 2, 4, 0] = float("inf")
    grad_out = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    out_t, g_t = grads_of(lambda *a: D.part_affine_warp(*a, backend="triton"), [f, theta, masks, off], grad_out)
    out_r, g_r = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), [f, theta, masks, off], grad_out)
    assert out_t[0, :, 1, 3].isnan().all() and out_t[1, :, 4, 0].isnan().all()
    assert torch.equal(out_t.isnan(), out_r.isnan())
    for name, a, b in zip(["features", "theta", "masks", "offsets"], g_t, g_r):
        assert not b.isnan().any(), name
        assert torch.equal(a.isnan(), b.isnan()), name
        assert_close_scaled(a, b, rtol=1e-10, what=f"grad {name}")


def test_the_integer_outputs_get_no_gradient():
    """As for the CPU kernels: no zero gradient is made for the warp's uint8 winners or
    nn_loss's int32 argmin (the backward runs the backward op alone), and an output
    reached with no gradient (a function after it returned None) gives every input None."""
    f, theta, masks, off = warp_inputs(N=2, C=3, H=7, W=5, P=3)
    for t in (f, theta, masks, off):
        t.requires_grad_()
    out = D.part_affine_warp(f, theta, masks, off, backend="triton")
    # aten::detach: each gradient accumulated into its input's .grad
    assert ops_run_by_backward(out) == ["deformgan_triton::_part_affine_warp_backward"] + ["aten::detach"] * 4
    gen, target = torch.randn(2, 3, 5, 4, requires_grad=True), torch.randn(2, 3, 5, 4)
    assert ops_run_by_backward(D.nn_loss(gen, target, 3, "none", backend="triton")) == \
        ["deformgan_triton::_nn_loss_backward", "aten::detach"]
    for t in (f, theta, masks, off, gen):
        t.grad = None
    out = D.part_affine_warp(f, theta, masks, off, backend="triton")
    (DropGradient.apply(out).sum() + f.sum()).backward()  # f also reaches the loss another way
    assert torch.equal(f.grad, torch.ones_like(f))
    assert theta.grad is None and masks.grad is None and off.grad is None
    d = D.nn_loss(gen, target.requires_grad_(), 3, "none", backend="triton")
    (DropGradient.apply(d).sum() + gen.sum()).backward()
    assert torch.equal(gen.grad, torch.ones_like(gen)) and target.grad is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_keypoint_heatmaps(dtype):
    kp = (torch.rand(2, 5, 2, dtype=torch.float64) * torch.tensor([6.0, 8.0], dtype=torch.float64)).to(dtype)
    kp[0, 1] = -1  # missing
    kp[1, 2, 0] = float("nan")  # missing
    kp[1, 3] = torch.tensor([20.0, -0.5])  # negative y: missing
    grad_out = torch.randn(2, 5, 9, 7, dtype=dtype)
    out_t, g_t = grads_of(lambda k: D.keypoint_heatmaps(k, 9, 7, 1.5, backend="triton"), [kp], grad_out)
    out_r, g_r = grads_of(lambda k: D.keypoint_heatmaps(k, 9, 7, 1.5, backend="reference"), [kp], grad_out)
    assert_close_scaled(out_t, out_r)
    assert_close_scaled(g_t[0], g_r[0], rtol=tol(dtype))
    assert out_t[0, 1].abs().max().item() == 0 and g_t[0][0, 1].abs().max().item() == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 1, 2, 9)])
def test_nn_loss(dtype, k, shape):
    gen, target = torch.randn(*shape, dtype=dtype), torch.randn(*shape, dtype=dtype)
    grad = torch.randn(shape[0], shape[2], shape[3], dtype=dtype)
    out_t, g_t = grads_of(lambda a, b: D.nn_loss(a, b, k, "none", backend="triton"), [gen, target], grad)
    out_r, g_r = grads_of(lambda a, b: D.nn_loss(a, b, k, "none", backend="reference"), [gen, target], grad)
    assert_close_scaled(out_t, out_r)
    for a, b in zip(g_t, g_r):
        assert_close_scaled(a, b, rtol=tol(dtype))


def test_gradcheck_float64():
    f, theta, masks, off = warp_inputs(N=1, C=2, H=5, W=4, P=2, dtype=torch.float64, zero_masks=False)
    args = [t.requires_grad_() for t in (f, theta, masks, off)]
    assert torch.autograd.gradcheck(lambda *a: D.part_affine_warp(*a, backend="triton"), args,
                                    eps=1e-6, atol=1e-6, rtol=1e-4)
    gen = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: D.nn_loss(a, b, 3, "none", backend="triton"), (gen, target),
                                    eps=1e-6, atol=1e-6)
    kp = (torch.rand(1, 3, 2, dtype=torch.float64) * 4 + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda k: D.keypoint_heatmaps(k, 6, 5, 1.3, backend="triton"), (kp,),
                                    eps=1e-6, atol=1e-7)


def test_opcheck_of_the_triton_ops():
    import importlib

    PW = importlib.import_module("deformgan_ops.triton.part_affine_warp")
    NN = importlib.import_module("deformgan_ops.triton.nn_loss")
    KH = importlib.import_module("deformgan_ops.triton.keypoint_heatmaps")

    f, theta, masks, off = warp_inputs(N=1, C=2, H=5, W=4, P=2, dtype=torch.float64)
    torch.library.opcheck(PW.part_affine_warp_op, (f.requires_grad_(), theta, masks, off),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    gen, target = torch.randn(1, 2, 4, 3, dtype=torch.float64), torch.randn(1, 2, 4, 3, dtype=torch.float64)
    torch.library.opcheck(NN.nn_loss_op, (gen.requires_grad_(), target, 3),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    kp = torch.rand(1, 3, 2, dtype=torch.float64).requires_grad_()
    torch.library.opcheck(KH.keypoint_heatmaps_op, (kp, 6, 5, 1.3),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("op", [op for op in D.operators() if D.operator(op).triton])
def test_the_fake_kernels_give_the_strides_the_triton_ops_return(op):
    """As tests/test_registry.py checks for the compiled kernels: torch.compile plans with
    the fake strides, for inputs of every layout (part_affine_warp's output, winners and
    feature gradient follow channels-last features; everything else is contiguous)."""
    assert_fake_strides_match(op, "triton")


def test_nn_loss_large_window_runs_as_a_loop():
    """A 31 x 31 window (the window is a run-time loop, not unrolled), against the
    reference: forward and both gradients."""
    g = torch.Generator().manual_seed(3)
    gen = torch.randn(1, 2, 5, 7, generator=g, dtype=torch.float64)
    tgt = torch.randn(1, 2, 5, 7, generator=g, dtype=torch.float64)
    grad = torch.rand(1, 5, 7, generator=g, dtype=torch.float64)
    out_t, g_t = grads_of(lambda a, b: D.nn_loss(a, b, 31, "none", backend="triton"), [gen, tgt], grad)
    out_r, g_r = grads_of(lambda a, b: D.nn_loss(a, b, 31, "none", backend="reference"), [gen, tgt], grad)
    torch.testing.assert_close(out_t, out_r)
    for a, b in zip(g_t, g_r):
        torch.testing.assert_close(a, b)


def test_nn_loss_backward_gives_no_gradient_at_an_argmin_outside_the_window():
    """The rule of every backend: an argmin entry that is not a window position inside
    the image gives its pixel 0 generated gradient and scatters nothing."""
    from deformgan_ops.triton import nn_loss as T
    gen, target = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    d, argmin = T.nn_loss_op(gen, target, 3)
    grad = torch.ones_like(d)
    want_g, want_t = T.nn_loss_backward_op(grad, gen, target, argmin, 3, [True, True])
    for bad in (0, -1, 9, 1000):
        corrupt = argmin.clone()
        corrupt[0, 0, 0] = bad
        gg, gt = T.nn_loss_backward_op(grad, gen, target, corrupt, 3, [True, True])
        assert torch.equal(gg[0, :, 0, 0], torch.zeros(2))
        mask = torch.ones(4, 4, dtype=torch.bool)
        mask[0, 0] = False
        assert torch.equal(gg[0][:, mask], want_g[0][:, mask])
        o = int(argmin[0, 0, 0])
        q = (o // 3 - 1) * 4 + (o % 3 - 1)
        fixed = gt.clone().view(1, 2, 16)
        fixed[0, :, q] -= want_g[0, :, 0, 0]
        torch.testing.assert_close(fixed.view_as(gt), want_t, rtol=0, atol=1e-6)
