"""Poses: the 18-joint order, YOLO (COCO-17) conversion, torso size, and the
body-part geometry of Deformable GAN (docs/method.md: keypoints, pose rendering, body parts), batched and
vectorised on any device. The geometry itself (part masks and part affines) is
the ``deformgan_ops`` operators :func:`deformgan_ops.part_masks` and
:func:`deformgan_ops.part_affines` (compiled CPU/CUDA kernels, with the
pure-PyTorch reference in :mod:`deformgan_ops.reference.pose_geometry`).

Conventions: keypoints are float tensors ``[..., 18, 2]`` holding (x, y) =
(column, row) in pixels of the image; a joint is missing when either
coordinate is negative or not finite (the files write -1). Affines map a point
of the TARGET image to the SOURCE image (what an inverse-warping sampler
needs), as ``[..., 2, 3]`` matrices in pixel coordinates.
"""
from typing import Optional, Tuple

import torch

from deformgan_ops import part_affines, part_masks  # noqa: F401  (re-exported)
from deformgan_ops.reference.pose_geometry import (  # noqa: F401  (re-exported)
    MAX_CONDITION, fit_affines, limb_rectangle, torso_size)
from deformgan_ops.skeleton import (  # noqa: F401  (re-exported)
    FLIP_PERMUTATION, GLOBAL_JOINTS, HEAD_JOINTS, J, JOINTS, LIMB_PARTS, LIMBS, NUM_JOINTS, NUM_PARTS, PARTS,
    TORSO_JOINTS, check_keypoints, missing, present)

# ultralytics / COCO-17 order -> 18-joint index.
COCO17 = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
          "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
COCO17_TO_18 = tuple(J[name] for name in COCO17)


def coco17_to_openpose18(xy: torch.Tensor, conf: Optional[torch.Tensor] = None,
                         threshold: float = 0.3) -> torch.Tensor:
    """Convert ultralytics' COCO-17 keypoints ``[..., 17, 2]`` (x, y) with confidences
    ``[..., 17]`` to the 18-joint order. A keypoint under ``threshold`` (or at (0, 0),
    ultralytics' "not found") is missing (-1); the neck is the midpoint of the two
    shoulders when both are present, else missing."""
    if xy.shape[-2:] != (17, 2):
        raise ValueError(f"xy must have shape [..., 17, 2], got {list(xy.shape)}")
    xy = xy.float()
    ok = torch.isfinite(xy).all(-1) & ~(xy == 0).all(-1)
    if conf is not None:
        if conf.shape != xy.shape[:-1]:
            raise ValueError(f"conf must have shape {list(xy.shape[:-1])}, got {list(conf.shape)}")
        ok = ok & (conf >= threshold)
    out = torch.full(xy.shape[:-2] + (NUM_JOINTS, 2), -1.0, dtype=xy.dtype, device=xy.device)
    src = torch.where(ok.unsqueeze(-1), xy, torch.full_like(xy, -1.0))
    out[..., list(COCO17_TO_18), :] = src
    rs, ls = out[..., J["r_shoulder"], :], out[..., J["l_shoulder"], :]
    both = present(rs) & present(ls)
    out[..., J["neck"], :] = torch.where(both.unsqueeze(-1), (rs + ls) / 2, torch.full_like(rs, -1.0))
    return out


def flip_keypoints(keypoints: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror keypoints horizontally in an image of ``width`` columns and swap L/R joints."""
    check_keypoints(keypoints)
    out = keypoints.clone()
    out[..., 0] = (width - 1) - keypoints[..., 0]
    out = out[..., list(FLIP_PERMUTATION), :]
    was_missing = missing(keypoints)[..., list(FLIP_PERMUTATION)]
    return torch.where(was_missing.unsqueeze(-1), torch.full_like(out, -1.0), out)


def global_affine(source_keypoints: torch.Tensor, target_keypoints: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One affine for the whole body (the ``global`` variant): least squares over the
    torso joints and the knees present in both poses. ``[N, 2, 3]``, valid ``[N]``."""
    check_keypoints(source_keypoints, "source_keypoints")
    check_keypoints(target_keypoints, "target_keypoints")
    idx = list(GLOBAL_JOINTS)
    both = (present(source_keypoints) & present(target_keypoints))[..., idx]
    return fit_affines(target_keypoints[..., idx, :], source_keypoints[..., idx, :], both.to(source_keypoints.dtype))


def scale_affines(theta: torch.Tensor, factor: float) -> torch.Tensor:
    """An affine fitted at image resolution, for a level downsampled by ``factor``:
    the translation column is divided by ``factor`` (the original's convention)."""
    out = theta.clone()
    out[..., 2] = theta[..., 2] / factor
    return out


