import pytest
import torch

import deformgan_ops as D
from conftest import requires_cpu_kernels
from helpers import DropGradient, assert_close_scaled, grads_of, ops_run_by_backward

BACKENDS = ["reference", pytest.param("cpu", marks=requires_cpu_kernels)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [3, 5])
def test_zero_when_target_is_generated_shifted_within_the_window(backend, k):
    r = k // 2
    gen = torch.randn(2, 4, 12, 9)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            target = torch.roll(gen, shifts=(dy, dx), dims=(2, 3))
            d = D.nn_loss(gen, target, k, reduction="none", backend=backend)
            # away from the border the shifted copy of each pixel is inside its window
            interior = d[:, r:-r, r:-r]
            assert interior.abs().max().item() == 0.0
            assert d.min().item() >= 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_size_one_is_channel_summed_l1(backend):
    gen, target = torch.randn(2, 5, 7, 6), torch.randn(2, 5, 7, 6)
    d = D.nn_loss(gen, target, 1, reduction="none", backend=backend)
    torch.testing.assert_close(d, (gen - target).abs().sum(1))
    torch.testing.assert_close(D.nn_loss(gen, target, 1, backend=backend), (gen - target).abs().sum(1).mean())
    torch.testing.assert_close(D.nn_loss(gen, target, 1, reduction="sum", backend=backend),
                               (gen - target).abs().sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_windows_are_clipped_to_the_image(backend):
    """A corner pixel sees only the in-image part of its window (4 of 9 for k=3)."""
    gen = torch.zeros(1, 1, 3, 3)
    target = torch.full((1, 1, 3, 3), 10.0)
    target[0, 0, 2, 2] = 1.0  # the only close match, in the window of (1, 1), (1, 2), (2, 1), (2, 2)
    d = D.nn_loss(gen, target, 3, reduction="none", backend=backend)
    assert d[0, 0, 0].item() == 10.0
    assert d[0, 2, 2].item() == 1.0 and d[0, 1, 1].item() == 1.0


def test_ties_take_the_first_window_position():
    gen = torch.zeros(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.ones(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)  # every match ties
    backends = ["reference"] + (["cpu"] if D.has_compiled_kernel("nn_loss", "cpu") else [])
    grads = []
    for backend in backends:
        g, t = gen.detach().clone().requires_grad_(), target.detach().clone().requires_grad_()
        D.nn_loss(g, t, 3, reduction="sum", backend=backend).backward()
        grads.append(t.grad)
    # centre pixel (1, 1): first window position is (0, 0); pixel (0, 0): first in-image is (0, 0)
    expected = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    for y in range(3):
        for x in range(3):
            expected[0, 0, max(y - 1, 0), max(x - 1, 0)] += 1
    for gt in grads:
        torch.testing.assert_close(gt, expected)


CASES = [(2, 64, 16, 8), (1, 1, 5, 7), (3, 3, 9, 4), (2, 2, 1, 6), (1, 4, 2, 2)]


@requires_cpu_kernels
@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_matches_reference(shape, k, dtype):
    gen, target = torch.randn(*shape, dtype=dtype), torch.randn(*shape, dtype=dtype)
    grad = torch.randn(shape[0], shape[2], shape[3], dtype=dtype)
    ref, g_ref = grads_of(lambda a, b: D.nn_loss(a, b, k, "none", backend="reference"), [gen, target], grad)
    cpu, g_cpu = grads_of(lambda a, b: D.nn_loss(a, b, k, "none", backend="cpu"), [gen, target], grad)
    assert_close_scaled(cpu, ref, what="distance")
    for name, a, b in zip(["generated", "target"], g_cpu, g_ref):
        assert_close_scaled(a, b, what=f"grad {name}")
    for reduction in ("mean", "sum"):
        assert_close_scaled(D.nn_loss(gen, target, k, reduction, backend="cpu"),
                            D.nn_loss(gen, target, k, reduction, backend="reference"), what=reduction)


@requires_cpu_kernels
def test_cpu_non_contiguous_and_empty():
    gen, target = torch.randn(2, 3, 8, 6, dtype=torch.float64), torch.randn(2, 3, 8, 6, dtype=torch.float64)
    gen_nc = gen.transpose(2, 3).contiguous().transpose(2, 3)
    target_cl = target.to(memory_format=torch.channels_last)
    assert not gen_nc.is_contiguous() and not target_cl.is_contiguous()
    assert_close_scaled(D.nn_loss(gen_nc, target_cl, 3, "none", backend="cpu"),
                        D.nn_loss(gen, target, 3, "none", backend="reference"))
    e = gen[:0].clone().requires_grad_()
    d = D.nn_loss(e, target[:0], 3, "none", backend="cpu")
    assert d.shape == (0, 8, 6)
    d.sum().backward()
    assert e.grad.shape == e.shape
    assert torch.isnan(D.nn_loss(gen[:0], target[:0], 3, backend="cpu"))  # mean of nothing, as torch


@requires_cpu_kernels
def test_gradcheck_float64():
    gen = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: D.nn_loss(a, b, 3, "none", backend="cpu"), (gen, target),
                                    eps=1e-6, atol=1e-6)


@requires_cpu_kernels
def test_opcheck():
    gen = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.deformgan_ops.nn_loss.default, (gen, target, 3))
    d, argmin = torch.ops.deformgan_ops.nn_loss(gen.detach(), target.detach(), 3)
    torch.library.opcheck(torch.ops.deformgan_ops._nn_loss_backward.default,
                          (torch.randn_like(d), gen.detach(), target.detach(), argmin, 3, [True, True]))


