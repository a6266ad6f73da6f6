import re

import pytest
import torch

import deformgan_ops as D
from conftest import requires_cpu_kernels
from helpers import DropGradient, assert_close_scaled, grads_of, ops_run_by_backward, warp_inputs

BACKENDS = ["reference", pytest.param("cpu", marks=requires_cpu_kernels)]


def identity_theta(N, P, dtype=torch.float32):
    theta = torch.zeros(N, P, 2, 3, dtype=dtype)
    theta[:, :, 0, 0] = 1
    theta[:, :, 1, 1] = 1
    return theta


# ------------------------------------------------------------------ known answers
@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_with_all_ones_mask_returns_input(backend):
    f = torch.randn(2, 5, 11, 6)
    out = D.part_affine_warp(f, identity_theta(2, 1), torch.ones(2, 1, 11, 6), backend=backend)
    torch.testing.assert_close(out, f, rtol=0, atol=0 if backend == "cpu" else 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tx,ty", [(2, 0), (0, -3), (-1, 2)])
def test_integer_translation_shifts_exactly_and_fills_zeros(backend, tx, ty):
    H, W = 8, 6
    f = torch.randn(1, 2, H, W)
    theta = identity_theta(1, 1)
    theta[0, 0, 0, 2] = tx  # u = x + tx: output (x, y) reads input (x + tx, y + ty)
    theta[0, 0, 1, 2] = ty
    out = D.part_affine_warp(f, theta, torch.ones(1, 1, H, W), backend=backend)
    expected = torch.zeros_like(f)
    for y in range(H):
        for x in range(W):
            if 0 <= x + tx < W and 0 <= y + ty < H:
                expected[..., y, x] = f[..., y + ty, x + tx]
    # the kernel is exact; grid_sample's [-1, 1] normalisation rounds slightly
    torch.testing.assert_close(out, expected, rtol=0, atol=0 if backend == "cpu" else 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_picks_the_larger_of_two_masked_parts(backend):
    H, W = 7, 5
    f = torch.randn(1, 3, H, W)
    theta = identity_theta(1, 2)
    theta[0, 1, 0, 2] = 1.0
    masks = torch.ones(1, 2, H, W)
    masks[0, 1] = 0.5
    shifted = torch.zeros_like(f)
    shifted[..., :, : W - 1] = f[..., :, 1:]
    expected = torch.maximum(f, 0.5 * shifted)
    out = D.part_affine_warp(f, theta, masks, backend=backend)
    torch.testing.assert_close(out, expected, rtol=0, atol=0 if backend == "cpu" else 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_masks_give_zero_and_no_feature_gradient(backend):
    f = torch.randn(2, 3, 6, 5, requires_grad=True)
    theta = identity_theta(2, 3)
    out = D.part_affine_warp(f, theta, torch.zeros(2, 3, 6, 5), backend=backend)
    assert out.abs().max().item() == 0.0
    out.sum().backward()
    assert f.grad.abs().max().item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_mask_part_competes_with_value_zero(backend):
    """A zero-mask part is a candidate of value exactly 0: negative samples lose to it."""
    f = -torch.rand(1, 1, 4, 4) - 0.1  # all negative
    masks = torch.ones(1, 2, 4, 4)
    masks[0, 1] = 0
    out = D.part_affine_warp(f, identity_theta(1, 2), masks, backend=backend)
    assert out.abs().max().item() == 0.0


def test_ties_go_to_the_lowest_part_and_gradient_to_the_winner_only():
    f = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    theta = identity_theta(1, 3, torch.float64)  # three identical parts: exact ties
    for backend in ["reference"] + (["cpu"] if D.has_compiled_kernel("part_affine_warp", "cpu") else []):
        masks = torch.ones(1, 3, 5, 4, dtype=torch.float64, requires_grad=True)
        out = D.part_affine_warp(f, theta, masks, backend=backend)
        out.sum().backward()
        assert torch.equal(masks.grad[0, 1:], torch.zeros_like(masks.grad[0, 1:])), backend
        torch.testing.assert_close(masks.grad[0, 0], f[0].sum(0))


def test_downsampled_affine_convention_matches_image_level_warp():
    """An affine fitted at full resolution, with its translation divided by s, warps
    a feature map downsampled by s like the full-resolution warp (for pure translations
    by multiples of s)."""
    f = torch.randn(1, 2, 16, 8, dtype=torch.float64)
    theta = identity_theta(1, 1, torch.float64)
    theta[0, 0, :, 2] = torch.tensor([4.0, -2.0])
    full = D.part_affine_warp(f, theta, torch.ones(1, 1, 16, 8, dtype=torch.float64), backend="reference")
    half_theta = theta.clone()
    half_theta[..., 2] /= 2
    small = f[..., ::2, ::2]
    half = D.part_affine_warp(small, half_theta, torch.ones(1, 1, 8, 4, dtype=torch.float64), backend="reference")
    torch.testing.assert_close(half, full[..., ::2, ::2])


@requires_cpu_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_features_only_backward_matches_reference(dtype):
    """The training case: only the features need a gradient (the CPU backward then
    reads no features at all); the gradient equals the reference's."""
    f, theta, masks, _ = warp_inputs(N=3, C=17, H=19, W=10, P=7, Ho=13, Wo=9, dtype=dtype, seed=3)
    grad_out = torch.randn(3, 17, 13, 9, dtype=dtype)
    grads = []
    for backend in ("reference", "cpu"):
        leaf = f.clone().requires_grad_(True)
        out = D.part_affine_warp(leaf, theta, masks, backend=backend)
        grads.append(torch.autograd.grad(out, leaf, grad_out)[0])
    assert grads[1].is_contiguous() and grads[1].dtype == dtype
    assert_close_scaled(grads[1], grads[0], rtol=1e-4 if dtype == torch.float32 else 1e-10, what="grad features")


# ------------------------------------------------------------------ cpu vs reference
CASES = [
    dict(N=2, C=1, H=9, W=7, P=4),
    dict(N=3, C=3, H=12, W=5, P=10, Ho=7, Wo=9),
    dict(N=1, C=64, H=16, W=8, P=10),
    dict(N=2, C=3, H=1, W=6, P=3),  # a size-1 axis
    dict(N=2, C=3, H=6, W=1, P=3),  # the other
    dict(N=2, C=2, H=10, W=7, P=5, far=True),
    # The CPU kernel works channels-last and transposes in 8 x 8 register blocks:
    # channels, pixels and output rows that are not multiples of 8 take the ragged edges.
    dict(N=2, C=19, H=21, W=13, P=6, Ho=17, Wo=11),
]


@requires_cpu_kernels
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("offsets", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_matches_reference(case, offsets, dtype):
    inputs = warp_inputs(**case, offsets=offsets, dtype=dtype)
    N, C = inputs[0].shape[:2]
    Ho, Wo = inputs[2].shape[2:]
    grad_out = torch.randn(N, C, Ho, Wo, dtype=dtype)
    out_ref, g_ref = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), inputs, grad_out)
    out_cpu, g_cpu = grads_of(lambda *a: D.part_affine_warp(*a, backend="cpu"), inputs, grad_out)
    assert_close_scaled(out_cpu, out_ref, what="output")
    for name, a, b in zip(["features", "theta", "masks", "offsets"], g_cpu, g_ref):
        if b is None:
            assert a is None
            continue
        assert_close_scaled(a, b, rtol=1e-4 if dtype == torch.float32 else 1e-10, what=f"grad {name}")


@requires_cpu_kernels
@pytest.mark.parametrize("case", [
    dict(N=3, C=5, H=15, W=30, P=4, Ho=13, Wo=100),  # blocks of 5 rows (512 // 100): 5, 5, 3
    dict(N=2, C=3, H=4, W=9, P=3, Ho=3, Wo=520),     # wider than a block: one row per block
], ids=["ragged-blocks", "one-row-blocks"])
def test_cpu_blocks_of_rows_and_task_boundaries(case):
    """The CPU kernels work on blocks of output rows (about 512 pixels) and each task
    converts the batch items it touches: with several blocks per image, a ragged last
    block, and 1, 2 or 3 threads (task ranges that split an image), every result equals
    the reference's and is bit-identical across thread counts."""
    inputs = warp_inputs(**case, offsets=True, dtype=torch.float64, seed=5)
    N, C = inputs[0].shape[:2]
    Ho, Wo = inputs[2].shape[2:]
    grad_out = torch.randn(N, C, Ho, Wo, dtype=torch.float64)
    _, g_ref = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), inputs, grad_out)
    out_ref = D.part_affine_warp(*inputs, backend="reference")
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(grads_of(lambda *a: D.part_affine_warp(*a, backend="cpu"), inputs, grad_out))
    finally:
        torch.set_num_threads(before)
    out_cpu, g_cpu = results[0]
    assert_close_scaled(out_cpu, out_ref, rtol=1e-10, what="output")
    for name, a, b in zip(["features", "theta", "masks", "offsets"], g_cpu, g_ref):
        assert_close_scaled(a, b, rtol=1e-10, what=f"grad {name}")
    for out, grads in results[1:]:
        assert torch.equal(out, out_cpu)
        assert all(torch.equal(a, b) for a, b in zip(grads, g_cpu))


