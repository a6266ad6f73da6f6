"""nn_loss in Triton: per-pixel minimum over the window (no k*k copies), and its backward."""
from typing import List, Tuple

import torch
import triton
import triton.language as tl

from ..ops.nn_loss import register
from ._common import (BLOCK, accumulator_dtype, alert_not_deterministic, compute_dtype, device_guard, empty_grad,
                      tile_of, tiles)


@triton.jit
def _nn_loss_forward_kernel(gen_ptr, tgt_ptr, dist_ptr, argmin_ptr, C, H, W, K,
                            DT: tl.constexpr, BLOCK: tl.constexpr):
    # K is a run-time argument and the window a run-time loop: one compiled kernel
    # serves every window size, and a large window (k = 31: 961 positions) compiles
    # as fast as k = 3 (a compile-time unroll would repeat the channel loop k * k times).
    HW = H * W
    n, offs = tile_of(HW, BLOCK)  # n is int64: every plane offset below is int64
    valid = offs < HW
    x = offs % W
    y = offs // W
    best = tl.full([BLOCK], float("inf"), dtype=DT)
    best_o = tl.zeros([BLOCK], dtype=tl.int32)
    have = tl.zeros([BLOCK], dtype=tl.int1)
    for o in range(0, K * K):
        dy = o // K - K // 2
        dx = o % K - K // 2
        inside = valid & (y + dy >= 0) & (y + dy < H) & (x + dx >= 0) & (x + dx < W)
        q = offs + dy * W + dx
        d = tl.zeros([BLOCK], dtype=DT)
        for c in range(0, C):
            plane = (n * C + c) * HW  # int64: no wrap past 2^31 elements
            g = tl.load(gen_ptr + plane + offs, mask=valid, other=0).to(DT)
            t = tl.load(tgt_ptr + plane + q, mask=inside, other=0).to(DT)
            d += tl.abs(t - g)
        # the first position inside starts the minimum; then strict: ties keep the
        # first window position; the first NaN wins and stays (docs/method.md: the operators)
        better = inside & ((have == 0) | (d < best) | ((d != d) & (best == best)))
        best = tl.where(better, d, best)
        best_o = tl.where(better, o, best_o)
        have = have | inside
    tl.store(dist_ptr + n * HW + offs, best.to(dist_ptr.dtype.element_ty), mask=valid)
    tl.store(argmin_ptr + n * HW + offs, best_o, mask=valid)


@triton.jit
def _nn_loss_backward_kernel(grad_ptr, gen_ptr, tgt_ptr, argmin_ptr, ggen_ptr, gtgt_ptr, C, H, W, K,
                             NEED_GEN: tl.constexpr, NEED_TGT: tl.constexpr,
                             DT: tl.constexpr, BLOCK: tl.constexpr):
    HW = H * W
    n, offs = tile_of(HW, BLOCK)
    valid = offs < HW
    x = offs % W
    y = offs // W
    o = tl.load(argmin_ptr + n * HW + offs, mask=valid, other=0)
    dy = o // K - K // 2
    dx = o % K - K // 2
    # An argmin that is not a window position inside the image (only a hand-made one
    # can be) gives its pixel no gradient, as on every backend: nothing is read or
    # scattered for it and its generated gradient is 0.
    known = valid & (o >= 0) & (o < K * K) & (y + dy >= 0) & (y + dy < H) & (x + dx >= 0) & (x + dx < W)
    q = offs + dy * W + dx
    grad = tl.load(grad_ptr + n * HW + offs, mask=known, other=0).to(DT)
    for c in range(0, C):
        plane = (n * C + c) * HW  # int64
        g = tl.load(gen_ptr + plane + offs, mask=known, other=0).to(DT)
        t = tl.load(tgt_ptr + plane + q, mask=known, other=0).to(DT)
        diff = g - t
        v = grad * tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
        v = tl.where(known, v, 0.0)
        if NEED_GEN:
            tl.store(ggen_ptr + plane + offs, v.to(ggen_ptr.dtype.element_ty), mask=valid)
        if NEED_TGT:
            # relaxed: a plain sum, no ordering with other memory is needed
            tl.atomic_add(gtgt_ptr + plane + q, -v, mask=known, sem="relaxed")


@torch.library.custom_op("deformgan_triton::nn_loss", mutates_args=())
def nn_loss_op(generated: torch.Tensor, target: torch.Tensor, kernel_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    generated, target = generated.contiguous(), target.contiguous()
    N, C, H, W = generated.shape
    dist = generated.new_empty((N, H, W))
    argmin = generated.new_empty((N, H, W), dtype=torch.int32)
    if dist.numel():
        with device_guard(generated):
            _nn_loss_forward_kernel[tiles(N, H * W)](generated, target, dist, argmin, C, H, W, kernel_size,
                                                     DT=compute_dtype(generated.dtype), BLOCK=BLOCK)
    return dist, argmin


@torch.library.custom_op("deformgan_triton::_nn_loss_backward", mutates_args=())
def nn_loss_backward_op(grad_distance: torch.Tensor, generated: torch.Tensor, target: torch.Tensor,
                        argmin: torch.Tensor, kernel_size: int, output_mask: List[bool]
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    generated, target = generated.contiguous(), target.contiguous()
    grad_distance = grad_distance.to(generated.dtype).contiguous()
    argmin = argmin.contiguous()
    need_gen, need_tgt = bool(output_mask[0]), bool(output_mask[1])
    N, C, H, W = generated.shape
    ggen = generated.new_empty(generated.shape) if need_gen else empty_grad(generated)
    gtgt = torch.zeros(generated.shape, dtype=accumulator_dtype(generated.dtype), device=generated.device) \
        if need_tgt else empty_grad(generated)
    if generated.numel() and (need_gen or need_tgt):
        if need_tgt:
            alert_not_deterministic("deformgan_triton::_nn_loss_backward (Triton, grad of target)")
        with device_guard(generated):
            _nn_loss_backward_kernel[tiles(N, H * W)](grad_distance, generated, target, argmin, ggen, gtgt, C, H, W,
                                                      kernel_size, NEED_GEN=need_gen, NEED_TGT=need_tgt,
                                                      DT=compute_dtype(generated.dtype), BLOCK=BLOCK)
    return ggen, (gtgt.to(generated.dtype) if need_tgt else gtgt)


register(nn_loss_op, nn_loss_backward_op, nn_loss_backward_op)


def nn_loss(generated: torch.Tensor, target: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Triton per-pixel nearest-neighbour distance ``[N, H, W]``; see :func:`deformgan_ops.nn_loss`."""
    return nn_loss_op(generated, target, kernel_size)[0]