@requires_cpu_kernels
def test_backward_makes_no_gradient_for_the_argmin():
    """The int32 argmin is not differentiable: no zero-filled gradient is made for it."""
    gen = torch.randn(2, 3, 5, 4, requires_grad=True)
    d = D.nn_loss(gen, torch.randn(2, 3, 5, 4), 3, "none", backend="cpu")
    # aten::detach: the gradient accumulated into gen.grad
    assert ops_run_by_backward(d) == ["deformgan_ops::_nn_loss_backward", "aten::detach"]


@requires_cpu_kernels
def test_a_distance_whose_gradient_is_dropped_gives_no_gradient():
    """Reached with no gradient for the distance (a function after it returned None),
    the backward gives both inputs None, as the reference does."""
    gen = torch.randn(2, 3, 5, 4, requires_grad=True)
    target = torch.randn(2, 3, 5, 4, requires_grad=True)
    for backend in ("cpu", "reference"):
        d = D.nn_loss(gen, target, 3, "none", backend=backend)
        (DropGradient.apply(d).sum() + gen.sum()).backward()  # gen also reaches the loss another way
        assert torch.equal(gen.grad, torch.ones_like(gen)) and target.grad is None, backend
        gen.grad = None


@requires_cpu_kernels
def test_backward_gives_no_gradient_at_a_pixel_whose_argmin_is_not_in_the_window():
    """The one rule of every backend (CPU here; CUDA and Triton in their suites): an
    argmin entry that is not a window position inside the image (outside [0, k*k), or
    pointing outside the image) gives its pixel exactly 0 generated gradient and
    scatters nothing into the target's; the other pixels are untouched."""
    gen, target = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    d, argmin = torch.ops.deformgan_ops.nn_loss(gen, target, 3)
    grad = torch.ones_like(d)
    want_g, want_t = torch.ops.deformgan_ops._nn_loss_backward(grad, gen, target, argmin, 3, [True, True])
    for bad in (0, -1, 9, 1000):  # 0 at pixel (0, 0): window position (-1, -1), outside the image
        corrupt = argmin.clone()
        corrupt[0, 0, 0] = bad
        gg, gt = torch.ops.deformgan_ops._nn_loss_backward(grad, gen, target, corrupt, 3, [True, True])
        assert torch.equal(gg[0, :, 0, 0], torch.zeros(2))
        mask = torch.ones(4, 4, dtype=torch.bool)
        mask[0, 0] = False
        assert torch.equal(gg[0][:, mask], want_g[0][:, mask])
        # the target gradient loses exactly the contribution of pixel (0, 0)
        o = int(argmin[0, 0, 0])
        q = (0 + o // 3 - 1) * 4 + (0 + o % 3 - 1)
        fixed = gt.clone().view(1, 2, 16)
        fixed[0, :, q] -= want_g[0, :, 0, 0]
        torch.testing.assert_close(fixed.view_as(gt), want_t, rtol=0, atol=1e-6)


def test_module_wrapper():
    crit = D.NNLoss(kernel_size=3, reduction="sum")
    gen, target = torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5)
    torch.testing.assert_close(crit(gen, target), D.nn_loss(gen, target, 3, "sum"))
    assert "kernel_size=3" in repr(crit)


