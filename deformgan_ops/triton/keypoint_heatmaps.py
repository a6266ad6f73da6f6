"""keypoint_heatmaps in Triton: forward, backward (a reduction per joint, no atomics)."""
import torch
import triton
import triton.language as tl

from ..ops.keypoint_heatmaps import register
from ._common import BLOCK, compute_dtype, device_guard, scalar, tile_of, tiles


@triton.jit
def _keypoint_missing(kx, ky):
    finite = (kx == kx) & (ky == ky) & ((kx - kx) == 0) & ((ky - ky) == 0)
    return ~(finite & (kx >= 0) & (ky >= 0))


@triton.jit
def _keypoint_heatmaps_forward_kernel(kp_ptr, out_ptr, height, width, inv_ptr,
                                      DT: tl.constexpr, BLOCK: tl.constexpr):
    j, offs = tile_of(height * width, BLOCK)
    inv = tl.load(inv_ptr).to(DT)
    valid = offs < height * width
    kx = tl.load(kp_ptr + j * 2).to(DT)
    ky = tl.load(kp_ptr + j * 2 + 1).to(DT)
    dx = (offs % width).to(DT) - kx
    dy = (offs // width).to(DT) - ky
    h = tl.exp(-dy * dy * inv) * tl.exp(-dx * dx * inv)
    h = tl.where(_keypoint_missing(kx, ky), 0.0, h)
    tl.store(out_ptr + j * height * width + offs, h.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _keypoint_heatmaps_backward_kernel(grad_ptr, kp_ptr, gkp_ptr, height, width, inv_ptr,
                                       DT: tl.constexpr, BLOCK: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    inv = tl.load(inv_ptr).to(DT)
    kx = tl.load(kp_ptr + j * 2).to(DT)
    ky = tl.load(kp_ptr + j * 2 + 1).to(DT)
    missing = _keypoint_missing(kx, ky)
    kx = tl.where(missing, 0.0, kx)
    ky = tl.where(missing, 0.0, ky)
    acc_x = tl.zeros([BLOCK], dtype=DT)
    acc_y = tl.zeros([BLOCK], dtype=DT)
    for start in range(0, height * width, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < height * width
        g = tl.load(grad_ptr + j * height * width + offs, mask=valid, other=0).to(DT)
        dx = (offs % width).to(DT) - kx
        dy = (offs // width).to(DT) - ky
        h = tl.exp(-dy * dy * inv) * tl.exp(-dx * dx * inv)
        # d h / d kx = h (x - kx) / sigma^2 = h dx 2 inv
        acc_x += g * h * dx * 2.0 * inv
        acc_y += g * h * dy * 2.0 * inv
    gx = tl.where(missing, 0.0, tl.sum(acc_x, axis=0))
    gy = tl.where(missing, 0.0, tl.sum(acc_y, axis=0))
    tl.store(gkp_ptr + j * 2, gx.to(gkp_ptr.dtype.element_ty))
    tl.store(gkp_ptr + j * 2 + 1, gy.to(gkp_ptr.dtype.element_ty))


@torch.library.custom_op("deformgan_triton::keypoint_heatmaps", mutates_args=())
def keypoint_heatmaps_op(keypoints: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    keypoints = keypoints.contiguous()
    N, K = keypoints.shape[:2]
    out = keypoints.new_empty((N, K, height, width))
    if out.numel():
        with device_guard(keypoints):
            _keypoint_heatmaps_forward_kernel[tiles(N * K, height * width)](
                keypoints, out, height, width, scalar(1.0 / (2.0 * sigma * sigma), keypoints),
                DT=compute_dtype(keypoints.dtype), BLOCK=BLOCK)
    return out


@torch.library.custom_op("deformgan_triton::_keypoint_heatmaps_backward", mutates_args=())
def keypoint_heatmaps_backward_op(grad_output: torch.Tensor, keypoints: torch.Tensor, height: int,
                                  width: int, sigma: float) -> torch.Tensor:
    keypoints = keypoints.contiguous()
    grad_output = grad_output.to(keypoints.dtype).contiguous()
    grad = keypoints.new_zeros(keypoints.shape)
    N, K = keypoints.shape[:2]
    if N * K:
        with device_guard(keypoints):
            _keypoint_heatmaps_backward_kernel[(N * K,)](grad_output, keypoints, grad, height, width,
                                                         scalar(1.0 / (2.0 * sigma * sigma), keypoints),
                                                         DT=compute_dtype(keypoints.dtype), BLOCK=BLOCK)
    return grad


register(keypoint_heatmaps_op, keypoint_heatmaps_backward_op, keypoint_heatmaps_backward_op)


def keypoint_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Triton keypoint_heatmaps; see :func:`deformgan_ops.keypoint_heatmaps`."""
    return keypoint_heatmaps_op(keypoints, height, width, sigma)
