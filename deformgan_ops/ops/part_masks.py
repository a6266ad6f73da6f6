"""part_masks: the target-frame masks of the ten body parts (pose geometry)."""
from typing import Optional

import torch

from .. import reference
from .._autocast import FLOAT32, autocast_rule, register_dispatch
from .._registry import OpDecl, declare
from .._validate import check_no_overlap, check_out, positive_arg, shape_of, size_arg
from ..backend import extension_loaded, implementation, resolve
from ..skeleton import NUM_PARTS, check_keypoints, example_poses, pose_batch
from ._autograd import register_out_variant

NAME = "part_masks"
# Under torch.autocast: keypoints in float32 (coordinates) (deformgan_ops._autocast).
AUTOCAST = (FLOAT32,)


def check(keypoints, height, width, scale, enabled) -> None:
    check_keypoints(keypoints, "target_keypoints")
    size_arg("height", height)
    size_arg("width", width)
    positive_arg("scale", scale)
    if enabled is not None:
        if not isinstance(enabled, torch.Tensor):
            raise TypeError(f"enabled must be a torch.Tensor [..., {NUM_PARTS}], got {type(enabled).__name__}")
        want = tuple(keypoints.shape[:-2]) + (NUM_PARTS,)
        if tuple(enabled.shape) != want:
            raise ValueError(f"enabled must have shape {list(want)}, got {shape_of(enabled)}")
        if enabled.device != keypoints.device:
            raise ValueError(f"enabled must be on the device of target_keypoints ({keypoints.device}), "
                             f"got {enabled.device}")


@autocast_rule(*AUTOCAST)
def part_masks(target_keypoints: torch.Tensor, height: int, width: int, scale: float = 1.0,
               enabled: Optional[torch.Tensor] = None, *, out: Optional[torch.Tensor] = None,
               backend: Optional[str] = None) -> torch.Tensor:
    """Target-frame masks of the ten body parts of Deformable GAN (docs/method.md: body parts).

    Part 0 (torso) is all ones when its four joints are present (it doubles as the
    background warp); part 1 (head) is the square centred on the integer mean of
    the present head joints, extended by ``int(0.4 st)`` on each side (st: torso
    size); parts 2-9 (limbs) are the limb rectangles (inc 0.5 for lower limbs),
    a pixel centre on an edge counting as inside. A part missing in the pose is
    all zeros, as is a part whose ``enabled`` entry is False.

    Args:
        target_keypoints: ``[..., 18, 2]`` floating point, (x, y) in the pixels of
            the full-resolution image; missing joints negative or non-finite.
        height: height of the masks (a positive int).
        width: width of the masks (a positive int).
        scale: rasterise at a level downsampled by ``scale``: pixel (x, y) of the
            masks is (x scale, y scale) of the image, directly from the scaled
            geometry (> 0).
        enabled: optional ``[..., 10]`` (bool or 0/1), e.g. the validity of the
            fitted part affines.
        out: optional ``[..., 10, height, width]`` contiguous tensor (dtype and
            device of the keypoints) to write into and return.
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"cuda"`` (there is no
            Triton kernel of the geometry, see :mod:`deformgan_ops.backend`); None
            uses :func:`deformgan_ops.get_backend`.

    Returns:
        ``[..., 10, height, width]`` of 0/1 in the dtype of ``target_keypoints``;
        not differentiable (piecewise constant).

    Example:
        >>> import torch, deformgan_ops as D
        >>> from deformgan_ops.skeleton import example_poses
        >>> pose = example_poses()[:1]  # [1, 18, 2] in a 128x64 image
        >>> masks = D.part_masks(pose, 64, 32, scale=2.0)  # the ten parts at level 1
        >>> masks.shape
        torch.Size([1, 10, 64, 32])
        >>> bool(masks[0, 0].all())  # the torso's mask is the whole image
        True
    """
    check(target_keypoints, height, width, scale, enabled)
    height, width, scale = int(height), int(width), float(scale)
    shape = tuple(target_keypoints.shape[:-2]) + (NUM_PARTS, height, width)
    kp = pose_batch(target_keypoints)
    on = enabled.detach().reshape(-1, NUM_PARTS).to(torch.bool) if enabled is not None else None
    if out is not None:
        check_out(out, "out", shape, target_keypoints, "target_keypoints")
        check_no_overlap(out, "out", [(target_keypoints, "target_keypoints"), (enabled, "enabled")])
        which = resolve(NAME, kp.device, backend)
        if which in ("cpu", "cuda") and out.dtype == kp.dtype:
            torch.ops.deformgan_ops.part_masks.out(kp, height, width, scale, on,
                                                   out=out.view(-1, NUM_PARTS, height, width))
            return out
        return out.copy_(part_masks(target_keypoints, height, width, scale, enabled, backend=which))
    masks = implementation(NAME, kp.device, backend)(kp, height, width, scale, on)
    return masks.to(target_keypoints.dtype).reshape(shape)


def _compiled(keypoints, height, width, scale, enabled):
    return torch.ops.deformgan_ops.part_masks(keypoints, height, width, scale, enabled)


def _sample_inputs(device, dtype):
    kp = example_poses().to(device, dtype)
    enabled = torch.tensor([[True] * 10, [True] * 10, [True, False] * 5, [False] + [True] * 9], device=device)
    return [((kp, 128, 64), {}), ((kp, 32, 16, 4.0, enabled), {}), ((kp[:1], 13, 7, 9.5), {})]


if extension_loaded():
    register_dispatch(NAME, AUTOCAST)
    torch.library.register_fake(f"deformgan_ops::{NAME}", lambda keypoints, height, width, scale, enabled:
                                keypoints.new_empty((keypoints.shape[0], NUM_PARTS, height, width)))
    register_out_variant(f"deformgan_ops::{NAME}.out")

DECL = declare(OpDecl(name=NAME, autocast=AUTOCAST, public=part_masks, reference=reference.part_masks, compiled=_compiled,
                      sample_inputs=_sample_inputs, differentiable=False))
