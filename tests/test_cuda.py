"""CUDA C++ and Triton kernels on a CUDA device against the reference (skipped
without a GPU), and the CUDA build check (CI compiles the .cu files here)."""
import os
import warnings

import pytest
import torch

import deformgan_ops as D
from helpers import assert_close_scaled, assert_fake_strides_match, grads_of, warp_inputs

OPS = D.operators()
HAS_GPU = torch.cuda.is_available()
GPU_BACKENDS = [b for b in ("cuda", "triton") if HAS_GPU and b in D.available_backends("cuda")]

requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device")


@pytest.mark.skipif(os.environ.get("DEFORMGAN_FORCE_CUDA") != "1",
                    reason="the CUDA build is only required with DEFORMGAN_FORCE_CUDA=1")
def test_cuda_kernels_were_compiled():
    for op in OPS:
        assert D.has_compiled_kernel(op, "cuda"), f"no CUDA kernel registered for {op}"


def _to(ts, device):
    return [t.to(device) if t is not None else None for t in ts]


@requires_gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS or ["cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", [dict(N=2, C=3, H=9, W=7, P=4), dict(N=3, C=64, H=32, W=16, P=10, Ho=17, Wo=9),
                                  dict(N=2, C=2, H=6, W=5, P=3, far=True),
                                  dict(N=2, C=13, H=8, W=6, P=5)])  # a partial channel chunk
@pytest.mark.parametrize("offsets", [True, False])
def test_part_affine_warp_gpu(backend, dtype, case, offsets):
    inputs = _to(warp_inputs(**case, dtype=dtype, offsets=offsets), "cuda")
    N, C = inputs[0].shape[:2]
    Ho, Wo = inputs[2].shape[2:]
    grad_out = torch.randn(N, C, Ho, Wo, dtype=dtype, device="cuda")
    out, g = grads_of(lambda *a: D.part_affine_warp(*a, backend=backend), inputs, grad_out)
    ref, g_ref = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), _to(inputs, "cpu"), grad_out.cpu())
    assert_close_scaled(out.cpu(), ref)
    for a, b in zip(g, g_ref):
        if b is not None:
            assert_close_scaled(a.cpu(), b, rtol=1e-4 if dtype == torch.float32 else 1e-9)


