"""part_affine_warp in Triton: forward (max over parts, zero-mask parts unsampled)
and backward (atomics for the scattered gradients, theta reduced in torch)."""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from ..ops.part_affine_warp import register, warp_layout

CHANNEL_CHUNK = 8  # channels per forward program (the CUDA kernel's kChannelChunk)
from ._common import (BLOCK, accumulator_dtype, alert_not_deterministic, compute_dtype, device_guard, empty_grad,
                      tile_of, tiles)


@triton.jit
def _corners(u, v, H, W, valid):
    """Bilinear corners with zero padding: flat indices, in-image masks, fractions.
    Non-finite locations fail the range test and take the out-of-bounds branch."""
    inb = valid & (u >= -1.0) & (u < W) & (v >= -1.0) & (v < H)
    us = tl.where(inb, u, 0.0)
    vs = tl.where(inb, v, 0.0)
    fx = tl.floor(us)
    fy = tl.floor(vs)
    x0 = fx.to(tl.int32)
    y0 = fy.to(tl.int32)
    wx1 = us - fx
    wy1 = vs - fy
    x0_in = (x0 >= 0) & (x0 < W)
    x1_in = (x0 + 1 >= 0) & (x0 + 1 < W)
    y0_in = (y0 >= 0) & (y0 < H)
    y1_in = (y0 + 1 >= 0) & (y0 + 1 < H)
    m00 = inb & y0_in & x0_in
    m01 = inb & y0_in & x1_in
    m10 = inb & y1_in & x0_in
    m11 = inb & y1_in & x1_in
    i00 = y0 * W + x0
    return i00, m00, m01, m10, m11, wx1, wy1


@triton.jit
def _offsets(off_ptr, n, HWo, offs, valid, HAS_OFFSETS: tl.constexpr, DT: tl.constexpr, BLOCK: tl.constexpr):
    """The residual displacement (du, dv) of each output pixel (zeros without offsets)."""
    if HAS_OFFSETS:
        du = tl.load(off_ptr + n * 2 * HWo + offs, mask=valid, other=0).to(DT)
        dv = tl.load(off_ptr + (n * 2 + 1) * HWo + offs, mask=valid, other=0).to(DT)
    else:
        du = tl.zeros([BLOCK], dtype=DT)
        dv = tl.zeros([BLOCK], dtype=DT)
    return du, dv


@triton.jit
def _corner_values(plane, i00, m00, m01, m10, m11, W, DT: tl.constexpr):
    """The four bilinear corner values, 0 for corners outside the image."""
    f00 = tl.load(plane + i00, mask=m00, other=0).to(DT)
    f01 = tl.load(plane + i00 + 1, mask=m01, other=0).to(DT)
    f10 = tl.load(plane + i00 + W, mask=m10, other=0).to(DT)
    f11 = tl.load(plane + i00 + W + 1, mask=m11, other=0).to(DT)
    return f00, f01, f10, f11


@triton.jit
def _location(theta_ptr, row, x, y, du, dv, DT: tl.constexpr):
    """(u, v) = theta[row] @ (x, y, 1) + (du, dv); row may be a scalar or a vector."""
    t0 = tl.load(theta_ptr + row * 6 + 0).to(DT)
    t1 = tl.load(theta_ptr + row * 6 + 1).to(DT)
    t2 = tl.load(theta_ptr + row * 6 + 2).to(DT)
    t3 = tl.load(theta_ptr + row * 6 + 3).to(DT)
    t4 = tl.load(theta_ptr + row * 6 + 4).to(DT)
    t5 = tl.load(theta_ptr + row * 6 + 5).to(DT)
    return t0 * x + t1 * y + t2 + du, t3 * x + t4 * y + t5 + dv


