"""The public operators, their fake kernels and their autograd registration.

The schemas live in ``csrc/ops.cpp``; the compiled kernels register themselves
per device. Here, as in pytorch/extension-cpp, the fake (meta) kernels and the
autograd formulas are registered from Python with :mod:`torch.library`; each
backward is its own registered op with its own fake kernel.
"""
from typing import Optional, Tuple

import torch

from . import _validate, reference
from ._registration import (register_keypoint_heatmaps, register_nn_loss, register_out_variant,
                            register_part_affine_warp, register_pose_geometry)
from .backend import extension_loaded, resolve

__all__ = ["part_affine_warp", "keypoint_heatmaps", "nn_loss", "part_masks", "part_affines"]


# ---------------------------------------------------------------- registration
if extension_loaded():
    _ops = torch.ops.deformgan_ops
    register_part_affine_warp("deformgan_ops::part_affine_warp", "deformgan_ops::_part_affine_warp_backward",
                              _ops._part_affine_warp_backward)
    register_keypoint_heatmaps("deformgan_ops::keypoint_heatmaps", "deformgan_ops::_keypoint_heatmaps_backward",
                               _ops._keypoint_heatmaps_backward)
    register_nn_loss("deformgan_ops::nn_loss", "deformgan_ops::_nn_loss_backward", _ops._nn_loss_backward)
    register_out_variant("deformgan_ops::keypoint_heatmaps.out")
    register_pose_geometry("deformgan_ops::part_masks", "deformgan_ops::part_masks.out",
                           "deformgan_ops::part_affines")


def _triton():
    from . import triton as triton_ops

    return triton_ops


# The C++ CPU kernels compute in float32 / float64. Half and bfloat16 CPU inputs are
# upcast to float32 for them and the result cast back to the input dtype (autograd
# casts the gradients back too), so every backend takes every floating dtype.
_CPU_KERNEL_DTYPES = (torch.float32, torch.float64)


def _needs_upcast(which: str, t: torch.Tensor) -> bool:
    return which == "cpu" and t.dtype not in _CPU_KERNEL_DTYPES


def _f32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.float()


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
    the max reaches the winning part only. Non-finite values (the same on every
    backend, see :mod:`deformgan_ops.reference.part_affine_warp`): a corner outside
    the image is never read; a NaN/inf feature at a corner inside reaches the
    sample even with weight 0; a NaN candidate wins the max (the first in p
    order). Features with ``H = 0`` or ``W = 0`` sample 0 everywhere. Double
    backward is supported by the reference only (the fused kernels raise).

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
    if _needs_upcast(which, features):
        out = torch.ops.deformgan_ops.part_affine_warp(features.float(), theta.float(), masks.float(), _f32(offsets))
        return out[0].to(features.dtype)
    return torch.ops.deformgan_ops.part_affine_warp(features, theta, masks, offsets)[0]