@requires_cpu_kernels
@pytest.mark.parametrize("C,H,W", [(11, 27, 23), (16, 40, 33), (8, 8, 64), (37, 9, 60)])
def test_cpu_float32_items_larger_than_a_transpose_chunk(C, H, W):
    """Contiguous float32 items go through the 8 x 8 register transposes (the feature
    gradient in chunks of 512 pixels) and the winners through the 16 x 16 byte
    transposes: more than one chunk, a ragged last chunk or block, channel counts that
    are and are not multiples of 8 and 16 (the scalar edges); every element lands where
    the reference puts it."""
    inputs = warp_inputs(N=3, C=C, H=H, W=W, P=3, offsets=True, dtype=torch.float32, seed=11)
    grad_out = torch.randn(3, C, H, W)
    out_cpu, g_cpu = grads_of(lambda *a: D.part_affine_warp(*a, backend="cpu"), inputs, grad_out)
    out_ref, g_ref = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), inputs, grad_out)
    assert_close_scaled(out_cpu, out_ref, rtol=1e-5, what="output")
    for name, a, b in zip(["features", "theta", "masks", "offsets"], g_cpu, g_ref):
        assert_close_scaled(a, b, rtol=1e-4, what=f"grad {name}")


def cpu_has(isa):
    """Whether this CPU has the transposes' instruction set (torch's own reading of it)."""
    order = {"scalar": 0, "avx2": 1, "avx512": 2}
    have = {"AVX512": 2, "AVX2": 1}.get(torch.backends.cpu.get_cpu_capability(), 0)
    return order[isa] <= have


