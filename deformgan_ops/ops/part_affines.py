"""part_affines: the ten least-squares part affines (pose geometry)."""
from typing import Optional, Tuple

import torch

from .. import reference
from .._autocast import FLOAT32, autocast_rule, register_dispatch
from .._registry import OpDecl, declare
from .._validate import check_like, shape_of
from ..backend import extension_loaded, implementation
from ..skeleton import NUM_PARTS, check_keypoints, example_poses, pose_batch

NAME = "part_affines"
# Under torch.autocast: keypoints in float32 (coordinates) (deformgan_ops._autocast).
AUTOCAST = (FLOAT32, FLOAT32)


def check(source, target) -> None:
    check_keypoints(source, "source_keypoints")
    check_keypoints(target, "target_keypoints")
    if source.shape != target.shape:
        raise ValueError(f"source_keypoints {shape_of(source)} and target_keypoints {shape_of(target)} "
                         "must have the same shape")
    check_like(target, "target_keypoints", source, "source_keypoints")


@autocast_rule(*AUTOCAST)
def part_affines(source_keypoints: torch.Tensor, target_keypoints: torch.Tensor, *,
                 backend: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ten least-squares part affines of Deformable GAN (docs/method.md: body parts).

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
        source_keypoints: ``[..., 18, 2]`` (x, y) pixels, missing joints negative or
            non-finite.
        target_keypoints: ``[..., 18, 2]``, the shape, dtype and device of
            ``source_keypoints``.
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"cuda"`` (no Triton
            kernel, see :mod:`deformgan_ops.backend`); None uses
            :func:`deformgan_ops.get_backend`.

    Returns:
        ``theta`` ``[..., 10, 2, 3]`` (dtype of the keypoints) and ``valid``
        ``[..., 10]`` bool; not differentiable.

    Example:
        >>> import torch, deformgan_ops as D
        >>> from deformgan_ops.skeleton import example_poses
        >>> pose = example_poses()[:1]
        >>> theta, valid = D.part_affines(pose, pose + torch.tensor([5.0, 0.0], dtype=torch.float64))
        >>> valid.tolist()  # every part of a whole pose can be fitted
        [[True, True, True, True, True, True, True, True, True, True]]
        >>> (theta[0, 0].round(decimals=4) + 0.0).tolist()  # the torso: target -> source, a shift of -5 px in x
        [[1.0, 0.0, -5.0], [0.0, 1.0, 0.0]]
    """
    check(source_keypoints, target_keypoints)
    lead = tuple(source_keypoints.shape[:-2])
    src, tgt = pose_batch(source_keypoints), pose_batch(target_keypoints)
    theta, valid = implementation(NAME, src.device, backend)(src, tgt)
    return theta.to(source_keypoints.dtype).reshape(lead + (NUM_PARTS, 2, 3)), valid.reshape(lead + (NUM_PARTS,))


def _compiled(source, target):
    return torch.ops.deformgan_ops.part_affines(source, target)


def _sample_inputs(device, dtype):
    poses = example_poses().to(device, dtype)
    return [((poses, poses.flip(0)), {}), ((poses[:2], poses[2:]), {})]


if extension_loaded():
    register_dispatch(NAME, AUTOCAST)
    torch.library.register_fake(f"deformgan_ops::{NAME}", lambda source, target: (
        source.new_empty((source.shape[0], NUM_PARTS, 2, 3)),
        source.new_empty((source.shape[0], NUM_PARTS), dtype=torch.bool)))

DECL = declare(OpDecl(name=NAME, autocast=AUTOCAST, public=part_affines, reference=reference.part_affines, compiled=_compiled,
                      sample_inputs=_sample_inputs, differentiable=False))