def keypoint_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float = 6.0, *,
                      out: Optional[torch.Tensor] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Gaussian keypoint heatmaps.

    ``h[n, k, y, x] = exp(-((x - x_k)^2 + (y - y_k)^2) / (2 sigma^2))`` at every
    integer pixel (x = column, y = row), peak 1, no normalisation. A joint with a
    negative or non-finite coordinate is missing: its channel is all zeros and
    its gradient is zero.

    Args:
        keypoints: ``[N, K, 2]`` floating point, (x, y) in pixels.
        height, width: output size (positive ints).
        sigma: Gaussian standard deviation in pixels (> 0); 6 at 128x64.
        out: optional ``[N, K, height, width]`` contiguous tensor of the dtype and
            device of ``keypoints`` to write into (and return). Reusing a buffer
            saves the page faults of a fresh allocation, which on the CPU cost
            more than computing the maps; the out= form is not differentiable.
        backend: as in :func:`part_affine_warp`.

    Returns:
        ``[N, K, height, width]``, differentiable with respect to ``keypoints``
        (unless ``out`` is given).
    """
    _validate.check_keypoint_heatmaps(keypoints, height, width, sigma)
    height, width, sigma = int(height), int(width), float(sigma)
    which = resolve("keypoint_heatmaps", keypoints.device, backend)
    if out is not None:
        _validate.check_out(out, "out", (keypoints.shape[0], keypoints.shape[1], height, width),
                            keypoints, "keypoints")
        _validate.check_no_overlap(out, "out", [(keypoints, "keypoints")])
        if keypoints.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("keypoint_heatmaps(out=...) does not support autograd (keypoints requires grad)")
        if which in ("cpu", "cuda") and not _needs_upcast(which, keypoints):
            torch.ops.deformgan_ops.keypoint_heatmaps.out(keypoints, height, width, float(sigma), out=out)
            return out
        return out.copy_(keypoint_heatmaps(keypoints, height, width, sigma, backend=which))
    if which == "reference":
        return reference.keypoint_heatmaps(keypoints, height, width, float(sigma))
    if which == "triton":
        return _triton().keypoint_heatmaps(keypoints, height, width, float(sigma))
    if _needs_upcast(which, keypoints):
        return torch.ops.deformgan_ops.keypoint_heatmaps(keypoints.float(), height, width, sigma).to(keypoints.dtype)
    return torch.ops.deformgan_ops.keypoint_heatmaps(keypoints, height, width, float(sigma))


def _geometry_input(keypoints: torch.Tensor) -> torch.Tensor:
    """[..., 18, 2] -> [B, 18, 2] float32/float64, detached (the geometry is piecewise
    constant or not differentiated: its outputs never require grad)."""
    kp = keypoints.detach().reshape(-1, 18, 2)
    if kp.dtype not in (torch.float32, torch.float64):
        kp = kp.float()
    return kp


def part_masks(target_keypoints: torch.Tensor, height: int, width: int, scale: float = 1.0,
               enabled: Optional[torch.Tensor] = None, *, out: Optional[torch.Tensor] = None,
               backend: Optional[str] = None) -> torch.Tensor:
    """Target-frame masks of the ten body parts of Deformable GAN (SPEC section 4).

    Part 0 (torso) is all ones when its four joints are present (it doubles as the
    background warp); part 1 (head) is the square centred on the integer mean of
    the present head joints, extended by ``int(0.4 st)`` on each side (st: torso
    size); parts 2-9 (limbs) are the limb rectangles (inc 0.5 for lower limbs),
    a pixel centre on an edge counting as inside. A part missing in the pose is
    all zeros, as is a part whose ``enabled`` entry is False.

    Args:
        target_keypoints: ``[..., 18, 2]`` floating point, (x, y) in the pixels of
            the full-resolution image; missing joints negative or non-finite.
        height, width: size of the masks (positive ints).
        scale: rasterise at a level downsampled by ``scale``: pixel (x, y) of the
            masks is (x scale, y scale) of the image, directly from the scaled
            geometry (> 0).
        enabled: optional ``[..., 10]`` (bool or 0/1), e.g. the validity from
            :func:`part_affines`.
        out: optional ``[..., 10, height, width]`` contiguous tensor (dtype and
            device of the keypoints) to write into and return.
        backend: as in :func:`part_affine_warp` (there are no Triton kernels of the
            geometry: ``"triton"`` runs the compiled CUDA kernel, else the reference).

    Returns:
        ``[..., 10, height, width]`` of 0/1 in the dtype of ``target_keypoints``;
        not differentiable (piecewise constant).
    """
    _validate.check_part_masks(target_keypoints, height, width, scale, enabled)
    height, width, scale = int(height), int(width), float(scale)
    lead = tuple(target_keypoints.shape[:-2])
    shape = lead + (10, height, width)
    kp = _geometry_input(target_keypoints)
    on = enabled.detach().reshape(-1, 10).to(torch.bool) if enabled is not None else None
    which = resolve("part_masks", kp.device, backend)
    if out is not None:
        _validate.check_out(out, "out", shape, target_keypoints, "target_keypoints")
        _validate.check_no_overlap(out, "out", [(target_keypoints, "target_keypoints"), (enabled, "enabled")])
        if which in ("cpu", "cuda") and out.dtype == kp.dtype:
            torch.ops.deformgan_ops.part_masks.out(kp, height, width, float(scale), on,
                                                   out=out.view(-1, 10, height, width))
            return out
        return out.copy_(part_masks(target_keypoints, height, width, scale, enabled, backend=which))
    if which == "reference":
        masks = reference.part_masks(kp, height, width, float(scale), on)
    else:
        masks = torch.ops.deformgan_ops.part_masks(kp, height, width, float(scale), on)
    return masks.to(target_keypoints.dtype).reshape(shape)


def part_affines(source_keypoints: torch.Tensor, target_keypoints: torch.Tensor, *,
                 backend: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ten least-squares part affines of Deformable GAN (SPEC section 4).

    Each maps the target pose's part to the source pose's (target -> source, in
    pixels), fitted as ``skimage.transform.estimate_transform("affine", ...)``
    does (Hartley-normalised points, total least squares, float64): the torso
    from its four joints, the head from the head joints and shoulders present in
    both poses, each limb from the four corners of its rectangle (inc 0.1 upper,
    0.3 lower), a limb missing in the source taken from the source's mirror limb.
    A part is disabled (zero affine, ``valid`` False) when it is missing in the
    target, has no source, fewer than 3 points, or a fit with condition number
    >= 1e4.

    Args:
        source_keypoints, target_keypoints: ``[..., 18, 2]``, same shape, dtype
            and device.
        backend: as in :func:`part_masks`.

    Returns:
        ``theta`` ``[..., 10, 2, 3]`` (dtype of the keypoints) and ``valid``
        ``[..., 10]`` bool; not differentiable.
    """
    _validate.check_part_affines(source_keypoints, target_keypoints)
    lead = tuple(source_keypoints.shape[:-2])
    src, tgt = _geometry_input(source_keypoints), _geometry_input(target_keypoints)
    which = resolve("part_affines", src.device, backend)
    if which == "reference":
        theta, valid = reference.part_affines(src, tgt)
    else:
        theta, valid = torch.ops.deformgan_ops.part_affines(src, tgt)
    return theta.to(source_keypoints.dtype).reshape(lead + (10, 2, 3)), valid.reshape(lead + (10,))