def warp_everything(f, theta, masks, off, grad):
    """The raw ops: output, winners and all four gradients."""
    op = torch.ops.deformgan_ops
    out, win = op.part_affine_warp(f, theta, masks, off)
    return [out, win, *op._part_affine_warp_backward(grad, f, theta, masks, off, win, [True] * 4)]


# Planes whose rows are whole 64-byte lines (16 floats, 64 winners): the transposes can
# write them with non-temporal stores (with DEFORMGAN_STREAM_MIN_BYTES=0; a block is
# streamed when its first output element starts a line). 16 x 24: one block of rows per
# image (384 pixels: 6 whole lines of winners, no tail); 40 x 24: blocks of 21 rows
# (504 pixels), the first block of each image streamed with a tail in every streamed
# transpose (winners: the last 504 % 64 = 56 rows after the 64-row blocks; outputs: the
# last 504 % 16 = 8 rows after the 16-row blocks), the others not aligned (ordinary
# stores); 30 x 40: a plane of 1,200 bytes of winners, not a whole number of lines, so
# nothing of the winners is streamed (the float32 outputs are: 4,800 bytes), blocks of
# 12 rows and a ragged last block; C = 37 and 19: channels past the last 16-block;
# C = 64: the training shapes' channel counts (the channel loops' AVX-512 clones);
# 17 x 21 features warped to 16 x 24: unaligned input planes, aligned output.
STREAM_CASES = [
    dict(N=3, C=37, H=16, W=24, P=4),
    dict(N=2, C=37, H=40, W=24, P=5),
    dict(N=2, C=19, H=30, W=40, P=5),
    dict(N=2, C=64, H=32, W=32, P=10),
    dict(N=3, C=16, H=17, W=21, P=3, Ho=16, Wo=24),
]