@requires_gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS or ["cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keypoint_heatmaps_and_nn_loss_gpu(backend, dtype):
    kp = torch.rand(3, 18, 2, dtype=dtype) * torch.tensor([64.0, 128.0], dtype=dtype)
    kp[0, 3] = -1
    kp[1, 4, 0] = float("nan")
    go = torch.randn(3, 18, 128, 64, dtype=dtype)
    out, g = grads_of(lambda k: D.keypoint_heatmaps(k, 128, 64, 6.0, backend=backend), [kp.cuda()], go.cuda())
    ref, g_ref = grads_of(lambda k: D.keypoint_heatmaps(k, 128, 64, 6.0, backend="reference"), [kp], go)
    assert_close_scaled(out.cpu(), ref)
    assert_close_scaled(g[0].cpu(), g_ref[0], rtol=1e-4 if dtype == torch.float32 else 1e-9)
    for k in (1, 3, 5, 7, 9):  # 9: the generic (not unrolled) window kernel
        gen, target = torch.randn(2, 16, 20, 11, dtype=dtype), torch.randn(2, 16, 20, 11, dtype=dtype)
        grad = torch.randn(2, 20, 11, dtype=dtype)
        out, g = grads_of(lambda a, b: D.nn_loss(a, b, k, "none", backend=backend),
                          [gen.cuda(), target.cuda()], grad.cuda())
        ref, g_ref = grads_of(lambda a, b: D.nn_loss(a, b, k, "none", backend="reference"), [gen, target], grad)
        assert_close_scaled(out.cpu(), ref)
        for a, b in zip(g, g_ref):
            assert_close_scaled(a.cpu(), b)


@requires_gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS or ["cuda"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward_gpu(backend, dtype):
    # affines with exactly representable entries (identity plus integer shifts) and 0/1
    # masks, so that only the features' rounding separates the result from float32
    f = torch.randn(2, 8, 16, 8)
    theta = torch.zeros(2, 4, 2, 3)
    theta[:, :, 0, 0] = theta[:, :, 1, 1] = 1
    theta[:, :, :, 2] = torch.randint(-2, 3, (2, 4, 2)).float()
    masks = (torch.rand(2, 4, 16, 8) > 0.5).float()
    masks[:, 0] = 1
    ref = D.part_affine_warp(f.to(dtype).float(), theta, masks, backend="reference")
    out = D.part_affine_warp(*_to([f.to(dtype), theta.to(dtype), masks.to(dtype)], "cuda"), backend=backend)
    assert out.dtype == dtype
    assert (out.float().cpu() - ref).abs().max().item() <= (0.01 if dtype == torch.bfloat16 else 0.002) * ref.abs().max()


@requires_gpu
def test_cuda_opcheck_and_gradcheck():
    if "cuda" not in GPU_BACKENDS:
        pytest.skip("CUDA kernels not compiled")
    f, theta, masks, off = _to(warp_inputs(N=2, C=2, H=6, W=5, P=3, dtype=torch.float64, zero_masks=False), "cuda")
    args = [t.requires_grad_() for t in (f, theta, masks, off)]
    torch.library.opcheck(torch.ops.deformgan_ops.part_affine_warp.default, tuple(args))
    assert torch.autograd.gradcheck(lambda *a: D.part_affine_warp(*a, backend="cuda"), args, eps=1e-6,
                                    atol=1e-6, rtol=1e-4)
    gen = torch.randn(2, 3, 5, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    target = torch.randn(2, 3, 5, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.deformgan_ops.nn_loss.default, (gen, target, 3))
    assert torch.autograd.gradcheck(lambda a, b: D.nn_loss(a, b, 3, "none", backend="cuda"), (gen, target))
    kp = (torch.rand(2, 4, 2, dtype=torch.float64, device="cuda") * 4 + 0.5).requires_grad_()
    torch.library.opcheck(torch.ops.deformgan_ops.keypoint_heatmaps.default, (kp, 7, 6, 1.5))
    assert torch.autograd.gradcheck(lambda k: D.keypoint_heatmaps(k, 7, 6, 1.5, backend="cuda"), (kp,))


@requires_gpu
def test_deterministic_mode_alerts_on_atomic_backward():
    if "cuda" not in GPU_BACKENDS:
        pytest.skip("CUDA kernels not compiled")
    f, theta, masks, off = _to(warp_inputs(N=1, C=2, H=6, W=5, P=2), "cuda")
    f.requires_grad_()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            D.part_affine_warp(f, theta, masks, off, backend="cuda").sum().backward()
        assert any("_part_affine_warp_backward" in str(w.message) for w in caught)
    finally:
        torch.use_deterministic_algorithms(False)


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pose_geometry_gpu(dtype):
    if not D.has_compiled_kernel("part_masks", "cuda"):
        pytest.skip("CUDA kernels not compiled")
    from test_pose_geometry import random_poses
    src, tgt = random_poses(300, 0, dtype), random_poses(300, 1, dtype)
    th, v = D.part_affines(src.cuda(), tgt.cuda(), backend="cuda")
    th_r, v_r = D.part_affines(src, tgt, backend="reference")
    assert torch.equal(v.cpu(), v_r)
    assert ((th.cpu().double() - th_r.double()).abs() / (th_r.double().abs() + 1)).max() <= \
        (1e-5 if dtype == torch.float32 else 1e-9)
    for scale in (1, 2, 8):
        H, W = 128 // scale, 64 // scale
        m = D.part_masks(tgt.cuda(), H, W, float(scale), v.cuda(), backend="cuda")
        assert torch.equal(m.cpu(), D.part_masks(tgt, H, W, float(scale), v_r, backend="reference"))
    out = torch.empty(300, 10, 37, 23, dtype=dtype, device="cuda")
    D.part_masks(tgt.cuda(), 37, 23, 1.5, out=out, backend="cuda")
    assert torch.equal(out.cpu(), D.part_masks(tgt, 37, 23, 1.5, backend="reference"))
    heat = torch.empty(300, 18, 16, 8, dtype=dtype, device="cuda")
    D.keypoint_heatmaps(tgt.cuda(), 16, 8, 2.0, out=heat, backend="cuda")
    assert_close_scaled(heat.cpu(), D.keypoint_heatmaps(tgt, 16, 8, 2.0, backend="reference"))
    torch.library.opcheck(torch.ops.deformgan_ops.part_masks.default, (tgt[:4].cuda(), 16, 8, 8.0, None))
    torch.library.opcheck(torch.ops.deformgan_ops.part_affines.default, (src[:4].cuda(), tgt[:4].cuda()))


@requires_gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("op", [op for op in D.operators() if D.operator(op).triton])
def test_the_fake_kernels_give_the_strides_the_gpu_kernels_return(op, backend):
    """As tests/test_registry.py checks on the CPU: channels-last or transposed inputs
    must not change the strides torch.compile plans with."""
    if backend not in D.available_backends("cuda"):
        pytest.skip(f"backend {backend!r} is not available")
    assert_fake_strides_match(op, backend, device="cuda")


@requires_gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS or ["cuda"])
def test_warp_non_finite_gradient_rule_gpu(backend):
    """The non-finite rule of the gradients (tests/test_part_affine_warp.py) on the GPU:
    a losing part gets exactly 0 even beside an inf feature; a NaN incoming gradient at
    a pixel whose winner samples outside makes that mask gradient NaN, once."""
    from test_part_affine_warp import _warp_grads, _with_losing_part_next_to_inf, identity_theta
    f, theta, masks = _with_losing_part_next_to_inf()
    grad = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    want = _warp_grads("reference", f, theta, masks, grad)
    got = _warp_grads(backend, *_to([f, theta, masks, grad], "cuda"))
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, equal_nan=True, rtol=1e-12, atol=0)
    f = torch.rand(1, 2, 4, 4, dtype=torch.float64) + 0.5
    theta = identity_theta(1, 2, torch.float64)
    theta[0, 0, 0, 2] = 100.0
    masks = torch.stack([torch.ones(4, 4), torch.full((4, 4), -1.0)]).unsqueeze(0).double()
    grad = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    grad[0, 1, 2, 1] = float("nan")
    gm = _warp_grads(backend, *_to([f, theta, masks, grad], "cuda"))[3].cpu()
    assert gm[0, 0].isnan().sum() == 1 and gm[0, 0, 2, 1].isnan()


@requires_gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS or ["cuda"])
def test_nn_loss_invalid_argmin_and_a_large_window_gpu(backend):
    """An argmin outside the window gives its pixel no gradient (the rule of every
    backend), and a 31 x 31 window runs and matches the reference."""
    gen, target = torch.randn(1, 2, 4, 4, device="cuda"), torch.randn(1, 2, 4, 4, device="cuda")
    if backend == "cuda":
        fwd, bwd = torch.ops.deformgan_ops.nn_loss, torch.ops.deformgan_ops._nn_loss_backward
    else:
        from deformgan_ops.triton import nn_loss as T
        fwd, bwd = T.nn_loss_op, T.nn_loss_backward_op
    d, argmin = fwd(gen, target, 3)
    grad = torch.ones_like(d)
    want_g, _ = bwd(grad, gen, target, argmin, 3, [True, True])
    corrupt = argmin.clone()
    corrupt[0, 0, 0] = 1000
    gg, _ = bwd(grad, gen, target, corrupt, 3, [True, True])
    assert torch.equal(gg[0, :, 0, 0].cpu(), torch.zeros(2))
    assert torch.equal(gg[0, :, 1:].cpu(), want_g[0, :, 1:].cpu())
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 9, 12, generator=g), torch.randn(1, 3, 9, 12, generator=g)
    torch.testing.assert_close(D.nn_loss(a.cuda(), b.cuda(), 31, "none", backend=backend).cpu(),
                               D.nn_loss(a, b, 31, "none", backend="reference"))