@triton.jit
def _part_affine_warp_forward_kernel(feat_ptr, theta_ptr, masks_ptr, off_ptr, out_ptr, win_ptr,
                                     C, H, W, P, Ho, Wo, HAS_OFFSETS: tl.constexpr,
                                     DT: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr):
    """One program per (n, chunk of CB channels, block of output pixels): each part's
    location and corners are computed once per pixel for the CB channels (a [CB, BLOCK]
    tile), as the CPU and CUDA kernels do."""
    HWo = Ho * Wo
    nk, offs = tile_of(HWo, BLOCK)
    chunks = tl.cdiv(C, CB)
    n = nk // chunks
    cs = (nk % chunks) * CB + tl.arange(0, CB)  # the chunk's channels
    valid = offs < HWo
    cvalid = cs < C
    x = (offs % Wo).to(DT)
    y = (offs // Wo).to(DT)
    du, dv = _offsets(off_ptr, n, HWo, offs, valid, HAS_OFFSETS, DT, BLOCK)
    planes = feat_ptr + (n * C + cs.to(tl.int64))[:, None] * H * W  # [CB, 1]
    tile = cvalid[:, None] & valid[None, :]
    best = tl.full([CB, BLOCK], float("-inf"), dtype=DT)
    best_p = tl.zeros([CB, BLOCK], dtype=tl.int32)
    for p in range(0, P):
        m = tl.load(masks_ptr + (n * P + p) * HWo + offs, mask=valid, other=0).to(DT)
        u, v = _location(theta_ptr, n * P + p, x, y, du, dv, DT)
        # a zero-mask part is not sampled: its corner loads are masked off
        i00, m00, m01, m10, m11, wx1, wy1 = _corners(u, v, H, W, valid & (m != 0))
        f00 = tl.load(planes + i00[None, :], mask=tile & m00[None, :], other=0).to(DT)
        f01 = tl.load(planes + (i00 + 1)[None, :], mask=tile & m01[None, :], other=0).to(DT)
        f10 = tl.load(planes + (i00 + W)[None, :], mask=tile & m10[None, :], other=0).to(DT)
        f11 = tl.load(planes + (i00 + W + 1)[None, :], mask=tile & m11[None, :], other=0).to(DT)
        w00 = ((1 - wx1) * (1 - wy1))[None, :]
        w01 = (wx1 * (1 - wy1))[None, :]
        w10 = ((1 - wx1) * wy1)[None, :]
        w11 = (wx1 * wy1)[None, :]
        s = w00 * f00 + w01 * f01 + w10 * f10 + w11 * f11
        cand = tl.where((m != 0)[None, :], m[None, :] * s, 0.0)
        # strict: ties keep the lowest p; the first NaN wins and stays (docs/method.md: the operators)
        wins = (cand > best) | ((cand != cand) & (best == best))
        best = tl.where(wins, cand, best)
        best_p = tl.where(wins, p, best_p)
    o = (n * C + cs.to(tl.int64))[:, None] * HWo + offs[None, :]
    tl.store(out_ptr + o, best.to(out_ptr.dtype.element_ty), mask=tile)
    tl.store(win_ptr + o, best_p.to(tl.uint8), mask=tile)


@triton.jit
def _part_affine_warp_backward_kernel(grad_ptr, feat_ptr, theta_ptr, masks_ptr, off_ptr, win_ptr,
                                      gfeat_ptr, gmask_ptr, gloc_ptr, goff_ptr,
                                      C, H, W, P, Ho, Wo, HAS_OFFSETS: tl.constexpr,
                                      NEED_F: tl.constexpr, NEED_M: tl.constexpr,
                                      NEED_LOC: tl.constexpr, NEED_OFF: tl.constexpr,
                                      DT: tl.constexpr, BLOCK: tl.constexpr):
    HWo = Ho * Wo
    nc, offs = tile_of(HWo, BLOCK)
    n = nc // C
    valid = offs < HWo
    x = (offs % Wo).to(DT)
    y = (offs // Wo).to(DT)
    du, dv = _offsets(off_ptr, n, HWo, offs, valid, HAS_OFFSETS, DT, BLOCK)
    g = tl.load(grad_ptr + nc * HWo + offs, mask=valid, other=0).to(DT)
    p = tl.load(win_ptr + nc * HWo + offs, mask=valid, other=0).to(tl.int32)
    m = tl.load(masks_ptr + (n * P + p) * HWo + offs, mask=valid, other=0).to(DT)
    u, v = _location(theta_ptr, n * P + p, x, y, du, dv, DT)
    i00, m00, m01, m10, m11, wx1, wy1 = _corners(u, v, H, W, valid)
    plane = feat_ptr + nc * H * W
    f00, f01, f10, f11 = _corner_values(plane, i00, m00, m01, m10, m11, W, DT)
    w00 = (1 - wx1) * (1 - wy1)
    w01 = wx1 * (1 - wy1)
    w10 = (1 - wx1) * wy1
    w11 = wx1 * wy1
    if NEED_M:
        s = w00 * f00 + w01 * f01 + w10 * f10 + w11 * f11
        # a zero-mask part's candidate is 0 unsampled: a non-finite sample gives 0
        s = tl.where((m == 0) & ((s != s) | (s - s != 0)), 0.0, s)
        tl.atomic_add(gmask_ptr + (n * P + p) * HWo + offs, g * s, mask=valid, sem="relaxed")
    gm = tl.where(m == 0, 0.0, g * m)
    if NEED_F:
        gplane = gfeat_ptr + nc * H * W
        nz = gm != 0
        tl.atomic_add(gplane + i00, gm * w00, mask=m00 & nz, sem="relaxed")
        tl.atomic_add(gplane + i00 + 1, gm * w01, mask=m01 & nz, sem="relaxed")
        tl.atomic_add(gplane + i00 + W, gm * w10, mask=m10 & nz, sem="relaxed")
        tl.atomic_add(gplane + i00 + W + 1, gm * w11, mask=m11 & nz, sem="relaxed")
    if NEED_LOC or NEED_OFF:
        # no corner inside: the sample is 0 whatever the location, so its location
        # gradient is exactly 0, even under a non-finite mask (not NaN = inf * 0)
        gl = tl.where(m00 | m01 | m10 | m11, gm, 0.0)
        gu = gl * ((f01 - f00) * (1 - wy1) + (f11 - f10) * wy1)
        gv = gl * ((f10 - f00) * (1 - wx1) + (f11 - f01) * wx1)
        if NEED_LOC:
            tl.atomic_add(gloc_ptr + ((n * P + p) * 2) * HWo + offs, gu, mask=valid, sem="relaxed")
            tl.atomic_add(gloc_ptr + ((n * P + p) * 2 + 1) * HWo + offs, gv, mask=valid, sem="relaxed")
        if NEED_OFF:
            tl.atomic_add(goff_ptr + n * 2 * HWo + offs, gu, mask=valid, sem="relaxed")
            tl.atomic_add(goff_ptr + (n * 2 + 1) * HWo + offs, gv, mask=valid, sem="relaxed")


@torch.library.custom_op("deformgan_triton::part_affine_warp", mutates_args=())
def part_affine_warp_op(features: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor,
                        offsets: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    layout = warp_layout(features)  # the result's; computed in [N, C, Ho, Wo]
    features, theta, masks = features.contiguous(), theta.contiguous(), masks.contiguous()
    N, C, H, W = features.shape
    P, Ho, Wo = masks.shape[1:]
    out = features.new_empty((N, C, Ho, Wo))
    winner = features.new_empty((N, C, Ho, Wo), dtype=torch.uint8)
    if out.numel():
        off = offsets.contiguous() if offsets is not None else features
        with device_guard(features):
            _part_affine_warp_forward_kernel[tiles(N * triton.cdiv(C, CHANNEL_CHUNK), Ho * Wo)](
                features, theta, masks, off, out, winner, C, H, W, P, Ho, Wo, HAS_OFFSETS=offsets is not None,
                DT=compute_dtype(features.dtype), CB=CHANNEL_CHUNK, BLOCK=BLOCK)
    return out.contiguous(memory_format=layout), winner.contiguous(memory_format=layout)


@torch.library.custom_op("deformgan_triton::_part_affine_warp_backward", mutates_args=())
def part_affine_warp_backward_op(grad_output: torch.Tensor, features: torch.Tensor, theta: torch.Tensor,
                                 masks: torch.Tensor, offsets: Optional[torch.Tensor], winner: torch.Tensor,
                                 output_mask: List[bool]
                                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    layout = warp_layout(features)  # grad_features'
    features, theta, masks = features.contiguous(), theta.contiguous(), masks.contiguous()
    grad_output = grad_output.to(features.dtype).contiguous()
    winner = winner.contiguous()
    N, C, H, W = features.shape
    P, Ho, Wo = masks.shape[1:]
    need_f, need_t, need_m = (bool(b) for b in output_mask[:3])
    need_o = bool(output_mask[3]) and offsets is not None
    acc = dict(dtype=accumulator_dtype(features.dtype), device=features.device)
    gfeat = torch.zeros((N, C, H, W), **acc) if need_f else None
    gmask = torch.zeros((N, P, Ho, Wo), **acc) if need_m else None
    gloc = torch.zeros((N, P, 2, Ho, Wo), **acc) if need_t else None
    goff = torch.zeros((N, 2, Ho, Wo), **acc) if need_o else None
    if grad_output.numel() and (need_f or need_t or need_m or need_o):
        off = offsets.contiguous() if offsets is not None else features
        dummy = features  # pointer for buffers that are not written
        alert_not_deterministic("deformgan_triton::_part_affine_warp_backward (Triton)")
        with device_guard(features):
            _part_affine_warp_backward_kernel[tiles(N * C, Ho * Wo)](
                grad_output, features, theta, masks, off, winner,
                gfeat if need_f else dummy, gmask if need_m else dummy, gloc if need_t else dummy,
                goff if need_o else dummy, C, H, W, P, Ho, Wo, HAS_OFFSETS=offsets is not None,
                NEED_F=need_f, NEED_M=need_m, NEED_LOC=need_t, NEED_OFF=need_o,
                DT=compute_dtype(features.dtype), BLOCK=BLOCK)
    dtype = features.dtype  # each gradient in its input's dtype
    grad_theta = empty_grad(features)
    if need_t:
        ys = torch.arange(Ho, dtype=gloc.dtype, device=gloc.device)
        xs = torch.arange(Wo, dtype=gloc.dtype, device=gloc.device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)  # [Ho, Wo, 3]
        grad_theta = torch.einsum("npihw,hwj->npij", gloc, base).to(theta.dtype)
    return (gfeat.to(dtype).contiguous(memory_format=layout) if need_f else empty_grad(features), grad_theta,
            gmask.to(masks.dtype) if need_m else empty_grad(features),
            goff.to(offsets.dtype) if need_o else empty_grad(features))


register(part_affine_warp_op, part_affine_warp_backward_op, part_affine_warp_backward_op)


def part_affine_warp(features, theta, masks, offsets=None):
    """Triton part_affine_warp; see :func:`deformgan_ops.part_affine_warp`."""
    return part_affine_warp_op(features, theta, masks, offsets)[0]
