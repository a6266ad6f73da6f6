import math

import pytest
import torch

import deformgan_ops as D
from conftest import requires_cpu_kernels
from helpers import assert_close_scaled, grads_of

BACKENDS = ["reference", pytest.param("cpu", marks=requires_cpu_kernels)]


def random_keypoints(N, K, H, W, dtype=torch.float32, missing=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.stack([torch.rand(N, K, generator=g, dtype=torch.float64) * (W - 1) + 0.3,
                      torch.rand(N, K, generator=g, dtype=torch.float64) * (H - 1) + 0.3], -1)
    if missing and K > 2:
        kp[:, 1] = -1.0               # missing: the file format's -1
        kp[0, 2, 0] = -3.0            # missing: one negative coordinate
        kp[-1, -1, 1] = float("nan")  # missing: not finite
    return kp.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_peak_one_at_the_joint_and_exp_minus_half_at_one_sigma(backend):
    kp = torch.tensor([[[10.0, 20.0]]])
    h = D.keypoint_heatmaps(kp, 40, 30, sigma=3.0, backend=backend)
    assert h.shape == (1, 1, 40, 30)
    assert h[0, 0, 20, 10].item() == pytest.approx(1.0, abs=1e-7)
    assert h.max().item() == pytest.approx(1.0, abs=1e-7)
    assert h[0, 0, 20, 13].item() == pytest.approx(math.exp(-0.5), rel=1e-6)  # 3 px = 1 sigma in x
    assert h[0, 0, 17, 10].item() == pytest.approx(math.exp(-0.5), rel=1e-6)  # and in y
    assert h[0, 0, 23, 13].item() == pytest.approx(math.exp(-1.0), rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_joints_give_zero_channels_and_zero_gradient(backend):
    kp = random_keypoints(2, 5, 16, 12).requires_grad_()
    h = D.keypoint_heatmaps(kp, 16, 12, sigma=2.0, backend=backend)
    assert h[:, 1].abs().max().item() == 0.0
    assert h[0, 2].abs().max().item() == 0.0
    assert h[-1, -1].abs().max().item() == 0.0
    assert h[0, 0].max().item() > 0.5
    (h * torch.randn_like(h)).sum().backward()
    assert torch.isfinite(kp.grad).all()
    assert kp.grad[:, 1].abs().max().item() == 0.0
    assert kp.grad[0, 2].abs().max().item() == 0.0
    assert kp.grad[-1, -1].abs().max().item() == 0.0


@requires_cpu_kernels
@pytest.mark.parametrize("shape", [(3, 18, 128, 64), (1, 1, 7, 5), (2, 4, 9, 13), (4, 3, 1, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_matches_reference(shape, dtype):
    N, K, H, W = shape
    kp = random_keypoints(N, K, H, W, dtype)
    kp[0, 0] = torch.tensor([W + 5.0, H + 3.0])  # a joint outside the image is not missing
    grad_out = torch.randn(N, K, H, W, dtype=dtype)
    sigma = 6.0 if H > 64 else 1.7
    ref, g_ref = grads_of(lambda k: D.keypoint_heatmaps(k, H, W, sigma, backend="reference"), [kp], grad_out)
    cpu, g_cpu = grads_of(lambda k: D.keypoint_heatmaps(k, H, W, sigma, backend="cpu"), [kp], grad_out)
    assert_close_scaled(cpu, ref, what="heatmaps")
    assert_close_scaled(g_cpu[0], g_ref[0], rtol=1e-4 if dtype == torch.float32 else 1e-10, what="grad")


@requires_cpu_kernels
def test_cpu_non_contiguous_and_empty():
    kp = random_keypoints(3, 6, 10, 8, torch.float64)
    kp_nc = torch.stack([kp, kp], 1)[:, 0]
    kp_t = kp.transpose(0, 1).contiguous().transpose(0, 1)
    assert not kp_t.is_contiguous()
    for k in (kp_nc, kp_t):
        assert_close_scaled(D.keypoint_heatmaps(k, 10, 8, 2.0, backend="cpu"),
                            D.keypoint_heatmaps(kp, 10, 8, 2.0, backend="reference"))
    empty = kp[:0].clone().requires_grad_()
    h = D.keypoint_heatmaps(empty, 10, 8, 2.0, backend="cpu")
    assert h.shape == (0, 6, 10, 8)
    h.sum().backward()
    assert empty.grad.shape == (0, 6, 2)


@requires_cpu_kernels
def test_gradcheck_float64():
    kp = random_keypoints(2, 4, 9, 7, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda k: D.keypoint_heatmaps(k, 9, 7, 1.5, backend="cpu"), (kp,),
                                    eps=1e-6, atol=1e-7)


@requires_cpu_kernels
def test_opcheck():
    kp = random_keypoints(2, 4, 9, 7, torch.float64).requires_grad_()
    torch.library.opcheck(torch.ops.deformgan_ops.keypoint_heatmaps.default, (kp, 9, 7, 1.5))
    grad = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    torch.library.opcheck(torch.ops.deformgan_ops._keypoint_heatmaps_backward.default,
                          (grad, kp.detach(), 9, 7, 1.5))


BAD = [
    (dict(keypoints=torch.zeros(2, 18)), ValueError, "keypoints must be a 3-D tensor"),
    (dict(keypoints=torch.zeros(2, 18, 3)), ValueError, r"keypoints must have shape \[N, K, 2\]"),
    (dict(keypoints=torch.zeros(2, 18, 2, dtype=torch.long)), TypeError, "floating point"),
    (dict(height=0), ValueError, "height must be a positive int"),
    (dict(width=2.5), ValueError, "width must be a positive int"),
    (dict(sigma=0.0), ValueError, "sigma must be a positive finite number"),
    (dict(sigma=float("nan")), ValueError, "sigma must be a positive finite number"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change,exc,msg", BAD)
def test_bad_input_raises_a_clear_error(backend, change, exc, msg):
    args = dict(keypoints=torch.zeros(2, 18, 2), height=16, width=8, sigma=2.0)
    args.update(change)
    with pytest.raises(exc, match=msg):
        D.keypoint_heatmaps(args["keypoints"], args["height"], args["width"], args["sigma"], backend=backend)


@requires_cpu_kernels
def test_cpp_checks_name_the_argument():
    with pytest.raises(RuntimeError, match="sigma must be a positive finite number"):
        torch.ops.deformgan_ops.keypoint_heatmaps(torch.zeros(1, 2, 2), 4, 4, -1.0)
    with pytest.raises(RuntimeError, match="keypoints must have shape"):
        torch.ops.deformgan_ops.keypoint_heatmaps(torch.zeros(1, 2, 3), 4, 4, 1.0)


def test_reference_default_sigma_is_the_public_one():
    """The reference's default sigma (6, docs/method.md (pose rendering)) is the public op's, and it is
    the one used when none is given: sigma 7 gives other numbers."""
    import inspect

    from deformgan_ops.reference.keypoint_heatmaps import keypoint_heatmaps as reference_heatmaps
    kp = torch.tensor([[[10.0, 20.0], [3.5, 7.25]]], dtype=torch.float64)
    assert torch.equal(reference_heatmaps(kp, 32, 16), reference_heatmaps(kp, 32, 16, 6.0))
    assert not torch.equal(reference_heatmaps(kp, 32, 16, 6.0), reference_heatmaps(kp, 32, 16, 7.0))
    assert inspect.signature(reference_heatmaps).parameters["sigma"].default == 6.0
    assert inspect.signature(D.keypoint_heatmaps).parameters["sigma"].default == 6.0
