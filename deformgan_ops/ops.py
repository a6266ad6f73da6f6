"""The public operators, their fake kernels and their autograd registration.

The schemas live in ``csrc/ops.cpp``; the compiled kernels register themselves
per device. Here, as in pytorch/extension-cpp, the fake (meta) kernels and the
autograd formulas are registered from Python with :mod:`torch.library`; each
backward is its own registered op with its own fake kernel.
"""
from typing import Optional

import torch

from . import _validate, reference
from ._registration import register_keypoint_heatmaps, register_nn_loss, register_part_affine_warp
from .backend import extension_loaded, resolve

__all__ = ["part_affine_warp", "keypoint_heatmaps", "nn_loss"]


# ---------------------------------------------------------------- registration
if extension_loaded():
    _ops = torch.ops.deformgan_ops
    register_part_affine_warp("deformgan_ops::part_affine_warp", "deformgan_ops::_part_affine_warp_backward",
                              _ops._part_affine_warp_backward)
    register_keypoint_heatmaps("deformgan_ops::keypoint_heatmaps", "deformgan_ops::_keypoint_heatmaps_backward",
                               _ops._keypoint_heatmaps_backward)
    register_nn_loss("deformgan_ops::nn_loss", "deformgan_ops::_nn_loss_backward", _ops._nn_loss_backward)


def _triton():
    from . import triton as triton_ops

    return triton_ops


# ---------------------------------------------------------------- public API
def part_affine_warp(features: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor,
                     offsets: Optional[torch.Tensor] = None, *,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Masked per-part affine warp, combined by a max over parts.

    For output pixel ``(x, y)`` (column, row) and part ``p``::

        (u, v) = theta[n, p] @ (x, y, 1) + offsets[n, :, y, x]
        out[n, c, y, x] = max_p masks[n, p, y, x] * bilinear(features[n, c], u, v)

    ``(u, v)`` is in the input's pixel-index coordinates; bilinear sampling uses
    zero padding (a corner outside ``[0, W-1] x [0, H-1]`` contributes 0, as
    ``grid_sample(align_corners=True, padding_mode="zeros")``); non-finite
    locations sample 0. A part whose mask is exactly 0 at a pixel contributes
    exactly 0 and is not sampled. Ties go to the lowest ``p``; the gradient of
    the max reaches the winning part only.

    Args:
        features: ``[N, C, H, W]`` floating point.
        theta: ``[N, P, 2, 3]`` target -> source affines in pixel coordinates,
            ``1 <= P <= 255``. For a level downsampled by ``s``, divide the
            translation column by ``s`` (see :func:`deformgan.pose.scale_affines`).
        masks: ``[N, P, Ho, Wo]`` per-part masks in the target frame.
        offsets: optional ``[N, 2, Ho, Wo]`` residual displacements (channel 0
            adds to ``u``, channel 1 to ``v``).
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or
            ``"triton"``; None uses :func:`deformgan_ops.get_backend`.

    Returns:
        ``[N, C, Ho, Wo]``, differentiable with respect to all four inputs.
    """
    _validate.check_part_affine_warp(features, theta, masks, offsets)
    which = resolve("part_affine_warp", features.device, backend)
    if which == "reference":
        return reference.part_affine_warp(features, theta, masks, offsets)
    if which == "triton":
        return _triton().part_affine_warp(features, theta, masks, offsets)
    return torch.ops.deformgan_ops.part_affine_warp(features, theta, masks, offsets)[0]


def keypoint_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float = 6.0, *,
                      backend: Optional[str] = None) -> torch.Tensor:
    """Gaussian keypoint heatmaps.

    ``h[n, k, y, x] = exp(-((x - x_k)^2 + (y - y_k)^2) / (2 sigma^2))`` at every
    integer pixel (x = column, y = row), peak 1, no normalisation. A joint with a
    negative or non-finite coordinate is missing: its channel is all zeros and
    its gradient is zero.

    Args:
        keypoints: ``[N, K, 2]`` floating point, (x, y) in pixels.
        height, width: output size (positive ints).
        sigma: Gaussian standard deviation in pixels (> 0); 6 at 128x64.
        backend: as in :func:`part_affine_warp`.

    Returns:
        ``[N, K, height, width]``, differentiable with respect to ``keypoints``.
    """
    _validate.check_keypoint_heatmaps(keypoints, height, width, sigma)
    which = resolve("keypoint_heatmaps", keypoints.device, backend)
    if which == "reference":
        return reference.keypoint_heatmaps(keypoints, height, width, float(sigma))
    if which == "triton":
        return _triton().keypoint_heatmaps(keypoints, height, width, float(sigma))
    return torch.ops.deformgan_ops.keypoint_heatmaps(keypoints, height, width, float(sigma))


def nn_loss(generated: torch.Tensor, target: torch.Tensor, kernel_size: int = 3,
            reduction: str = "mean", *, backend: Optional[str] = None) -> torch.Tensor:
    """Nearest-neighbour loss of Deformable GAN.

    For each pixel ``p`` of ``generated``, the L1 distance (summed over channels)
    to its best match in the ``kernel_size x kernel_size`` window of ``target``
    centred on ``p``, the window clipped to the image::

        d[n, y, x] = min_{q in window} sum_c |target[n, c, q] - generated[n, c, y, x]|

    The gradient flows through the winning ``q`` (ties: first in row-major
    window order) to both inputs. ``kernel_size=1`` is the channel-summed L1.

    Args:
        generated, target: ``[N, C, H, W]``, same shape, dtype and device.
        kernel_size: odd positive int (3 for Market-1501, 5 for DeepFashion).
        reduction: ``"mean"`` (over N, H, W; NaN for an empty batch, like
            torch's losses), ``"sum"`` or ``"none"`` (``[N, H, W]``).
        backend: as in :func:`part_affine_warp`.
    """
    _validate.check_nn_loss(generated, target, kernel_size, reduction)
    which = resolve("nn_loss", generated.device, backend)
    if which == "reference":
        return reference.nn_loss(generated, target, kernel_size, reduction)
    if which == "triton":
        distance = _triton().nn_loss(generated, target, kernel_size)
    else:
        distance = torch.ops.deformgan_ops.nn_loss(generated, target, kernel_size)[0]
    if reduction == "none":
        return distance
    if reduction == "sum":
        return distance.sum()
    return distance.mean()
