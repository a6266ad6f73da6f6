"""Property-based fuzzing of every operator against its reference (hypothesis).

Random shapes (0 and 1 sizes included), dtypes, strides, non-finite values and
masks; the forward must agree with the reference exactly where the reference is
non-finite (the same NaN / +inf / -inf at the same places) and to a tolerance
elsewhere; gradients are compared on finite inputs. Used by tests/test_fuzz_ops.py
(compiled CPU kernels) and tests/triton_interpret/test_triton_fuzz.py (Triton, in
the interpreter); the example counts are bounded so CI stays fast.
"""
import math

import torch
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

import deformgan_ops as D
from helpers import grads_of

FINITE_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def fuzz_settings(max_examples):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def layout(draw, t: torch.Tensor) -> torch.Tensor:
    """The same values in a contiguous tensor or a non-contiguous view."""
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "strided":
        big = torch.zeros(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype) if t.dim() else t.clone()
        if t.dim():
            big[..., ::2] = t
            return big[..., ::2]
    return t


def sizes(draw, names, lo, hi):
    """One size per name in [lo, hi]; in about one case in five one of them is 0."""
    out = {n: draw(st.integers(lo, hi)) for n in names}
    if draw(st.integers(0, 4)) == 0:
        out[draw(st.sampled_from(names))] = 0
    return out


def inject_nonfinite(draw, t: torch.Tensor, allowed: bool) -> torch.Tensor:
    """Set a few elements to NaN, +inf or -inf (when allowed and t is not empty)."""
    if not allowed or t.numel() == 0:
        return t
    t = t.clone()
    flat = t.view(-1)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, flat.numel() - 1))
        flat[i] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return t