@requires_cpu_kernels
@pytest.mark.parametrize("case", STREAM_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("isa", ["avx512", "avx2", "scalar"])
@pytest.mark.parametrize("stream", ["0", None], ids=["streamed", "default"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_transpose_paths_give_the_same_numbers(case, isa, stream, dtype, monkeypatch):
    """The contiguous path's transposes in 16 x 16 (AVX-512), 8 x 8 (AVX2, float32) or
    scalar blocks, with the outputs written with non-temporal stores (every aligned
    float32 output and the winners, DEFORMGAN_STREAM_MIN_BYTES=0) or as by default: every
    output, winner and gradient is bit-identical to the scalar path's with ordinary
    stores, which matches the reference; on 1 and 2 threads. bfloat16 features (float32
    theta, masks and offsets) are widened on the way in and rounded on the way out as
    c10::BFloat16 rounds: to nearest even, NaN to 0x7FC0, with infinities, NaNs, signed
    zeros and subnormals among the features and the incoming gradient."""
    if not cpu_has(isa):
        pytest.skip(f"this CPU has no {isa}")
    f, theta, masks, off = warp_inputs(**case, offsets=True, dtype=torch.float32, far=True, seed=8)
    Ho, Wo = masks.shape[2:]
    grad = torch.randn(f.shape[0], f.shape[1], Ho, Wo, generator=torch.Generator().manual_seed(2))
    if dtype == torch.bfloat16:
        specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-39, -3e-40, 3.0e38])
        f, grad = f.to(dtype), grad.to(dtype)
        for t, step in ((f, 53), (grad, 41)):  # every step-th element, the specials in turn
            n = t.view(-1)[::step].numel()
            t.view(-1)[::step] = specials.repeat(n // 7 + 1)[:n].to(dtype)
    monkeypatch.setenv("DEFORMGAN_CPU_TRANSPOSE", "scalar")
    monkeypatch.setenv("DEFORMGAN_STREAM_MIN_BYTES", str(2 ** 62))
    want = warp_everything(f, theta, masks, off, grad)
    if dtype == torch.float32:
        out_ref, g_ref = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), [f, theta, masks, off],
                                  grad)
        assert_close_scaled(want[0], out_ref, rtol=1e-5, what="output")
        for name, a, b in zip(["features", "theta", "masks", "offsets"], want[2:], g_ref):
            assert_close_scaled(a, b, rtol=1e-4, what=f"grad {name}")
    else:
        assert want[0].isnan().any() and want[2].isnan().any()  # the specials reach both outputs
    monkeypatch.setenv("DEFORMGAN_CPU_TRANSPOSE", isa)
    if stream is None:
        monkeypatch.delenv("DEFORMGAN_STREAM_MIN_BYTES")
    else:
        monkeypatch.setenv("DEFORMGAN_STREAM_MIN_BYTES", stream)
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            got = warp_everything(f, theta, masks, off, grad)
            for name, a, b in zip(["output", "winner", "features", "theta", "masks", "offsets"], got, want):
                assert a.dtype == b.dtype and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), \
                    (name, t)
    finally:
        torch.set_num_threads(threads)


@requires_cpu_kernels
@pytest.mark.parametrize("name,value,msg", [
    ("DEFORMGAN_CPU_TRANSPOSE", "sse4", "DEFORMGAN_CPU_TRANSPOSE must be avx512, avx2 or scalar, got 'sse4'"),
    ("DEFORMGAN_STREAM_MIN_BYTES", "-1", "DEFORMGAN_STREAM_MIN_BYTES must be a whole number of bytes, 0 or more, got '-1'"),
    ("DEFORMGAN_STREAM_MIN_BYTES", "1MB", "got '1MB'"),
    ("DEFORMGAN_STREAM_MIN_BYTES", "99999999999999999999", "got '99999999999999999999'"),
])
@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_cpu_transpose_settings_refuse_bad_values(name, value, msg, pass_, monkeypatch):
    """A setting the kernels cannot read is an error that names it, in either pass."""
    f, theta, masks, off = warp_inputs(N=1, C=2, H=4, W=4, P=2)
    op = torch.ops.deformgan_ops
    out, win = op.part_affine_warp(f, theta, masks, off)
    monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        if pass_ == "forward":
            op.part_affine_warp(f, theta, masks, off)
        else:
            op._part_affine_warp_backward(out, f, theta, masks, off, win, [True] * 4)


