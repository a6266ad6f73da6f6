"""Half and bfloat16 CPU tensors: the C++ kernels compute in float32 and return the
input dtype (backend 'cpu' and 'auto' alike), so each result equals the float32
computation on the upcast inputs rounded once to the input dtype (issue 17: 'auto'
used to send them to kernels that only take float32/float64)."""
import pytest
import torch

import deformgan_ops as D
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