def assert_same(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """Identical non-finite pattern (NaN, +inf, -inf at the same places) and
    |a - e| <= tol * max(1, max |e|) on the finite elements."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a, e = actual.detach().double(), expected.detach().double()
    for name, fn in (("NaN", torch.isnan), ("+inf", lambda x: x == math.inf), ("-inf", lambda x: x == -math.inf)):
        ma, me = fn(a), fn(e)
        assert torch.equal(ma, me), (f"{what}: {name} at {ma.nonzero().tolist()[:6]} vs the reference's "
                                     f"{me.nonzero().tolist()[:6]}")
    fin = torch.isfinite(e)
    if fin.any():
        scale = max(1.0, e[fin].abs().max().item())
        err = (a[fin] - e[fin]).abs().max().item()
        assert err <= tol * scale, f"{what}: max abs difference {err:.3g} > {tol} * {scale:.3g}"


def _dyadic(draw, shape, lo, hi, dtype):
    """Multiples of 1/4 in [lo, hi]: sampling locations are then exact in any float
    type, so every backend sees the same corners (and the same NaN neighbours)."""
    n = int(torch.Size(shape).numel())
    vals = draw(st.lists(st.integers(int(lo * 4), int(hi * 4)), min_size=n, max_size=n))
    return (torch.tensor(vals, dtype=torch.float64) / 4).reshape(shape).to(dtype)


# ------------------------------------------------------------------ part_affine_warp
@st.composite
def warp_case(draw, max_side=5, allow_nonfinite=True):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    s = sizes(draw, ["N", "C", "H", "W", "Ho", "Wo"], 1, max_side)
    N, C, H, W, Ho, Wo = (min(s["N"], 2), min(s["C"], 3), s["H"], s["W"], s["Ho"], s["Wo"])
    P = draw(st.integers(1, 3))
    nonfinite = allow_nonfinite and draw(st.booleans())
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    features = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    # near-identity affines (most samples land inside the small image), in quarters
    theta = _dyadic(draw, (N, P, 2, 3), -0.5, 0.5, dtype)
    theta[:, :, 0, 0] += 1
    theta[:, :, 1, 1] += 1
    theta[:, :, :, 2] += _dyadic(draw, (N, P, 2), -1.5, 1.5, dtype)
    if draw(st.booleans()) and N:
        theta[:, :, 0, 2] += draw(st.sampled_from([-1e30, 1e30, 40.0, -3.0]))  # far outside / huge
    masks = torch.rand(N, P, Ho, Wo, generator=g, dtype=torch.float64).to(dtype)
    masks = masks * (torch.rand(N, P, Ho, Wo, generator=g) > 0.3).to(dtype)  # exact zeros
    offsets = _dyadic(draw, (N, 2, Ho, Wo), -2, 2, dtype) if draw(st.booleans()) else None
    features = inject_nonfinite(draw, features, nonfinite)
    masks = inject_nonfinite(draw, masks, nonfinite and draw(st.booleans()))
    theta = inject_nonfinite(draw, theta, nonfinite and draw(st.booleans()))
    if offsets is not None:
        offsets = inject_nonfinite(draw, offsets, nonfinite and draw(st.booleans()))
    inputs = [layout(draw, features), layout(draw, theta), layout(draw, masks),
              layout(draw, offsets) if offsets is not None else None]
    grad_out = torch.randn(N, C, Ho, Wo, generator=g, dtype=torch.float64).to(dtype)
    return inputs, grad_out


def check_part_affine_warp(backend, case):
    inputs, grad_out = case
    dtype = inputs[0].dtype
    tol = FINITE_TOL[dtype]
    finite = all(t is None or bool(torch.isfinite(t).all()) for t in inputs)
    if not finite:  # forward only: non-finite gradients are not part of the contract
        out = D.part_affine_warp(*inputs, backend=backend)
        ref = D.part_affine_warp(*inputs, backend="reference")
        assert_same(out, ref, tol, "part_affine_warp output")
        return
    out, grads = grads_of(lambda *a: D.part_affine_warp(*a, backend=backend), inputs, grad_out)
    ref, ref_grads = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), inputs, grad_out)
    assert_same(out, ref, tol, "part_affine_warp output")
    for name, a, e in zip(("features", "theta", "masks", "offsets"), grads, ref_grads):
        if e is None and a is None:
            continue
        if e is None:  # the reference's graph did not reach it (an empty input): zero
            assert not a.any(), f"grad {name} should be zero"
            continue
        assert a is not None, f"grad {name} missing"
        assert_same(a, e, tol * 10, f"part_affine_warp grad {name}")


# ------------------------------------------------------------------ nn_loss
@st.composite
def nn_loss_case(draw, max_side=6, allow_nonfinite=True):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    s = sizes(draw, ["N", "C", "H", "W"], 1, max_side)
    N, C, H, W = min(s["N"], 2), min(s["C"], 3), s["H"], s["W"]
    k = draw(st.sampled_from([1, 3, 5, 7, 9, 21, 20001]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    gen = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    tgt = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    nonfinite = allow_nonfinite and draw(st.booleans())
    gen = inject_nonfinite(draw, gen, nonfinite and draw(st.booleans()))
    tgt = inject_nonfinite(draw, tgt, nonfinite)
    grad_out = torch.randn(N, H, W, generator=g, dtype=torch.float64).to(dtype)
    return [layout(draw, gen), layout(draw, tgt)], k, grad_out


def check_nn_loss(backend, case):
    (gen, tgt), k, grad_out = case
    tol = FINITE_TOL[gen.dtype]
    finite = bool(torch.isfinite(gen).all() and torch.isfinite(tgt).all())
    fn = lambda b: (lambda g, t: D.nn_loss(g, t, k, reduction="none", backend=b))  # noqa: E731
    if not finite:
        assert_same(fn(backend)(gen, tgt), fn("reference")(gen, tgt), tol, "nn_loss distance")
        # the loss a trainer checks: NaN in, NaN out (never a finite loss hiding it)
        loss = D.nn_loss(gen, tgt, k, backend=backend)
        assert_same(loss, D.nn_loss(gen, tgt, k, backend="reference"), tol, "nn_loss mean")
        # backward runs (no internal error) wherever the forward did
        g2 = gen.detach().clone().requires_grad_(True)
        D.nn_loss(g2, tgt, k, reduction="sum", backend=backend).backward()
        return
    out, grads = grads_of(fn(backend), [gen, tgt], grad_out)
    ref, ref_grads = grads_of(fn("reference"), [gen, tgt], grad_out)
    assert_same(out, ref, tol, "nn_loss distance")
    for name, a, e in zip(("generated", "target"), grads, ref_grads):
        if e is None:
            assert a is None or not a.any(), f"grad {name} should be zero"
            continue
        assert_same(a, e, tol, f"nn_loss grad {name}")


# ------------------------------------------------------------------ keypoint_heatmaps
@st.composite
def heatmaps_case(draw, max_side=6, allow_nonfinite=True):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    s = sizes(draw, ["N", "K"], 1, 4)
    N, K = min(s["N"], 2), s["K"]
    H, W = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    sigma = draw(st.sampled_from([0.5, 1.0, 2.5, 6.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kp = (torch.rand(N, K, 2, generator=g, dtype=torch.float64) * (max_side + 2) - 1).to(dtype)
    kp = inject_nonfinite(draw, kp, allow_nonfinite and draw(st.booleans()))
    grad_out = torch.randn(N, K, H, W, generator=g, dtype=torch.float64).to(dtype)
    return layout(draw, kp), H, W, sigma, grad_out


def check_keypoint_heatmaps(backend, case):
    kp, H, W, sigma, grad_out = case
    tol = FINITE_TOL[kp.dtype]
    # a joint exactly on the -0.0 / 0 boundary is the only tie; random floats avoid it
    assume(not bool((kp == 0).any()))
    out, (grad,) = grads_of(lambda k: D.keypoint_heatmaps(k, H, W, sigma, backend=backend), [kp], grad_out)
    ref, (ref_grad,) = grads_of(lambda k: D.keypoint_heatmaps(k, H, W, sigma, backend="reference"), [kp], grad_out)
    assert_same(out, ref, tol, "keypoint_heatmaps")
    assert_same(grad, ref_grad, tol * 10, "keypoint_heatmaps grad")


# ------------------------------------------------------------------ pose geometry
@st.composite
def poses_case(draw, allow_nonfinite=True):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    B = draw(st.sampled_from([0, 1, 2, 3, 3]))
    H, W = draw(st.integers(1, 40)), draw(st.integers(1, 24))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def pose():
        kp = torch.rand(B, 18, 2, generator=g, dtype=torch.float64) * torch.tensor([W, H]) * 1.2 - 2
        kp = torch.round(kp * 4) / 4  # quarter pixels, as annotation files hold integers
        kp[torch.rand(B, 18, generator=g) < 0.15] = -1.0  # missing joints
        return inject_nonfinite(draw, kp.to(dtype), allow_nonfinite and draw(st.booleans()))

    scale = draw(st.sampled_from([1.0, 2.0, 4.0]))
    return layout(draw, pose()), layout(draw, pose()), H, W, scale


def check_pose_geometry(backend, case):
    src, tgt, H, W, scale = case
    masks = D.part_masks(tgt, H, W, scale, backend=backend)
    ref = D.part_masks(tgt, H, W, scale, backend="reference")
    assert torch.equal(masks, ref), f"part_masks differ at {(masks != ref).nonzero().tolist()[:6]}"
    theta, valid = D.part_affines(src, tgt, backend=backend)
    ref_theta, ref_valid = D.part_affines(src, tgt, backend="reference")
    assert torch.equal(valid, ref_valid), f"part_affines validity differs at {(valid != ref_valid).nonzero().tolist()}"
    tol = 1e-4 if src.dtype == torch.float32 else 1e-8
    assert_same(theta, ref_theta, tol, "part_affines theta")