def nn_loss(generated: torch.Tensor, target: torch.Tensor, kernel_size: int = 3,
            reduction: str = "mean", *, backend: Optional[str] = None) -> torch.Tensor:
    """Nearest-neighbour loss of Deformable GAN.

    For each pixel ``p`` of ``generated``, the L1 distance (summed over channels)
    to its best match in the ``kernel_size x kernel_size`` window of ``target``
    centred on ``p``, the window clipped to the image::

        d[n, y, x] = min_{q in window} sum_c |target[n, c, q] - generated[n, c, y, x]|

    The gradient flows through the winning ``q`` (ties: first in row-major
    window order) to both inputs. ``kernel_size=1`` is the channel-summed L1.
    A NaN distance wins the minimum (the first in window order), so a NaN in
    either input gives a NaN loss on every backend; double backward is supported
    by the reference only (the fused kernels raise).

    Args:
        generated, target: ``[N, C, H, W]``, same shape, dtype and device.
        kernel_size: odd positive int (3 for Market-1501, 5 for DeepFashion); a
            window wider than ``2 max(H, W) - 1`` is clipped to that (it adds no
            position inside the image, so the result is the same).
        reduction: ``"mean"`` (over N, H, W; NaN for an empty batch, like
            torch's losses), ``"sum"`` or ``"none"`` (``[N, H, W]``).
        backend: as in :func:`part_affine_warp`.
    """
    _validate.check_nn_loss(generated, target, kernel_size, reduction)
    kernel_size = _validate.effective_kernel_size(kernel_size, generated.shape[2], generated.shape[3])
    which = resolve("nn_loss", generated.device, backend)
    if which == "reference":
        return reference.nn_loss(generated, target, kernel_size, reduction)
    if which == "triton":
        distance = _triton().nn_loss(generated, target, kernel_size)
    elif _needs_upcast(which, generated):
        distance = torch.ops.deformgan_ops.nn_loss(generated.float(), target.float(), kernel_size)[0]
        distance = distance.to(generated.dtype)
    else:
        distance = torch.ops.deformgan_ops.nn_loss(generated, target, kernel_size)[0]
    if reduction == "none":
        return distance
    if reduction == "sum":
        return distance.sum()
    return distance.mean()