@requires_cpu_kernels
@pytest.mark.parametrize("first_zero", [1, 63, 64, 130, None])
@pytest.mark.parametrize("nan_mask", [False, True])
def test_cpu_more_than_64_parts_match_reference(first_zero, nan_mask):
    """The CPU kernels visit, at each pixel, the parts whose mask is nonzero and the
    first part whose mask is zero, from a bitmask of 64-bit words: with 150 parts
    (three words) and the first zero-mask part in the first, at the edge of, or inside
    a later word, or nowhere, and a part far outside the image (a nonzero mask at a
    location with no corner inside: a candidate of 0, or NaN for a NaN mask, whose
    location gradient is exactly 0 as the reference's), every result equals the
    reference's."""
    P = 150
    f, theta, masks, off = warp_inputs(N=2, C=5, H=7, W=6, P=P, zero_masks=False, far=True,
                                       dtype=torch.float64, seed=4)
    g = torch.Generator().manual_seed(5)
    if first_zero is not None:
        # exactly zero at every other row; zeros at random beyond it
        masks[:, first_zero, ::2] = 0
        masks[:, first_zero + 1:] *= torch.rand(2, P - first_zero - 1, 7, 6, generator=g, dtype=torch.float64) > 0.5
    if nan_mask:
        masks[0, P - 1, 3, 2] = float("nan")  # part P - 1 samples far outside the image
    grad_out = torch.randn(2, 5, 7, 6, generator=g, dtype=torch.float64)
    out_ref, g_ref = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"), [f, theta, masks, off], grad_out)
    out_cpu, g_cpu = grads_of(lambda *a: D.part_affine_warp(*a, backend="cpu"), [f, theta, masks, off], grad_out)
    assert torch.equal(out_cpu.isnan(), out_ref.isnan())
    assert out_cpu.isnan().any() == nan_mask
    assert_close_scaled(out_cpu.nan_to_num(), out_ref.nan_to_num(), rtol=1e-10, what="output")
    for name, a, b in zip(["features", "theta", "masks", "offsets"], g_cpu, g_ref):
        assert torch.equal(a.isnan(), b.isnan()), name
        assert_close_scaled(a.nan_to_num(), b.nan_to_num(), rtol=1e-10, what=f"grad {name}")


@requires_cpu_kernels
def test_cpu_non_contiguous_inputs():
    f, theta, masks, off = warp_inputs(N=2, C=4, H=8, W=6, P=3, dtype=torch.float64)
    f_nc = f.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    masks_nc = masks.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    off_nc = torch.stack([off, -off], dim=-1)[..., 0]
    assert not f_nc.is_contiguous() and not masks_nc.is_contiguous() and not off_nc.is_contiguous()
    a = D.part_affine_warp(f_nc, theta, masks_nc, off_nc, backend="cpu")
    b = D.part_affine_warp(f, theta, masks, off, backend="reference")
    assert_close_scaled(a, b)
    # channels_last features too
    a2 = D.part_affine_warp(f.to(memory_format=torch.channels_last), theta, masks, off, backend="cpu")
    assert_close_scaled(a2, b)


