"""Operators under hostile input: empty sizes, non-finite values, double backward,
numpy scalars, aliased out=, absurd window sizes (README "Failure behaviour")."""
import math

import numpy as np
import pytest
import torch

import deformgan_ops as D
from conftest import requires_cpu_kernels

BACKENDS = ["reference", pytest.param("cpu", marks=requires_cpu_kernels)]


def identity(N, P, dtype=torch.float32):
    theta = torch.zeros(N, P, 2, 3, dtype=dtype)
    theta[..., 0, 0] = 1
    theta[..., 1, 1] = 1
    return theta


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H,W", [(0, 6), (4, 0), (0, 0)])
def test_warp_of_empty_features_is_zero_not_a_crash(backend, H, W):
    # the segfault repro: features with H = 0 or W = 0, a non-empty output. No corner
    # is inside: the output is exactly 0, [N, C, Ho, Wo] in the features' dtype, and
    # every gradient is exactly 0.
    N, C, P, Ho, Wo = 2, 3, 4, 6, 5
    g = torch.Generator().manual_seed(4)
    f = torch.randn(N, C, H, W, dtype=torch.float64, generator=g).requires_grad_()
    theta = identity(N, P, torch.float64) + 0.1 * torch.randn(N, P, 2, 3, dtype=torch.float64, generator=g)
    theta.requires_grad_()
    masks = torch.rand(N, P, Ho, Wo, dtype=torch.float64, generator=g).requires_grad_()
    out = D.part_affine_warp(f, theta, masks, backend=backend)
    assert out.shape == (N, C, Ho, Wo) and out.dtype == torch.float64
    assert torch.equal(out, torch.zeros_like(out))
    grads = torch.autograd.grad(out, [f, theta, masks], torch.randn(out.shape, dtype=torch.float64, generator=g))
    for grad, x in zip(grads, [f, theta, masks]):
        assert grad.shape == x.shape and torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_warp_nan_at_the_corner_reaches_only_the_outputs_that_sample_it(backend):
    f = torch.randn(1, 1, 5, 6)
    f[0, 0, 0, 0] = math.nan
    theta = identity(1, 1)
    theta[0, 0, 0, 2] = 0.5  # u = x + 0.5: only output (0, 0) has input (0, 0) as a corner
    out = D.part_affine_warp(f, theta, torch.ones(1, 1, 5, 6), backend=backend)
    expected = torch.zeros(1, 1, 5, 6, dtype=torch.bool)
    expected[0, 0, 0, 0] = True
    assert torch.equal(torch.isnan(out), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_warp_nan_candidate_wins_the_max_and_a_zero_mask_hides_it(backend):
    f = torch.ones(1, 1, 4, 4)
    f[0, 0, 2, 2] = math.nan
    theta = identity(1, 2)
    masks = torch.ones(1, 2, 4, 4)
    masks[0, 0] = 5.0  # part 0 is larger everywhere it is finite
    out = D.part_affine_warp(f, theta, masks, backend=backend)
    # at integer locations the corners with weight 0 are still read (grid_sample's
    # rule): input (2, 2) is a corner of outputs (1..2, 1..2)
    nan = torch.zeros(4, 4, dtype=torch.bool)
    nan[1:3, 1:3] = True
    assert torch.equal(torch.isnan(out[0, 0]), nan)
    assert torch.equal(out[0, 0][~nan], torch.full((12,), 5.0))
    masks[0, :, 1:3, 1:3] = 0  # zero masks: the candidates are exactly 0, never sampled
    out = D.part_affine_warp(f, theta, masks, backend=backend)
    assert torch.isfinite(out).all() and not out[0, 0, 1:3, 1:3].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nn_loss_nan_anywhere_gives_nan_loss_and_backward_runs(backend):
    g, t = torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5)
    t[1, 2, 3, 3] = math.nan
    assert math.isnan(D.nn_loss(g, t, backend=backend))
    t = torch.randn(2, 3, 6, 5)
    g[0, 0, 0, 0] = math.nan  # the corner: every window position of that pixel is NaN
    g.requires_grad_(True)
    loss = D.nn_loss(g, t, backend=backend)
    assert math.isnan(loss)
    loss.backward()
    assert torch.isfinite(g.grad[1]).all()
    g2 = torch.randn(1, 1, 4, 4)
    g2[0, 0, 1, 1] = math.inf
    assert D.nn_loss(g2, torch.randn(1, 1, 4, 4), backend=backend) == math.inf


