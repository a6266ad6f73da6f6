"""Half and bfloat16 CPU tensors: the C++ kernels compute in float32 and return the
input dtype (backend 'cpu' and 'auto' alike), so each result equals the float32
computation on the upcast inputs rounded once to the input dtype ('auto'
used to send them to kernels that only take float32/float64)."""
import pytest
import torch

import deformgan_ops as D
from deformgan_ops.reference.nn_loss import effective_kernel_size
from helpers import grads_of, warp_inputs

pytestmark = pytest.mark.skipif("cpu" not in D.available_backends("cpu"), reason="C++ kernels not built")
LOW = [torch.float16, torch.bfloat16]


def close_in(dtype, actual, expected, what):
    """At most one rounding step of ``dtype`` apart (the fp32 kernel and the reference
    may round to neighbouring values)."""
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}"
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(actual.float(), expected.float(), rtol=eps, atol=eps * max(1.0, expected.abs().max()),
                               msg=what)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("backend", ["cpu", "auto"])
def test_part_affine_warp(dtype, backend):
    inputs = [t.to(dtype) for t in warp_inputs(N=2, C=3, H=9, W=7, P=4, offsets=True)]
    grad_out = torch.randn(2, 3, 9, 7).to(dtype)
    out, grads = grads_of(lambda *a: D.part_affine_warp(*a, backend=backend), inputs, grad_out)
    ref_out, ref_grads = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"),
                                  [t.float() for t in inputs], grad_out.float())
    close_in(dtype, out, ref_out.to(dtype), "output")
    for name, a, b in zip(["features", "theta", "masks", "offsets"], grads, ref_grads):
        close_in(dtype, a, b.to(dtype), f"grad {name}")


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("backend", ["cpu", "auto"])
def test_keypoint_heatmaps(dtype, backend):
    kp = (torch.rand(2, 18, 2) * torch.tensor([8.0, 11.0])).to(dtype)
    kp[0, 3] = -1
    out, (g,) = grads_of(lambda k: D.keypoint_heatmaps(k, 11, 8, 2.5, backend=backend), [kp],
                         torch.randn(2, 18, 11, 8).to(dtype))
    ref, (gr,) = grads_of(lambda k: D.keypoint_heatmaps(k, 11, 8, 2.5, backend="reference"), [kp.float()],
                          torch.randn(2, 18, 11, 8).to(dtype).float())
    close_in(dtype, out, ref.to(dtype), "heatmaps")
    assert g.dtype == dtype and torch.isfinite(g.float()).all()
    buf = torch.empty(2, 18, 11, 8, dtype=dtype)
    assert D.keypoint_heatmaps(kp, 11, 8, 2.5, out=buf, backend=backend) is buf
    assert torch.equal(buf, out.detach())


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("backend", ["cpu", "auto"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_nn_loss(dtype, backend, reduction):
    g = torch.randn(2, 4, 6, 5).to(dtype)
    t = (g.float() + 0.3 * torch.randn(2, 4, 6, 5)).to(dtype)
    grad = torch.randn(2, 6, 5).to(dtype) if reduction == "none" else torch.tensor(1.0).to(dtype)
    out, grads = grads_of(lambda a, b: D.nn_loss(a, b, 3, reduction, backend=backend), [g, t], grad)
    ref, ref_grads = grads_of(lambda a, b: D.nn_loss(a, b, 3, reduction, backend="reference"),
                              [g.float(), t.float()], grad.float())
    close_in(dtype, out, ref.to(dtype), "distance")
    for name, a, b in zip(["generated", "target"], grads, ref_grads):
        close_in(dtype, a, b.to(dtype), f"grad {name}")


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("masks_low", [False, True])
def test_part_affine_warp_low_precision_features_with_float32_geometry(dtype, backend, masks_low):
    """Float16/bfloat16 features (and masks) beside float32 theta and offsets,
    read natively by the CPU kernel, computed in float32. Oracle: the same backend on
    the same values in float32 (every low-precision value is exact in float32), whose
    float32 path the other tests compare with the reference. The output is that result
    rounded once to the features' dtype; the gradients of theta, offsets and float32
    masks are exactly the float32 ones; the others are the float32 ones rounded once."""
    f, theta, masks, off = warp_inputs(N=2, C=5, H=9, W=7, P=4, offsets=True)
    f = f.to(dtype)
    masks = masks.to(dtype) if masks_low else masks
    grad_out = torch.randn(2, 5, 9, 7).to(dtype)
    out, grads = grads_of(lambda *a: D.part_affine_warp(*a, backend=backend), [f, theta, masks, off], grad_out)
    f32_out, f32_grads = grads_of(lambda *a: D.part_affine_warp(*a, backend=backend),
                                  [f.float(), theta, masks.float(), off], grad_out.float())
    assert out.dtype == dtype
    assert [g.dtype for g in grads] == [dtype, torch.float32, masks.dtype, torch.float32]
    assert torch.equal(out, f32_out.to(dtype)), "output: not the float32 result rounded once"
    for name, a, b in zip(["features", "theta", "masks", "offsets"], grads, f32_grads):
        assert torch.equal(a, b.to(a.dtype)), f"grad {name}: not the float32 gradient (rounded once)"
    # and that float32 path agrees with the float32 reference
    ref_out, ref_grads = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"),
                                  [f.float(), theta, masks.float(), off], grad_out.float())
    torch.testing.assert_close(f32_out, ref_out)
    for a, b in zip(f32_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_part_affine_warp_mixed_dtypes_that_are_refused(backend):
    f, theta, masks, _ = warp_inputs(N=1, C=2, H=5, W=4, P=2)
    cases = [((f.bfloat16(), theta.double(), masks), "theta must have the dtype of features (torch.bfloat16) or float32"),
             ((f.bfloat16(), theta, masks.half()), "masks must have the dtype of features (torch.bfloat16) or float32"),
             ((f, theta.bfloat16(), masks), "theta must have the dtype of features (torch.float32), got torch.bfloat16"),
             ((f.double(), theta, masks.double()), "theta must have the dtype of features (torch.float64), got")]
    for args, message in cases:
        with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            D.part_affine_warp(*args, backend=backend)
    # the compiled op checks again, with the same words
    if backend == "cpu":
        with pytest.raises(RuntimeError, match="theta must have the dtype of features"):
            torch.ops.deformgan_ops.part_affine_warp(f.bfloat16(), theta.double(), masks, None)


DIFFERENTIABLE = [op for op in D.operators() if D.operator(op).differentiable]


def run_compiled(op, args, kwargs):
    """torch.ops.deformgan_ops.<op> called directly, bypassing the public function."""
    ops = torch.ops.deformgan_ops
    if op == "part_affine_warp":
        return ops.part_affine_warp(*args)[0]
    if op == "keypoint_heatmaps":
        return ops.keypoint_heatmaps(*args)
    gen, tgt, k = args[:3]
    distance = ops.nn_loss(gen, tgt, effective_kernel_size(k, gen.shape[2], gen.shape[3]))[0]
    reduction = kwargs.get("reduction", args[3] if len(args) > 3 else "mean")
    return {"none": distance, "sum": distance.sum(), "mean": distance.mean()}[reduction]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_cpu_kernels_read_low_precision_natively_and_compute_in_float32(op, dtype):
    """The CPU kernels of every differentiable operator take float16/bfloat16
    inputs themselves (no float32 copy of the inputs), with float32 arithmetic. Oracle:
    the same kernel on the same values in float32; the result and every gradient must
    be exactly that, rounded once to the input's dtype."""
    decl = D.operator(op)
    assert decl.native_low_precision
    for args, kwargs in decl.sample_inputs(torch.device("cpu"), dtype):
        floating = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        leaves = [args[i] for i in floating]

        def run(*ts, _args=args):
            full = list(_args)
            for i, t in zip(floating, ts):
                full[i] = t
            return decl.public(*full, **kwargs, backend="cpu")

        probe = run(*leaves)
        grad_out = torch.randn(probe.shape, generator=torch.Generator().manual_seed(1)).to(probe.dtype)
        out, grads = grads_of(run, leaves, grad_out)
        f32_out, f32_grads = grads_of(run, [t.float() for t in leaves], grad_out.float())
        assert out.dtype == dtype
        assert torch.equal(out, f32_out.to(dtype)), f"{op}: not the float32 result rounded once"
        # the compiled op itself takes the low-precision tensors (it used to raise
        # "not implemented for 'BFloat16'" and the inputs were upcast for it)
        assert torch.equal(run_compiled(op, args, kwargs), out)
        for i, (a, b) in enumerate(zip(grads, f32_grads)):
            assert a.dtype == leaves[i].dtype
            assert torch.equal(a, b.to(a.dtype)), f"{op}: gradient {i} is not the float32 one rounded once"