@requires_cpu_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("size", [(9, 7), (40, 30)])  # one block of rows; three, the last ragged
def test_cpu_channels_last_features_give_the_same_numbers_in_channels_last(dtype, size):
    """Channels-last features are read in place and give a channels-last output, winners
    and feature gradient (the other gradients stay contiguous): bit-identical to the
    contiguous path, with the incoming gradient in either layout, for every subset of
    gradients, on 1 and 2 threads."""
    H, W = size
    f, theta, masks, off = warp_inputs(N=3, C=5, H=H, W=W, P=4, dtype=torch.float64, far=True)
    f = f.to(dtype)
    if dtype == torch.bfloat16:  # theta, masks and offsets in float32 beside bfloat16 features
        theta, masks, off = theta.float(), masks.float(), off.float()
    else:
        theta, masks, off = theta.to(dtype), masks.to(dtype), off.to(dtype)
    cl = f.contiguous(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    op = torch.ops.deformgan_ops
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out, win = op.part_affine_warp(f, theta, masks, off)
            out_cl, win_cl = op.part_affine_warp(cl, theta, masks, off)
            assert out.is_contiguous() and win.is_contiguous()
            assert out_cl.is_contiguous(memory_format=torch.channels_last) and not out_cl.is_contiguous()
            assert win_cl.is_contiguous(memory_format=torch.channels_last) and not win_cl.is_contiguous()
            assert torch.equal(out_cl, out) and torch.equal(win_cl, win)
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
            for grad_in in (grad, grad.contiguous(memory_format=torch.channels_last)):
                for mask in ([True, True, True, True], [True, False, False, False], [False, True, True, True],
                             [False, False, True, False]):
                    want = op._part_affine_warp_backward(grad, f, theta, masks, off, win, mask)
                    got = op._part_affine_warp_backward(grad_in, cl, theta, masks, off, win_cl, mask)
                    for name, a, b in zip(["features", "theta", "masks", "offsets"], got, want):
                        assert torch.equal(a, b), (name, mask, t)
                    if mask[0]:
                        assert got[0].is_contiguous(memory_format=torch.channels_last) and not got[0].is_contiguous()
                    # a winners tensor in the other layout is read as what it holds
                    again = op._part_affine_warp_backward(grad_in, cl, theta, masks, off, win, mask)
                    assert all(torch.equal(a, b) for a, b in zip(again, want))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    f, theta, masks, off = warp_inputs(N=2)
    f, theta, masks, off = f[:0], theta[:0], masks[:0], off[:0]
    f.requires_grad_()
    out = D.part_affine_warp(f, theta, masks, off, backend=backend)
    assert out.shape == (0, 3, 9, 7)
    out.sum().backward()
    assert f.grad.shape == f.shape


@requires_cpu_kernels
def test_nan_locations_take_the_out_of_bounds_branch():
    f, theta, masks, off = warp_inputs(N=2, C=2, H=6, W=5, P=3, dtype=torch.float64, zero_masks=False)
    off[0, 0, 1, 2] = float("nan")
    off[1, 1, 3, 3] = float("inf")
    grad_out = torch.randn(2, 2, 6, 5, dtype=torch.float64)
    out_ref, g_ref = grads_of(lambda *a: D.part_affine_warp(*a, backend="reference"),
                              [f, theta, masks, off], grad_out)
    out_cpu, g_cpu = grads_of(lambda *a: D.part_affine_warp(*a, backend="cpu"),
                              [f, theta, masks, off], grad_out)
    assert torch.isfinite(out_cpu).all()
    assert_close_scaled(out_cpu, out_ref)
    # at a NaN location every part samples 0: the output there is 0 for all channels
    assert out_cpu[0, :, 1, 2].abs().max().item() == 0.0
    for a, b in zip(g_cpu[:3], g_ref[:3]):
        assert torch.isfinite(a).all()
        assert_close_scaled(a, b)


@requires_cpu_kernels
def test_gradcheck_float64():
    inputs = warp_inputs(N=2, C=2, H=6, W=5, P=3, Ho=5, Wo=4, dtype=torch.float64, zero_masks=False)
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: D.part_affine_warp(*a, backend="cpu"), inputs,
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


@requires_cpu_kernels
def test_gradcheck_float64_without_offsets_with_zero_masks():
    f, theta, masks, _ = warp_inputs(N=1, C=2, H=6, W=5, P=3, dtype=torch.float64, offsets=False,
                                     zero_masks=False)
    # a single zero-mask part, and every other part sampling strictly inside the
    # image, keep ties away: the zero candidate is unique
    masks[:, 2] = 0
    theta = 0.7 * theta.abs().clamp(max=1.0) * torch.eye(2, 3, dtype=torch.float64) + 0.02 * theta
    theta[..., 2] = 0.6
    inputs = [f.requires_grad_(), theta.requires_grad_(), masks.requires_grad_()]
    assert torch.autograd.gradcheck(lambda *a: D.part_affine_warp(*a, backend="cpu"), inputs,
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


@requires_cpu_kernels
@pytest.mark.parametrize("offsets", [True, False])
def test_opcheck(offsets):
    f, theta, masks, off = warp_inputs(N=2, C=3, H=7, W=5, P=3, dtype=torch.float64, offsets=offsets)
    args = (f.requires_grad_(), theta.requires_grad_(), masks.requires_grad_(),
            off.requires_grad_() if off is not None else None)
    torch.library.opcheck(torch.ops.deformgan_ops.part_affine_warp.default, args)
    out, winner = torch.ops.deformgan_ops.part_affine_warp(*[a.detach() if a is not None else None for a in args])
    bargs = (torch.randn_like(out), f.detach(), theta.detach(), masks.detach(),
             off.detach() if off is not None else None, winner, [True, True, True, offsets])
    torch.library.opcheck(torch.ops.deformgan_ops._part_affine_warp_backward.default, bargs)


@requires_cpu_kernels
def test_backward_only_computes_needed_gradients():
    f, theta, masks, off = warp_inputs(N=2, dtype=torch.float64)
    f.requires_grad_()
    out = D.part_affine_warp(f, theta, masks, off, backend="cpu")
    out.sum().backward()
    ref = f.detach().clone().requires_grad_()
    D.part_affine_warp(ref, theta, masks, off, backend="reference").sum().backward()
    assert_close_scaled(f.grad, ref.grad)
    assert theta.grad is None and masks.grad is None and off.grad is None


@requires_cpu_kernels
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_backward_makes_no_gradient_for_the_winners(layout):
    """The uint8 winners are not differentiable: the backward runs the backward op
    alone, with no zero-filled gradient made for them (a pass over N*C*Ho*Wo bytes)."""
    f, theta, masks, off = warp_inputs(N=2, C=5)
    f = f.contiguous(memory_format=layout).requires_grad_()
    out = D.part_affine_warp(f, theta, masks, off, backend="cpu")
    names = ops_run_by_backward(out, torch.randn_like(out))
    # aten::detach: the gradient accumulated into f.grad
    assert names == ["deformgan_ops::_part_affine_warp_backward", "aten::detach"], names


@requires_cpu_kernels
def test_an_output_whose_gradient_is_dropped_gives_no_gradient():
    """Reached with no gradient for its output (a function after it returned None),
    the backward gives every input None, as the reference does."""
    f, theta, masks, off = warp_inputs(N=2)
    for t in (f, theta, masks, off):
        t.requires_grad_()
    for backend in ("cpu", "reference"):
        out = D.part_affine_warp(f, theta, masks, off, backend=backend)
        (DropGradient.apply(out).sum() + f.sum()).backward()  # f also reaches the loss another way
        assert torch.equal(f.grad, torch.ones_like(f)), backend  # the other way's gradient only
        assert theta.grad is None and masks.grad is None and off.grad is None, backend
        f.grad = None


# ------------------------------------------------------------------ bad input
BAD = [
    (lambda f, t, m, o: (f[0], t, m, o), ValueError, "features must be a 4-D tensor"),
    (lambda f, t, m, o: (f.long(), t, m, o), TypeError, "features must be a floating point"),
    (lambda f, t, m, o: (f, t[..., :2], m, o), ValueError, r"theta must have shape \[N, P, 2, 3\]"),
    (lambda f, t, m, o: (f, t[:1], m, o), ValueError, "theta must have shape"),
    (lambda f, t, m, o: (f, t, m[:, :2], o), ValueError, "masks must have shape"),
    (lambda f, t, m, o: (f, t.double(), m, o), TypeError, "theta must have the dtype of features"),
    (lambda f, t, m, o: (f, t, m, o[:, :1]), ValueError, "offsets must have shape"),
    (lambda f, t, m, o: (f, t, m.double(), o), TypeError, "masks must have the dtype"),
    (lambda f, t, m, o: (f, t, "masks", o), TypeError, "masks must be a torch.Tensor"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mutate,exc,msg", BAD)
def test_bad_input_raises_a_clear_error(backend, mutate, exc, msg):
    args = mutate(*warp_inputs(N=2, P=3))
    with pytest.raises(exc, match=msg):
        D.part_affine_warp(*args, backend=backend)


def test_too_many_parts():
    f = torch.randn(1, 1, 3, 3)
    theta = identity_theta(1, 256)
    with pytest.raises(ValueError, match="between 1 and 255 parts"):
        D.part_affine_warp(f, theta, torch.ones(1, 256, 3, 3))


@requires_cpu_kernels
def test_cpp_checks_name_the_argument():
    f, theta, masks, off = warp_inputs(N=2, P=3)
    with pytest.raises(RuntimeError, match="masks must have shape"):
        torch.ops.deformgan_ops.part_affine_warp(f, theta, masks[:, :2], off)
    with pytest.raises(RuntimeError, match="offsets must have shape"):
        torch.ops.deformgan_ops.part_affine_warp(f, theta, masks, off[:, :, :3])
    out, winner = torch.ops.deformgan_ops.part_affine_warp(f, theta, masks, off)
    with pytest.raises(RuntimeError, match="winner must be a uint8 tensor"):
        torch.ops.deformgan_ops._part_affine_warp_backward(out, f, theta, masks, off, winner.long(),
                                                           [True] * 4)



# ------------------------------------------------------------------ the non-finite rule of the gradients
def _warp_grads(backend, f, theta, masks, grad):
    f, theta, masks = (t.clone().requires_grad_() for t in (f, theta, masks))
    out = D.part_affine_warp(f, theta, masks, backend=backend)
    out.backward(grad)
    return out.detach(), f.grad, theta.grad, masks.grad


def _with_losing_part_next_to_inf():
    """Part 0: identity, mask 2; part 1: half a pixel to the right, mask -1, so it loses
    everywhere (its candidates are -sample); an inf feature at (x 3, y 0) lies in part
    1's sampling footprint at pixel (2, 0) and in part 0's at (3, 0)."""
    f = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    f[0, 0, 0, 3] = float("inf")
    theta = identity_theta(1, 2, torch.float64)
    theta[0, 1, 0, 2] = 0.5
    masks = torch.stack([torch.full((4, 4), 2.0), torch.full((4, 4), -1.0)]).unsqueeze(0).double()
    return f, theta, masks


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_losing_part_gets_exactly_zero_gradient_even_beside_non_finite_features(backend):
    """The rule every backend follows: the gradient of the max reaches the winning part
    only; a part that wins nowhere has theta and mask gradients exactly 0, even where
    its own sample is not finite (the reference computes the winner's candidate alone:
    no 0 * inf through a losing part's terms)."""
    f, theta, masks = _with_losing_part_next_to_inf()
    grad = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    out, gf, gth, gm = _warp_grads(backend, f, theta, masks, grad)
    assert out[0, 0, 0, 3] == float("inf") and torch.isfinite(out[0, 0, 1:]).all()
    assert torch.equal(gth[0, 1], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(gm[0, 1], torch.zeros(4, 4, dtype=torch.float64))
    # the winning part's own mask gradient is its sample: inf where it sampled the inf
    assert gm[0, 0, 0, 3] == float("inf") and gm[0, 0, 1, 1] == 1.0
    if backend != "reference":
        want = _warp_grads("reference", f, theta, masks, grad)
        for a, b in zip((out, gf, gth, gm), want):
            torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_incoming_gradient_reaches_the_mask_of_a_winner_sampling_outside(backend):
    """A NaN incoming gradient at one pixel whose winning part samples outside the
    image (sample 0): that part's mask gradient is NaN at that pixel (NaN * 0), and
    nowhere else; the part that loses gets 0."""
    f = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    theta = identity_theta(1, 2, torch.float64)
    theta[0, 0, 0, 2] = 100.0  # part 0 samples far outside: candidate 0
    masks = torch.stack([torch.ones(4, 4), torch.full((4, 4), -1.0)]).unsqueeze(0).double()
    f = f.abs() + 0.5  # part 1's candidates are all negative: part 0 wins everywhere
    grad = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    grad[0, 1, 2, 1] = float("nan")
    out, gf, gth, gm = _warp_grads(backend, f, theta, masks, grad)
    assert torch.equal(out, torch.zeros_like(out))
    assert gm[0, 0].isnan().sum() == 1 and gm[0, 0, 2, 1].isnan()
    assert torch.equal(gm[0, 1], torch.zeros(4, 4, dtype=torch.float64))
    assert torch.equal(gf, torch.zeros_like(gf)) and torch.equal(gth[0, 1], torch.zeros(2, 3, dtype=torch.float64))
