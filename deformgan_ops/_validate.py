"""Input validation shared by every backend (the C++ kernels check again)."""
import math
import numbers
from typing import Optional

import torch


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def size_arg(name: str, v) -> int:
    """A positive integer size (Python or numpy int, never bool) as an int."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def positive_arg(name: str, v) -> float:
    """A positive finite real (a Python or numpy number, never bool) as a float."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def check_no_overlap(out: torch.Tensor, name: str, inputs) -> None:
    """``out`` must not share memory with any input (it is written while they are read)."""
    o = out.untyped_storage()
    for t, tname in inputs:
        if t is not None and t.device == out.device and t.untyped_storage().data_ptr() == o.data_ptr() \
                and o.nbytes() > 0:
            raise ValueError(f"{name} must not share memory with {tname}: the operator writes {name} while "
                             f"it reads {tname}; pass a separate buffer")


def _check_tensor(t, name: str, dim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be a {dim}-D tensor {layout}, got shape {_shape(t)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")


def _check_like(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")


def check_part_affine_warp(features, theta, masks, offsets: Optional[torch.Tensor]) -> None:
    _check_tensor(features, "features", 4, "[N, C, H, W]")
    _check_tensor(theta, "theta", 4, "[N, P, 2, 3]")
    _check_tensor(masks, "masks", 4, "[N, P, Ho, Wo]")
    _check_like(theta, "theta", features, "features")
    _check_like(masks, "masks", features, "features")
    N = features.shape[0]
    if theta.shape[0] != N or tuple(theta.shape[2:]) != (2, 3):
        raise ValueError(f"theta must have shape [N, P, 2, 3] with N = {N}, got {_shape(theta)}")
    P = theta.shape[1]
    if not 1 <= P <= 255:
        raise ValueError(f"theta must have between 1 and 255 parts, got P = {P}")
    if masks.shape[0] != N or masks.shape[1] != P:
        raise ValueError(f"masks must have shape [N, P, Ho, Wo] with N = {N} and P = {P}, got {_shape(masks)}")
    if offsets is not None:
        _check_tensor(offsets, "offsets", 4, "[N, 2, Ho, Wo]")
        _check_like(offsets, "offsets", features, "features")
        want = (N, 2, masks.shape[2], masks.shape[3])
        if tuple(offsets.shape) != want:
            raise ValueError(f"offsets must have shape [N, 2, Ho, Wo] = {list(want)}, got {_shape(offsets)}")


def check_keypoint_heatmaps(keypoints, height, width, sigma) -> None:
    _check_tensor(keypoints, "keypoints", 3, "[N, K, 2]")
    if keypoints.shape[2] != 2:
        raise ValueError(f"keypoints must have shape [N, K, 2] (x, y), got {_shape(keypoints)}")
    size_arg("height", height)
    size_arg("width", width)
    positive_arg("sigma", sigma)


def check_nn_loss(generated, target, kernel_size, reduction) -> None:
    _check_tensor(generated, "generated", 4, "[N, C, H, W]")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor [N, C, H, W], got {type(target).__name__}")
    _check_like(target, "target", generated, "generated")
    if target.shape != generated.shape:
        raise ValueError(f"target must have the shape of generated {_shape(generated)}, got {_shape(target)}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def effective_kernel_size(kernel_size: int, height: int, width: int) -> int:
    """The window clipped to the image: a radius past ``max(H, W) - 1`` adds no
    position inside the image (the result is the same), only work and scratch."""
    radius = min(int(kernel_size) // 2, max(height, width, 1) - 1)
    return 2 * radius + 1


def check_out(out, name: str, shape, ref: torch.Tensor, ref_name: str) -> None:
    """An ``out=`` tensor: exactly ``shape``, the dtype and device of ``ref``, contiguous,
    and not requiring grad (out= variants are not differentiable)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {_shape(out)}")
    _check_like(out, name, ref, ref_name)
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if out.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{name}: the out= form does not support autograd ({name} requires grad)")


def check_pose_keypoints(kp, name: str) -> None:
    if not isinstance(kp, torch.Tensor) or kp.dim() < 2 or tuple(kp.shape[-2:]) != (18, 2):
        shape = _shape(kp) if isinstance(kp, torch.Tensor) else type(kp).__name__
        raise ValueError(f"{name} must have shape [..., 18, 2] (x, y), got {shape}")
    if not kp.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {kp.dtype}")


def check_part_masks(keypoints, height, width, scale, enabled) -> None:
    check_pose_keypoints(keypoints, "target_keypoints")
    size_arg("height", height)
    size_arg("width", width)
    positive_arg("scale", scale)
    if enabled is not None:
        if not isinstance(enabled, torch.Tensor):
            raise TypeError(f"enabled must be a torch.Tensor [..., 10], got {type(enabled).__name__}")
        want = tuple(keypoints.shape[:-2]) + (10,)
        if tuple(enabled.shape) != want:
            raise ValueError(f"enabled must have shape {list(want)}, got {_shape(enabled)}")
        if enabled.device != keypoints.device:
            raise ValueError(f"enabled must be on the device of target_keypoints ({keypoints.device}), "
                             f"got {enabled.device}")


def check_part_affines(source, target) -> None:
    check_pose_keypoints(source, "source_keypoints")
    check_pose_keypoints(target, "target_keypoints")
    if source.shape != target.shape:
        raise ValueError(f"source_keypoints {_shape(source)} and target_keypoints {_shape(target)} "
                         "must have the same shape")
    _check_like(target, "target_keypoints", source, "source_keypoints")