BAD = [
    (lambda g, t: (g[0], t[0], 3, "mean"), ValueError, "generated must be a 4-D tensor"),
    (lambda g, t: (g, t[:, :2], 3, "mean"), ValueError, "target must have the shape of generated"),
    (lambda g, t: (g, t.double(), 3, "mean"), TypeError, "target must have the dtype of generated"),
    (lambda g, t: (g, t, 4, "mean"), ValueError, "kernel_size must be an odd positive int"),
    (lambda g, t: (g, t, 0, "mean"), ValueError, "kernel_size must be an odd positive int"),
    (lambda g, t: (g, t, 3, "avg"), ValueError, "reduction must be"),
    (lambda g, t: (g.int(), t.int(), 3, "mean"), TypeError, "generated must be a floating point"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mutate,exc,msg", BAD)
def test_bad_input_raises_a_clear_error(backend, mutate, exc, msg):
    args = mutate(torch.randn(2, 3, 6, 5), torch.randn(2, 3, 6, 5))
    with pytest.raises(exc, match=msg):
        D.nn_loss(*args, backend=backend)


@requires_cpu_kernels
def test_cpp_checks_name_the_argument():
    with pytest.raises(RuntimeError, match="kernel_size must be an odd positive integer"):
        torch.ops.deformgan_ops.nn_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), 2)
    with pytest.raises(RuntimeError, match="target must have the shape of generated"):
        torch.ops.deformgan_ops.nn_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 4), 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_with_every_reduction(backend):
    """No pixels: "none" is [0, H, W], "sum" is 0, "mean" is NaN (the mean of nothing)."""
    gen, target = torch.randn(0, 3, 8, 6), torch.randn(0, 3, 8, 6)
    d = D.nn_loss(gen, target, 3, "none", backend=backend)
    assert d.shape == (0, 8, 6) and d.dtype == gen.dtype
    assert D.nn_loss(gen, target, 3, "sum", backend=backend).item() == 0
    assert torch.isnan(D.nn_loss(gen, target, 3, "mean", backend=backend))


def test_reference_defaults_are_the_public_ones():
    """The reference's own defaults (kernel 3, mean), called directly as the executable
    definition, are the public op's; a 5 x 5 window gives another number here."""
    import inspect

    from deformgan_ops.reference.nn_loss import nn_loss as reference_nn_loss
    a, b = torch.randn(2, 3, 9, 7, dtype=torch.float64), torch.randn(2, 3, 9, 7, dtype=torch.float64)
    assert torch.equal(reference_nn_loss(a, b), reference_nn_loss(a, b, 3, "mean"))
    assert not torch.equal(reference_nn_loss(a, b, 3), reference_nn_loss(a, b, 5))
    none = reference_nn_loss(a, b, 3, "none")
    assert torch.equal(reference_nn_loss(a, b, 3, "sum"), none.sum())
    assert torch.equal(reference_nn_loss(a, b, 3, "mean"), none.mean())
    ref_params = inspect.signature(reference_nn_loss).parameters
    public_params = inspect.signature(D.nn_loss).parameters
    for name in ("kernel_size", "reduction"):
        assert ref_params[name].default == public_params[name].default


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_distance_anywhere_in_the_window_wins(backend):
    """The method: a NaN distance wins the min. One NaN target pixel makes the distance NaN
    at every pixel whose 3 x 3 window holds it (also where it is not the first window
    position), and nowhere else."""
    gen = torch.randn(1, 2, 7, 6, dtype=torch.float64)
    target = torch.randn(1, 2, 7, 6, dtype=torch.float64)
    target[0, 1, 3, 2] = float("nan")
    d = D.nn_loss(gen, target, 3, "none", backend=backend)
    expected = torch.zeros(7, 6, dtype=torch.bool)
    expected[2:5, 1:4] = True
    assert torch.equal(torch.isnan(d[0]), expected)


def brute_force_nn_distance(gen, target, k):
    """docs/method.md (the operators) by loops: for each pixel the L1 distance (summed over channels)
    to the best target pixel in the k x k window clipped to the image."""
    N, C, H, W = gen.shape
    r = k // 2
    out = torch.empty(N, H, W, dtype=gen.dtype)
    for n in range(N):
        for y in range(H):
            for x in range(W):
                best = None
                for qy in range(max(0, y - r), min(H, y + r + 1)):
                    for qx in range(max(0, x - r), min(W, x + r + 1)):
                        d = (target[n, :, qy, qx] - gen[n, :, y, x]).abs().sum()
                        best = d if best is None else torch.minimum(best, d)
                out[n, y, x] = best
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,k", [((1, 2, 1, 6), 3), ((1, 2, 6, 1), 3), ((1, 2, 1, 6), 13),
                                     ((1, 2, 7, 2), 13), ((2, 3, 4, 5), 5), ((1, 2, 0, 5), 3),
                                     ((1, 2, 0, 0), 3)])
def test_thin_and_small_images_against_loops(backend, shape, k):
    """Windows wider than the image (clipped), one-pixel-wide images either way, and an
    image with no rows, against the definition written as loops."""
    g = torch.Generator().manual_seed(7)
    gen = torch.randn(shape, dtype=torch.float64, generator=g)
    target = torch.randn(shape, dtype=torch.float64, generator=g)
    d = D.nn_loss(gen, target, k, "none", backend=backend)
    torch.testing.assert_close(d, brute_force_nn_distance(gen, target, k), rtol=0, atol=1e-12)