@pytest.mark.parametrize("backend", BACKENDS)
def test_nn_loss_window_larger_than_the_image_is_clipped(backend):
    g, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    # radius 4 already covers the whole 4x5 image: a larger window is the same
    expected = D.nn_loss(g, t, 9, reduction="none", backend="reference")
    torch.testing.assert_close(D.nn_loss(g, t, 20001, reduction="none", backend=backend), expected)


@requires_cpu_kernels
def test_raw_nn_loss_op_refuses_an_oversized_window_with_a_clear_message():
    g = torch.randn(1, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"kernel_size must be at most 2 \* max\(H, W\) - 1 = 7"):
        torch.ops.deformgan_ops.nn_loss(g, g, 20001)


@requires_cpu_kernels
@pytest.mark.parametrize("op", [op for op in D.operators() if D.operator(op).differentiable])
def test_double_backward_raises_on_the_fused_kernels_and_is_exact_on_the_reference(op):
    torch.manual_seed(1)
    if op == "part_affine_warp":
        f = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
        theta = (identity(1, 2, torch.float64) + 0.1 * torch.rand(1, 2, 2, 3, dtype=torch.float64))
        masks = torch.rand(1, 2, 5, 4, dtype=torch.float64) + 0.1
        fn = lambda x, b: D.part_affine_warp(x, theta, masks, backend=b)  # noqa: E731
    elif op == "keypoint_heatmaps":
        f = (torch.rand(1, 3, 2, dtype=torch.float64) * 4).requires_grad_(True)
        fn = lambda x, b: D.keypoint_heatmaps(x, 5, 4, 1.5, backend=b)  # noqa: E731
    else:
        f = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
        t = torch.randn(1, 2, 5, 4, dtype=torch.float64)
        fn = lambda x, b: D.nn_loss(x, t, 3, reduction="sum", backend=b)  # noqa: E731
    # the reference gives the true second derivative
    assert torch.autograd.gradgradcheck(lambda x: fn(x, "reference"), (f,))
    (g,) = torch.autograd.grad(fn(f, "cpu").pow(2).sum(), f, create_graph=True)
    with pytest.raises(RuntimeError, match=f"double backward through deformgan_ops.{op} is not supported"):
        torch.autograd.grad(g.sum(), f)


@pytest.mark.parametrize("backend", BACKENDS)
def test_numpy_scalars_are_accepted_as_sizes_and_sigma(backend):
    kp = torch.tensor([[[2.0, 3.0]]])
    a = D.keypoint_heatmaps(kp, np.int64(6), np.int32(5), np.float32(2), backend=backend)
    b = D.keypoint_heatmaps(kp, 6, 5, 2.0, backend=backend)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="sigma must be a positive finite number"):
        D.keypoint_heatmaps(kp, 6, 5, np.float32("nan"), backend=backend)
    with pytest.raises(ValueError, match="height must be a positive int"):
        D.keypoint_heatmaps(kp, True, 5, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_sharing_memory_with_the_input_is_refused(backend):
    buf = torch.zeros(1 * 18 * 2 + 18 * 4 * 4)
    kp = buf[:36].view(1, 18, 2)
    out = buf[36:].view(1, 18, 4, 4)
    with pytest.raises(ValueError, match="out must not share memory with keypoints"):
        D.keypoint_heatmaps(kp, 4, 4, out=out, backend=backend)
    big = torch.zeros(1 * 10 * 4 * 4 + 36)
    with pytest.raises(ValueError, match="out must not share memory with target_keypoints"):
        D.part_masks(big[-36:].view(1, 18, 2), 4, 4, out=big[:160].view(1, 10, 4, 4), backend=backend)
